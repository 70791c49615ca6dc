"""Shared machinery of the replication tests (tests/test_devtyrant_ulog.py,
tests/test_devtyrant_replication.py).  No tests here.

Update log files and wire records are parsed here with struct, straight
from the layout in tests/data/tyrant-1.1.41-replication.txt, not with the
server's own ulog module: the tests check the server against the recorded
format, not against itself.
"""
import binascii
import os
import re
import socket
import struct
import time

import pytest

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess
from pylons_tcjson_template.devtyrant.protocol import recv_exactly, request_bytes
from test_devtyrant_transcripts import exchange

REFERENCE = os.path.join(os.path.dirname(__file__), 'data', 'tyrant-1.1.41-replication.txt')
IO_TIMEOUT = 5.0
DISK_HEADER = struct.Struct('>BQHHI')      # c9 TS SID MID SIZE
WIRE_HEADER = struct.Struct('>BQII')       # c9 TS SID SIZE


def unhex(text):
    """Hex with spaces or '|' between the fields, as the reference writes it."""
    return binascii.unhexlify(re.sub(r'[\s|]', '', text))


def reference_text():
    with open(REFERENCE) as reference:
        return reference.read()


def reference_section(title):
    """The lines of the reference from the heading containing `title` to the
    next heading."""
    text = reference_text()
    start = text.index(title)
    end = text.find('\n== ', start)
    return text[start:end if end > 0 else len(text)]


def wait_until(condition, timeout, interval=0.01):
    """Poll `condition` until it returns something true; that value, or
    None when `timeout` seconds passed first."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() >= deadline:
            return None
        time.sleep(interval)


# ------------------------------------------------------------ servers

def start_server(tmpdir, name, port=None, **options):
    """A tcjson-tyrant on `name`.tch in tmpdir; options as TyrantProcess
    takes them, with ulog/rts names relative to tmpdir."""
    for option in ('ulog', 'rts'):
        if options.get(option):
            options[option] = str(tmpdir.join(options[option]))
    server = TyrantProcess(str(tmpdir.join(name + '.tch')), port=port, ttserver=False,
                           log=open(str(tmpdir.join(name + '.log')), 'ab'), **options)
    return server.start()


def server_log(tmpdir, name):
    return tmpdir.join(name + '.log').read()


class Peers(object):
    """Servers a test starts; every one is stopped at the end."""

    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.started = []

    def start(self, name, **options):
        server = start_server(self.tmpdir, name, **options)
        self.started.append(server)
        return server

    def stop_all(self):
        """Stop every server; fail on a traceback or internal error in the
        log of any of them, even when every answer the test saw was right."""
        for server in self.started:
            server.stop()
        for name in set(server.log.name for server in self.started):
            with open(name) as log_file:
                text = log_file.read()
            assert 'Traceback' not in text and 'internal error' not in text, text


@pytest.fixture
def peers(tmpdir):
    """Start tcjson-tyrant servers with ``peers.start(name, **options)``."""
    started = Peers(tmpdir)
    yield started
    started.stop_all()


# ------------------------------------------------------------ raw client

def call(server, data, answer_size=None):
    """Send request bytes on a fresh connection; the whole answer (read to
    the end after a half-close) or exactly `answer_size` bytes."""
    if answer_size is None:
        return exchange(server, data)
    sock = socket.create_connection((server.host, server.port), IO_TIMEOUT)
    try:
        sock.sendall(data)
        return recv_exactly(sock, answer_size)
    finally:
        sock.close()


def put(server, key, value):
    assert call(server, request_bytes('put', len(key), len(value), key, value), 1) == b'\x00'


def out(server, key):
    return call(server, request_bytes('out', len(key), key), 1) == b'\x00'


def get(server, key):
    """The value, or None when the server says the record is missing."""
    answer = call(server, request_bytes('get', len(key), key))
    if answer[:1] != b'\x00':
        return None
    return answer[5:]


def addint(server, key, num):
    answer = call(server, request_bytes('addint', len(key), num, key), 5)
    return struct.unpack('>i', answer[1:])[0]


def rnum(server):
    return struct.unpack('>Q', call(server, request_bytes('rnum'), 9)[1:])[0]


def stat_pairs(server):
    """stat's lines as (name, value) pairs, in the order sent."""
    answer = call(server, request_bytes('stat'))
    assert answer[:1] == b'\x00'
    size, = struct.unpack('>I', answer[1:5])
    text = answer[5:5 + size].decode('utf-8')
    return [tuple(line.split('\t', 1)) for line in text.splitlines()]


def stat(server):
    return dict(stat_pairs(server))


def setmst(server, host, port, ts=0, opts=0):
    host = host.encode('ascii')
    data = b'\xc8\x78' + struct.pack('>IIQI', len(host), port, ts, opts) + host
    return call(server, data, 1)


def repl_request(ts, sid):
    return b'\xc8\xa0' + struct.pack('>QI', ts, sid)


# ------------------------------------------------------------ update logs

def ulog_records(directory):
    """Every record of an update log directory, oldest file first:
    dicts with file, ts, sid, mid, body (result byte included)."""
    records = []
    names = sorted(name for name in os.listdir(directory) if name.endswith('.ulog'))
    for name in names:
        with open(os.path.join(directory, name), 'rb') as log_file:
            data = log_file.read()
        pos = 0
        while pos < len(data):
            magic, ts, sid, mid, size = DISK_HEADER.unpack_from(data, pos)
            assert magic == 0xC9, (name, pos)
            start = pos + DISK_HEADER.size
            records.append({'file': name, 'ts': ts, 'sid': sid, 'mid': mid,
                            'body': data[start:start + size]})
            pos = start + size
        assert pos == len(data), name
    return records


def disk_record(ts, sid, mid, body):
    return DISK_HEADER.pack(0xC9, ts, sid, mid, len(body)) + body


class FakeSlave(object):
    """A raw socket that asks a master for its stream, as a slave does."""

    def __init__(self, server, ts, sid):
        self.sock = socket.create_connection((server.host, server.port), IO_TIMEOUT)
        self.sock.sendall(repl_request(ts, sid))
        self.started = time.time()

    def read(self, size):
        return recv_exactly(self.sock, size)

    def next_item(self):
        """('nop', None) or ('record', (ts, sid, body, raw bytes))."""
        first = self.read(1)
        if first == b'\xca':
            return 'nop', None
        assert first == b'\xc9', first
        rest = self.read(WIRE_HEADER.size - 1)
        _, ts, sid, size = WIRE_HEADER.unpack(first + rest)
        body = self.read(size)
        return 'record', (ts, sid, body, first + rest + body)

    def records(self, count):
        """The next `count` records, skipping nops."""
        found = []
        while len(found) < count:
            kind, record = self.next_item()
            if kind == 'record':
                found.append(record)
        return found

    def closed_by_server(self):
        self.sock.settimeout(IO_TIMEOUT)
        try:
            return self.sock.recv(1) == b''
        except socket.error:
            return True

    def close(self):
        self.sock.close()


class FakeMaster(object):
    """A listening socket that plays a master for a tcjson-tyrant slave."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(4)
        self.listener.settimeout(IO_TIMEOUT)
        self.port = self.listener.getsockname()[1]

    def accept(self):
        """The slave's connection and the 14-byte request it sent."""
        sock, _ = self.listener.accept()
        sock.settimeout(IO_TIMEOUT)
        return sock, recv_exactly(sock, 14)

    def close(self):
        self.listener.close()
