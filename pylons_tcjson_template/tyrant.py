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

import errno
import os
import select
import socket
import struct
import threading
import time

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
        TcjsonError.__init__(self, 'Tokyo Tyrant at %s is unavailable (%s); start one '
                             'with `ttserver -host %s -port %s` or `paster tyrant '
                             'development.ini`' % (url, reason, host, port))
        self.url = url
        self.broken = broken     # the connection died (as opposed to: timed out)
        self.from_idle = False   # ...and it had been idle in the pool


# ---------------------------------------------------------------- one server

def parse_url(url):
    """'host:port' (a 'tyrant://' scheme is allowed) -> (host, port)."""
    text = (url or '').strip()
    if text.startswith('tyrant://'):
        text = text[len('tyrant://'):]
    host, _, port = text.rstrip('/').rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError('tcjson: url must be host:port, like 127.0.0.1:1978; got %r '
                          '(set beaker.session.url / beaker.cache.url)' % (url,))
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


def get_pool(url, connect_timeout=None, io_timeout=None, pool_size=None):
    """The process's pool for `url` (created on first use; no I/O)."""
    opts = dict(connect_timeout=pool_option('connect_timeout', connect_timeout, float),
                io_timeout=pool_option('io_timeout', io_timeout, float),
                pool_size=pool_option('pool_size', pool_size, int))
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

class ServerSet(object):
    """The servers named by one ``url`` option, and which of them holds a key.

    ``for_key(key)`` gives what serves that key: an object with
    ``request()`` and ``pipeline()`` as TyrantPool has them, so the caller
    never knows how many servers there are.  ``shards()`` gives one such
    object per shard, for work that must visit every record once (purge).
    """

    def __init__(self, url, pool):
        self.url, self._pool = url, pool

    def for_key(self, key):
        return self._pool

    def shards(self):
        return [self._pool]


_server_sets = {}


def get_servers(url, connect_timeout=None, io_timeout=None, pool_size=None):
    """The process's ServerSet for `url` (created on first use; no I/O)."""
    key = (url or '').strip()
    servers = _server_sets.get(key)
    if servers is None:
        pool = get_pool(url, connect_timeout, io_timeout, pool_size)
        with _pools_lock:
            servers = _server_sets.setdefault(key, ServerSet(key, pool))
    return servers
