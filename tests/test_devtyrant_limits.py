"""One client must not stall tcjson-tyrant or blow up its memory (a security
review's findings), and ttserver's limits on a request hold.

* A large request arriving in pieces is read once, not again from its
  start on every read: another client's requests are answered meanwhile
  within a fraction of a second (measured side by side).
* mget and misc lists: at most 1<<20 items, as ttserver (MAXARGNUM).
* An answer is made while the client reads it: an mget naming one 1 MB
  record 400 times (a request of a few KB) does not make the server hold
  400 MB (VmHWM of /proc/PID/status).
"""
import socket
import struct
import threading
import time

import pytest

from pylons_tcjson_template.devtyrant.protocol import recv_exactly, request_bytes

TIMEOUT = 10.0


def connect(server):
    sock = socket.create_connection((server.host, server.port), TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def put(sock, key, value):
    sock.sendall(request_bytes('put', len(key), len(value), key, value))
    assert recv_exactly(sock, 1) == b'\x00'


def peak_rss_mb(server):
    with open('/proc/%d/status' % server.pid) as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0


class Watcher(threading.Thread):
    """Another client: a get every few milliseconds, noting the longest
    wait for an answer."""

    def __init__(self, server):
        threading.Thread.__init__(self)
        self.sock = connect(server)
        self.longest = 0.0
        self.answered = 0
        self.error = None
        self.done = threading.Event()

    def run(self):
        request = request_bytes('get', 5, b'probe')
        while not self.done.is_set():
            started = time.time()
            try:
                self.sock.sendall(request)
                answer = recv_exactly(self.sock, 6)
            except Exception as exc:        # a timeout is a wait that long
                self.error = repr(exc)
                answer = None
            self.longest = max(self.longest, time.time() - started)
            if answer != b'\x00\x00\x00\x00\x01x':
                self.error = self.error or 'answered %r' % answer
                return
            self.answered += 1
            time.sleep(0.005)

    def stop(self):
        self.done.set()
        self.join(TIMEOUT)
        self.sock.close()


def _big_list_request(command, count):
    """An mget or misc getlist of `count` distinct keys (about 10 bytes
    each), every 100th of them stored."""
    items = b''.join(struct.pack('>I', 6) + b'k%05d' % (i % 100000) for i in range(count))
    if command == 'mget':
        return request_bytes('mget', count) + items
    return request_bytes('misc', 7, 0, count, b'getlist') + items


@pytest.mark.parametrize('command', ['mget', 'misc'])
def test_a_large_list_arriving_slowly_does_not_stall_others(devtyrant_factory, command):
    server = devtyrant_factory(ext=False)
    writer = connect(server)
    put(writer, b'probe', b'x')
    for i in range(0, 100000, 100):
        put(writer, b'k%05d' % i, b'v')
    request = _big_list_request(command, 1000000)           # 10 MB
    watcher = Watcher(server)
    watcher.start()
    slow = connect(server)
    step = 64 * 1024
    for start in range(0, len(request), step):
        slow.sendall(request[start:start + step])
        time.sleep(0.002)
    head = recv_exactly(slow, 5)
    watcher.stop()
    assert head[:1] == b'\x00'
    found = struct.unpack('>I', head[1:])[0]
    assert found == (10000 if command == 'mget' else 20000)
    assert watcher.longest < 0.5, 'another client waited %.2f s' % watcher.longest
    assert watcher.error is None and watcher.answered > 10
    slow.close()
    writer.close()


@pytest.mark.parametrize('request_head', [
    request_bytes('mget', (1 << 20) + 1),
    request_bytes('mget', 64 * 1000 * 1000),
    request_bytes('misc', 7, 0, (1 << 20) + 1),
], ids=['mget-1M+1', 'mget-64M', 'misc-1M+1'])
def test_lists_of_more_than_1M_items_are_refused_at_once(devtyrant_factory, request_head):
    server = devtyrant_factory(ext=False)
    sock = connect(server)
    sock.sendall(request_head)
    assert sock.recv(1) == b''                  # closed, as ttserver does
    sock.close()


def test_a_list_of_1M_items_is_served(devtyrant_factory):
    server = devtyrant_factory(ext=False)
    sock = connect(server)
    put(sock, b'k00000', b'v')
    sock.sendall(_big_list_request('mget', 1 << 20))
    head = recv_exactly(sock, 5)
    assert head == b'\x00' + struct.pack('>I', 11)      # k00000 is named 11 times
    assert recv_exactly(sock, 11 * 15) == (struct.pack('>II', 6, 1) + b'k00000v') * 11
    sock.close()


@pytest.mark.parametrize('command', ['mget', 'misc'])
def test_an_answer_naming_one_large_record_many_times_is_not_held_whole(devtyrant_factory,
                                                                         command):
    server = devtyrant_factory(ext=False)
    sock = connect(server)
    big = b'b' * (1024 * 1024)
    put(sock, b'big', big)
    before = peak_rss_mb(server)
    keys = [b'big'] * 400
    if command == 'mget':
        sock.sendall(request_bytes('mget', 400, *sum(([3, key] for key in keys), [])))
        item = struct.pack('>II', 3, len(big)) + b'big' + big
        head = b'\x00' + struct.pack('>I', 400)
    else:
        sock.sendall(request_bytes('misc', 7, 0, 400, b'getlist',
                                   *sum(([3, key] for key in keys), [])))
        item = struct.pack('>I', 3) + b'big' + struct.pack('>I', len(big)) + big
        head = b'\x00' + struct.pack('>I', 800)
    time.sleep(0.5)                             # the client reads nothing yet
    assert recv_exactly(sock, len(head)) == head
    for _ in range(400):
        assert recv_exactly(sock, len(item)) == item
    grown = peak_rss_mb(server) - before
    assert grown < 40, 'the server grew by %d MB for a 400 MB answer' % grown
    sock.close()
