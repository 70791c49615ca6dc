"""Peer servers for the session bench, and their server-side request counters.

Every server runs as a child process on a free port and is stopped by the
bench.  ``counter()`` returns the number of commands the server has processed
so far, read from the server's own statistics, so round trips per request are
counted, not assumed.  ``Peer.calibrate()`` measures what reading the counter
itself adds, and ``Peer.commands_between()`` subtracts it.
"""
from __future__ import print_function

import _socket
import os
import socket
import subprocess
import sys

from pylons_tcjson_template.devtyrant.launcher import (
    TyrantProcess, end_process, find_ttserver, free_port, wait_for_port)


def which(name):
    for directory in os.environ.get('PATH', '').split(os.pathsep):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _version(argv):
    try:
        out = subprocess.check_output(argv, stderr=subprocess.STDOUT)
        return out.decode('utf-8', 'replace').strip().splitlines()[0]
    except Exception as exc:          # binary missing or odd output
        return 'unknown (%s)' % exc


class Peer(object):
    kind = None
    binary = None

    def __init__(self):
        self.process = None
        self.host = '127.0.0.1'
        self.port = None
        self.self_cost = 0

    @property
    def url(self):
        return '%s:%d' % (self.host, self.port)

    def available(self):
        return which(self.binary) is not None

    def missing_reason(self):
        return '%s not on PATH' % self.binary

    def start(self):
        self.port = free_port()
        devnull = open(os.devnull, 'wb')
        self.process = subprocess.Popen(self.argv(), stdout=devnull,
                                        stderr=subprocess.STDOUT,
                                        close_fds=True)
        if not wait_for_port(self.host, self.port, 15, self.process):
            self.stop()
            raise RuntimeError('%s did not start: %s'
                               % (self.kind, ' '.join(self.argv())))
        return self

    def stop(self):
        if self.process is not None:
            end_process(self.process)

    def calibrate(self):
        """What two back-to-back counter reads differ by with no traffic."""
        first = self.snapshot()[0]
        self.self_cost = self.snapshot()[0] - first
        return self.self_cost

    def snapshot(self):
        """(commands so far, CPU seconds so far), from one stats request."""
        return self.counter(), self.cpu()

    def commands_between(self, before, after):
        return after - before - self.self_cost

    def counter(self):
        raise NotImplementedError

    def cpu(self):
        """CPU seconds (user + system) the server process has used."""
        raise NotImplementedError


class Memcached(Peer):
    kind = 'memcached'
    binary = 'memcached'
    COUNTED = ('cmd_get', 'cmd_set', 'cmd_touch', 'cmd_flush', 'delete_hits',
               'delete_misses', 'incr_hits', 'incr_misses', 'decr_hits',
               'decr_misses', 'cas_hits', 'cas_misses', 'cas_badval')

    def argv(self):
        argv = [which('memcached'), '-l', self.host, '-p', str(self.port),
                '-U', '0', '-m', '256']
        if os.getuid() == 0:              # memcached refuses root without -u
            argv += ['-u', 'root']
        return argv

    def stats(self):
        sock = socket.create_connection((self.host, self.port), 5)
        try:
            sock.sendall(b'stats\r\n')
            data = b''
            while not data.endswith(b'END\r\n'):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
        stats = {}
        for line in data.decode('ascii', 'replace').splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == 'STAT':
                stats[parts[1]] = parts[2]
        return stats

    def counter(self):
        stats = self.stats()
        return sum(int(stats.get(name, 0)) for name in self.COUNTED)

    def cpu(self):
        return self.snapshot()[1]

    def snapshot(self):
        stats = self.stats()
        return (sum(int(stats.get(name, 0)) for name in self.COUNTED),
                float(stats['rusage_user']) + float(stats['rusage_system']))

    def version(self):
        return _version([which('memcached'), '-V'])


class Redis(Peer):
    kind = 'redis'
    binary = 'redis-server'

    def argv(self):
        return [which('redis-server'), '--port', str(self.port),
                '--bind', self.host, '--save', '', '--appendonly', 'no']

    def _command(self, *args):
        sock = socket.create_connection((self.host, self.port), 5)
        try:
            wire = '*%d\r\n' % len(args) + ''.join(
                '$%d\r\n%s\r\n' % (len(a), a) for a in args)
            sock.sendall(wire.encode('ascii'))
            data = b''
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.startswith(b'$'):
                    head, _, rest = data.partition(b'\r\n')
                    if len(rest) >= int(head[1:]) + 2:
                        break
                elif data.endswith(b'\r\n'):
                    break
        finally:
            sock.close()
        return data.decode('utf-8', 'replace')

    def counter(self):
        text = self._command('INFO', 'stats')
        for line in text.splitlines():
            if line.startswith('total_commands_processed:'):
                return int(line.split(':', 1)[1])
        raise RuntimeError('redis INFO without total_commands_processed')

    def cpu(self):
        return self.snapshot()[1]

    def snapshot(self):
        values = {}
        for line in self._command('INFO', 'all').splitlines():
            if ':' in line:
                name, value = line.split(':', 1)
                values[name] = value.strip()
        # The whole server's CPU (all its threads): what a deployment pays.
        return (int(values['total_commands_processed']),
                float(values['used_cpu_user']) + float(values['used_cpu_sys']))

    def version(self):
        return _version([which('redis-server'), '--version'])


class Tyrant(Peer):
    """tcjson-tyrant (forced) or ttserver, through the project's launcher."""

    def __init__(self, real=False, dbpath='*'):
        Peer.__init__(self)
        self.real = real
        self.dbpath = dbpath
        self.server = None
        self.kind = 'ttserver' if real else 'tcjson-tyrant'

    def available(self):
        return find_ttserver() is not None if self.real else True

    def missing_reason(self):
        return 'ttserver not on PATH (and $TCJSON_TTSERVER unset)'

    def start(self):
        ttserver = find_ttserver() if self.real else ''
        self.server = TyrantProcess(self.dbpath, ttserver=ttserver).start()
        self.host, self.port = self.server.host, self.server.port
        self.process = self.server.process
        return self

    def stop(self):
        if self.server is not None:
            self.server.stop()

    def stat(self):
        return tyrant_stat(self.host, self.port)

    def counter(self):
        return commands(self.stat())

    def cpu(self):
        return self.snapshot()[1]

    def snapshot(self):
        pairs = self.stat()
        return commands(pairs), float(pairs['ru_user']) + float(pairs['ru_sys'])

    def version(self):
        if self.real:
            return 'ttserver ' + self.stat().get('version', '?')
        return 'tcjson-tyrant (protocol of ttserver %s)' % self.stat().get(
            'version', '?')


def tyrant_stat(host, port):
    """A Tyrant server's stat answer as {name: value}."""
    import pytyrant
    conn = pytyrant.Tyrant.open(host, port)
    try:
        text = conn.stat()
    finally:
        conn.close()
    return dict(line.split('\t', 1) for line in text.splitlines() if '\t' in line)


def commands(stat):
    """The commands a Tyrant server has answered, from its stat: the cnt_*
    counters, without the *_miss ones (a subset of their command's)."""
    return sum(int(value) for name, value in stat.items()
               if name.startswith('cnt_') and not name.endswith('_miss'))


class RoundTripCounter(object):
    """Counts the round trips this thread makes to any server, whatever
    the client library: a profile hook sees every send, receive and
    connect call on a socket, and the first receive after any send is one
    round trip (the client waits for the servers).  Commands pipelined in
    one flight therefore share a round trip, so do requests sent to
    several servers before any answer is read (tyrant.parallel(): a pair's
    read waits once for both members), and a reply read in several
    receives counts once.  A connect counts as a round trip of its own
    (``connects``).

    The hook slows every call of the thread several times over: use it
    on a pass that is counted, never on one that is timed."""

    SENDS = frozenset(['send', 'sendall', 'sendto'])
    RECEIVES = frozenset(['recv', 'recv_into', 'recvfrom', 'recvfrom_into'])
    CONNECTS = frozenset(['connect', 'connect_ex'])

    def __init__(self):
        self.waits = 0
        self.connects = 0
        self._sent = False              # something was sent since the last receive

    @property
    def round_trips(self):
        return self.waits + self.connects

    def _hook(self, frame, event, arg):
        if event != 'c_call' or type(getattr(arg, '__self__', None)) is not _socket.socket:
            return
        name = arg.__name__
        if name in self.SENDS:
            self._sent = True
        elif name in self.RECEIVES:
            self.waits += self._sent
            self._sent = False
        elif name in self.CONNECTS:
            self.connects += 1

    def __enter__(self):
        sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc_info):
        sys.setprofile(None)
        self._sent = False
