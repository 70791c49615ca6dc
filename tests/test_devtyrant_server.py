"""tcjson-tyrant as a user meets it: the command line, run as a process.

Every test starts its own server (``python -m ...devtyrant.server``, which
is what the ``tcjson-tyrant`` script runs) and talks to it over loopback
with raw protocol bytes built by `protocol.request_bytes`.
"""
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading

import pytest

from pylons_tcjson_template.devtyrant.launcher import free_port, wait_for_port
from pylons_tcjson_template.devtyrant.protocol import recv_exactly, request_bytes

SERVER = [sys.executable, '-m', 'pylons_tcjson_template.devtyrant.server']
TCHMGR = '/usr/bin/tchmgr'
TIMEOUT = 10.0
needs_tchmgr = pytest.mark.skipif(not os.path.exists(TCHMGR),
                                  reason='tchmgr (Debian package tokyocabinet-bin) '
                                         'is not installed at %s' % TCHMGR)


# ------------------------------------------------------------ process helpers

def run_to_exit(args, timeout=TIMEOUT):
    """Run the CLI expecting it to stop by itself: (status, stdout, stderr)."""
    proc = subprocess.Popen(SERVER + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, close_fds=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        out, err = proc.communicate()
    finally:
        timer.cancel()
    return proc.returncode, out.decode('utf-8'), err.decode('utf-8')


class Cli(object):
    """A running server process and the line it printed on start."""

    def __init__(self, args, host='127.0.0.1', port=None):
        self.host = host
        self.port = port or free_port()
        self.args = ['-host', host, '-port', str(self.port)] + list(args)
        self.result = None
        self.proc = subprocess.Popen(SERVER + self.args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, close_fds=True)
        self.first_line = self._read_line()
        assert wait_for_port(host, self.port, TIMEOUT, self.proc), self.finish()

    def _read_line(self):
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        return self.proc.stdout.readline().decode('utf-8') if ready else ''

    def stop(self, signum=signal.SIGTERM):
        """Send the signal; (status, rest of stdout, stderr) once it exited."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.finish()

    def finish(self):
        """Wait for the exit (killing it after TIMEOUT); the same answer
        however often it is called."""
        if self.result is None:
            timer = threading.Timer(TIMEOUT, self.proc.kill)
            timer.start()
            try:
                out, err = self.proc.communicate()
            finally:
                timer.cancel()
            self.result = (self.proc.returncode, out.decode('utf-8'),
                           err.decode('utf-8'))
        return self.result


@pytest.fixture
def cli():
    """Start servers with ``cli(args)``; any left running are killed."""
    started = []

    def start(*args, **kwargs):
        server = Cli.__new__(Cli)
        started.append(server)          # before it can fail: always cleaned up
        server.__init__(args, **kwargs)
        return server

    yield start
    for server in started:
        if getattr(server, 'proc', None) is not None and server.proc.poll() is None:
            server.proc.kill()
    errors = [server.finish()[2] for server in started
              if getattr(server, 'proc', None) is not None]
    # A server that crashed, or met an internal error it survived, fails
    # the test even when every answer the test saw was right.
    assert not [err for err in errors if 'Traceback' in err or 'internal error' in err], \
        errors


# ------------------------------------------------------------ client helpers

def connect(server, timeout=TIMEOUT):
    return socket.create_connection((server.host, server.port), timeout)


def put(sock, key, value):
    sock.sendall(request_bytes('put', len(key), len(value), key, value))
    assert recv_exactly(sock, 1) == b'\x00'


def get(sock, key):
    """The value, or None when the server says the record is missing."""
    sock.sendall(request_bytes('get', len(key), key))
    if recv_exactly(sock, 1) == b'\x01':
        return None
    size, = struct.unpack('>I', recv_exactly(sock, 4))
    return recv_exactly(sock, size)


def rnum(server):
    sock = connect(server)
    try:
        sock.sendall(request_bytes('rnum'))
        assert recv_exactly(sock, 1) == b'\x00'
        return struct.unpack('>Q', recv_exactly(sock, 8))[0]
    finally:
        sock.close()


def assert_one_line_error(status, err, *words):
    assert status != 0
    assert 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err


def peak_rss_kb(server):
    with open('/proc/%d/status' % server.proc.pid) as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])


def closed_by_server(sock):
    sock.settimeout(TIMEOUT)
    try:
        return sock.recv(1) == b''
    except socket.timeout:
        return False
    except socket.error:
        return True


# ------------------------------------------------------------ start and stop

def test_prints_one_line_saying_where_it_listens(cli):
    server = cli('*')
    assert 'listening on 127.0.0.1:%d' % server.port in server.first_line
    status, out, err = server.stop()
    assert status == 0
    assert out == '' and err == ''


def test_host_and_port_are_honoured(cli):
    server = cli(host='127.0.0.2')
    assert '127.0.0.2:%d' % server.port in server.first_line
    sock = connect(server)
    put(sock, b'k', b'v')
    sock.close()
    with pytest.raises(socket.error):
        socket.create_connection(('127.0.0.1', server.port), TIMEOUT).close()
    assert server.stop()[0] == 0


def test_port_already_taken(tmpdir):
    taken = socket.socket()
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        status, out, err = run_to_exit(['-port', str(port), str(tmpdir.join('x.tch'))])
    finally:
        taken.close()
    assert_one_line_error(status, err, str(port))
    assert 'in use' in err
    assert out == ''


@pytest.mark.parametrize('args', [['-port', '70000'], ['-host', 'no.such.host.invalid'],
                                  ['-port', 'abc']])
def test_bad_address_arguments(args):
    status, out, err = run_to_exit(args)
    assert status != 0
    assert 'Traceback' not in err


def test_tch_in_a_missing_directory(tmpdir):
    path = tmpdir.join('no', 'such', 'dir', 'db.tch')
    status, out, err = run_to_exit(['-port', str(free_port()), str(path)])
    assert_one_line_error(status, err, str(path))
    assert not tmpdir.join('no').exists()


def test_tch_under_a_file_instead_of_a_directory(tmpdir):
    tmpdir.join('plain').write('not a directory')
    path = tmpdir.join('plain', 'db.tch')
    status, out, err = run_to_exit(['-port', str(free_port()), str(path)])
    assert_one_line_error(status, err, str(path))


@pytest.mark.skipif(os.geteuid() == 0, reason='root may write in a read-only directory')
def test_tch_in_a_read_only_directory(tmpdir):
    locked = tmpdir.mkdir('locked')
    locked.chmod(0o555)
    try:
        status, out, err = run_to_exit(['-port', str(free_port()),
                                        str(locked.join('db.tch'))])
    finally:
        locked.chmod(0o755)
    assert_one_line_error(status, err, 'db.tch')


def test_tch_where_nobody_may_create_files():
    # Even root cannot create files in /proc: the read-only case as root.
    status, out, err = run_to_exit(['-port', str(free_port()), '/proc/tcjson-test.tch'])
    assert_one_line_error(status, err, '/proc/tcjson-test.tch')


@pytest.mark.parametrize('dbpath', ['db.tcb', 'db.tct', 'casket', '+', 'db.tch.bak'])
def test_unsupported_database_kinds(tmpdir, dbpath):
    path = dbpath if dbpath == '+' else str(tmpdir.join(dbpath))
    status, out, err = run_to_exit(['-port', str(free_port()), path])
    assert_one_line_error(status, err, '.tch')
    assert not os.path.exists(path)


def test_second_server_on_the_same_file_fails_instead_of_waiting(cli, tmpdir):
    path = str(tmpdir.join('shared.tch'))
    first = cli(path)
    status, out, err = run_to_exit(['-port', str(free_port()), path])
    assert_one_line_error(status, err, 'shared.tch')
    assert first.proc.poll() is None
    assert first.stop()[0] == 0


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT],
                         ids=['SIGTERM', 'SIGINT'])
def test_signals_sync_and_exit_zero(cli, tmpdir, signum):
    path = str(tmpdir.join('db.tch'))
    server = cli(path)
    sock = connect(server)
    put(sock, b'key', b'value')
    status, out, err = server.stop(signum)      # the client is still connected
    sock.close()
    assert status == 0
    assert 'Traceback' not in err
    again = cli(path)
    sock = connect(again)
    assert get(sock, b'key') == b'value'
    sock.close()
    assert again.stop()[0] == 0


@needs_tchmgr
def test_tch_file_is_read_by_tchmgr_and_survives_a_restart(cli, tmpdir):
    path = str(tmpdir.join('sessions.tch'))
    server = cli(path)
    sock = connect(server)
    records = dict((b'key%d' % i, b'{"n": %d}' % i) for i in range(20))
    for key, value in sorted(records.items()):
        put(sock, key, value)
    sock.close()
    assert server.stop()[0] == 0

    listed = subprocess.check_output([TCHMGR, 'list', path]).decode('ascii')
    assert sorted(listed.split()) == sorted(k.decode('ascii') for k in records)
    value = subprocess.check_output([TCHMGR, 'get', path, 'key7'])
    assert value.rstrip(b'\n') == b'{"n": 7}'

    again = cli(path)
    assert rnum(again) == 20
    sock = connect(again)
    assert get(sock, b'key19') == b'{"n": 19}'
    sock.close()
    assert again.stop()[0] == 0


def test_in_memory_data_does_not_survive_a_restart(cli):
    server = cli('*')
    sock = connect(server)
    put(sock, b'k', b'v')
    sock.close()
    port = server.port
    assert server.stop()[0] == 0
    assert rnum(cli(port=port)) == 0


# ------------------------------------------------------------ many clients

def test_fifty_clients_at_once(cli):
    server = cli('*')
    errors = []
    start = threading.Event()

    def client(n):
        try:
            sock = connect(server)
            start.wait(TIMEOUT)
            for i in range(40):
                key = b'c%d-%d' % (n, i)
                put(sock, key, key * 3)
                if get(sock, key) != key * 3:
                    errors.append('client %d record %d read back wrong' % (n, i))
            sock.close()
        except Exception as exc:                 # reported below, not lost
            errors.append('client %d: %r' % (n, exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert rnum(server) == 50 * 40


def test_pipelined_requests_are_answered_in_order(cli):
    server = cli('*')
    sock = connect(server)
    batch = [request_bytes('put', 2, 2, b'p%d' % i, b'v%d' % i) for i in range(10)]
    batch += [request_bytes('get', 2, b'p%d' % i) for i in range(10)]
    batch += [request_bytes('putnr', 2, 2, b'nr', b'xx'), request_bytes('rnum'),
              request_bytes('out', 2, b'p0'), request_bytes('out', 2, b'p0')]
    sock.sendall(b''.join(batch))
    assert recv_exactly(sock, 10) == b'\x00' * 10
    for i in range(10):
        assert recv_exactly(sock, 7) == b'\x00\x00\x00\x00\x02' + b'v%d' % i
    assert recv_exactly(sock, 9) == b'\x00' + struct.pack('>Q', 11)
    assert recv_exactly(sock, 2) == b'\x00\x01'
    sock.close()


def test_pipelined_requests_split_at_every_byte(cli):
    server = cli('*')
    sock = connect(server)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = request_bytes('put', 1, 3, b'k', b'abc') + request_bytes('get', 1, b'k')
    for i in range(len(data)):
        sock.sendall(data[i:i + 1])
    assert recv_exactly(sock, 1 + 1 + 4 + 3) == b'\x00' + b'\x00\x00\x00\x00\x03abc'
    sock.close()


def test_answers_before_an_unknown_command_are_still_sent(cli):
    server = cli('*')
    sock = connect(server)
    sock.sendall(request_bytes('putcat', 1, 1, b'a', b'b') + request_bytes('rnum')
                 + b'\xc8\xee')
    assert recv_exactly(sock, 1 + 9) == b'\x00\x00' + struct.pack('>Q', 1)
    assert closed_by_server(sock)
    sock.close()
    other = connect(server)
    assert get(other, b'a') == b'b'          # run once, not again on hang-up
    other.close()


def test_misbehaving_clients_do_not_affect_others(cli):
    server = cli('*')
    steady = connect(server)
    put(steady, b'steady', b'1')

    half = connect(server)                           # leaves mid-request
    half.sendall(request_bytes('put', 5, 100, b'hello')[:12])
    half.close()
    reset = connect(server)                          # resets mid-request
    reset.sendall(request_bytes('put', 5, 100, b'hello'))
    reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    reset.close()
    unknown = connect(server)                        # unknown command byte, nothing
    unknown.sendall(b'\xc8\xee')                      # after it (ttserver reads on in
    assert closed_by_server(unknown)                 # what follows, as the next request)
    unknown.close()
    text = connect(server)                           # not the binary protocol
    text.sendall(b'GET / HTTP/1.0\r\n\r\n' + os.urandom(256))
    noise = connect(server)                          # endless junk gets cut off
    try:
        for _ in range(100):
            noise.sendall(b'\x00' * 4096)
    except socket.error:
        pass
    assert closed_by_server(noise)
    noise.close()
    gone = connect(server)                           # asks, leaves before the answer
    gone.sendall(request_bytes('get', 6, b'steady'))
    gone.close()

    assert get(steady, b'steady') == b'1'
    put(steady, b'after', b'2')
    assert rnum(server) == 2
    text.close()
    steady.close()
    assert server.proc.poll() is None


@pytest.mark.parametrize('request_head, answer', [
    (request_bytes('put', 0x7fffffff, 0x7fffffff), b''),
    (request_bytes('put', 3, 0xffffffff), b''),
    (request_bytes('mget', 0xffffffff), b''),
    (request_bytes('misc', 7, 0, 0xffffffff), b''),
    # An mget key over the limit ends the list: answered (with no
    # record), and the connection goes on.
    (request_bytes('mget', 3, 0x7fffffff), b'\x00\x00\x00\x00\x00'),
], ids=['put-2GB-key', 'put-4GB-value', 'mget-4G-keys', 'misc-4G-args', 'mget-2GB-key'])
def test_huge_declared_length_does_not_stall_others(cli, request_head, answer):
    # The header alone: ttserver refuses it at once and, with nothing
    # after it to read on in, hangs up (tyrant-1.1.41-ext.txt, limits).
    server = cli('*')
    greedy = connect(server)
    greedy.sendall(request_head)
    other = connect(server)
    put(other, b'k', b'v')
    assert get(other, b'k') == b'v'
    if answer:
        assert recv_exactly(greedy, len(answer)) == answer
        assert rnum(server) == 1 and get(greedy, b'k') == b'v'
    else:
        assert closed_by_server(greedy)          # ttserver-style: cut off
    greedy.close()
    assert get(other, b'k') == b'v'
    other.close()
    assert server.proc.poll() is None


def test_request_under_the_limit_arriving_slowly_does_not_stall_others(cli):
    server = cli('*')
    slow = connect(server)
    value = b'x' * (4 * 1024 * 1024)
    slow.sendall(request_bytes('put', 4, len(value), b'slow'))
    other = connect(server)
    head, tail = value[:-3], value[-3:]
    quarter = len(head) // 4 + 1
    for i in range(4):
        slow.sendall(head[i * quarter:(i + 1) * quarter])
        put(other, b'k%d' % i, b'v')
    slow.sendall(tail)
    assert recv_exactly(slow, 1) == b'\x00'
    assert get(other, b'slow') == value
    slow.close()
    other.close()


def test_client_that_does_not_read_its_answers(cli):
    # 64 pipelined gets of a 1 MB value, not read for a while: the server
    # keeps serving others, holds only a few MB for that client (its peak
    # memory stays far below the 64 MB asked for) and, once the client
    # reads, sends every answer in order.
    server = cli('*')
    big = b'y' * (1024 * 1024)
    writer = connect(server)
    put(writer, b'big', big)
    hog = connect(server)
    hog.sendall(request_bytes('get', 3, b'big') * 64)
    for i in range(20):
        put(writer, b'k%d' % i, b'v')
        assert get(writer, b'big') == big
    assert peak_rss_kb(server) < 48 * 1024
    for _ in range(64):
        assert recv_exactly(hog, 5 + len(big)) == b'\x00' + struct.pack('>I', len(big)) + big
    hog.sendall(request_bytes('rnum'))
    assert recv_exactly(hog, 9) == b'\x00' + struct.pack('>Q', 21)
    hog.close()
    writer.close()


def test_stop_right_after_the_port_opens_exits_zero(tmpdir):
    # The port accepts connections before the event loop runs; a SIGTERM in
    # that gap used to be forgotten (the server then ran until killed).
    from pylons_tcjson_template.devtyrant.launcher import TyrantProcess
    for n in range(5):
        server = TyrantProcess(str(tmpdir.join('quick%d.tch' % n)), ttserver=False)
        assert server.start().stop() == 0


def test_port_zero_picks_a_free_port_and_says_which():
    proc = subprocess.Popen(SERVER + ['-port', '0'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, close_fds=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        line = proc.stdout.readline().decode('utf-8') if ready else ''
        port = int(line.split('127.0.0.1:')[1].split(',')[0])
        assert port > 0
        sock = socket.create_connection(('127.0.0.1', port), TIMEOUT)
        sock.sendall(request_bytes('rnum'))
        assert recv_exactly(sock, 9) == b'\x00' + struct.pack('>Q', 0)
        sock.close()
    finally:
        proc.terminate()
        proc.communicate()
    assert proc.returncode == 0


SCRIPT = os.path.join(os.path.dirname(sys.executable), 'tcjson-tyrant')


@pytest.mark.skipif(not os.path.exists(SCRIPT),
                    reason='%s is not installed (the package is not installed with its '
                           'console scripts: rerun ./setup.sh)' % SCRIPT)
def test_installed_console_script(tmpdir):
    port = free_port()
    proc = subprocess.Popen([SCRIPT, '-port', str(port), str(tmpdir.join('s.tch'))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
    try:
        assert wait_for_port('127.0.0.1', port, TIMEOUT, proc)
    finally:
        proc.terminate()
        out, err = proc.communicate()
    assert proc.returncode == 0
    assert 'listening on 127.0.0.1:%d' % port in out.decode('utf-8')


def test_client_that_half_closes_still_gets_every_answer(cli):
    # Send everything, shut down the sending side, then read: what a shell
    # pipe into nc does.  Answers still owed must all arrive before the
    # server closes its side.
    server = cli('*')
    big = b'z' * (1024 * 1024)
    writer = connect(server)
    put(writer, b'big', big)
    writer.close()
    sock = connect(server)
    sock.sendall(request_bytes('get', 3, b'big') * 16 + request_bytes('rnum'))
    sock.shutdown(socket.SHUT_WR)
    answer = b'\x00' + struct.pack('>I', len(big)) + big
    for _ in range(16):
        assert recv_exactly(sock, len(answer)) == answer
    assert recv_exactly(sock, 9) == b'\x00' + struct.pack('>Q', 1)
    assert closed_by_server(sock)
    sock.close()


def _low_fd_limit():
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))


def test_out_of_file_descriptors_serves_waiting_clients_later():
    # With 32 descriptors the server can hold about 25 clients; the rest
    # wait in the kernel's queue and are served once others leave.
    port = free_port()
    proc = subprocess.Popen(SERVER + ['-port', str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, close_fds=True,
                            preexec_fn=_low_fd_limit)
    clients = []
    try:
        assert wait_for_port('127.0.0.1', port, TIMEOUT, proc)
        server = type('Address', (), {'host': '127.0.0.1', 'port': port})
        clients = [connect(server) for _ in range(40)]
        put(clients[0], b'k', b'v')
        for sock in clients[:20]:
            sock.close()
        for sock in clients[20:]:
            assert get(sock, b'k') == b'v'
    finally:
        for sock in clients:
            sock.close()
        proc.terminate()
        out, err = proc.communicate()
    assert proc.returncode == 0
    assert 'Traceback' not in err.decode('utf-8')
