"""Record stores behind the development Tyrant server.

`MemoryStore` keeps records in a dict (ttserver's ``*`` database);
`CabinetStore` keeps them in a real Tokyo Cabinet hash database file
(``.tch``) through libtokyocabinet and ctypes, so ``tchmgr list`` and
``tchmgr get`` read what the server wrote and data survives a restart.

Both expose the same small interface; every method takes and returns byte
strings.  The server is single-threaded, so neither store locks.
"""
from __future__ import absolute_import

import ctypes
import ctypes.util
import struct

_LE_INT = struct.Struct('<i')
_LE_DOUBLE = struct.Struct('<d')


class StoreError(Exception):
    """The database file cannot be opened or written."""


_INT_MIN = -2 ** 31


def add_int_to_value(old, num):
    """addint: a missing record starts at 0; an existing one must hold
    exactly one native (little-endian) int, as Tokyo Cabinet demands, or the
    call fails (total None).  Like tchdbaddint, a total of INT_MIN is
    stored but reported as failure: that is the library's error value."""
    if old is None:
        old = _LE_INT.pack(0)
    if len(old) != _LE_INT.size:
        return None, old
    total = _LE_INT.unpack(old)[0] + num
    total = (total - _INT_MIN) % 2 ** 32 + _INT_MIN       # C int overflow
    return (None if total == _INT_MIN else total), _LE_INT.pack(total)


def add_double_to_value(old, num):
    """adddouble, likewise: the record must hold exactly one double."""
    if old is None:
        return num, _LE_DOUBLE.pack(num)
    if len(old) != _LE_DOUBLE.size:
        return None, old
    total = _LE_DOUBLE.unpack(old)[0] + num
    if total != total:
        return None, old                # NaN: Tokyo Cabinet's error value
    return total, _LE_DOUBLE.pack(total)


class MemoryStore(object):
    """Records in a dict, in insertion order like ttserver's on-memory hash."""

    kind = 'on-memory hash'
    path = '*'

    def __init__(self):
        self._data = {}
        self._order = []          # keys in insertion order, with tombstones
        self._index = {}          # key -> position in _order
        self._iter_pos = None
        self._bytes = 0

    def close(self):
        pass

    def sync(self):
        return True

    def get(self, key):
        return self._data.get(key)

    def put(self, key, value):
        old = self._data.get(key)
        if old is None:
            self._index[key] = len(self._order)
            self._order.append(key)
            self._bytes += len(key)
        else:
            self._bytes -= len(old)
        self._data[key] = value
        self._bytes += len(value)
        return True

    def putkeep(self, key, value):
        if key in self._data:
            return False
        return self.put(key, value)

    def putcat(self, key, value):
        return self.put(key, self._data.get(key, b'') + value)

    def out(self, key):
        old = self._data.pop(key, None)
        if old is None:
            return False
        self._order[self._index.pop(key)] = None
        self._bytes -= len(key) + len(old)
        if len(self._order) > 64 and len(self._order) > 2 * len(self._data):
            self._compact()
        return True

    def _compact(self):
        old_order = self._order
        self._order = [k for k in old_order if k is not None]
        self._index = dict((k, i) for i, k in enumerate(self._order))
        if self._iter_pos is not None:
            # Keep a running iteration where it was: count the live keys
            # it has passed (clients often delete as they iterate).
            passed = self._iter_pos
            self._iter_pos = sum(1 for k in old_order[:passed] if k is not None)

    def addint(self, key, num):
        old = self._data.get(key)
        total, value = add_int_to_value(old, num)
        if value is not old:
            self.put(key, value)
        return total

    def adddouble(self, key, num):
        total, value = add_double_to_value(self._data.get(key), num)
        if total is not None:
            self.put(key, value)
        return total

    def iterinit(self):
        self._iter_pos = 0
        return True

    def iternext(self):
        if self._iter_pos is None:
            return None
        order = self._order
        while self._iter_pos < len(order):
            key = order[self._iter_pos]
            self._iter_pos += 1
            if key is not None:
                return key
        return None

    def fwmkeys(self, prefix, limit):
        found = []
        if limit == 0:
            return found
        for key in self._order:
            if key is not None and key.startswith(prefix):
                found.append(key)
                if len(found) == limit:
                    break
        return found

    def vanish(self):
        self.__init__()
        return True

    def rnum(self):
        return len(self._data)

    def size(self):
        return self._bytes


# ----------------------------------------------------------- Tokyo Cabinet

# tchdbopen modes; LCKNB: fail at once if another process holds the file
# (a second server on the same .tch) instead of waiting for it forever.
_HDBOWRITER, _HDBOCREAT, _HDBOLCKNB = 1 << 1, 1 << 2, 1 << 5
_TC = None


def _library():
    """Load libtokyocabinet once and declare the functions we call."""
    global _TC
    if _TC is not None:
        return _TC
    name = ctypes.util.find_library('tokyocabinet') or 'libtokyocabinet.so.9'
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise StoreError('libtokyocabinet is not installed '
                         '(Debian: apt-get install libtokyocabinet9)')
    P, I, B, U64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_bool, ctypes.c_uint64
    CP = ctypes.c_char_p
    IP = ctypes.POINTER(ctypes.c_int)
    signatures = {
        'tchdbnew': (P, []),
        'tchdbdel': (None, [P]),
        'tchdbecode': (I, [P]),
        'tchdberrmsg': (CP, [I]),
        'tchdbsetmutex': (B, [P]),
        'tchdbopen': (B, [P, CP, I]),
        'tchdbclose': (B, [P]),
        'tchdbput': (B, [P, CP, I, CP, I]),
        'tchdbputkeep': (B, [P, CP, I, CP, I]),
        'tchdbputcat': (B, [P, CP, I, CP, I]),
        'tchdbout': (B, [P, CP, I]),
        'tchdbget': (P, [P, CP, I, IP]),
        'tchdbiterinit': (B, [P]),
        'tchdbiternext': (P, [P, IP]),
        'tchdbfwmkeys': (P, [P, CP, I, I]),
        'tchdbaddint': (I, [P, CP, I, I]),
        'tchdbadddouble': (ctypes.c_double, [P, CP, I, ctypes.c_double]),
        'tchdbsync': (B, [P]),
        'tchdbvanish': (B, [P]),
        'tchdbrnum': (U64, [P]),
        'tchdbfsiz': (U64, [P]),
        'tclistnum': (I, [P]),
        'tclistval': (P, [P, I, IP]),
        'tclistdel': (None, [P]),
        'tcfree': (None, [P]),
    }
    for fname, (restype, argtypes) in signatures.items():
        func = getattr(lib, fname)
        func.restype = restype
        func.argtypes = argtypes
    _TC = lib
    return lib


class CabinetStore(object):
    """Records in a Tokyo Cabinet hash database file (.tch)."""

    kind = 'hash'

    def __init__(self, path):
        self._tc = tc = _library()
        self.path = path
        self._hdb = tc.tchdbnew()
        if not tc.tchdbopen(self._hdb, path.encode('utf-8') if not isinstance(path, bytes) else path,
                            _HDBOWRITER | _HDBOCREAT | _HDBOLCKNB):
            message = self._error()
            tc.tchdbdel(self._hdb)
            self._hdb = None
            raise StoreError('cannot open %s: %s' % (path, message))

    def _error(self):
        return self._tc.tchdberrmsg(self._tc.tchdbecode(self._hdb)).decode('ascii', 'replace')

    def _bytes_at(self, ptr, size):
        """Copy a malloc'd Tokyo Cabinet buffer into Python and free it."""
        if not ptr:
            return None
        try:
            return ctypes.string_at(ptr, size)
        finally:
            self._tc.tcfree(ptr)

    def close(self):
        if self._hdb is not None:
            self._tc.tchdbclose(self._hdb)
            self._tc.tchdbdel(self._hdb)
            self._hdb = None

    def sync(self):
        return bool(self._tc.tchdbsync(self._hdb))

    def get(self, key):
        size = ctypes.c_int()
        ptr = self._tc.tchdbget(self._hdb, key, len(key), ctypes.byref(size))
        return self._bytes_at(ptr, size.value)

    def put(self, key, value):
        return bool(self._tc.tchdbput(self._hdb, key, len(key), value, len(value)))

    def putkeep(self, key, value):
        return bool(self._tc.tchdbputkeep(self._hdb, key, len(key), value, len(value)))

    def putcat(self, key, value):
        return bool(self._tc.tchdbputcat(self._hdb, key, len(key), value, len(value)))

    def out(self, key):
        return bool(self._tc.tchdbout(self._hdb, key, len(key)))

    def addint(self, key, num):
        total = self._tc.tchdbaddint(self._hdb, key, len(key), num)
        return None if total == -2 ** 31 else total

    def adddouble(self, key, num):
        total = self._tc.tchdbadddouble(self._hdb, key, len(key), num)
        return None if total != total else total          # NaN means failure

    def iterinit(self):
        return bool(self._tc.tchdbiterinit(self._hdb))

    def iternext(self):
        size = ctypes.c_int()
        ptr = self._tc.tchdbiternext(self._hdb, ctypes.byref(size))
        return self._bytes_at(ptr, size.value)

    def fwmkeys(self, prefix, limit):
        tc = self._tc
        found = tc.tchdbfwmkeys(self._hdb, prefix, len(prefix), limit)
        try:
            size = ctypes.c_int()
            keys = []
            for i in range(tc.tclistnum(found)):
                ptr = tc.tclistval(found, i, ctypes.byref(size))
                keys.append(ctypes.string_at(ptr, size.value))
            return keys
        finally:
            tc.tclistdel(found)

    def vanish(self):
        return bool(self._tc.tchdbvanish(self._hdb))

    def rnum(self):
        return self._tc.tchdbrnum(self._hdb)

    def size(self):
        return self._tc.tchdbfsiz(self._hdb)


class ClosedStore(object):
    """What is left once the database is closed: ttserver closes it before
    the script's _end() runs, so every write there fails (and is logged
    as failed) and every read finds nothing."""

    kind = 'closed'
    path = ''

    def get(self, key):
        return None

    def put(self, key, value):
        return False

    putkeep = putcat = put

    def out(self, key):
        return False

    def addint(self, key, num):
        return None

    adddouble = addint

    def iterinit(self):
        return False

    def iternext(self):
        return None

    def fwmkeys(self, prefix, limit):
        return []

    def vanish(self):
        return False

    sync = vanish

    def rnum(self):
        return 0

    size = rnum

    def close(self):
        pass


def open_store(dbpath):
    """The store for a ttserver-style database name: ``*`` (or nothing)
    means in memory, a name ending in ``.tch`` a Tokyo Cabinet file."""
    if not dbpath or dbpath == '*':
        return MemoryStore()
    if dbpath.endswith('.tch'):
        return CabinetStore(dbpath)
    raise StoreError('unsupported database %r: use * (in memory) or a path '
                     'ending in .tch (Tokyo Cabinet hash database)' % dbpath)
