"""Talking to one Tokyo Tyrant server: connections, the shared pool,
timeouts, and what a server must answer.

lib/servers.py chooses the server of a key (shards, dual-master pairs);
lib/records.py and lib/tcjson.py store sessions through both; this module
knows nothing of sessions.  It wraps pytyrant (which encodes the binary
protocol) so that none of pytyrant's sharp edges reach an application:

* pytyrant's receive loop spins forever when the server closes the socket:
  ``_Socket.recv`` raises ``TyrantUnavailable`` on EOF instead;
* pytyrant sets no timeouts: the kernel enforces ``connect_timeout`` and
  ``io_timeout`` here, and a server that timed out is skipped at once (a
  thread probes it every PROBE_INTERVAL) instead of costing every request
  one io_timeout;
* one pytyrant object is one socket and not thread-safe: ``TyrantPool``
  hands each request its own connection and keeps them for reuse.

``pipeline()`` sends several commands in one round trip; ``parallel()``
sends to several servers at once and waits for all of them once.  ``ext``
calls the functions of lib/tcjson.lua (``ttserver -ext``); each connection
first checks, once, that the server runs that script (``probe``).  The
url's syntax (``parse_servers``) lives here too: the template checks
``tyrant_url`` with it before any server exists.
"""
from __future__ import absolute_import

import errno
import logging
import os
import re
import select
import socket
import struct
import threading
import time

import pytyrant
import simplejson as json

DEFAULTS = {'connect_timeout': 1.0, 'io_timeout': 2.0, 'pool_size': 10}
MAX_REPLY = 256 * 1024 * 1024   # a longer reply is a confused or hostile server
PROBE_INTERVAL = 1.0            # seconds between two looks at a server that is down
EXT_VERSION = 1                 # the tcjson.lua this module speaks to
EXT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tcjson.lua')
RECORD_LOCK = pytyrant.RDBXOLCKREC
_RECV_SIZE = 64 * 1024          # bytes asked of the socket per read

log = logging.getLogger(__name__)


class TcjsonError(Exception):
    """Base class of this module's errors."""


class ConfigError(TcjsonError, ValueError):
    """A bad option, found when the servers are set up (at startup)."""


class TyrantUnavailable(TcjsonError):
    """A server refused, timed out, closed the connection or cannot serve."""

    def __init__(self, url, reason, broken=False, timed_out=False):
        TcjsonError.__init__(self, 'Tokyo Tyrant at %s: %s' % (url, reason))
        self.url, self.reason = url, reason
        self.broken = broken         # the connection died
        self.timed_out = timed_out   # the server did not answer in time
        self.from_idle = False       # the connection had been idle in the pool
        self.sent = True             # the request may have reached the server


class ExtensionMissing(TyrantUnavailable):
    """The server does not run lib/tcjson.lua (``ttserver -ext``): every
    change to a session would be refused, so nothing falls back to
    unlocked writes."""

    def __init__(self, url, found):
        host, _, port = url.rpartition(':')
        TyrantUnavailable.__init__(self, url, (
            '%s; start it with the extension: ttserver -host %s -port %s -ext %s ...'
            % (found, host, port, EXT_SCRIPT)))


class ExtRefused(TcjsonError):
    """A tcjson.lua function failed on a server that runs the script: its
    input (a stored record, or the request) was unreadable.  Nothing was
    written."""

    def __init__(self, url, name, key):
        TcjsonError.__init__(self, 'Tokyo Tyrant at %s refused %s on %r (unreadable '
                             'record or request; the server log says why)'
                             % (url, name, key[:40]))


# ---------------------------------------------------------------- the url

# A host is a name or an IPv4 address.  IPv6 is refused everywhere:
# ttserver 1.1.41 resolves -host and -mhost to IPv4 only (AF_INET).
_HOST_LABEL = re.compile(r'^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')
URL_FORMS = ('host:port, like 127.0.0.1:1978; several servers: shards separated by '
             '";", the two masters of a replicated pair joined by "|", like '
             'a1:1978|a2:1978;b1:1978|b2:1978')
# Spellings of one address that must name one server everywhere: a shard's
# place on the ring and a pair member's keys depend on its name.
_SAME_HOST = {'localhost': '127.0.0.1'}


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
    host = host.lower()
    return _SAME_HOST.get(host, host), int(port)


def parse_servers(url, option='tcjson: url'):
    """The servers of a ``url`` option, validated: a list of shards, each a
    tuple of one 'host:port' (a single server) or two (a dual-master pair,
    in sorted order: ``a|b`` and ``b|a`` are one pair).  Hosts are lower
    case, ``localhost`` is 127.0.0.1.  `option` names the setting in
    error messages (ConfigError)."""
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
        shards.append(tuple(sorted(addresses)))
    return shards


def canonical_url(shards):
    """The ``url`` text of parse_servers' result."""
    return ';'.join('|'.join(shard) for shard in shards)


def parse_url(url):
    """The one server of `url` ('host:port') -> (host, port)."""
    shards = parse_servers(url)
    if len(shards) != 1 or len(shards[0]) != 1:
        raise _url_error('tcjson: url', url, 'one server expected here, not several')
    host, _, port = shards[0][0].rpartition(':')
    return host, int(port)


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


def pool_options(connect_timeout, io_timeout, pool_size):
    return dict(connect_timeout=pool_option('connect_timeout', connect_timeout, float),
                io_timeout=pool_option('io_timeout', io_timeout, float),
                pool_size=pool_option('pool_size', pool_size, int))


def _bytes(text):
    if isinstance(text, unicode):
        return text.encode('utf-8')
    return text if isinstance(text, str) else str(text)


# ---------------------------------------------------------------- one socket

class _Socket(object):
    """What pytyrant calls a socket: sendall/recv, but recv raises
    TyrantUnavailable on EOF and timeout where pytyrant would spin forever.

    Writes are buffered until flush() or the first recv, so a request is
    one packet.  Reads are buffered too: pytyrant asks for a reply in pieces
    (status byte, length, value); one recv usually brings all of it."""

    def __init__(self, url, host, port, connect_timeout, io_timeout):
        self.url, self.io_timeout, self.pid, self.out = url, io_timeout, os.getpid(), []
        self.inbuf, self.inpos = '', 0
        self.received = 0            # bytes of the current reply so far
        self.probed = False          # tcjson.lua checked on this connection
        self.just_probed = False     # ... by the request now running on it
        try:
            self.sock = socket.create_connection((host, port), connect_timeout)
        except socket.timeout:
            raise TyrantUnavailable(url, 'no connection within connect_timeout=%gs'
                                    % connect_timeout, timed_out=True)
        except socket.error as exc:
            raise TyrantUnavailable(url, 'cannot connect (%s)' % (exc.strerror or exc))
        # The kernel enforces io_timeout (SO_RCVTIMEO/SO_SNDTIMEO) on a
        # blocking socket: Python's own timeout mode would add a poll()
        # system call before every send and every recv.
        self.sock.settimeout(None)
        seconds = int(io_timeout)
        timeval = struct.pack('ll', seconds, int((io_timeout - seconds) * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tyrant = _Tyrant(self)

    def _io(self, call, *args):
        try:
            return call(*args)
        except socket.error as exc:
            if exc.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK):     # SO_*TIMEO ran out
                raise TyrantUnavailable(self.url, 'no answer within io_timeout=%gs'
                                        % self.io_timeout, timed_out=True)
            raise TyrantUnavailable(self.url, 'connection lost: %s' % exc, broken=True)

    def sendall(self, data):
        self.out.append(data)

    def flush(self):
        if self.out:
            data, self.out = ''.join(self.out), []
            self._io(self.sock.sendall, data)
            self.received = 0

    def recv(self, size):
        self.flush()
        if self.inpos >= len(self.inbuf):
            chunk = self._io(self.sock.recv, max(size, _RECV_SIZE))
            if not chunk:
                raise TyrantUnavailable(self.url, 'the server closed the connection',
                                        broken=True)
            self.received += len(chunk)
            if self.received > MAX_REPLY:
                raise TyrantUnavailable(self.url, 'protocol error: reply over %d bytes'
                                        % MAX_REPLY, broken=True)
            self.inbuf, self.inpos = chunk, 0
        start = self.inpos
        self.inpos = start + size
        return self.inbuf[start:self.inpos]

    def has_unread(self):
        return self.inpos < len(self.inbuf)

    def idle_ok(self):
        """An idle connection must have nothing to read: data or EOF means
        the server went away (restart) or the stream is out of step."""
        if self.has_unread():
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable

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


def _read_mget(sock):
    return dict(pytyrant.sockstrpair(sock) for _ in xrange(pytyrant.socklen(sock)))


# What pipeline() may send: each command's request encoder and the reader of
# its answer after the status byte.  Every one answers "no" with the single
# status byte, so the replies after it are still read in step.
_PIPELINED = {
    'get': (lambda key: pytyrant._t1(pytyrant.C.get, key), pytyrant.sockstr),
    'mget': (lambda keys: pytyrant._tN(pytyrant.C.mget, keys), _read_mget),
    'vsiz': (lambda key: pytyrant._t1(pytyrant.C.vsiz, key), pytyrant.socklen),
    'out': (lambda key: pytyrant._t1(pytyrant.C.out, key), None),
    'put': (lambda key, value: pytyrant._t2(pytyrant.C.put, key, value), None),
    'putkeep': (lambda key, value: pytyrant._t2(pytyrant.C.putkeep, key, value), None),
    'putcat': (lambda key, value: pytyrant._t2(pytyrant.C.putcat, key, value), None),
    'ext': (lambda name, key, value, opts=RECORD_LOCK:
            pytyrant._t3F(pytyrant.C.ext, name, opts, key, value), pytyrant.sockstr),
    'stat': (lambda: pytyrant._t0(pytyrant.C.stat), pytyrant.sockstr),
    'rnum': (lambda: pytyrant._t0(pytyrant.C.rnum), pytyrant.socklong),
}
# Safe to send twice: the same effect (ext: lib/tcjson.lua's merge and
# delete set values, they do not add to them; callers send no other ext
# function through a failover).
RESENDABLE = frozenset(['get', 'mget', 'vsiz', 'fwmkeys', 'put', 'out', 'misc', 'stat',
                         'rnum', 'iterinit', 'ext'])


def _send_pipeline(tyrant, commands):
    for command in commands:
        if command[0] not in _PIPELINED:
            raise ValueError('tyrant: %r cannot be pipelined' % (command[0],))
        pytyrant.socksend(tyrant.sock, _PIPELINED[command[0]][0](*command[1:]))


def _read_pipeline(tyrant, commands):
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


def is_no(answer):
    """Is a pipelined answer the server's "no" (missing key, failed call)?"""
    return isinstance(answer, pytyrant.TyrantError)


# ---------------------------------------------------------------- one server

class TyrantPool(object):
    """At most `pool_size` connections to one server, shared by threads.

    After a timeout (after any failure, for a member of a pair:
    `down_on_any_failure`) requests raise TyrantUnavailable at once,
    without touching the network, until the watcher thread finds the
    server answering again."""

    def __init__(self, url, connect_timeout=1.0, io_timeout=2.0, pool_size=10):
        self.url = url.strip()
        self.host, self.port = parse_url(url)
        self.connect_timeout, self.io_timeout = connect_timeout, io_timeout
        self.pool_size = pool_size
        self.down = None                 # why it is skipped, while it is
        self.identity = None             # tcjson.lua's probe answer (a dict)
        self.on_back = []                # callables run when it answers again
        self.down_on_any_failure = False
        self._checking = None            # the watcher's thread, while it checks it
        self.back_since = 0.0            # when the watcher last found it back
        self._fresh_state()

    def _fresh_state(self):
        # After fork the parent's sockets are shared with it: forget them.
        self.pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        self._idle, self.open_count = [], 0

    def _connect(self):
        return _Socket(self.url, self.host, self.port, self.connect_timeout, self.io_timeout)

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
                    exc = TyrantUnavailable(self.url, 'all %d pooled connections stayed '
                                            'busy' % self.pool_size)
                    exc.sent = False
                    raise exc
                self._cond.wait(deadline - time.time())
        try:
            return self._connect(), False
        except TyrantUnavailable as exc:
            self._checkin(None, False)
            exc.sent = False
            raise

    def _checkin(self, conn, reuse):
        if conn is not None and (conn.pid != self.pid or conn.has_unread()):
            conn.close()                            # from before a fork, or out of step
            reuse = False
            conn = None
        with self._cond:
            if reuse:
                self._idle.append(conn)
            else:
                if conn is not None:
                    conn.close()
                self.open_count -= 1
            self._cond.notify()

    # -- requests
    def request(self, command, *args):
        """One round trip: a pytyrant Tyrant method name and its arguments.
        pytyrant.TyrantError is the server's "no" (missing key, putkeep on
        an existing key)."""
        def work(conn):
            return getattr(conn.tyrant, command)(*args)
        return self._run(command in RESENDABLE, work)

    def pipeline(self, *commands):
        """Several commands in one round trip: a list with, for each command
        in order, its result (get: the value; mget: a dict; vsiz: the
        size; ext: the answer; put, out...: None) or, where the server said
        no, the pytyrant.TyrantError itself (returned, not raised)."""
        def work(conn):
            _send_pipeline(conn.tyrant, commands)
            return _read_pipeline(conn.tyrant, commands)
        return self._run(all(command[0] in RESENDABLE for command in commands), work)

    def ext(self, name, key, value, opts=RECORD_LOCK):
        """Call lib/tcjson.lua's `name`(key, value) under the record lock of
        `key`: its answer, or ExtRefused."""
        answer, = self.pipeline(('ext', name, key, value, opts))
        if is_no(answer):
            raise ExtRefused(self.url, name, key)
        return answer

    def probe(self):
        """tcjson.lua's probe answer for this server (a dict: sid,
        members, born)."""
        def work(conn):
            if not conn.just_probed:               # asked again: members may have changed
                conn.probed = False
                self._ensure_probed(conn)
            return self.identity
        return self._run(True, work)

    def _ensure_probed(self, conn):
        """Before the first command on a connection: does the server run
        lib/tcjson.lua, the version this module speaks?  One round trip per
        connection.  Checked for every command, not only ext calls: a
        server without it must fail at once, not after it has served
        reads and new sessions."""
        conn.just_probed = not conn.probed
        if conn.probed:
            return
        _send_pipeline(conn.tyrant, [('ext', 'probe', '', '', 0)])
        answer, = _read_pipeline(conn.tyrant, [('ext',)])
        identity = None
        if not is_no(answer):
            try:
                identity = json.loads(answer)
            except ValueError:
                pass
        if not isinstance(identity, dict) or identity.get('tcjson') != EXT_VERSION:
            found = ('it runs no lib/tcjson.lua extension' if is_no(answer) else
                     'its -ext script is not this version of lib/tcjson.lua (%r)'
                     % answer[:60])
            raise ExtensionMissing(self.url, found)
        self.identity = identity
        conn.probed = True

    def _run(self, resendable, work):
        if self.down is not None and self.pid == os.getpid() and \
                self._checking is not threading.current_thread():
            exc = TyrantUnavailable(self.url, self.down)
            exc.sent = False
            raise exc
        try:
            return self._attempt(work)
        except TyrantUnavailable as exc:
            if not (exc.from_idle and exc.broken and resendable):
                self._failed(exc)
                raise
        # An idle connection died under us (server restarted): its idle
        # siblings are as dead, so drop them and resend once, fresh.
        self.close()
        try:
            return self._attempt(work)
        except TyrantUnavailable as exc:
            self._failed(exc)
            raise

    def _attempt(self, work):
        conn, was_idle = self._checkout()
        try:
            self._ensure_probed(conn)
            result = work(conn)
        except pytyrant.TyrantError as exc:
            if exc.args[:1] != (1,):           # Tyrant answers 0 or 1, nothing else
                self._checkin(conn, False)
                raise TyrantUnavailable(self.url, 'protocol error: status byte %r'
                                        % (exc.args[:1],), broken=True)
            self._checkin(conn, True)
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

    # -- health
    def _failed(self, exc):
        """A server that timed out is skipped until it answers again: a
        stopped server would otherwise cost every request io_timeout."""
        if not isinstance(exc, ExtensionMissing) and (exc.timed_out or
                                                      self.down_on_any_failure):
            self.mark_down(exc)

    def mark_down(self, exc):
        if self.down is None:
            self.down = ('skipped since %s (%s); requests fail at once until it '
                         'answers again (checked every %g s)'
                         % (time.strftime('%H:%M:%S'), exc.reason, PROBE_INTERVAL))
            log.warning('Tokyo Tyrant at %s is down: %s', self.url, exc.reason)
            _WATCHER.watch(self)

    def answers(self):
        """Does the server answer a cheap command now (a fresh connection,
        the pool's timeouts)?  The watcher's and the health check's probe."""
        try:
            conn = self._connect()
        except TyrantUnavailable:
            return False
        try:
            conn.tyrant.rnum()
            return True
        except (TyrantUnavailable, pytyrant.TyrantError):
            return False
        finally:
            conn.close()

    def back(self):
        """The watcher found it answering: run the on_back checks (which may
        send it requests), then use it again."""
        self._checking = threading.current_thread()
        try:
            if not all(check(self) for check in self.on_back):
                return False
        finally:
            self._checking = None
        self.down = None
        self.back_since = time.time()
        log.warning('Tokyo Tyrant at %s answers again', self.url)
        return True

    def close(self):
        with self._cond:
            for conn in self._idle:
                conn.close()
            self.open_count -= len(self._idle)
            self._idle = []


class _Watcher(object):
    """One thread per process that looks at the servers marked down every
    PROBE_INTERVAL, so that no request ever waits for a server that is
    down; it ends when none is left."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pools = set()
        self._pid = None

    def watch(self, pool):
        with self._lock:
            self._pools.add(pool)
            if self._pid != os.getpid():          # none yet, or the parent's (fork)
                self._pid = os.getpid()
                thread = threading.Thread(target=self._run, name='tyrant watcher')
                thread.daemon = True
                thread.start()

    def _run(self):
        while True:
            time.sleep(PROBE_INTERVAL)
            with self._lock:
                pools = list(self._pools)
            for pool in pools:
                try:
                    done = pool.down is None or (pool.answers() and pool.back())
                except Exception:                 # keep watching whatever happens
                    log.exception('tyrant: checking %s failed', pool.url)
                    done = False
                if done:
                    with self._lock:
                        self._pools.discard(pool)
            with self._lock:
                if not self._pools:
                    self._pid = None
                    return


_WATCHER = _Watcher()


def parallel(jobs):
    """Send each (pool, commands) its pipeline, all before reading any
    answer, and wait for all of them at most one io_timeout: one round trip
    for several servers.  Returns, per job, its results (as pipeline's) or
    the TyrantUnavailable it met."""
    started = []
    for pool, commands in jobs:
        try:
            if pool.down is not None:
                raise TyrantUnavailable(pool.url, pool.down)
            conn, was_idle = pool._checkout()
        except TyrantUnavailable as exc:
            started.append((pool, commands, None, exc))
            continue
        try:
            pool._ensure_probed(conn)
            _send_pipeline(conn.tyrant, commands)
            conn.flush()
            started.append((pool, commands, conn, was_idle))
        except (TyrantUnavailable, pytyrant.TyrantError) as exc:
            pool._checkin(conn, False)
            started.append((pool, commands, None, _as_unavailable(pool, exc)))
    deadline = time.time() + max([pool.io_timeout for pool, _ in jobs] or [0])
    answered = _wait_readable([item[2] for item in started if item[2] is not None], deadline)
    results = []
    for pool, commands, conn, state in started:
        if conn is None:
            results.append(state)
            continue
        if conn not in answered:
            pool._checkin(conn, False)
            results.append(TyrantUnavailable(pool.url, 'no answer within io_timeout=%gs'
                                             % pool.io_timeout, timed_out=True))
            continue
        try:
            results.append(_read_pipeline(conn.tyrant, commands))
            pool._checkin(conn, True)
        except (TyrantUnavailable, pytyrant.TyrantError) as exc:
            pool._checkin(conn, False)
            exc = _as_unavailable(pool, exc)
            if state and exc.broken:              # an idle connection of a restarted server
                try:
                    results.append(pool.pipeline(*commands))
                    continue
                except TyrantUnavailable as again:
                    exc = again
            results.append(exc)
    return results


def _as_unavailable(pool, exc):
    if isinstance(exc, TyrantUnavailable):
        return exc
    return TyrantUnavailable(pool.url, 'protocol error: status byte %r' % (exc.args[:1],),
                             broken=True)


def _wait_readable(conns, deadline):
    """The connections (of `conns`) that have an answer to read by `deadline`."""
    ready = set(conn for conn in conns if conn.has_unread())
    waiting = dict((conn.sock.fileno(), conn) for conn in conns if conn not in ready)
    poller = select.poll()
    for fd in waiting:
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    while waiting:
        remaining = deadline - time.time()
        if remaining <= 0:
            break
        for fd, _ in poller.poll(remaining * 1000):
            ready.add(waiting.pop(fd))
            poller.unregister(fd)
    return ready


_pools = {}
_pools_lock = threading.Lock()


def get_pool(url, connect_timeout=None, io_timeout=None, pool_size=None):
    """The process's pool for `url`, one server (created on first use; no I/O)."""
    opts = pool_options(connect_timeout, io_timeout, pool_size)
    key = '%s:%d' % parse_url(url)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = TyrantPool(key, **opts)
        return _pools[key]
