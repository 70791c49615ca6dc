"""tcjson-tyrant: a Tokyo Tyrant protocol server for development and tests.

    tcjson-tyrant [-host H] [-port P] [-thnum N] [-ulog DIR] [-ulim N] [-sid N]
                  [-mhost H] [-mport P] [-rts FILE] [-rcc]
                  [-ext FILE] [-extpc NAME PERIOD] [-mask EXPR] [-unmask EXPR] [DBPATH]

Speaks ttserver 1.1.41's binary protocol over TCP.  DBPATH ``*`` (or none)
keeps records in memory; a path ending in ``.tch`` keeps them in a Tokyo
Cabinet hash database that ``tchmgr`` can read.  Where the real ttserver is
installed, use that in production; this one is for machines without it.

One thread serves every client through epoll (poll elsewhere): requests are
small and the stores answer in microseconds, so an event loop gives lower
latency than a thread per client and cannot deadlock.  Replication (the
update log, feeds to slaves, the link to a master: see `replication`) runs
in the same loop; it is driven by socket events and a deadline it reports.
Only ext calls of a Lua script (``-ext``) leave the loop: they run on
``-thnum`` worker threads (`extension`), and their answers come back
through a pipe the loop watches.  A connection waits for its ext answer
before its next request is read, so answers keep the order of requests.
"""
from __future__ import absolute_import, print_function

import argparse
import collections
import errno
import fcntl
import os
import select
import signal
import socket
import sys
import time

from . import extension, protocol, replication, ulog
from .commands import Dispatcher
from .mask import CommandMask
from .storage import ClosedStore, StoreError, open_store

DEFAULT_PORT = 1978
_RECV_SIZE = 256 * 1024
# Bytes that are not the binary protocol (ttserver would read them as its
# memcached/HTTP text protocols, which this server does not speak) are
# dropped unanswered; a client that keeps sending them is cut off.
_TEXT_LIMIT = 64 * 1024
# A client that sends requests but does not read the answers: once this much
# is waiting for it, its further requests stay unread (in its buffer or the
# kernel's) until it catches up, so the server's memory stays bounded.
_OUTBUF_LIMIT = 4 * 1024 * 1024
# While a connection waits for an ext answer (or a streamed answer is still
# being made), its later requests wait in its buffer; past this much the
# rest stays in the kernel's until the answer is out.
_HELD_INPUT = 1024 * 1024


class _Connection(object):
    __slots__ = ('sock', 'fd', 'inbuf', 'outbuf', 'text_bytes', 'watching_out',
                 'reading', 'peer_done', 'feed', 'framer', 'waiting', 'stream')

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()       # kept: a closed socket has no fileno()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.text_bytes = 0
        self.watching_out = False     # registered for EPOLLOUT?
        self.reading = True           # registered for EPOLLIN?
        self.peer_done = False        # client shut its sending side
        self.feed = None              # a slave's connection: its replication.Feed
        self.framer = protocol.Framer()
        self.waiting = False          # an ext call of this connection is running
        self.stream = None            # the rest of a protocol.Streamed answer

    @property
    def busy(self):
        """An answer is still being made: later requests wait."""
        return self.waiting or self.stream is not None


class _Poller(object):
    """epoll where there is one, poll otherwise; the same three calls."""

    def __init__(self):
        if hasattr(select, 'epoll'):
            self._p = select.epoll()
            self.IN, self.OUT = select.EPOLLIN, select.EPOLLOUT
            self.ERR = select.EPOLLERR | select.EPOLLHUP
        else:
            self._p = select.poll()
            self.IN, self.OUT = select.POLLIN, select.POLLOUT
            self.ERR = select.POLLERR | select.POLLHUP | select.POLLNVAL

    def register(self, fd, mask):
        self._p.register(fd, mask)

    def modify(self, fd, mask):
        self._p.modify(fd, mask)

    def unregister(self, fd):
        self._p.unregister(fd)

    def poll(self, timeout):
        if hasattr(select, 'epoll') and isinstance(self._p, select.epoll):
            return self._p.poll(timeout)
        return self._p.poll(timeout * 1000)


class TyrantServer(object):
    """Listens on host:port and answers Tyrant requests from one store."""

    def __init__(self, store, host='127.0.0.1', port=DEFAULT_PORT, settings=None,
                 scripting=None, mask=None):
        """`settings`: replication.Settings (none: no update log, no master);
        `scripting`: extension.Settings (none: no Lua, ext answers failure);
        `mask`: the mask.CommandMask of -mask/-unmask (none: all allowed).
        Raises ulog.UpdateLogError when the update log cannot be opened."""
        settings = settings or replication.Settings()
        self.store = store
        self.update_log = settings.open_update_log()
        self.dispatcher = Dispatcher(store, settings.sid, self.update_log, mask)
        self.watchers = {}            # fd -> callback(readable, writable, error)
        self.replication = settings.start(self.dispatcher, self, self.update_log)
        self.extension = None
        if scripting is not None and scripting.path is not None:
            self._start_extension(scripting)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()
        self.connections = {}
        self.runnable = set()         # connections whose streamed answer wants a turn
        self.accept_paused = False
        # Set by stop() (a signal handler) and never cleared: a signal that
        # lands before serve_forever starts must still stop it.
        self.stop_requested = False

    def _start_extension(self, scripting):
        """Lua states and worker threads; finished calls are queued and the
        loop woken through a pipe."""
        self.finished_calls = collections.deque()
        self.wake_read, self.wake_write = os.pipe()
        for fd in (self.wake_read, self.wake_write):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.watchers[self.wake_read] = self._deliver_ext_answers
        self.extension = extension.Extension(scripting.path, self.dispatcher, scripting.threads,
                                             self._ext_done, scripting.periodic)

    @property
    def extension_failed(self):
        """The script could not be loaded (ttserver then exits with 1)."""
        return self.extension is not None and self.extension.failed

    def _ext_done(self, conn, answer):
        """On a worker thread: hand the answer to the loop."""
        self.finished_calls.append((conn, answer))
        try:
            os.write(self.wake_write, b'x')
        except OSError:
            pass                # the pipe is full: the loop is woken already

    def _deliver_ext_answers(self, readable, writable, error):
        try:
            while os.read(self.wake_read, 4096):
                pass
        except OSError:
            pass
        while self.finished_calls:
            conn, answer = self.finished_calls.popleft()
            if self.connections.get(conn.fd) is conn:
                conn.waiting = False
                conn.outbuf += answer
                self._flush(conn)

    def serve_forever(self):
        poller = self.poller = _Poller()
        listen_fd = self.listener.fileno()
        poller.register(listen_fd, poller.IN)
        for fd in self.watchers:
            poller.register(fd, poller.IN)
        while not self.stop_requested:
            try:
                events = poller.poll(0 if self.runnable else self._poll_timeout())
            except (IOError, OSError, select.error) as exc:
                if exc.args[0] == errno.EINTR:
                    continue
                raise
            for fd, mask in events:
                if fd == listen_fd:
                    self._accept()
                    continue
                conn = self.connections.get(fd)
                if conn is None:
                    self._notify_watcher(fd, mask)
                    continue
                try:
                    self._serve(conn, mask)
                except Exception as exc:
                    # A bug met by one connection must not end the server
                    # for everyone: report it, drop that connection.
                    print('tcjson-tyrant: internal error, connection dropped: %s: %s'
                          % (type(exc).__name__, exc), file=sys.stderr)
                    self._close(conn)
            self._give_streams_a_turn()
            self.replication.run(time.time())

    def _give_streams_a_turn(self):
        """Streamed answers go on where they left off to let others in."""
        for conn in list(self.runnable):
            self.runnable.discard(conn)
            if self.connections.get(conn.fd) is conn:
                self._flush(conn)

    def _poll_timeout(self):
        """Seconds to wait for events: at most one, less when replication
        has something to do sooner."""
        deadline = self.replication.deadline()
        if deadline is None:
            return 1.0
        return min(1.0, max(0.0, deadline - time.time()))

    # ---- sockets that are not clients (the connection to a master)
    def watch(self, fd, callback, writable=False):
        """Call `callback(readable, writable, error)` on events of `fd`."""
        mask = self.poller.IN | (self.poller.OUT if writable else 0)
        if fd in self.watchers:
            self.poller.modify(fd, mask)
        else:
            self.poller.register(fd, mask)
        self.watchers[fd] = callback

    def unwatch(self, fd):
        if self.watchers.pop(fd, None) is not None:
            self.poller.unregister(fd)

    def _notify_watcher(self, fd, mask):
        callback = self.watchers.get(fd)
        if callback is not None:
            poller = self.poller
            callback(bool(mask & poller.IN), bool(mask & poller.OUT), bool(mask & poller.ERR))

    def _serve(self, conn, mask):
        poller = self.poller
        if mask & poller.IN:
            self._read(conn)
        elif mask & poller.ERR:
            self._close(conn)
            return
        if mask & poller.OUT and conn.fd in self.connections:
            self._flush(conn)

    def stop(self):
        self.stop_requested = True

    def close(self):
        """Close every socket, stop the ext workers, sync and close the
        database, then run the script's _end() (as ttserver does, with the
        database closed already) and close the update log."""
        for conn in list(self.connections.values()):
            self._close(conn)
        self.replication.close()
        self.listener.close()
        stopped = self.extension is None or self.extension.stop()
        if not stopped:
            # A Lua call is still running: it must never reach the store
            # once it is closed, so the lock stays taken until the exit.
            print('tcjson-tyrant: an ext call is still running; exiting without it',
                  file=sys.stderr)
            self.dispatcher.lock.acquire()
        self.store.sync()
        self.store.close()
        if stopped and self.extension is not None:
            self.dispatcher.store = ClosedStore()
            self.extension.end()
        if self.extension is not None:
            os.close(self.wake_read)
            os.close(self.wake_write)
        if self.update_log is not None:
            self.update_log.close()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except socket.error as exc:
                if exc.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    return
                if exc.args[0] == errno.ECONNABORTED:
                    continue        # that client left already; next one
                if exc.args[0] in (errno.EMFILE, errno.ENFILE):
                    # Out of file descriptors.  The listener would stay
                    # readable and spin the loop; stop watching it until a
                    # connection closes (the kernel queues new clients).
                    self.poller.unregister(self.listener.fileno())
                    self.accept_paused = True
                    return
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock)
            self.connections[conn.fd] = conn
            self.poller.register(conn.fd, self.poller.IN)

    def _read(self, conn):
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except socket.error as exc:
            if exc.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return
            self._close(conn)
            return
        if not data:
            # The client has sent all it will.  Answers it is still owed
            # go out first; _flush closes once they have (a slave that
            # hangs up is owed nothing).
            conn.peer_done = True
            if (conn.outbuf or conn.busy) and conn.feed is None:
                self._flush(conn)
            else:
                self._close(conn)
            return
        if conn.feed is not None:
            return          # a slave sends nothing after its request; ignore it
        conn.inbuf += data
        if not self._answer_or_hang_up(conn):
            return
        if conn.outbuf or conn.busy:
            self._flush(conn)

    def _answer_or_hang_up(self, conn):
        """Answer what can be answered; False when the connection was
        closed for a bad request (after the answers the requests before it
        earned were sent, as far as the socket takes them at once: ttserver
        answers them in order, then closes)."""
        if self._answer(conn):
            return True
        del conn.inbuf[:]
        if conn.outbuf:
            self._send(conn)
        self._close(conn)
        return False

    def _answer(self, conn):
        """Answer every complete request in the buffer, up to one whose
        answer is still being made; False to hang up."""
        buf = conn.inbuf
        pos = 0
        end = len(buf)
        magic = protocol.MAGIC
        try:
            while pos < end and not conn.busy and len(conn.outbuf) < _OUTBUF_LIMIT:
                if buf[pos] != magic:
                    # Not binary protocol: drop it unanswered, as noted above.
                    conn.text_bytes += end - pos
                    pos = end
                    if conn.text_bytes > _TEXT_LIMIT:
                        return False
                    break
                try:
                    request, pos_after = conn.framer.parse(buf, pos)
                except protocol.NeedMore:
                    break
                except protocol.BadRequest as exc:
                    # ttserver answers nothing, reads on in what the client
                    # sent with it, and hangs up when that is all.
                    pos = min(end, pos + exc.consumed)
                    if pos < end:
                        continue
                    return False
                pos = pos_after
                if request.command == 'repl':
                    # Nothing after it is read (see _read); emptied now,
                    # before the feed's first bytes flush this connection.
                    del buf[:]
                    pos = 0
                    return self._start_feed(conn, *request.args)
                if not self._run(conn, request):
                    return False
        finally:
            # On every way out, including a hang-up: what was answered
            # leaves the buffer and is never run a second time.
            if pos:
                del buf[:pos]
        return True

    def _run(self, conn, request):
        """Start answering one request; False to hang up."""
        if request.command == 'ext' and self.extension is not None \
                and not self.dispatcher.mask.forbids('ext'):
            self.dispatcher.count(request)
            conn.waiting = True
            self.extension.submit(conn, *request.args)
            return True
        try:
            response = self.dispatcher.handle(request)
        except Exception as exc:        # one client's request, not the server
            print('tcjson-tyrant: %s failed (%s: %s); closing that connection'
                  % (request.command, type(exc).__name__, exc), file=sys.stderr)
            return False
        if isinstance(response, protocol.Streamed):
            conn.stream = response.chunks
            self._pump(conn)
        elif response is not None:
            conn.outbuf += response
        return True

    def _pump(self, conn):
        """Move the next pieces of a streamed answer to the output buffer,
        while it holds less than the limit, until the answer asks to let
        others in first (then it goes on in the loop's next turn)."""
        while conn.stream is not None and len(conn.outbuf) < _OUTBUF_LIMIT:
            try:
                chunk = next(conn.stream)
            except StopIteration:
                conn.stream = None
                return
            if chunk is None:
                self.runnable.add(conn)
                return
            conn.outbuf += chunk

    def _start_feed(self, conn, ts, slave_sid):
        """Turn the connection into a replication stream to a slave;
        False to close it (after the reply, if any, went out)."""
        conn.feed = self.replication.open_feed(
            ts, slave_sid, send=lambda data: self._send_to_slave(conn, data),
            backlog=lambda: len(conn.outbuf), drop=lambda: self._close(conn))
        return conn.feed is not None

    def _send_to_slave(self, conn, data):
        if self.connections.get(conn.fd) is conn:
            conn.outbuf += data
            self._flush(conn)

    def _send(self, conn):
        """Send what the socket takes now; False when it failed (closed)."""
        try:
            sent = conn.sock.send(conn.outbuf)
        except socket.error as exc:
            if exc.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return True
            self._close(conn)
            return False
        del conn.outbuf[:sent]
        return True

    def _flush(self, conn):
        if conn.outbuf and not self._send(conn):
            return
        self._pump(conn)
        if conn.inbuf and not conn.busy and len(conn.outbuf) < _OUTBUF_LIMIT:
            # Caught up: answer requests held back by the limit or by an
            # answer being made (they may be all the client sent, so no
            # read event would bring them).
            if not self._answer_or_hang_up(conn):
                return
        pending = bool(conn.outbuf)
        if conn.peer_done and not pending and not conn.busy:
            self._close(conn)
            return
        # Ask for write readiness only while a reply is stuck in the buffer
        # (a slow reader); the common case costs no extra system call.
        reading = (len(conn.outbuf) < _OUTBUF_LIMIT and not conn.peer_done
                   and not (conn.busy and len(conn.inbuf) >= _HELD_INPUT))
        if pending != conn.watching_out or reading != conn.reading:
            conn.watching_out, conn.reading = pending, reading
            mask = (self.poller.IN if reading else 0) | (self.poller.OUT if pending else 0)
            self.poller.modify(conn.fd, mask)

    def _close(self, conn):
        """Forget and close a connection; closing twice is harmless."""
        fd = conn.fd
        if self.connections.get(fd) is not conn:
            return
        del self.connections[fd]
        self.runnable.discard(conn)
        if conn.feed is not None:
            self.replication.close_feed(conn.feed)
        try:
            self.poller.unregister(fd)
        except (IOError, OSError, ValueError):
            pass
        conn.sock.close()
        if self.accept_paused:
            self.accept_paused = False
            self.poller.register(self.listener.fileno(), self.poller.IN)


def _parser():
    parser = argparse.ArgumentParser(
        prog='tcjson-tyrant',
        description='Tokyo Tyrant protocol server for development and tests.')
    parser.add_argument('-host', default='127.0.0.1',
                        help='address to listen on (default 127.0.0.1)')
    parser.add_argument('-port', type=int, default=DEFAULT_PORT,
                        help='port to listen on (default %d)' % DEFAULT_PORT)
    parser.add_argument('-ulog', metavar='DIR',
                        help='update log directory (must exist; needs -sid)')
    parser.add_argument('-ulim', metavar='N', type=ulog.parse_limit,
                        default=ulog.DEFAULT_LIMIT,
                        help='start a new update log file past N bytes '
                             '(k, m, g suffixes; default 1g)')
    parser.add_argument('-sid', metavar='N', type=int, default=0,
                        help='server id, 1..65535: for the update log and replication')
    parser.add_argument('-mhost', metavar='H', help='replicate from the master at H')
    parser.add_argument('-mport', metavar='P', type=int, default=DEFAULT_PORT,
                        help="master's port (default %d)" % DEFAULT_PORT)
    parser.add_argument('-rts', metavar='FILE', default='ttserver.rts',
                        help='where a slave keeps the timestamp it has replicated up to '
                             '(default ttserver.rts)')
    parser.add_argument('-rcc', action='store_true',
                        help='stop replicating when a record fails here but not on '
                             'the master')
    # Both go to one list, so they apply left to right as ttserver's do.
    parser.add_argument('-mask', metavar='EXPR', dest='mask_options', action='append',
                        type=lambda expr: ('mask', expr),
                        help='refuse these commands: names, groups (all, allorg, allread, '
                             'allwrite, allmanage, ...) or 0x bits, split at spaces or commas')
    parser.add_argument('-unmask', metavar='EXPR', dest='mask_options', action='append',
                        type=lambda expr: ('unmask', expr), help='allow these again')
    _add_scripting_arguments(parser)
    parser.add_argument('dbpath', nargs='?', default='*',
                        help='* for in memory (default), or a .tch file')
    return parser


def _add_scripting_arguments(parser):
    parser.add_argument('-thnum', metavar='N', type=int, default=extension.DEFAULT_THREADS,
                        help='worker threads for ext calls, each with its own Lua state '
                             '(default %d)' % extension.DEFAULT_THREADS)
    parser.add_argument('-ext', metavar='FILE',
                        help='Lua script whose global functions the ext command calls '
                             '(@CODE: the code itself)')
    parser.add_argument('-extpc', metavar=('NAME', 'PERIOD'), nargs=2, action='append',
                        default=[], help='call the script function NAME every PERIOD seconds')


def _scripting_settings(parser, args):
    if args.thnum < 1:
        parser.error('-thnum must be at least 1')
    periodic = []
    for name, period in args.extpc:
        try:
            periodic.append((name, float(period)))
        except ValueError:
            parser.error('-extpc %s %s: the period must be a number of seconds' % (name, period))
    return extension.Settings(args.ext, args.thnum, periodic)


def _replication_settings(parser, args):
    """The replication flags checked; ttserver's warnings printed."""
    if args.mport < 1:
        parser.error('-mport must be at least 1')
    settings = replication.Settings(args.sid, args.ulog, args.ulim, args.mhost, args.mport,
                                    args.rts, args.rcc)
    for warning in settings.warnings:
        print('tcjson-tyrant: %s' % warning, file=sys.stderr)
    return settings


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    settings = _replication_settings(parser, args)
    mask = CommandMask.from_options(args.mask_options or ())
    if mask:
        print('tcjson-tyrant: command bit mask: 0x%x' % mask.bits, file=sys.stderr)
    scripting = _scripting_settings(parser, args)
    # Handle SIGTERM/SIGINT from the start: the port accepts connections
    # before serve_forever runs, and a signal in that gap (or while the
    # database opens) must still end in a sync and exit status 0.
    signals, servers = [], []

    def shut_down(signum, frame):
        signals.append(signum)
        for running in servers:
            running.stop()
    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)

    try:
        store = open_store(args.dbpath)
    except StoreError as exc:
        print('tcjson-tyrant: %s' % exc, file=sys.stderr)
        return 1
    try:
        server = TyrantServer(store, args.host, args.port, settings, scripting, mask)
    except ulog.UpdateLogError as exc:
        store.close()
        print('tcjson-tyrant: ERROR tculogopen failed: %s' % exc, file=sys.stderr)
        return 1
    except (socket.error, socket.gaierror, OverflowError) as exc:
        store.close()
        reason = getattr(exc, 'strerror', None) or str(exc)
        print('tcjson-tyrant: cannot listen on %s:%s: %s' % (args.host, args.port, reason),
              file=sys.stderr)
        return 1
    servers.append(server)
    if signals:
        server.stop()

    host, port = server.address
    print('tcjson-tyrant: listening on %s:%d, database %s (pid %d)'
          % (host, port, args.dbpath, os.getpid()))
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.close()
    return 1 if server.extension_failed else 0


if __name__ == '__main__':
    sys.exit(main())
