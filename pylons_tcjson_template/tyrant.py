"""Talking to Tokyo Tyrant: connections, the shared pool, timeouts.

lib/tcjson.py stores Beaker sessions through this module; it knows nothing
of Beaker.  It wraps pytyrant (which encodes the binary protocol) so that
none of pytyrant's sharp edges reach an application:

* pytyrant's receive loop spins forever when the server closes the socket:
  ``_Socket.recv`` raises ``TyrantUnavailable`` on EOF instead;
* pytyrant sets no timeouts: the kernel enforces ``connect_timeout`` and
  ``io_timeout`` here, so a stopped server costs a request at most those;
* one pytyrant object is one socket and not thread-safe: ``TyrantPool``
  hands each request its own connection and keeps them for reuse.

``TyrantPool.pipeline`` sends several commands in one round trip, which the
session code uses to take a lock and re-read a record at once.
"""
from __future__ import absolute_import

import bisect
import collections
import errno
import hashlib
import logging
import os
import re
import select
import socket
import struct
import threading
import time
import uuid

import pytyrant

DEFAULTS = {'connect_timeout': 1.0, 'io_timeout': 2.0, 'pool_size': 10}
# A reply larger than this is a confused or hostile server, not a record.
MAX_REPLY = 256 * 1024 * 1024
_RECV_SIZE = 64 * 1024       # bytes asked of the socket per read


class TcjsonError(Exception):
    """Base class of this module's errors."""


class ConfigError(TcjsonError, ValueError):
    """A bad option, found when the manager is constructed (at startup)."""


class TyrantUnavailable(TcjsonError):
    """The server refused, timed out or closed the connection."""

    def __init__(self, url, reason, broken=False):
        host, _, port = url.rpartition(':')
        if '|' in url or ';' in url:          # a pair (see DualMasterPair)
            start = 'start its servers, e.g. with `paster tyrant development.ini`'
        else:
            start = ('start one with `ttserver -host %s -port %s` or `paster tyrant '
                     'development.ini`' % (host, port))
        TcjsonError.__init__(self, 'Tokyo Tyrant at %s is unavailable (%s); %s'
                             % (url, reason, start))
        self.url = url
        self.broken = broken     # the connection died (as opposed to: timed out)
        self.from_idle = False   # ...and it had been idle in the pool


# ---------------------------------------------------------------- one server

# A host is a name or an IPv4 address.  IPv6 is refused everywhere:
# ttserver 1.1.41 resolves -host and -mhost to IPv4 only (AF_INET), so an
# IPv6 address could neither be served nor replicated.
_HOST_LABEL = re.compile(r'^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')
URL_FORMS = ('host:port, like 127.0.0.1:1978; several servers: shards separated by '
             '";", the two masters of a replicated pair joined by "|", like '
             'a1:1978|a2:1978;b1:1978|b2:1978')


def _url_error(option, url, problem):
    return ConfigError('%s %r: %s (expected %s)' % (option, url, problem, URL_FORMS))


def _check_host(host, option, url):
    if host.startswith('[') or ':' in host:
        raise _url_error(option, url, '%r is an IPv6 address: Tokyo Tyrant 1.1.41 '
                         'serves and replicates over IPv4 only' % host)
    labels = host.split('.')
    if not host or len(host) > 253 or not all(_HOST_LABEL.match(l) for l in labels):
        raise _url_error(option, url, '%r is not a host name or address' % host)
    if all(label.isdigit() for label in labels) and (
            len(labels) != 4 or any(int(label) > 255 for label in labels)):
        raise _url_error(option, url, '%r is not a host name or address (an IPv4 '
                         'address has four numbers from 0 to 255)' % host)


def _parse_address(text, option, url):
    host, colon, port = text.rpartition(':')
    if not colon:
        raise _url_error(option, url, 'server %r has no port: write host:port' % text)
    _check_host(host, option, url)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _url_error(option, url, 'port %r is not a number from 1 to 65535' % port)
    return host.lower(), int(port)


def parse_servers(url, option='tcjson: url'):
    """The servers of a ``url`` option, validated: a list of shards, each a
    tuple of one 'host:port' (a single server) or two (a dual-master pair).
    `option` names the setting in error messages (ConfigError)."""
    text = (url or '').strip()
    if not text:
        raise _url_error(option, url, 'no server given')
    if '://' in text:
        raise _url_error(option, url, 'give host:port without a scheme')
    shards, seen = [], set()
    for number, part in enumerate(text.split(';'), 1):
        members = [member.strip() for member in part.split('|')]
        if not part.strip():
            raise _url_error(option, url, 'shard %d is empty (a ";" too many?)' % number)
        if len(members) > 2:
            raise _url_error(option, url, 'shard %d names %d servers; a pair has two '
                             '(Tyrant replicates between two masters)'
                             % (number, len(members)))
        if not all(members):
            raise _url_error(option, url, 'shard %d has an empty member (a "|" too '
                             'many?)' % number)
        addresses = []
        for member in members:
            address = '%s:%d' % _parse_address(member, option, url)
            if address in seen:
                raise _url_error(option, url, 'server %s is named twice' % address)
            seen.add(address)
            addresses.append(address)
        shards.append(tuple(addresses))
    return shards


def canonical_url(shards):
    """The ``url`` text of parse_servers' result (lower-case hosts, plain
    port numbers, no spaces)."""
    return ';'.join('|'.join(shard) for shard in shards)


def parse_url(url):
    """The one server of `url` ('host:port') -> (host, port)."""
    shards = parse_servers(url)
    if len(shards) != 1 or len(shards[0]) != 1:
        raise _url_error('tcjson: url', url, 'one server expected here, not several')
    host, _, port = shards[0][0].rpartition(':')
    return host, int(port)


class _Socket(object):
    """What pytyrant calls a socket: sendall/recv, but recv raises
    TyrantUnavailable on EOF and timeout where pytyrant would spin forever.

    Writes are buffered until the first recv, so a request is one packet.
    Reads are buffered too: pytyrant asks for a reply in pieces (status
    byte, length, value), and each piece would cost a system call and a
    release of the GIL; one recv usually brings the whole reply."""

    def __init__(self, url, host, port, connect_timeout, io_timeout):
        self.url, self.io_timeout, self.pid, self.out = url, io_timeout, os.getpid(), []
        self.inbuf, self.inpos = '', 0
        self.received = 0           # bytes of the current reply so far
        try:
            self.sock = socket.create_connection((host, port), connect_timeout)
        except socket.timeout:
            raise TyrantUnavailable(url, 'no connection within connect_timeout=%gs'
                                    % connect_timeout)
        except socket.error as exc:
            raise TyrantUnavailable(url, 'cannot connect: %s' % exc)
        # The kernel enforces io_timeout (SO_RCVTIMEO/SO_SNDTIMEO) on a
        # blocking socket: Python's own timeout mode would add a poll()
        # system call before every send and every recv.
        self.sock.settimeout(None)
        seconds = int(io_timeout)
        timeval = struct.pack('ll', seconds, int((io_timeout - seconds) * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.idle_poller = select.poll()
        self.idle_poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        self.tyrant = _Tyrant(self)

    def _io(self, call, *args):
        try:
            return call(*args)
        except socket.error as exc:
            if exc.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK):     # SO_*TIMEO ran out
                raise TyrantUnavailable(self.url, 'no answer within io_timeout=%gs'
                                        % self.io_timeout)
            raise TyrantUnavailable(self.url, 'connection lost: %s' % exc, broken=True)

    def sendall(self, data):
        self.out.append(data)

    def recv(self, size):
        if self.out:
            data, self.out = ''.join(self.out), []
            self._io(self.sock.sendall, data)
            self.received = 0
        if self.inpos >= len(self.inbuf):
            chunk = self._io(self.sock.recv, max(size, _RECV_SIZE))
            if not chunk:
                raise TyrantUnavailable(self.url, 'server closed the connection',
                                        broken=True)
            self.received += len(chunk)
            if self.received > MAX_REPLY:
                raise TyrantUnavailable(self.url, 'protocol error: reply over %d bytes'
                                        % MAX_REPLY, broken=True)
            self.inbuf, self.inpos = chunk, 0
        start = self.inpos
        self.inpos = start + size
        return self.inbuf[start:self.inpos]

    def idle_ok(self):
        """An idle connection must have nothing to read: data or EOF means
        the server went away (restart) or the stream is out of step."""
        return self.inpos >= len(self.inbuf) and not self.idle_poller.poll(0)

    def close(self):
        self.sock.close()


class _Tyrant(pytyrant.Tyrant):
    """pytyrant's request encoding, minus commands whose codes changed."""

    def vanish(self, *args):
        raise TcjsonError('vanish/copy/restore use pre-1.1.23 codes; never sent')
    copy = restore = vanish

    def next_keys(self, count):
        """Up to `count` iternext answers in one pipelined round trip."""
        for _ in xrange(count):
            pytyrant.socksend(self.sock, pytyrant._t0(pytyrant.C.iternext))
        keys = []
        for _ in xrange(count):
            try:
                pytyrant.socksuccess(self.sock)
                keys.append(pytyrant.sockstr(self.sock))
            except pytyrant.TyrantError:
                pass                                  # the end: one status byte each
        return keys


# Safe to send twice: same effect (out's second answer is only "missing").
_RESENDABLE = frozenset(['get', 'mget', 'vsiz', 'fwmkeys', 'put', 'out',
                         'misc', 'stat', 'rnum'])
# A failure answer of these is the single status byte: connection stays usable.
_ONE_BYTE_FAILURE = frozenset(['get', 'vsiz', 'put', 'putkeep', 'out'])
# What TyrantPool.pipeline may send: each command's request encoder and the
# reader of its answer after the status byte.
_PIPELINED = {
    'get': (lambda key: pytyrant._t1(pytyrant.C.get, key), pytyrant.sockstr),
    'vsiz': (lambda key: pytyrant._t1(pytyrant.C.vsiz, key), pytyrant.socklen),
    'out': (lambda key: pytyrant._t1(pytyrant.C.out, key), None),
    'put': (lambda key, value: pytyrant._t2(pytyrant.C.put, key, value), None),
    'putkeep': (lambda key, value: pytyrant._t2(pytyrant.C.putkeep, key, value), None),
    'putcat': (lambda key, value: pytyrant._t2(pytyrant.C.putcat, key, value), None),
}


class TyrantPool(object):
    """At most `pool_size` connections to one server, shared by threads."""

    def __init__(self, url, connect_timeout=1.0, io_timeout=2.0, pool_size=10):
        self.url = url.strip()
        self.host, self.port = parse_url(url)
        self.connect_timeout, self.io_timeout = connect_timeout, io_timeout
        self.pool_size = pool_size
        self._fresh_state()

    def _fresh_state(self):
        # After fork the parent's sockets are shared with it: forget them.
        self.pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._idle, self.open_count = [], 0

    def _checkout(self):
        if self.pid != os.getpid():
            self._fresh_state()
        deadline = time.time() + self.connect_timeout + self.io_timeout
        with self._cond:
            while True:
                while self._idle:
                    conn = self._idle.pop()
                    if conn.idle_ok():
                        return conn, True
                    conn.close()
                    self.open_count -= 1
                if self.open_count < self.pool_size:
                    self.open_count += 1
                    break
                if time.time() >= deadline:
                    raise TyrantUnavailable(self.url, 'all %d pooled connections stayed '
                                            'busy' % self.pool_size)
                self._cond.wait(deadline - time.time())
        try:
            return _Socket(self.url, self.host, self.port, self.connect_timeout,
                           self.io_timeout), False
        except Exception:
            self._checkin(None, False)
            raise

    def _checkin(self, conn, reuse):
        if conn is not None and conn.pid != self.pid:
            conn.close()                                    # from before a fork
            return
        with self._cond:
            if reuse:
                self._idle.append(conn)
            else:
                if conn is not None:
                    conn.close()
                self.open_count -= 1
            self._cond.notify()

    def request(self, command, *args):
        """One round trip: a pytyrant Tyrant method name and its arguments.
        pytyrant.TyrantError is the server's "no" (missing key, putkeep on
        an existing key)."""
        return self._run(command in _RESENDABLE,
                         lambda tyrant: getattr(tyrant, command)(*args),
                         reusable_after_no=command in _ONE_BYTE_FAILURE)

    def pipeline(self, *commands):
        """Several commands in one round trip: ``('putkeep', key, value),
        ('get', key)`` -> a list with, for each command in order, its
        result (get: the value; vsiz: the size; the others: None) or,
        where the server said no, the pytyrant.TyrantError itself
        (returned, not raised).  Only commands whose "no" is one byte
        (get, vsiz, put, putkeep, putcat, out), so every later reply is
        still read in step."""
        for command in commands:
            if command[0] not in _PIPELINED:
                raise ValueError('tyrant: %r cannot be pipelined' % (command[0],))

        def send_all_then_read_all(tyrant):
            for command in commands:
                encode = _PIPELINED[command[0]][0]
                pytyrant.socksend(tyrant.sock, encode(*command[1:]))
            results = []
            for command in commands:
                read_answer = _PIPELINED[command[0]][1]
                try:
                    pytyrant.socksuccess(tyrant.sock)
                    results.append(read_answer(tyrant.sock) if read_answer else None)
                except pytyrant.TyrantError as exc:
                    if exc.args[:1] != (1,):
                        raise
                    results.append(exc)
            return results
        resendable = all(command[0] in _RESENDABLE for command in commands)
        return self._run(resendable, send_all_then_read_all, reusable_after_no=True)

    def _run(self, resendable, work, reusable_after_no):
        try:
            return self._attempt(work, reusable_after_no)
        except TyrantUnavailable as exc:
            if not (exc.from_idle and exc.broken and resendable):
                raise
        # An idle connection died under us (server restarted): its idle
        # siblings are as dead, so drop them and resend once, fresh.
        self.close()
        return self._attempt(work, reusable_after_no)

    def _attempt(self, work, reusable_after_no):
        conn, was_idle = self._checkout()
        try:
            result = work(conn.tyrant)
        except pytyrant.TyrantError as exc:
            if exc.args[:1] != (1,):           # Tyrant answers 0 or 1, nothing else
                self._checkin(conn, False)
                raise TyrantUnavailable(self.url, 'protocol error: status byte %r'
                                        % (exc.args[:1],), broken=True)
            self._checkin(conn, reusable_after_no)
            raise
        except TyrantUnavailable as exc:
            self._checkin(conn, False)
            exc.from_idle = was_idle
            raise
        except BaseException:
            self._checkin(conn, False)                      # state unknown: drop it
            raise
        self._checkin(conn, True)
        return result

    def close(self):
        with self._cond:
            for conn in self._idle:
                conn.close()
            self.open_count -= len(self._idle)
            self._idle = []


_pools = {}
_pools_lock = threading.Lock()


def pool_option(name, value, kind):
    """A pool option from its INI string (None: the default): a positive,
    finite number of seconds, or a positive whole number of connections."""
    if value is None or value == '':
        return DEFAULTS[name]
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not 0 < number < 1e6:        # also refuses nan and inf
        raise ConfigError('tcjson: %s must be a positive %s, got %r' % (
            name, 'number of seconds' if kind is float else 'whole number', value))
    return number


def _pool_options(connect_timeout, io_timeout, pool_size):
    return dict(connect_timeout=pool_option('connect_timeout', connect_timeout, float),
                io_timeout=pool_option('io_timeout', io_timeout, float),
                pool_size=pool_option('pool_size', pool_size, int))


def get_pool(url, connect_timeout=None, io_timeout=None, pool_size=None):
    """The process's pool for `url`, one server (created on first use; no I/O)."""
    opts = _pool_options(connect_timeout, io_timeout, pool_size)
    parse_url(url)
    key = url.strip()
    with _pools_lock:
        if key not in _pools:
            _pools[key] = TyrantPool(key, **opts)
        return _pools[key]


def _bytes(text):
    if isinstance(text, unicode):
        return text.encode('utf-8')
    return text if isinstance(text, str) else str(text)


# ----------------------------------------------------------- several servers
#
# ``url = a1:1978|a2:1978;b1:1978|b2:1978``: shards separated by ";", each
# one server or a dual-master pair joined by "|" (parse_servers).
#
# Sharding.  Each shard owns RING_POINTS points on a 32-bit circle, taken
# from md5 of the shard's text; a key belongs to the shard owning the first
# point at or after md5(key).  Every client builds the same ring from the
# same url, and a new shard takes over only the keys that land just before
# its own points: about 1/N of them.  Renaming a shard's servers moves its
# keys like removing it and adding another.
#
# Pairs.  Two ttservers that replicate from each other (-mhost/-mport) hold
# the same records.  A key prefers one member (a bit of its md5), so every
# client sends it to the same server and the two masters never take
# concurrent writes of one record.  When that member refuses, closes or
# times out, the request goes to the other within the same request, and
# the failed member is marked down: later requests go to the other at once,
# and a watcher thread (never a request) probes the down member every
# PROBE_INTERVAL seconds.  Replication is asynchronous, and a restarted
# ttserver asks for its partner's log only a second or two after it
# reconnects, so a member that missed writes gets its keys back only after
# a catch-up marker written on each member has appeared on the other, and
# then through a handover: requests for its keys wait while those still on
# the partner finish and one more marker crosses (milliseconds).  When a
# member fails, the writes it answered lately are replayed on the partner
# first (_replay_recent), and keys that may receive a late, older write are
# fenced (see "fenced keys" below).
#
# What is sent again after a failure.  A request that never reached the
# server (no connection) goes to the other member whatever it is.  One
# whose answer never came may have been applied, and even replicated:
# commands that can be repeated without changing their effect (get, put,
# out, mget, vsiz, fwmkeys, misc, iterinit...) are sent again; putkeep is
# sent again together with a read of its record, and counts as done if the
# record holds exactly the value it wrote (TyrantSession's lock values are
# unique, so that is our own putkeep, applied before the failure: sending it
# blindly would find our own lock and wait for it to expire).  putcat,
# addint and the other non-repeatable commands are not sent again: the
# failure is raised, as its outcome is unknown.  next_keys continues the
# iterator of one server and fails with it (start the scan again).

RING_POINTS = 160           # points per shard on the hash ring
PROBE_INTERVAL = 1.0        # seconds between two looks at a member known to be down
CATCH_UP_LIMIT = 30.0       # seconds a returning member may take to catch up
CATCH_UP_POLL = 0.001       # first pause between two reads of a marker (doubling)
# Seconds a handover (requests for the returning member's keys held) may
# wait for the last marker; replication takes milliseconds.
HANDOVER_LIMIT = 1.0
# When a member fails, the writes it answered in the last connect_timeout +
# io_timeout + JOURNAL_SECONDS (it may have stopped that long before a
# request noticed; at most JOURNAL_LENGTH requests) are written again on
# its partner.
JOURNAL_SECONDS = 0.5
JOURNAL_LENGTH = 4096
# One marker record per (application host, process, member written on),
# removed again once seen; outside every Beaker prefix.
CATCH_UP_KEY = 'tcjson:catch-up:%s:%d:%s'

log = logging.getLogger(__name__)
_HOST = socket.gethostname()
# The members of a pair to try, in order, when both are up.
_BOTH_UP_ORDER = ((0, 1), (1, 0))


class HashRing(object):
    """Which of several named shards a key digest belongs to."""

    def __init__(self, names, points_per_shard=RING_POINTS):
        points = []
        for index, name in enumerate(names):
            for replica in xrange(points_per_shard // 4):
                digest = hashlib.md5('%s#%d' % (name, replica)).digest()
                points.extend((point, name, index)
                              for point in struct.unpack('>4I', digest))
        points.sort()                    # ties, if any, broken by name: same everywhere
        self._points = [point for point, _, _ in points]
        self._owners = [index for _, _, index in points]

    def shard_of(self, digest):
        """Index of the shard owning md5 `digest` (its first 4 bytes)."""
        position = bisect.bisect_left(self._points, struct.unpack_from('>I', digest)[0])
        return self._owners[position % len(self._owners)]


class PairUnavailable(TyrantUnavailable):
    """Both members of a pair are down: the only outage a pair shows."""

    def __init__(self, pair, reasons):
        TcjsonError.__init__(self, 'Tokyo Tyrant pair %s is unavailable, both members '
                             'are down (%s); start them, e.g. with `paster tyrant '
                             'development.ini`' % (pair, '; '.join(reasons)))
        self.url, self.broken, self.from_idle, self.sent = pair, False, False, False


class _MemberPool(TyrantPool):
    """The pool of one member of a pair.  A failure to get a connection is
    marked ``sent = False`` (the request never left, so the other member
    may take it, whatever it was); connections opened or tried are counted
    (``connects``) for tests and benchmarks."""

    def __init__(self, *args, **kwargs):
        TyrantPool.__init__(self, *args, **kwargs)
        self.connects = 0
        self._count_lock = threading.Lock()

    def _counted(self):
        with self._count_lock:
            self.connects += 1

    def _checkout(self):
        try:
            conn, was_idle = TyrantPool._checkout(self)
        except TyrantUnavailable as exc:
            exc.sent = False
            self._counted()
            raise
        if not was_idle:
            self._counted()
        return conn, was_idle


def _pipeline_putkeep_resolved(pool, commands):
    """`commands` pipelined again after a try whose answer never came: each
    putkeep with a read of its record, and counted as done when the record
    holds exactly the value it writes (the first try was applied)."""
    sent = []
    for command in commands:
        sent.append(command)
        if command[0] == 'putkeep':
            sent.append(('get', command[1]))
    answers = iter(pool.pipeline(*sent))
    results = []
    for command in commands:
        result = next(answers)
        if command[0] == 'putkeep':
            held = next(answers)
            if isinstance(result, pytyrant.TyrantError) and held == command[2]:
                result = None
        results.append(result)
    return results


# The commands whose answer a fenced key changes (see DualMasterPair).
_FENCE_AWARE = frozenset(['get', 'vsiz', 'put', 'out', 'putkeep'])


def _request_writes(command, args):
    """[(key, value, None for a delete)] that request() makes, if it can be
    replayed; None for reads (and putcat and the like, which cannot)."""
    if command in ('put', 'putkeep'):
        return [(args[0], args[1])]
    if command == 'out':
        return [(args[0], None)]
    if command == 'misc' and args[0] == 'outlist':
        return [(key, None) for key in args[2]]
    if command == 'misc' and args[0] == 'putlist':
        return zip(args[2][::2], args[2][1::2])
    return None


def _pipeline_writes(commands, results):
    """What a pipeline wrote: its puts, outs and the putkeeps that took."""
    return [(command[1], None if command[0] == 'out' else command[2])
            for command, result in zip(commands, results)
            if command[0] in ('put', 'out') or (command[0] == 'putkeep' and result is None)]


def _putkeep_resolved(pool, key, value):
    result = _pipeline_putkeep_resolved(pool, [('putkeep', key, value)])[0]
    if isinstance(result, pytyrant.TyrantError):
        raise result


class PairRoute(object):
    """A pair as the keys preferring one of its members see it: what
    ServerSet.for_key() returns for them, with TyrantPool's request(),
    pipeline() and url."""

    __slots__ = ('pair', 'preferred', 'url')

    def __init__(self, pair, preferred):
        self.pair, self.preferred, self.url = pair, preferred, pair.name

    def request(self, command, *args):
        return self.pair.request(self.preferred, command, args)

    def pipeline(self, *commands):
        return self.pair.pipeline(self.preferred, commands)


class DualMasterPair(object):
    """Two servers replicating from each other; failover between them.

    State per member: down (a request failed on it; requests skip it) and
    behind (it went down while its partner took writes, so it must catch up
    before it gets keys back).  When both are down, the one that is not
    behind may come back alone; the other waits for its partner, since
    serving from it would bring back old sessions.
    """

    def __init__(self, addresses, connect_timeout, io_timeout, pool_size,
                 probe_interval=PROBE_INTERVAL):
        self.name = '|'.join(addresses)
        self.members = tuple(_MemberPool(address, connect_timeout, io_timeout, pool_size)
                             for address in addresses)
        self.routes = (PairRoute(self, 0), PairRoute(self, 1))
        self.probe_interval = probe_interval
        self._down = [False, False]
        self._behind = [False, False]
        self._reasons = [None, None]
        self._state = threading.Lock()
        self._detours = [0, 0]        # by preferred member: requests on its partner now
        self._detours_done = threading.Condition(self._state)
        self._handover = [None, None]     # an Event while a member's keys change hands
        self._fenced = {}                 # key: (member whose failure fenced it, value)
        # Per member, (time, [(key, value or None)]) of the writes it answered.
        self._recent = (collections.deque(maxlen=JOURNAL_LENGTH),
                        collections.deque(maxlen=JOURNAL_LENGTH))
        self._watcher_pid = None      # the process whose watcher thread runs
        self._scan_member = None      # where the last iterinit went

    def route(self, digest):
        return self.routes[ord(digest[4]) & 1]

    def is_down(self, index):
        return self._down[index]

    # -- requests
    def request(self, preferred, command, args):
        if self._fenced and command in _FENCE_AWARE and args[0] in self._fenced:
            return self._fenced_request(preferred, command, args)
        return self._plain_request(preferred, command, args)

    def pipeline(self, preferred, commands):
        if self._fenced and any(command[1] in self._fenced for command in commands):
            return [self._answer(preferred, command) for command in commands]
        return self._plain_pipeline(preferred, commands)

    def _answer(self, preferred, command):
        """One command of a pipeline on its own: its result, or the
        server's "no" returned as pipeline() returns it."""
        try:
            return self.request(preferred, command[0], command[1:])
        except pytyrant.TyrantError as exc:
            return exc

    def _plain_request(self, preferred, command, args):
        if command == 'next_keys':
            return self._continue_scan(args)
        if command == 'iterinit':
            return self._failover(preferred, self._start_scan, self._start_scan)

        def send(pool):
            return pool.request(command, *args)
        if command == 'putkeep':
            resend = lambda pool: _putkeep_resolved(pool, *args)
        else:
            resend = send if command in _RESENDABLE else None
        writes = _request_writes(command, args)
        return self._failover(preferred, send, resend,
                              writes and (lambda result: writes))

    def _plain_pipeline(self, preferred, commands):
        def send(pool):
            return pool.pipeline(*commands)
        if all(command[0] in _RESENDABLE or command[0] == 'putkeep' for command in commands):
            resend = lambda pool: _pipeline_putkeep_resolved(pool, commands)
        else:
            resend = None
        return self._failover(preferred, send, resend,
                              lambda results: _pipeline_writes(commands, results))

    def _failover(self, preferred, send, resend, writes=None):
        """send(pool) to the first member that is up; if that fails, to the
        other: with `send` again if the request never left, else with
        `resend` (None: its outcome is unknown and it cannot be repeated,
        so the failure is raised).  writes(result): what the request wrote,
        [(key, value or None)], kept a moment (see _replay_recent)."""
        down = self._down
        if not (down[0] or down[1]):
            return self._in_turn(_BOTH_UP_ORDER[preferred], send, resend, writes, preferred)
        order, detour = self._degraded_order(preferred)
        try:
            return self._in_turn(order, send, resend, writes, preferred)
        finally:
            if detour:
                with self._state:
                    self._detours[preferred] -= 1
                    self._detours_done.notify_all()

    def _in_turn(self, order, send, resend, writes, preferred):
        failures, unanswered = [], None
        for index in order:
            try:
                result = send(self.members[index])
                written = writes and writes(result)
                if written:
                    if index == preferred:
                        # A detour's writes need no replay: they are proven
                        # replicated before the keys go back (_hand_back).
                        self._recent[index].append((time.time(), written))
                    if unanswered is not None:
                        self._fence(unanswered, written)
                    elif self._fenced:
                        self._refresh_fence(written)
                return result
            except TyrantUnavailable as exc:
                self._lost(index, exc)
                failures.append(exc)
                if getattr(exc, 'sent', True):
                    if resend is None:
                        raise
                    send, unanswered = resend, index
        raise self._unavailable(failures)

    # -- fenced keys
    # A write sent to a member that failed without answering may still be
    # applied there: a stopped server applies what it had received when it
    # is continued, and a killed one may hold writes it applied but had not
    # yet sent to its partner.  Either reaches the partner later through
    # replication and overwrites what was written there since.  So the
    # keys of such writes (and of the writes replayed by _replay_recent)
    # are fenced: this process remembers what it last wrote to each, reads
    # of them are checked against it and repaired, until the failed member
    # has caught up and both members were checked (_settle_fence).

    def _fence(self, index, written):
        with self._state:
            for key, value in written:
                self._fenced[key] = (index, value)

    def _refresh_fence(self, written):
        with self._state:
            for key, value in written:
                if key in self._fenced:
                    self._fenced[key] = (self._fenced[key][0], value)

    def _fenced_request(self, preferred, command, args):
        """get, vsiz and putkeep of a fenced key answered from what this
        process last wrote to it (repairing a member that holds something
        else); put and out as usual (they set what is remembered)."""
        key = args[0]
        fenced = self._fenced.get(key)
        if fenced is None or command in ('put', 'out'):
            return self._plain_request(preferred, command, args)
        value = fenced[1]
        if command == 'putkeep':
            if value is not None:
                raise pytyrant.TyrantError(1)       # it exists
            return self._plain_request(preferred, 'put', args)
        if command == 'get':
            try:
                found = self._plain_request(preferred, 'get', args)
            except pytyrant.TyrantError:
                found = None
            if found != value:                      # an old write arrived late: undo it
                self._plain_request(preferred, *(('out', (key,)) if value is None
                                                 else ('put', (key, value))))
        if value is None:
            raise pytyrant.TyrantError(1)
        return value if command == 'get' else len(value)

    def _settle_fence(self, index):
        """With member `index` caught up, make both members hold what this
        process last wrote to the keys fenced by its failure, and unfence
        them."""
        with self._state:
            keys = [key for key, (where, _) in self._fenced.items() if where == index]
        if not keys:
            return
        for member in self.members:
            found = member.pipeline(*[('get', key) for key in keys])
            with self._state:
                wanted = [(key, self._fenced.get(key, (None, None))[1]) for key in keys]
            repairs = [('out', key) if value is None else ('put', key, value)
                       for (key, value), now in zip(wanted, found)
                       if (None if isinstance(now, pytyrant.TyrantError) else now) != value]
            if repairs:
                member.pipeline(*repairs)
        with self._state:
            for key in keys:
                if self._fenced.get(key, (None,))[0] == index:    # not fenced again since
                    del self._fenced[key]

    def _degraded_order(self, preferred):
        """The members up, preferred first, while one is down; and whether
        the request is a detour (its preferred member is down), counted so
        that a returning member can wait for the detours to end.  While the
        preferred member takes its keys back, wait for the handover."""
        self._keep_watching()
        while True:
            with self._state:
                handover = self._handover[preferred]
                if handover is None:
                    order = tuple(index for index in (preferred, 1 - preferred)
                                  if not self._down[index])
                    detour = order[:1] != (preferred,) and bool(order)
                    if detour:
                        self._detours[preferred] += 1
                    return order, detour
            handover.wait()

    def _start_scan(self, pool):
        """iterinit: Tyrant's iterator lives in one server, so next_keys must
        follow iterinit there (iterinit itself can be sent again)."""
        pool.request('iterinit')
        self._scan_member = self.members.index(pool)

    def _continue_scan(self, args):
        index = self._scan_member
        if index is None:
            raise TcjsonError('tyrant: next_keys on %s without iterinit' % self.name)
        try:
            return self.members[index].request('next_keys', *args)
        except TyrantUnavailable as exc:
            self._lost(index, exc)
            raise                 # the iterator went with its server: scan again

    def _unavailable(self, failures):
        reasons = [str(exc) for exc in failures]
        reasons += ['%s: %s' % (self.members[index].url, self._reasons[index])
                    for index in (0, 1) if not failures and self._reasons[index]]
        return PairUnavailable(self.name, reasons)

    # -- health
    def _lost(self, index, exc):
        """A request failed on member `index`: mark it down, and replay its
        last writes on the partner before the partner serves its keys."""
        with self._state:
            replaying = self._handover[index]
            first = not self._down[index]
            if first:
                self._down[index] = True
                self._reasons[index] = str(exc)
                if not self._down[1 - index]:
                    self._behind[index] = True      # its partner takes the writes now
                    replaying = self._handover[index] = threading.Event()
                self._start_watcher()
        if not first:
            if replaying is not None:
                replaying.wait()                    # another thread replays its writes
            return
        self.members[index].close()                 # its idle connections are dead too
        log.warning('Tokyo Tyrant %s of pair %s is down (%s); its keys go to %s until it '
                    'is back and has caught up', self.members[index].url, self.name, exc,
                    self.members[1 - index].url)
        if replaying is not None:
            try:
                self._replay_recent(index)
            finally:
                with self._state:
                    self._handover[index] = None
                replaying.set()

    def _replay_recent(self, index):
        """Write again on the partner what member `index` acknowledged
        lately.  Replication is asynchronous: a member answers
        before its partner has the record, so a write it acknowledged just
        before dying may be missing there, and the next request of that
        session would read the session as it was one request earlier.
        Writes are replayed in order, the last per key; requests for the
        member's keys wait meanwhile (one round trip)."""
        member = self.members[index]
        cutoff = time.time() - member.connect_timeout - member.io_timeout - JOURNAL_SECONDS
        latest = collections.OrderedDict()
        for moment, entries in list(self._recent[index]):
            if moment >= cutoff:
                for key, value in entries:
                    latest.pop(key, None)
                    latest[key] = value
        self._recent[index].clear()
        if not latest:
            return
        commands = [('out', key) if value is None else ('put', key, value)
                    for key, value in latest.iteritems()]
        try:
            self.members[1 - index].pipeline(*commands)
        except TyrantUnavailable as exc:
            self._lost(1 - index, exc)
            return
        self._fence(index, latest.items())

    def _restore(self, index):
        with self._state:
            self._down[index] = self._behind[index] = False
            self._reasons[index] = None
            if self._down[1 - index]:
                self._behind[1 - index] = True
        log.warning('Tokyo Tyrant %s of pair %s is back and has its keys again',
                    self.members[index].url, self.name)

    def _hand_back(self, index):
        """Give member `index` its keys back without a stale read: hold new
        requests for them, let those still on the partner finish, and wait
        until a marker written on the partner after them has arrived."""
        with self._state:
            self._handover[index] = threading.Event()
            deadline = time.time() + self.members[index].connect_timeout + \
                self.members[index].io_timeout
            while self._detours[index] and time.time() < deadline:
                self._detours_done.wait(deadline - time.time())
        try:
            if self._markers_arrive([1 - index], HANDOVER_LIMIT):
                self._settle_fence(index)
                self._restore(index)
        except (TyrantUnavailable, pytyrant.TyrantError):
            pass                                    # it stays down; the next probe retries
        finally:
            with self._state:
                held, self._handover[index] = self._handover[index], None
            held.set()

    def _start_watcher(self):
        """With self._state held: a watcher thread for this process."""
        if self._watcher_pid == os.getpid():
            return
        self._watcher_pid = os.getpid()
        watcher = threading.Thread(target=self._watch, name='tyrant watcher %s' % self.name)
        watcher.daemon = True
        watcher.start()

    def _keep_watching(self):
        """After a fork only the forking thread survives: a member marked
        down before it needs a watcher in this process too."""
        if self._watcher_pid != os.getpid():
            with self._state:
                if self._down[0] or self._down[1]:
                    self._start_watcher()

    def _watch(self):
        while True:
            time.sleep(self.probe_interval)
            with self._state:
                down = [index for index in (0, 1) if self._down[index]]
                if not down:
                    self._watcher_pid = None
                    return
            for index in down:
                try:
                    self._try_to_restore(index)
                except Exception:                   # keep watching whatever happens
                    log.exception('tyrant: checking %s failed', self.members[index].url)

    def _try_to_restore(self, index):
        if self._handover[index] is not None:
            return                                  # its writes are being replayed
        try:
            self.members[index].request('rnum')
        except TyrantUnavailable:
            return                                  # still down
        partner = 1 - index
        if not self._behind[index]:
            self._restore(index)                    # nothing to catch up with
        elif not self._down[partner] and self._markers_arrive([index, partner],
                                                             CATCH_UP_LIMIT):
            self._hand_back(index)

    def _markers_arrive(self, sources, limit):
        """Write a marker on each member in `sources`; whether each has
        reached the other member within `limit` seconds.  Replication
        applies records in log order, so a marker that arrived brings
        everything logged before it."""
        token = uuid.uuid4().hex
        written = [(where, CATCH_UP_KEY % (_HOST, os.getpid(), self.members[where].url))
                   for where in sources]
        try:
            for where, key in written:
                self.members[where].request('put', key, token)
            waiting = [(1 - where, key) for where, key in written]
            deadline, pause = time.time() + limit, CATCH_UP_POLL
            while waiting:
                waiting = [(where, key) for where, key in waiting
                           if self._read(where, key) != token]
                if waiting and time.time() > deadline:
                    log.warning('tyrant: a write on %s has not reached %s within %g s; does '
                                'each replicate from the other (-ulog, -mhost, -mport)?',
                                self.members[1 - waiting[0][0]].url,
                                self.members[waiting[0][0]].url, limit)
                    return False
                if waiting:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
            for where, key in written:
                self.members[where].request('out', key)
        except (TyrantUnavailable, pytyrant.TyrantError):
            return False                            # try again at the next probe
        return True

    def _read(self, where, key):
        try:
            return self.members[where].request('get', key)
        except pytyrant.TyrantError:
            return None

    def close(self):
        for member in self.members:
            member.close()


class ServerSet(object):
    """The servers named by one ``url`` option, and which of them holds a key.

    ``for_key(key)`` gives what serves that key: an object with
    ``request()`` and ``pipeline()`` as TyrantPool has them, so the caller
    never knows how many servers there are.  ``shards()`` gives one such
    object per shard, for work that must visit every record once (purge).
    For one plain server both give its TyrantPool itself: nothing is added
    to a request.
    """

    def __init__(self, url, shards):
        self.url = url
        self.servers = shards          # per shard: a TyrantPool or a DualMasterPair
        single = len(shards) == 1 and not isinstance(shards[0], DualMasterPair)
        self._single = shards[0] if single else None
        self._ring = HashRing([_shard_name(shard) for shard in shards]) \
            if len(shards) > 1 else None

    def for_key(self, key):
        if self._single is not None:
            return self._single
        digest = hashlib.md5(_bytes(key)).digest()
        shard = self.servers[self._ring.shard_of(digest)] if self._ring else self.servers[0]
        return shard.route(digest) if isinstance(shard, DualMasterPair) else shard

    def shard_index(self, key):
        """Which shard holds `key` (0 with one shard)."""
        if self._ring is None:
            return 0
        return self._ring.shard_of(hashlib.md5(_bytes(key)).digest())

    def shards(self):
        return [shard.routes[0] if isinstance(shard, DualMasterPair) else shard
                for shard in self.servers]


def _shard_name(shard):
    return shard.name if isinstance(shard, DualMasterPair) else shard.url


_server_sets = {}


def get_servers(url, connect_timeout=None, io_timeout=None, pool_size=None):
    """The process's ServerSet for `url` (created on first use; no I/O).
    A bad url or option raises ConfigError (at startup: Beaker constructs
    a manager for its first request)."""
    key = (url or '').strip()
    servers = _server_sets.get(key)
    if servers is None:
        servers = _build_servers(url, _pool_options(connect_timeout, io_timeout, pool_size))
        with _pools_lock:
            servers = _server_sets.setdefault(key, servers)
    return servers


def _build_servers(url, options):
    shards = parse_servers(url)
    if len(shards) == 1 and len(shards[0]) == 1:
        return ServerSet(url.strip(), [get_pool(url, **options)])
    return ServerSet(canonical_url(shards),
                     [DualMasterPair(shard, **options) if len(shard) == 2
                      else get_pool(shard[0], **options) for shard in shards])
