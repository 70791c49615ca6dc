"""A server that is not a sane Tyrant: every fault is a clean TyrantUnavailable.

The one place the suite uses a fake server: a real ttserver never answers
garbage, and these faults are about the client's framing.
"""
import json
import socket
import struct
import threading
import time

import pytest

from pylons_tcjson_template import tcjson


EXT = b'\xc8\x68'                    # the ext command's first bytes
IDENTITY = json.dumps({'tcjson': 1, 'sid': 0, 'members': '', 'born': 0}).encode()
PROBE_ANSWER = b'\x00' + struct.pack('>I', len(IDENTITY)) + IDENTITY


class FakeServer(object):
    """Accepts connections; answers the client's probe for lib/tcjson.lua
    as a sane server would, then sends `reply` to the request that follows
    and maybe hangs up."""

    def __init__(self, reply, hang_up=True):
        self.reply, self.hang_up = reply, hang_up
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(5)
        self.url = '127.0.0.1:%d' % self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve)
        self.thread.daemon = True
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except socket.error:
                return
            request = conn.recv(65536)
            if request.startswith(EXT) and b'probe' in request:
                conn.sendall(PROBE_ANSWER)
                conn.recv(65536)
            conn.sendall(self.reply)
            if self.hang_up:
                conn.close()

    def close(self):
        self.listener.close()


@pytest.fixture
def fake_server():
    servers = []

    def start(reply, **kwargs):
        server = FakeServer(reply, **kwargs)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()


def manager(url):
    # A unique URL per fake server: each gets its own pool.
    return tcjson.TyrantNamespaceManager('ns', url=url, io_timeout=1)


def test_a_status_byte_other_than_0_or_1_is_a_protocol_error(fake_server):
    server = fake_server(b'\x07')
    with pytest.raises(tcjson.TyrantUnavailable) as info:
        manager(server.url)['key']
    assert 'protocol error' in str(info.value)


def test_a_reply_cut_short_by_the_server_fails_at_once(fake_server):
    server = fake_server(b'\x00\x00\x00\x00\x10abc')       # announces 16 bytes, sends 3
    started = time.time()
    with pytest.raises(tcjson.TyrantUnavailable) as info:
        manager(server.url)['key']
    assert 'closed the connection' in str(info.value)
    assert time.time() - started < 1                       # no wait for io_timeout


def test_a_server_that_announces_more_than_it_sends_times_out(fake_server):
    server = fake_server(b'\x00\x7f\xff\xff\xff' + b'x' * 1000, hang_up=False)
    with pytest.raises(tcjson.TyrantUnavailable) as info:
        manager(server.url)['key']
    assert 'io_timeout=1' in str(info.value)


def test_a_session_record_of_garbage_bytes_is_unreadable_not_a_crash(fake_server):
    server = fake_server(b'\x00\x00\x00\x00\x04\xff\xfe\x00\x01')
    tcjson.register()
    with pytest.raises(tcjson.UnreadableRecord):
        tcjson.TyrantSession({'cookie': 'beaker.session.id=%s' % ('0' * 32)},
                             type='ext:tcjson', url=server.url)
