"""What each Tyrant command does to a store, and the bytes it answers.

`Dispatcher.handle(request)` returns the response bytes, or ``None`` for
putnr, which ttserver never answers.  Responses follow ttserver 1.1.41 byte
for byte (see tests/test_devtyrant_transcripts.py).
"""
from __future__ import absolute_import

import os
import platform
import resource
import struct
import time

from . import protocol
from .protocol import FAILURE, SUCCESS

VERSION = '1.1.41'
PROTOCOL_VERSION = '0.91'

_FRACT = 1000000000000           # adddouble sends the fraction times 1e12
_DOUBLE_PAIR = struct.Struct('>qq')


def _status(ok):
    return SUCCESS if ok else FAILURE


def _c_int64(value):
    """``(int64_t)value`` as ttserver's C code computes it on x86-64:
    truncation toward zero, and INT64_MIN for NaN, infinities and anything
    out of range (where C leaves it undefined and the CPU gives that)."""
    if value != value or not -2.0 ** 63 <= value < 2.0 ** 63:
        return -2 ** 63
    return int(value)


def _split_double(value):
    """adddouble's answer: the integer part and the fraction times 1e12,
    each cast to int64 the way ttserver does."""
    integ = _c_int64(value)
    return integ, _c_int64((value - integ) * _FRACT)


class Dispatcher(object):
    """Runs requests against one store and counts them for ``stat``."""

    def __init__(self, store):
        self.store = store
        self.started = time.time()
        self.counts = dict((name, 0) for name in protocol.COMMANDS.values())
        self.misses = dict((name, 0) for name in protocol.COMMANDS.values())

    def handle(self, request):
        name = request.command
        self.counts[name] += 1
        response = getattr(self, 'do_' + name)(*request.args)
        if response is not None and response[:1] == FAILURE:
            self.misses[name] += 1
        return response

    # ---- writes
    def do_put(self, key, value):
        return _status(self.store.put(key, value))

    def do_putkeep(self, key, value):
        return _status(self.store.putkeep(key, value))

    def do_putcat(self, key, value):
        return _status(self.store.putcat(key, value))

    def do_putshl(self, key, value, width):
        joined = (self.store.get(key) or b'') + value
        return _status(self.store.put(key, joined[-width:] if width else b''))

    def do_putnr(self, key, value):
        self.store.put(key, value)
        return None

    def do_out(self, key):
        return _status(self.store.out(key))

    # ---- reads
    def do_get(self, key):
        return protocol.value_response(self.store.get(key))

    def do_mget(self, keys):
        found = []
        for key in keys:
            value = self.store.get(key)
            if value is not None:
                found.append((key, value))
        return protocol.pairs_response(found)

    def do_vsiz(self, key):
        value = self.store.get(key)
        if value is None:
            return FAILURE
        return SUCCESS + protocol.pack_u32(len(value))

    def do_iterinit(self):
        return _status(self.store.iterinit())

    def do_iternext(self):
        key = self.store.iternext()
        if key is None:
            return FAILURE
        return SUCCESS + protocol.sized(key)

    def do_fwmkeys(self, prefix, limit):
        return protocol.list_response(self.store.fwmkeys(prefix, limit))

    # ---- counters
    def do_addint(self, key, num):
        total = self.store.addint(key, num)
        if total is None:
            return FAILURE
        return SUCCESS + struct.pack('>i', total)

    def do_adddouble(self, key, integ, fract):
        total = self.store.adddouble(key, integ + float(fract) / _FRACT)
        if total is None:
            return FAILURE
        return SUCCESS + _DOUBLE_PAIR.pack(*_split_double(total))

    # ---- scripting, replication and maintenance this server does not offer
    def do_ext(self, name, opts, key, value):
        return FAILURE              # ttserver without Lua answers failure

    def do_optimize(self, params):
        return SUCCESS

    def do_copy(self, path):
        return FAILURE

    def do_restore(self, path, ts, opts):
        return FAILURE

    def do_setmst(self, host, port, ts, opts):
        return FAILURE

    # ---- whole database
    def do_sync(self):
        return _status(self.store.sync())

    def do_vanish(self):
        return _status(self.store.vanish())

    def do_rnum(self):
        return SUCCESS + protocol.pack_u64(self.store.rnum())

    def do_size(self):
        return SUCCESS + protocol.pack_u64(self.store.size())

    def do_stat(self):
        text = ''.join('%s\t%s\n' % pair for pair in self.stat_pairs())
        return SUCCESS + protocol.sized(text.encode('utf-8'))

    def stat_pairs(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        pairs = [
            ('version', VERSION), ('libver', 'tcjson-tyrant'),
            ('protver', PROTOCOL_VERSION), ('os', platform.system()),
            ('time', '%.6f' % time.time()), ('pid', os.getpid()), ('sid', 0),
            ('type', self.store.kind), ('path', self.store.path),
            ('rnum', self.store.rnum()), ('size', self.store.size()),
            ('bigend', 0), ('memrss', usage.ru_maxrss * 1024),
            ('ru_user', '%.6f' % usage.ru_utime), ('ru_sys', '%.6f' % usage.ru_stime),
            ('ru_real', '%.6f' % (time.time() - self.started)),
        ]
        for name in sorted(self.counts):
            pairs.append(('cnt_' + name, self.counts[name]))
            pairs.append(('cnt_%s_miss' % name, self.misses[name]))
        return pairs

    # ---- misc: the list functions of ttserver's hash database
    def do_misc(self, name, opts, args):
        handler = _MISC.get(name)
        if handler is None:
            return protocol.list_response([], status=FAILURE)
        items = handler(self.store, args)
        if items is None:
            return protocol.list_response([], status=FAILURE)
        return protocol.list_response(items)


def _misc_putlist(store, args):
    if len(args) % 2:
        return None
    for i in range(0, len(args), 2):
        store.put(args[i], args[i + 1])
    return []


def _misc_outlist(store, keys):
    for key in keys:
        store.out(key)
    return []


def _misc_getlist(store, keys):
    items = []
    for key in keys:
        value = store.get(key)
        if value is not None:
            items.extend((key, value))
    return items


_MISC = {
    b'putlist': _misc_putlist,
    b'outlist': _misc_outlist,
    b'getlist': _misc_getlist,
}
