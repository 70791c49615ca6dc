"""Tokyo Tyrant 1.1.41 binary protocol: request parsing and response bytes.

Every request is the magic byte 0xC8, a command byte, a fixed header of
big-endian integers (mostly sizes) and then the variable parts those sizes
announce.  Responses start with a status byte: 0 success, 1 failure.

`parse_request` turns the start of a buffer into a `Request` or says that
more bytes are needed; the server decides what to do with it.  Nothing here
touches a socket or a database.
"""
from __future__ import absolute_import

import struct

MAGIC = 0xC8

SUCCESS = b'\x00'
FAILURE = b'\x01'

# Command bytes of ttserver 1.1.41.  (PyTyrant 1.1.17 still uses the older
# numbering for vanish/copy/restore: 0x71/0x72/0x73.)
COMMANDS = {
    0x10: 'put', 0x11: 'putkeep', 0x12: 'putcat', 0x13: 'putshl',
    0x18: 'putnr', 0x20: 'out', 0x30: 'get', 0x31: 'mget', 0x38: 'vsiz',
    0x50: 'iterinit', 0x51: 'iternext', 0x58: 'fwmkeys',
    0x60: 'addint', 0x61: 'adddouble', 0x68: 'ext',
    0x70: 'sync', 0x71: 'optimize', 0x72: 'vanish', 0x73: 'copy',
    0x74: 'restore', 0x78: 'setmst',
    0x80: 'rnum', 0x81: 'size', 0x88: 'stat', 0x90: 'misc',
    0xA0: 'repl',
}
CODES = dict((name, code) for code, name in COMMANDS.items())

# Requests larger than this close the connection: a garbage header must not
# make the server buffer gigabytes waiting for a body that never comes.
MAX_REQUEST = 256 * 1024 * 1024

_U32 = struct.Struct('>I')
_U64 = struct.Struct('>Q')


class NeedMore(Exception):
    """The buffer holds only part of a request."""


class BadRequest(Exception):
    """The bytes are not a request this server can frame; close the link."""


class Request(object):
    """One parsed request: its command name and decoded arguments."""
    __slots__ = ('command', 'args')

    def __init__(self, command, args):
        self.command = command
        self.args = args

    def __repr__(self):
        return 'Request(%r, %r)' % (self.command, self.args)


class _Reader(object):
    """Reads fields from a buffer, raising NeedMore past its end."""
    __slots__ = ('buf', 'pos', 'end')

    def __init__(self, buf, pos):
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def unpack(self, st):
        start = self.pos
        stop = start + st.size
        if stop > self.end:
            raise NeedMore()
        self.pos = stop
        return st.unpack_from(self.buf, start)

    def take(self, size):
        start = self.pos
        stop = start + size
        if size > MAX_REQUEST:
            raise BadRequest('field of %d bytes exceeds the request limit' % size)
        if stop > self.end:
            raise NeedMore()
        self.pos = stop
        return bytes(self.buf[start:stop])

    def sized(self):
        """A length-prefixed byte string (4-byte size, then the bytes)."""
        size, = self.unpack(_U32)
        return self.take(size)

    def sized_list(self, count):
        """``count`` length-prefixed byte strings.  Each takes at least its
        4-byte size, so a count the request limit cannot hold is refused at
        once (and no list of ``count`` items is ever built up front)."""
        if count > MAX_REQUEST // _U32.size:
            raise BadRequest('list of %d items exceeds the request limit' % count)
        items = []
        while len(items) < count:
            items.append(self.sized())
        return items


# Fixed headers after magic+command, by command.
_H0 = struct.Struct('')
_H1 = struct.Struct('>I')
_H2 = struct.Struct('>II')
_H3 = struct.Struct('>III')
_H4 = struct.Struct('>IIII')
_ADDINT = struct.Struct('>Ii')
_ADDDOUBLE = struct.Struct('>Iqq')
_RESTORE = struct.Struct('>IQI')
_SETMST = struct.Struct('>IIQI')
_REPL = struct.Struct('>QI')


def _kv(r):
    ksiz, vsiz = r.unpack(_H2)
    return r.take(ksiz), r.take(vsiz)


def _key(r):
    ksiz, = r.unpack(_H1)
    return (r.take(ksiz),)


def _nothing(r):
    return ()


def _putshl(r):
    ksiz, vsiz, width = r.unpack(_H3)
    return r.take(ksiz), r.take(vsiz), width


def _key_list(r):
    count, = r.unpack(_H1)
    return (r.sized_list(count),)


def _fwmkeys(r):
    psiz, limit = r.unpack(_H2)
    if limit >= 0x80000000:             # sent as a signed int: -1 = no limit
        limit -= 0x100000000
    return r.take(psiz), limit


def _addint(r):
    ksiz, num = r.unpack(_ADDINT)
    return r.take(ksiz), num


def _adddouble(r):
    ksiz, integ, fract = r.unpack(_ADDDOUBLE)
    return r.take(ksiz), integ, fract


def _ext(r):
    nsiz, opts, ksiz, vsiz = r.unpack(_H4)
    return r.take(nsiz), opts, r.take(ksiz), r.take(vsiz)


def _misc(r):
    nsiz, opts, count = r.unpack(_H3)
    name = r.take(nsiz)
    return name, opts, r.sized_list(count)


def _copy(r):
    psiz, = r.unpack(_H1)
    return (r.take(psiz),)


def _restore(r):
    psiz, ts, opts = r.unpack(_RESTORE)
    return r.take(psiz), ts, opts


def _setmst(r):
    hsiz, port, ts, opts = r.unpack(_SETMST)
    return r.take(hsiz), port, ts, opts


_PARSERS = {
    'put': _kv, 'putkeep': _kv, 'putcat': _kv, 'putnr': _kv,
    'putshl': _putshl,
    'out': _key, 'get': _key, 'vsiz': _key,
    'mget': _key_list,
    'iterinit': _nothing, 'iternext': _nothing,
    'fwmkeys': _fwmkeys,
    'addint': _addint, 'adddouble': _adddouble,
    'ext': _ext,
    'sync': _nothing, 'vanish': _nothing, 'rnum': _nothing,
    'size': _nothing, 'stat': _nothing,
    'optimize': lambda r: (r.sized(),),
    'copy': _copy, 'restore': _restore, 'setmst': _setmst,
    'misc': _misc,
    'repl': lambda r: r.unpack(_REPL),          # (ts, sid): the slave's request
}


def parse_request(buf, pos=0):
    """Parse one request starting at ``buf[pos]``.

    Returns ``(request, next_pos)``.  Raises `NeedMore` when the request is
    not complete yet and `BadRequest` for an unknown command byte or a
    request over `MAX_REQUEST` (ttserver closes the connection for both).
    The caller checks the magic byte before calling.
    """
    if len(buf) - pos < 2:
        raise NeedMore()
    code = bytearray(buf[pos + 1:pos + 2])[0]
    command = COMMANDS.get(code)
    if command is None:
        raise BadRequest('unknown command 0x%02x' % code)
    reader = _Reader(buf, pos + 2)
    args = _PARSERS[command](reader)
    return Request(command, args), reader.pos


# ------------------------------------------------------------ responses

def pack_u32(n):
    return _U32.pack(n)


def pack_u64(n):
    return _U64.pack(n)


def sized(data):
    """A 4-byte big-endian length followed by the bytes."""
    return _U32.pack(len(data)) + data


def value_response(value):
    """The answer to get: status, size, value; failure when missing."""
    if value is None:
        return FAILURE
    return SUCCESS + _U32.pack(len(value)) + value


def list_response(items, status=SUCCESS):
    """A count followed by length-prefixed items (fwmkeys, misc)."""
    parts = [status, _U32.pack(len(items))]
    parts.extend(_U32.pack(len(item)) + item for item in items)
    return b''.join(parts)


def pairs_response(pairs):
    """mget's answer: count, then (ksiz, vsiz, key, value) per record."""
    parts = [SUCCESS, _U32.pack(len(pairs))]
    for key, value in pairs:
        parts.append(_H2.pack(len(key), len(value)) + key + value)
    return b''.join(parts)


def request_bytes(command, *fields):
    """Build a request: for tests and tools that speak raw bytes.

    ``fields`` are integers (packed as 4 bytes) and byte strings (sent as
    they are), in the order the protocol lays them out.
    """
    parts = [bytearray([MAGIC, CODES[command]])]
    for field in fields:
        if isinstance(field, int):
            parts.append(_U32.pack(field & 0xFFFFFFFF))
        else:
            parts.append(field)
    return b''.join(bytes(p) for p in parts)


class ConnectionClosed(EOFError):
    """The peer closed the connection before `size` bytes came;
    `received` holds what did."""

    def __init__(self, received, size):
        EOFError.__init__(self, 'connection closed after %d of %d bytes'
                          % (len(received), size))
        self.received = received


def recv_exactly(sock, size):
    """Read exactly `size` bytes from a blocking socket (raw clients:
    tests and benchmarks)."""
    data = b''
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionClosed(data, size)
        data += chunk
    return data
