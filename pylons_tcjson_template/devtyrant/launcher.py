"""Start a Tyrant server as a child process: the real one where installed.

    with TyrantProcess() as server:          # free port, in-memory database
        client = pytyrant.PyTyrant.open(server.host, server.port)

    # A dual-master pair: each logs its writes and follows the other.
    a = TyrantProcess('a.tch', port=1978, ulog='a-ulog', sid=1,
                      mhost='127.0.0.1', mport=1979, rts='a.rts')
    b = TyrantProcess('b.tch', port=1979, ulog='b-ulog', sid=2,
                      mhost='127.0.0.1', mport=1978, rts='b.rts')

`TyrantProcess` runs ``ttserver`` when ``$TCJSON_TTSERVER`` names one or
one is on PATH (set ``TCJSON_TTSERVER=builtin`` to force the development
server), and otherwise this package's development server under the current
Python.  Tests use it to get a private server per test run, and the paster
``tyrant`` command to serve development.ini's URL.  The replication options
become the same flags for either server (-ulog -ulim -sid -mhost -mport
-rts -rcc); a stopped or killed process starts again on the same port and
files.  Every server gets ``-ext TCJSON_LUA`` (the session backend's Lua
half, next to this package) unless told otherwise.
"""
from __future__ import absolute_import

import os
import signal
import socket
import subprocess
import sys
import time

_SERVER_MODULE = __name__.rsplit('.', 1)[0] + '.server'
# tcjson.lua, the server half of the session backend, beside this package
# (pylons_tcjson_template/, or a generated project's lib/).
TCJSON_LUA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          'tcjson.lua')


class ServerFailed(RuntimeError):
    """The server process exited or did not start listening in time."""


def find_ttserver():
    """Path of a real ttserver to use, or None for the development server."""
    named = os.environ.get('TCJSON_TTSERVER', '').strip()
    if named == 'builtin':
        return None
    if named:
        return named
    for directory in os.environ.get('PATH', '').split(os.pathsep):
        candidate = os.path.join(directory, 'ttserver')
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# Every port free_port() gave out in this process.  The kernel hands the
# port of a closed probe out again, so `free_port(), free_port()` could
# otherwise name one port twice (seen: an app's HTTP port equal to its
# Tyrant's), and the second server would fail to start or, worse, the two
# would talk to each other.
_HANDED_OUT = set()


def free_port(host='127.0.0.1', attempts=64):
    """A TCP port nobody listens on right now, and one this process was not
    given before.

    Probes stay bound until the answer is recorded, so the kernel cannot
    give a port under examination to another thread's probe meanwhile; that
    makes the check-then-record safe without a lock.
    """
    probes = []
    try:
        for _ in range(attempts):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind((host, 0))
            port = probe.getsockname()[1]
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
        raise RuntimeError('free_port: %d probes on %s all got ports handed out '
                           'before' % (attempts, host))
    finally:
        for probe in probes:
            probe.close()


def wait_for_port(host, port, timeout, process=None):
    """Block until host:port accepts connections; False on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            socket.create_connection((host, port), 0.2).close()
            return True
        except socket.error:
            time.sleep(0.02)
    return False


def end_process(process, signum=signal.SIGTERM, timeout=10.0):
    """Send `signum` (None: send nothing), wait up to `timeout`, then SIGKILL.

    Returns the exit status.  Every child a test or benchmark starts is
    ended this way, so none outlives its run, even one that ignores signals.
    """
    if process.poll() is None and signum is not None:
        process.send_signal(signum)
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if process.poll() is None:
        process.kill()
        process.wait()
    return process.returncode


class TyrantProcess(object):
    """A ttserver (or development server) child process on one port."""

    def __init__(self, dbpath='*', host='127.0.0.1', port=None, ttserver=None,
                 log=None, ulog=None, ulim=None, sid=None, mhost=None, mport=None,
                 rts=None, rcc=False, ext=None, mask=None, unmask=None):
        """`ulog` (update log directory, created if missing), `ulim` (its
        file size limit, a number or ttserver's "64m" form), `sid` (server
        id 1..65535), `mhost`/`mport` (the master to replicate from), `rts`
        (the slave's timestamp file), `rcc` (stop on an inconsistency) and
        `mask`/`unmask` (commands to refuse, and to allow again) are passed
        as ttserver's flags; None leaves a flag out.  `ext`: the Lua script
        for -ext; None = TCJSON_LUA (where that file exists), False = no
        -ext."""
        self.dbpath = dbpath
        self.host = host
        self.port = port or free_port(host)
        # ttserver: None = pick as find_ttserver() does; False = always this
        # package's server (tests of tcjson-tyrant itself); a path = that one.
        if ttserver is None:
            ttserver = find_ttserver()
        self.ttserver = ttserver or None
        self.kind = 'ttserver' if self.ttserver else 'tcjson-tyrant'
        self.log = log
        self.ulog, self.ulim, self.sid = ulog, ulim, sid
        self.mhost, self.mport, self.rts, self.rcc = mhost, mport, rts, rcc
        if ext is None:
            ext = TCJSON_LUA if os.path.isfile(TCJSON_LUA) else False
        self.ext = ext or None
        self.mask, self.unmask = mask, unmask
        self.process = None

    @property
    def url(self):
        return '%s:%d' % (self.host, self.port)

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def replication_flags(self):
        """-ulog, -ulim, -sid, -mhost, -mport, -rts, -rcc as configured."""
        flags = []
        for flag, value in (('-ulog', self.ulog), ('-ulim', self.ulim), ('-sid', self.sid),
                            ('-mhost', self.mhost), ('-mport', self.mport),
                            ('-rts', self.rts)):
            if value is not None:
                flags += [flag, str(value)]
        if self.rcc:
            flags.append('-rcc')
        return flags

    def command(self):
        if self.ttserver:
            program = [self.ttserver]
        else:
            program = [sys.executable, '-m', _SERVER_MODULE]
        ext = ['-ext', self.ext] if self.ext else []
        masks = []
        for flag, value in (('-mask', self.mask), ('-unmask', self.unmask)):
            if value is not None:
                masks += [flag, value]
        return (program + ['-host', self.host, '-port', str(self.port)]
                + self.replication_flags() + ext + masks + [self.dbpath])

    def start(self, timeout=15.0):
        """Start the server (again, after stop or kill: same port, same
        files); returns once it accepts connections."""
        if self.running:
            return self
        if self.ulog and not os.path.isdir(self.ulog):
            os.makedirs(self.ulog)          # ttserver wants it to exist
        out = self.log if self.log is not None else open(os.devnull, 'wb')
        self.process = subprocess.Popen(self.command(), stdout=out,
                                        stderr=subprocess.STDOUT, close_fds=True)
        if not wait_for_port(self.host, self.port, timeout, self.process):
            code = self.process.poll()
            self.kill()
            raise ServerFailed('%s on %s did not start (exit status %s): %s'
                               % (self.kind, self.url, code, ' '.join(self.command())))
        return self

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM: the server syncs its database and exits."""
        self.resume()
        if self.running:
            end_process(self.process, signal.SIGTERM, timeout)
        return self.process.returncode if self.process else None

    def kill(self):
        """SIGKILL: a crash, nothing synced."""
        if self.running:
            end_process(self.process, signal.SIGKILL)

    def pause(self):
        """SIGSTOP: the server hangs with its sockets open."""
        if self.running:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        if self.running:
            self.process.send_signal(signal.SIGCONT)

    def restart(self, timeout=15.0):
        self.stop()
        return self.start(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
