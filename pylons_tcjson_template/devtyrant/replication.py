"""Replication as ttserver 1.1.41 does it, inside the server's event loop.

A slave connects to its master and sends ``c8 a0 TS(8) SID(4)``: "every
update log record with a timestamp >= TS, except those that came from me".
The master answers its own sid (4 bytes), then streams wire records
``c9 TS(8) SID(4) SIZE(4) BODY`` and a one-byte nop ``ca`` at least every
second or two; it never reads anything back.  The slave redoes each record,
logs it in its own update log with its own clock, the origin SID and MID =
the master's sid, and writes the record's TS to its .rts file, from which it
resumes after a restart.  A record whose origin SID or MID is the
requester's own is not sent: that alone keeps dual masters and rings from
echoing writes back.

`Feed` is the master's side of one connection, `MasterLink` the slave's
connection to its master, `Replication` holds both for the server.  None of
them blocks: the server calls `run` once per loop turn and sleeps no longer
than `deadline` says.  (Only the master's host name is resolved with a
blocking call, once per connection attempt; use an address or a name the
resolver answers at once.)
"""
from __future__ import absolute_import

import errno
import os
import socket
import struct
import time

from . import ulog, ulogfile
from .events import log

NOP = bytes(bytearray([ulogfile.NOP_MAGIC]))
WIRE_HEADER = struct.Struct('>BQII')      # magic, ts, origin sid, size
REQUEST = struct.Struct('>BBQI')          # c8 a0 ts sid
_U32 = struct.Struct('>I')

NOP_PERIOD = 1.0          # a master sends a nop when this long has passed since the last
FEED_WAIT = 1.0           # ... and waits at most this long for a new write
RETRY_PERIOD = 1.0        # a slave tries its master again this long after a failure
MASTER_SILENCE = 60.0     # no byte from the master for this long: it is dead
_FEED_CHUNK = 256 * 1024  # log bytes read per loop turn for one slave
_FEED_BACKLOG = 4 * 1024 * 1024   # stop reading the log while this much waits for a slave
_RTS_READ = 32
# The .rts file is never opened through a symbolic link (ttserver follows
# one): a link planted there would have setmst's TS written over its target.
_NO_FOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_ANONYMOUS_SID = 0x7FFFFFFF       # what a slave without a sid asks as (ttserver's INT_MAX)


def wire_record(ts, sid, body):
    return WIRE_HEADER.pack(ulogfile.RECORD_MAGIC, ts, sid, len(body)) + body


def repl_request(ts, sid):
    """The 14 bytes a slave sends to ask for records from `ts` on."""
    return REQUEST.pack(0xC8, 0xA0, ts, sid)


# ------------------------------------------------------------ master side

class Feed(object):
    """Streams the update log to one slave.

    It follows ttserver's loop: send a nop if a second has passed since the
    last one, wait up to a second for a new write (a write ends the wait at
    once), send every record written meanwhile, and again.  That is why a
    slave sees the backlog about a second after it connects, new writes
    within milliseconds, and a nop every 1-2 s.
    """

    def __init__(self, reader, slave_sid, send, backlog, drop, now):
        self.reader = reader
        self.slave_sid = slave_sid
        self.send = send            # queue bytes for the slave
        self.backlog = backlog      # bytes queued and not yet sent
        self.drop = drop            # close the slave's connection
        self.noptime = 0.0
        self.woken = False
        self.reading = False
        self.wait_until = now
        self._wait(now)

    def _wait(self, now):
        if now - self.noptime >= NOP_PERIOD:
            self.send(NOP)
            self.noptime = now
        self.reading = self.woken = False
        self.wait_until = now + FEED_WAIT

    def wake(self):
        """A record was just written to the update log."""
        self.woken = True

    def deadline(self):
        if self.reading or self.woken:
            return 0.0 if self.backlog() < _FEED_BACKLOG else None
        return self.wait_until

    def run(self, now):
        if not self.reading:
            if not (self.woken or now >= self.wait_until):
                return
            self.reading = True
        if self.backlog() >= _FEED_BACKLOG:
            return                  # the slave is slow: read on once it has caught up
        records = self.reader.read(_FEED_CHUNK)
        wanted, skipped = [], False
        for ts, sid, mid, body in records:
            if sid == self.slave_sid or mid == self.slave_sid:
                skipped = True
                continue
            wanted.append(wire_record(ts, sid, body))
        if wanted:
            self.send(b''.join(wanted))
        if self.reader.exhausted:
            self._wait(now)
        elif skipped and now - self.noptime >= NOP_PERIOD:
            self.send(NOP)          # a long run of filtered records: keep the link alive
            self.noptime = now


# ------------------------------------------------------------ slave side

class RtsFileError(Exception):
    """The .rts file cannot be opened (the message says why)."""


class RtsFile(object):
    """The slave's .rts file: the TS of the last record applied, in decimal,
    then a newline.  Rewritten from offset 0 after every record (without
    truncation, as ttserver does: timestamps only grow longer)."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def _open_fd(self, flags):
        try:
            return os.open(self.path, flags | os.O_CREAT | _NO_FOLLOW, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(self.path):
                raise RtsFileError('%s is a symbolic link, which is not followed: '
                                   'make it a regular file' % self.path)
            raise RtsFileError('cannot open %s: %s' % (self.path, exc.strerror))

    def overwrite(self, ts):
        """setmst with a TS: start from there (the file is replaced)."""
        fd = self._open_fd(os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, b'%d\n' % ts)
        finally:
            os.close(fd)

    def open(self):
        """Open (creating it empty if needed) and return the TS in it, 0
        for an empty or unreadable file."""
        self.close()
        self.fd = self._open_fd(os.O_RDWR)
        text = os.read(self.fd, _RTS_READ)
        digits = bytearray()
        for byte in bytearray(text.lstrip()):
            if not 0x30 <= byte <= 0x39:
                break
            digits.append(byte)
        return int(bytes(digits)) if digits else 0

    def record(self, ts):
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, b'%d\n' % ts)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class MasterLink(object):
    """The slave's connection to its master, as a small state machine:
    idle (next attempt in a second) -> connecting -> greeting (waiting for
    the master's sid) -> streaming -> idle again when the master hangs up,
    sends something that is not a record or nop, or is silent for 60 s."""

    def __init__(self, dispatcher, loop, sid, rts_path, host='', port=0, check_consistency=False):
        self.dispatcher = dispatcher
        self.loop = loop                    # the server: watch(fd, callback, writable)/unwatch(fd)
        self.sid = sid
        self.rts_file = RtsFile(rts_path)
        self.host, self.port = host or '', port
        self.check_consistency = check_consistency
        self.rts = 0
        self.start_ts = 0                   # setmst's TS, written to .rts before the next attempt
        self.fatal = False                  # -rcc saw an inconsistency: stop until setmst
        self.failed_before = False          # "tcreplopen failed" is said once per outage
        self.stalled = None                 # (since, why) while replication cannot go on
        self.sock = None
        self.state = 'idle'
        self.buf = bytearray()
        self.master_sid = 0
        self.last_heard = 0.0
        self.next_attempt = time.time() + RETRY_PERIOD

    @property
    def configured(self):
        return bool(self.host) and self.port >= 1

    def set_master(self, host, port, ts, opts):
        """setmst: follow another master (an empty host: none) from the
        next attempt on; a TS > 0 replaces the .rts file."""
        self.host, self.port = host, port
        self.check_consistency = bool(opts & 1)
        self.fatal = False
        self.stalled = None
        self.start_ts = ts
        if self.sock is not None:
            self._end('replication finished', time.time())

    def deadline(self):
        if self.sock is not None:
            return self.last_heard + MASTER_SILENCE
        if self.configured and not self.fatal:
            return self.next_attempt
        return None

    def run(self, now):
        if self.sock is not None:
            if now - self.last_heard >= MASTER_SILENCE:
                self._end('replication finished', now)
        elif self.configured and not self.fatal and now >= self.next_attempt:
            self._attempt(now)

    def _attempt(self, now):
        try:
            if self.start_ts > 0:
                self.rts_file.overwrite(self.start_ts)
                self.start_ts = 0
            self.rts = self.rts_file.open()
        except (RtsFileError, IOError, OSError) as exc:
            self._stall(now, 'ERROR do_slave: %s' % exc)
            self.next_attempt = now + RETRY_PERIOD
            return
        try:
            address = socket.getaddrinfo(self.host, self.port, socket.AF_INET,
                                         socket.SOCK_STREAM)[0][4]
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except (socket.error, socket.gaierror):
            self._fail(now)
            return
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self._fail(now)
            return
        self.sock = sock
        self.state = 'connecting'
        self.buf = bytearray()
        self.last_heard = now
        self.loop.watch(sock.fileno(), self.on_event, writable=True)

    def on_event(self, readable, writable, error):
        """Socket events, from the server's loop.  A bug met here ends this
        connection (and is reported), never the server."""
        now = time.time()
        try:
            self._on_event(now)
        except Exception as exc:
            self._end('internal error in replication, connection dropped: %s: %s'
                      % (type(exc).__name__, exc), now)

    def _on_event(self, now):
        if self.state == 'connecting':
            self._connected(now)
            return
        try:
            data = self.sock.recv(256 * 1024)
        except socket.error as exc:
            if exc.args[0] in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return
            data = b''
        if not data:
            self._lost(now)
            return
        self.last_heard = now
        self.buf += data
        self._consume(now)

    def _connected(self, now):
        if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self._fail(now)
            return
        try:
            self.sock.send(repl_request(self.rts + 1, self.sid or _ANONYMOUS_SID))
        except socket.error:
            self._fail(now)
            return
        self.state = 'greeting'
        self.loop.watch(self.sock.fileno(), self.on_event, writable=False)

    def _consume(self, now):
        buf = self.buf
        pos = 0
        if self.state == 'greeting':
            if len(buf) < 4:
                return
            self.master_sid, = _U32.unpack_from(buf, 0)
            pos = 4
            if self.master_sid < 1:
                del buf[:]
                self._fail(now)
                return
            self.state = 'streaming'
            self.failed_before = False
            self.stalled = None
            log('replicating from sid=%d (%s:%d) after %d'
                % (self.master_sid, self.host, self.port, self.rts))
        try:
            pos = self._apply_records(buf, pos)
        finally:
            del buf[:pos]

    def _apply_records(self, buf, pos):
        """Redo every whole record in the buffer; returns where it stopped."""
        end = len(buf)
        while pos < end and self.sock is not None:
            magic = buf[pos]
            if magic == ulogfile.NOP_MAGIC:
                pos += 1
                continue
            if magic != ulogfile.RECORD_MAGIC:
                self._end('replication finished', time.time())
                return end
            if end - pos < WIRE_HEADER.size:
                break
            _, ts, origin, size = WIRE_HEADER.unpack_from(buf, pos)
            if size > ulogfile.MAX_BODY:
                self._skip_impossible(ts, size)
                return end
            start = pos + WIRE_HEADER.size
            if end - start < size:
                break
            pos = start + size
            if size and not self._apply(ts, origin, bytes(buf[start:pos])):
                self._end('replication finished', time.time())
                return end
        return pos

    def _apply(self, ts, origin, body):
        """Redo one record and note its TS; False ends the connection."""
        ok = True
        try:
            consistent = self.dispatcher.redo(body, origin, self.master_sid)
        except ulog.BadBody as exc:
            log('ERROR do_slave: tculogadbredo failed (%s)' % exc)
            ok = False
        else:
            if not consistent and self.check_consistency:
                self._stall(time.time(), 'ERROR do_slave: detected inconsistency',
                            'detected inconsistency at ts %d; stopped until setmst (-rcc)' % ts)
                self.fatal = True
                ok = False
            elif not consistent:
                log('INFO do_slave: detected inconsistency')
        try:
            self.rts_file.record(ts)
            self.rts = ts
        except (IOError, OSError) as exc:
            log('ERROR do_slave: cannot write %s: %s' % (self.rts_file.path, exc))
            ok = False
        return ok

    def _skip_impossible(self, ts, size):
        """A record no master could have logged (bigger than any request):
        its end cannot be found in the stream, so the connection ends, and
        its TS goes to .rts so the next one asks for what follows it (as a
        record ttserver cannot redo is passed over)."""
        log('ERROR do_slave: impossible record size %d at ts %d; skipped' % (size, ts))
        try:
            self.rts_file.record(ts)
            self.rts = ts
        except (IOError, OSError) as exc:
            log('ERROR do_slave: cannot write %s: %s' % (self.rts_file.path, exc))
        self._end('replication finished', time.time())

    def _stall(self, now, message, why=None):
        """Log `message` once per stall and show `why` in stat."""
        why = why or message.split(': ', 1)[-1]
        if self.stalled is None or self.stalled[1] != why:
            log(message)
            self.stalled = (now, why)

    def _lost(self, now):
        if self.state == 'streaming':
            self._end('replication finished', now)
        else:
            self._fail(now)

    def _fail(self, now):
        """The connection could not be set up (refused, closed, sid 0)."""
        self._close()
        if not self.failed_before:
            log('ERROR do_slave: tcreplopen failed')
            self.failed_before = True
        if self.stalled is None:
            self.stalled = (now, 'no replication from %s:%d: cannot connect, or refused '
                                 '(tcreplopen failed)' % (self.host, self.port))
        self.next_attempt = now + RETRY_PERIOD

    def _end(self, message, now):
        self._close()
        log(message)
        self.next_attempt = now + RETRY_PERIOD

    def _close(self):
        if self.sock is not None:
            self.loop.unwatch(self.sock.fileno())
            self.sock.close()
            self.sock = None
        self.state = 'idle'
        self.rts_file.close()

    def stat_pairs(self, now):
        """ttserver's four lines while a master is configured, then (not in
        ttserver) `repl_stalled` while replication cannot go on: when it
        started and why.  A line that comes and goes breaks no client:
        ttserver's stat has such lines already (these four, ``fatal``), and
        clients read it as name/value pairs (PyTyrant's get_stats) or print
        it (tcrmgr inform -st)."""
        if not self.host:
            return []
        delay = now - self.rts / 1000000.0
        pairs = [('mhost', self.host), ('mport', self.port), ('rts', self.rts),
                 ('delay', '%.6f' % max(delay, 0.0))]
        if self.stalled is not None:
            pairs.append(('repl_stalled', '%.6f %s' % self.stalled))
        return pairs

    def close(self):
        self._close()


# ------------------------------------------------------------ both

class Replication(object):
    """The server's replication: feeds to its slaves and, when it follows
    a master, the link to it.  The dispatcher's -mask may forbid either:
    ``repl`` refuses slaves, ``slave`` keeps the link from ever running
    (stat still shows the master, as ttserver's does)."""

    def __init__(self, dispatcher, loop, sid, update_log=None, master_host='',
                 master_port=0, rts_path='ttserver.rts', check_consistency=False):
        self.dispatcher = dispatcher
        self.sid = sid
        self.update_log = update_log
        self.feeds = []
        self.master = MasterLink(dispatcher, loop, sid, rts_path, master_host, master_port,
                                 check_consistency)
        self.follows_master = dispatcher.mask.replicates_from_master
        if update_log is not None:
            update_log.listeners.append(self._wake_feeds)
        dispatcher.replication = self

    def _wake_feeds(self):
        for feed in self.feeds:
            feed.wake()

    def open_feed(self, ts, slave_sid, send, backlog, drop):
        """Answer a slave's request.  Sends the greeting through `send` and
        returns the feed, or None when the connection must be closed once
        what was sent is out (nothing at all for a refused request).
        `backlog()` tells how many bytes wait for the slave, `drop()`
        closes its connection."""
        self.dispatcher.counts['repl'] += 1
        if ts < 1 or slave_sid < 1:
            log('do_repl: invalid parameters')
            return None
        if self.dispatcher.mask.forbids('repl'):
            log('do_repl: forbidden')
            return None
        if slave_sid == self.sid:
            log('do_repl: rejected circular replication')
            return None
        send(_U32.pack(self.sid))
        if self.update_log is None:
            log('do_repl: no update log (start with -ulog DIR -sid N)')
            return None
        reader = ulog.LogReader(self.update_log.directory, ts)
        feed = Feed(reader, slave_sid, send, backlog, drop, time.time())
        self.feeds.append(feed)
        log('replicating to sid=%d after %d' % (slave_sid, ts - 1))
        return feed

    def close_feed(self, feed):
        if feed in self.feeds:
            self.feeds.remove(feed)

    def set_master(self, host, port, ts, opts):
        self.master.set_master(host, port, ts, opts)

    def deadline(self):
        """The earliest time `run` has work to do (None: only on events)."""
        times = [feed.deadline() for feed in self.feeds]
        if self.follows_master:
            times.append(self.master.deadline())
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def run(self, now):
        """Do what is due.  A bug met by one feed drops that slave's
        connection (reported), not the server."""
        for feed in list(self.feeds):
            try:
                feed.run(now)
            except Exception as exc:
                log('internal error in replication to sid=%d, connection dropped: %s: %s'
                    % (feed.slave_sid, type(exc).__name__, exc))
                feed.drop()
        if self.follows_master:
            self.master.run(now)

    def stat_pairs(self, now):
        """The master's lines (see MasterLink.stat_pairs), then, while the
        update log cannot be written, `ulog_error` (not in ttserver): the
        writes since then reach no slave."""
        pairs = self.master.stat_pairs(now)
        failure = self.update_log.failure if self.update_log is not None else None
        if failure is not None:
            pairs.append(('ulog_error', '%.6f %s' % failure))
        return pairs

    def close(self):
        self.master.close()
        self.feeds = []


class Settings(object):
    """The replication flags of the command line, checked as ttserver 1.1.41
    checks them; `warnings` holds what it would log about them."""

    def __init__(self, sid=0, ulog_dir=None, ulog_limit=ulog.DEFAULT_LIMIT, master_host=None,
                 master_port=1978, rts_path='ttserver.rts', check_consistency=False):
        self.warnings = []
        if ulog_dir and not os.path.isdir(ulog_dir):
            self.warnings.append('warning: ulog(%s) is not a directory' % ulog_dir)
        if sid > ulogfile.MAX_SID:
            self.warnings.append('warning: the SID is ignored because it exceeds %d'
                                 % ulogfile.MAX_SID)
            sid = 0
        sid = max(sid, 0)
        if sid < 1 and ulog_dir:
            self.warnings.append('warning: update logging is omitted because the SID '
                                 'is not specified')
            ulog_dir = None
        if sid < 1 and master_host:
            self.warnings.append('warning: replication is omitted because the SID '
                                 'is not specified')
            master_host = None
        self.sid = sid
        self.ulog_dir = ulog_dir
        self.ulog_limit = ulog_limit
        self.master_host = master_host or ''
        self.master_port = master_port
        self.rts_path = rts_path
        self.check_consistency = check_consistency

    def open_update_log(self):
        """The UpdateLog, or None without -ulog; raises ulog.UpdateLogError."""
        if not self.ulog_dir:
            return None
        return ulog.UpdateLog(self.ulog_dir, self.ulog_limit)

    def start(self, dispatcher, loop, update_log):
        if self.master_host:
            log('replication configuration: host=%s port=%d ropts=%d'
                % (self.master_host, self.master_port, 1 if self.check_consistency else 0))
        return Replication(dispatcher, loop, self.sid, update_log, self.master_host,
                           self.master_port, self.rts_path, self.check_consistency)
