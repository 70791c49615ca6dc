"""Replay the bytes recorded from a real ttserver 1.1.41 against tcjson-tyrant.

tests/data/tyrant-1.1.41-transcripts.txt is parsed here, line by line; every
line becomes a step (or is a comment) and a line the parser does not know
fails the test, so nothing in the file goes unchecked.  The steps run in
file order against one fresh server: records written by one step are read
by later ones (addint turns k1 into "btXY", as getlist shows further down).

How each kind of line is checked:

* ``label  REQ hex`` + ``RSP hex``: the request on a fresh connection; the
  client then half-closes, reads to end of file and compares the whole
  answer byte for byte, so an extra byte would fail too (putnr: no byte).
* ``iterinit``/``iternext (same connection)``: c850/c851 on one connection.
* ``stat``: only part is shown; its framing, version, protver and rnum.
* ``size``: the recorded answer is the size of ttserver's casket.tch file.
  An in-memory database has no file (ttserver reports the memory its
  records take), so that replay compares only the framing: status 0 and an
  8-byte number.  A second replay runs on a fresh .tch file; Tokyo Cabinet
  lays out the same records in a file of the same size, so there the
  recorded value is reproducible and is compared exactly.
* connection closed / no reply within 1 s / vanish: as the notes say.
"""
import binascii
import os
import re
import socket
import struct

import pytest

from pylons_tcjson_template.devtyrant.protocol import (ConnectionClosed, recv_exactly,
                                                       request_bytes)

TRANSCRIPT = os.path.join(os.path.dirname(__file__), 'data',
                          'tyrant-1.1.41-transcripts.txt')
NO_REPLY_WAIT = 1.0          # what the notes call "no reply within 1 s"
IO_TIMEOUT = 5.0

# Requests the file names but does not spell out as REQ bytes (stat and
# vanish give their two bytes in the label and are read from there).
ITER_REQUESTS = {'iterinit': request_bytes('iterinit'),
                 'iternext': request_bytes('iternext')}
RNUM_REQUEST = request_bytes('rnum')
# "truncated get (hdr only)": magic, command and key size, no key bytes.
TRUNCATED_GET = request_bytes('get', 2)
TRUNCATED_GET_REST = b'k1'


def unhex(text):
    return binascii.unhexlify(text.strip()) if text.strip() else b''


class Step(object):
    """One check: what to send and what to expect, with its file line."""

    def __init__(self, kind, lineno, label, request=b'', response=b'', extra=None):
        self.kind = kind
        self.lineno = lineno
        self.label = label
        self.request = request
        self.response = response
        self.extra = extra

    def __repr__(self):
        return 'line %d %s %r' % (self.lineno, self.kind, self.label)


_REQ = re.compile(r'^(?P<label>\S.*?)\s+REQ\s+(?P<hex>[0-9a-f]*)\s*$')
_RSP = re.compile(r'^\s+RSP(?:\s+(?P<hex>[0-9a-f]*))?\s*$')
_SAME_CONN = re.compile(r'^(?P<cmd>iterinit|iternext) \(same connection\)\s+'
                        r'RSP\s+(?P<hex>[0-9a-f]+)\s*$')
_STAT = re.compile(r'^stat \((?P<hex>c8[0-9a-f]{2})\) RSP: 00, 4-byte length, '
                   r'then tab-separated lines')
_CLOSED = re.compile(r'^unknown cmd (?P<bytes>(?:0x[0-9A-Fa-f]{2} ?)+)\s+'
                     r'RSP \(connection closed by server\)\s*$')
_SILENT = re.compile(r'^(?P<label>bad magic (?P<bytes>(?:0x[0-9A-Fa-f]{2} ?)+)|'
                     r'truncated get \(hdr only\))\s+RSP \(no reply within 1 s\)\s*$')
_VANISH = re.compile(r'^vanish \((?P<hex>c8[0-9a-f]{2})\)\s+RSP (?P<vanish>[0-9a-f]+), '
                     r'then rnum RSP (?P<rnum>[0-9a-f]+)\s*$')


def _byte_list(text):
    return bytes(bytearray(int(part, 16) for part in text.split()))


def parse_transcript(path=TRANSCRIPT):
    """The file as a list of Steps; ValueError names any line not understood."""
    with open(path) as f:
        lines = f.read().splitlines()
    steps = []
    i = 0
    while i < len(lines):
        line, lineno = lines[i], i + 1
        i += 1
        if not line.strip() or line.startswith('#'):
            continue
        m = _REQ.match(line)
        if m:
            rsp = _RSP.match(lines[i]) if i < len(lines) else None
            if rsp is None:
                raise ValueError('line %d: REQ without an RSP line after it' % lineno)
            i += 1
            steps.append(Step('exchange', lineno, m.group('label'),
                              unhex(m.group('hex')), unhex(rsp.group('hex') or '')))
            continue
        m = _SAME_CONN.match(line)
        if m:
            steps.append(Step('same-connection', lineno, m.group('cmd'),
                              ITER_REQUESTS[m.group('cmd')], unhex(m.group('hex'))))
            continue
        m = _STAT.match(line)
        if m:
            if i >= len(lines) or not lines[i].startswith(' '):
                raise ValueError('line %d: stat without its field line' % lineno)
            shown = [part.split('\t', 1) for part in lines[i].strip().split(' | ')]
            i += 1
            steps.append(Step('stat', lineno, 'stat', unhex(m.group('hex')),
                              extra=dict(pair for pair in shown if len(pair) == 2)))
            continue
        m = _CLOSED.match(line)
        if m:
            steps.append(Step('closed', lineno, line.split('  ')[0],
                              _byte_list(m.group('bytes'))))
            continue
        m = _SILENT.match(line)
        if m:
            if m.group('bytes'):
                steps.append(Step('silent', lineno, m.group('label'),
                                  _byte_list(m.group('bytes'))))
            else:
                steps.append(Step('silent', lineno, m.group('label'), TRUNCATED_GET,
                                  extra=TRUNCATED_GET_REST))
            continue
        m = _VANISH.match(line)
        if m:
            steps.append(Step('vanish', lineno, 'vanish', unhex(m.group('hex')),
                              unhex(m.group('vanish')), extra=unhex(m.group('rnum'))))
            continue
        raise ValueError('line %d not understood: %r' % (lineno, line))
    return steps


# ------------------------------------------------------------ socket helpers

def connect(server):
    sock = socket.create_connection((server.host, server.port), IO_TIMEOUT)
    sock.settimeout(IO_TIMEOUT)
    return sock


def recv_up_to(sock, size):
    """`size` bytes, or what came before the server hung up."""
    try:
        return recv_exactly(sock, size)
    except ConnectionClosed as closed:
        return closed.received


def recv_to_eof(sock):
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)


def exchange(server, request):
    """Send one request on a fresh connection and return the whole answer."""
    sock = connect(server)
    try:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        return recv_to_eof(sock)
    finally:
        sock.close()


def is_closed_by_server(sock):
    try:
        return sock.recv(1) == b''
    except socket.error as exc:          # a reset is a close too
        return not isinstance(exc, socket.timeout)


def rnum(server):
    answer = exchange(server, RNUM_REQUEST)
    assert len(answer) == 9 and answer[:1] == b'\x00', repr(answer)
    return struct.unpack('>Q', answer[1:])[0]


# ------------------------------------------------------------ the replay

class Replay(object):
    """Runs the steps against one server and collects every mismatch."""

    def __init__(self, server, exact_size):
        self.server = server
        self.exact_size = exact_size
        self.failures = []
        self.iter_sock = None
        self.last_rnum = None

    def fail(self, step, message):
        self.failures.append('%r: %s' % (step, message))

    def compare(self, step, got, expected):
        if got != expected:
            self.fail(step, 'got %s, expected %s' % (binascii.hexlify(got),
                                                     binascii.hexlify(expected)))

    def run(self, steps):
        for step in steps:
            if step.kind != 'same-connection':
                self.end_same_connection()
            getattr(self, 'do_' + step.kind.replace('-', '_'))(step)
        self.end_same_connection()
        return self.failures

    def do_exchange(self, step):
        got = exchange(self.server, step.request)
        if step.label == 'size' and not self.exact_size:
            # Framing only: status 0 and an 8-byte number (see module notes).
            if len(got) != 9 or got[:1] != b'\x00':
                self.fail(step, 'size framing: got %s' % binascii.hexlify(got))
            return
        self.compare(step, got, step.response)
        if step.label == 'rnum':
            self.last_rnum = struct.unpack('>Q', step.response[1:])[0]

    def do_same_connection(self, step):
        if self.iter_sock is None:
            self.iter_sock = connect(self.server)
        self.iter_sock.sendall(step.request)
        self.compare(step, recv_up_to(self.iter_sock, len(step.response)),
                     step.response)

    def end_same_connection(self):
        """Nothing may follow the last iternext answer on that connection."""
        if self.iter_sock is not None:
            sock, self.iter_sock = self.iter_sock, None
            sock.shutdown(socket.SHUT_WR)
            rest = recv_to_eof(sock)
            sock.close()
            if rest:
                self.failures.append('iteration connection: extra bytes %s'
                                     % binascii.hexlify(rest))

    def do_stat(self, step):
        got = exchange(self.server, step.request)
        if got[:1] != b'\x00' or len(got) < 5:
            return self.fail(step, 'bad stat answer %r' % got[:16])
        size, = struct.unpack('>I', got[1:5])
        if size != len(got) - 5:
            return self.fail(step, 'length %d but %d bytes follow' % (size, len(got) - 5))
        text = got[5:].decode('utf-8')
        lines = text.splitlines()
        bad = [line for line in lines if len(line.split('\t')) != 2]
        if bad or not text.endswith('\n'):
            return self.fail(step, 'not tab-separated lines: %r' % (bad or text[-20:]))
        fields = dict(line.split('\t') for line in lines)
        for name in ('version', 'protver', 'rnum'):
            if fields.get(name) != step.extra[name]:
                self.fail(step, '%s is %r, ttserver said %r'
                          % (name, fields.get(name), step.extra[name]))
        if self.last_rnum is not None and fields.get('rnum') != str(self.last_rnum):
            self.fail(step, 'rnum %r but the rnum command said %d'
                      % (fields.get('rnum'), self.last_rnum))

    def do_closed(self, step):
        sock = connect(self.server)
        try:
            sock.sendall(step.request)
            if not is_closed_by_server(sock):
                self.fail(step, 'connection still open')
        finally:
            sock.close()

    def do_silent(self, step):
        before = rnum(self.server)
        sock = connect(self.server)
        try:
            sock.sendall(step.request)
            sock.settimeout(NO_REPLY_WAIT)
            try:
                got = sock.recv(64)
                self.fail(step, 'answered %r' % got)
            except socket.timeout:
                pass
            # Other clients are still served meanwhile.
            if rnum(self.server) != before:
                self.fail(step, 'record count changed')
            if step.extra:
                # "No response until the rest arrives": now it does.
                sock.settimeout(IO_TIMEOUT)
                sock.sendall(step.extra)
                sock.shutdown(socket.SHUT_WR)
                got = recv_to_eof(sock)
                if got[:1] != b'\x00' and got != b'\x01':
                    self.fail(step, 'completed request answered %r' % got)
        finally:
            sock.close()

    def do_vanish(self, step):
        self.compare(step, exchange(self.server, step.request), step.response)
        self.compare(step, exchange(self.server, RNUM_REQUEST), step.extra)


# ------------------------------------------------------------ tests

def test_every_line_of_the_transcript_is_understood():
    steps = parse_transcript()
    kinds = [step.kind for step in steps]
    assert kinds.count('exchange') == 28
    assert kinds.count('same-connection') == 7
    assert kinds.count('stat') == kinds.count('closed') == kinds.count('vanish') == 1
    assert kinds.count('silent') == 2
    stat = [step for step in steps if step.kind == 'stat'][0]
    assert stat.extra['version'] == '1.1.41' and stat.extra['rnum'] == '4'


def parse_error(parse, tmpdir, text):
    """What `parse` raises for a file holding `text` (a ValueError's text)."""
    bogus = tmpdir.join('bogus.txt')
    bogus.write(text)
    with pytest.raises(ValueError) as info:
        parse(str(bogus))
    return str(info.value)


def test_parser_rejects_lines_it_does_not_know(tmpdir):
    text = '# note\nput k1=v1   REQ c810\n   RSP 00\nsomething new   RSP 00\n'
    assert 'line 4' in parse_error(parse_transcript, tmpdir, text)


def test_replay_in_memory(devtyrant_factory):
    server = devtyrant_factory('*')
    assert Replay(server, exact_size=False).run(parse_transcript()) == []
    assert server.running


def test_replay_on_tch_file_including_size(devtyrant_factory):
    server = devtyrant_factory('casket.tch')
    assert Replay(server, exact_size=True).run(parse_transcript()) == []
    assert server.running


def test_requests_not_spelled_out_in_the_file():
    steps = dict((step.label, step) for step in parse_transcript())
    assert steps['stat'].request == b'\xc8\x88'
    assert steps['vanish'].request == b'\xc8\x72'
    assert steps['iterinit'].request == b'\xc8\x50'
    assert steps['iternext'].request == b'\xc8\x51'
    assert steps['truncated get (hdr only)'].request == b'\xc8\x30\x00\x00\x00\x02'
