"""What each Tyrant command does to a store, and the bytes it answers.

`Dispatcher.handle(request)` returns the response bytes (or a
`protocol.Streamed` answer for mget and misc getlist), or ``None`` for
putnr, which ttserver never answers.  Responses follow ttserver 1.1.41 byte
for byte (see tests/test_devtyrant_transcripts.py).

The event loop calls the dispatcher, and so do the threads that run Lua
extension calls (`extension`): `Dispatcher.lock` makes each command, with
its update log record, one step that no other thread sees half done.
"""
from __future__ import absolute_import

import os
import platform
import resource
import struct
import threading
import time

from . import protocol, ulog
from .events import log
from .mask import CommandMask, refusal
from .protocol import FAILURE, SUCCESS

VERSION = '1.1.41'
PROTOCOL_VERSION = '0.91'

_FRACT = 1000000000000           # adddouble sends the fraction times 1e12
_DOUBLE_PAIR = struct.Struct('>qq')
_RESTORE_CHUNK = 1024 * 1024
_CHECK_CONSISTENCY = 1           # restore's (and setmst's) opts bit 1
# stat counts failures in three lines: every kind of put, out, and get.
_MISS_KIND = {'put': 'put', 'putkeep': 'put', 'putcat': 'put', 'putshl': 'put',
              'putnr': 'put', 'out': 'out', 'get': 'get'}


def _status(ok):
    return SUCCESS if ok else FAILURE


def _failed(command):
    """A logged command's answer when it failed (misc: an empty list)."""
    if command == 'misc':
        return protocol.list_response([], status=FAILURE)
    return FAILURE


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
    """Runs requests against one store, counts them for ``stat`` and writes
    what they change to the update log (`journal`, when there is one).
    Commands the server's -mask forbids (`mask`, a mask.CommandMask) are
    counted and refused as ttserver refuses them."""

    def __init__(self, store, sid=0, journal=None, mask=None):
        self.store = store
        self.sid = sid
        self.journal = journal
        self.mask = mask or CommandMask()
        # Set by the server: answers setmst and adds the master's lines to
        # stat (replication.Replication).
        self.replication = None
        self.started = time.time()
        self.counts = dict((name, 0) for name in protocol.COMMANDS.values())
        self.misses = {'put': 0, 'out': 0, 'get': 0}
        # Held for each command (and each write a script makes); not
        # reentrant, so the methods called under it never take it again.
        self.lock = threading.Lock()

    def count(self, request):
        """Count a request for stat's cnt_ lines."""
        self.counts[request.command] += 1

    def handle(self, request):
        """The response for a client's request (None for putnr)."""
        name = request.command
        self.count(request)
        if self.mask.forbids(name):
            return self._refuse(name)
        with self.lock:
            response = self._run(request, self.sid, 0)
        if name in _MISS_KIND and response[:1] == FAILURE:
            self.misses[_MISS_KIND[name]] += 1
        return None if name == 'putnr' else response

    def run_local(self, request):
        """Run a write a script on this server makes (ttserver's tculogadb
        functions): not counted, logged under this server's sid."""
        with self.lock:
            return self._run(request, self.sid, 0)

    def _refuse(self, name):
        """A command -mask forbids: ttserver's answer for it, its log line,
        and a get miss for get (ttserver counts one; no other miss)."""
        log('do_%s: forbidden' % name)
        if name == 'get':
            self.misses['get'] += 1
        if name == 'stat':
            return self._stat_response(self.counter_pairs())
        return refusal(name)

    def redo(self, body, origin_sid, master_sid):
        """Apply a record received from a master: run it without counting
        it, log it as (origin, master).  Returns whether the result here
        matches the one at the origin (the consistency check); raises
        ulog.BadBody for a body that is not a loggable command."""
        with self.lock:
            return self._redo(body, origin_sid, master_sid)

    def _redo(self, body, origin_sid, master_sid):
        request, succeeded_there = ulog.decode_body(body)
        succeeded_here = self._run(request, origin_sid, master_sid)[:1] == SUCCESS
        if request.command in ('addint', 'adddouble'):
            # ttserver only flags a counter that failed here but not there.
            return succeeded_here or not succeeded_there
        return succeeded_here == succeeded_there

    def _run(self, request, sid, mid):
        response = getattr(self, 'do_' + request.command)(*request.args)
        if self.journal is not None:
            body = ulog.command_body(request)
            if body is not None:
                result = FAILURE if protocol.status_of(response) == FAILURE else SUCCESS
                try:
                    self.journal.write(sid, mid, body + result)
                except ulog.UpdateLogError as exc:
                    # As ttserver: the change stays in the database, the
                    # client is told the command failed.
                    log('ERROR do_%s: operation failed: %s' % (request.command, exc))
                    response = _failed(request.command)
        return response

    # ---- writes
    def do_put(self, key, value):
        return _status(self.store.put(key, value))

    def do_putkeep(self, key, value):
        return _status(self.store.putkeep(key, value))

    def do_putcat(self, key, value):
        return _status(self.store.putcat(key, value))

    def do_putshl(self, key, value, width):
        old = self.store.get(key)
        if old is None:
            # ttserver stores a new record whole; only a value appended to
            # an existing one is cut to the last `width` bytes.
            return _status(self.store.put(key, value))
        joined = old + value
        return _status(self.store.put(key, joined[-width:] if width else b''))

    def do_putnr(self, key, value):
        return _status(self.store.put(key, value))       # handle() sends nothing

    def do_out(self, key):
        return _status(self.store.out(key))

    # ---- reads
    def do_get(self, key):
        return protocol.value_response(self.store.get(key))

    def do_mget(self, keys):
        return protocol.pairs_answer(keys, self.read_values)

    def read_values(self, keys, found):
        """Fill `found` (key -> value, None when missing) for the keys it
        does not hold yet: a key named many times is read once and its
        value held once.  Called while a streamed answer is made, outside
        `handle`, so it takes the lock itself."""
        with self.lock:
            store = self.store
            for key in keys:
                if key not in found:
                    found[key] = store.get(key)

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
        """Replay an update log directory from TS on, as ttserver's restore
        does: each record is redone and logged here again, with a new
        timestamp and its original SID:MID.  OPTS bit 1 stops at the first
        record whose result differs from the one logged."""
        directory = path.decode('utf-8', 'replace')
        if not os.path.isdir(directory) or self._is_own_log(directory):
            return FAILURE          # the own log would grow as it is read
        reader = ulog.LogReader(directory, ts)
        while True:
            for _, sid, mid, body in reader.read(_RESTORE_CHUNK):
                try:
                    consistent = self._redo(body, sid, mid)
                except ulog.BadBody:
                    return FAILURE
                if opts & _CHECK_CONSISTENCY and not consistent:
                    return FAILURE
            if reader.exhausted:
                return SUCCESS

    def _is_own_log(self, directory):
        own = self.journal.directory if self.journal is not None else None
        return own is not None and os.path.realpath(own) == os.path.realpath(directory)

    def do_setmst(self, host, port, ts, opts):
        if self.replication is None:
            return FAILURE
        self.replication.set_master(host.decode('utf-8', 'replace'), port, ts, opts)
        return SUCCESS

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
        return self._stat_response(self.stat_pairs())

    @staticmethod
    def _stat_response(pairs):
        text = ''.join('%s\t%s\n' % pair for pair in pairs)
        return SUCCESS + protocol.sized(text.encode('utf-8'))

    def stat_pairs(self):
        """stat's lines in ttserver 1.1.41's order (libver aside, which
        names this server): the replication lines after bigend (see
        replication.Replication.stat_pairs), every command's count, then
        the three miss counts."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now = time.time()
        pairs = [
            ('version', VERSION), ('libver', 'tcjson-tyrant'),
            ('protver', PROTOCOL_VERSION), ('os', platform.system()),
            ('time', '%.6f' % now), ('pid', os.getpid()), ('sid', self.sid),
            ('type', self.store.kind), ('path', self.store.path),
            ('rnum', self.store.rnum()), ('size', self.store.size()),
            ('bigend', 0),
        ]
        if self.replication is not None:
            pairs.extend(self.replication.stat_pairs(now))
        pairs.extend([
            ('loadavg', '%.6f' % os.getloadavg()[0]),
            ('memrss', usage.ru_maxrss * 1024),
            ('ru_user', '%.6f' % usage.ru_utime), ('ru_sys', '%.6f' % usage.ru_stime),
            ('ru_real', '%.6f' % (now - self.started)),
        ])
        return pairs + self.counter_pairs()

    def counter_pairs(self):
        """stat's cnt_ lines: all a stat forbidden by -mask answers."""
        names = [protocol.COMMANDS[code] for code in sorted(protocol.COMMANDS)]
        pairs = [('cnt_' + name, self.counts[name]) for name in names]
        for kind in ('put', 'out', 'get'):
            pairs.append(('cnt_%s_miss' % kind, self.misses[kind]))
        return pairs

    # ---- misc: the list functions of ttserver's hash database
    def do_misc(self, name, opts, args):
        if name == b'getlist':
            return protocol.list_pairs_answer(args, self.read_values)
        handler = _MISC.get(name)
        if handler is None:
            return protocol.list_response([], status=FAILURE)
        items = handler(self.store, args)
        if items is None:
            return protocol.list_response([], status=FAILURE)
        return protocol.list_response(items)


def _misc_putlist(store, args):
    # An odd last argument (a key without its value) is left out, as
    # ttserver does; the pairs before it are stored and the call succeeds.
    for i in range(0, len(args) - 1, 2):
        store.put(args[i], args[i + 1])
    return []


def _misc_outlist(store, keys):
    for key in keys:
        store.out(key)
    return []


_MISC = {
    b'putlist': _misc_putlist,
    b'outlist': _misc_outlist,
}
# getlist: Dispatcher.do_misc (its answer is streamed).
