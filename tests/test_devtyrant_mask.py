"""-mask / -unmask against what a real ttserver 1.1.41 answered
(tests/data/tyrant-1.1.41-mask.txt).

Every section of that file is replayed: a server is started with the
section's flags on a database holding k1=v1 and k2=v2 (written by an
earlier run without a mask, as for the recording), the section's requests
are sent in order on fresh connections, and each answer is compared byte
for byte.  The server's log must name the same forbidden commands in the
same order, show the same "command bit mask", and its update log must hold
as many records as ttserver's did.  Where a real ttserver is at hand
($TCJSON_TTSERVER or PATH), the same replay runs against it too, which
shows the file and the replay agree.

How each RSP is compared:

* hex: the whole answer (the client half-closes and reads to the end).
* ``00, full stat; its cnt_ lines: ...``: stat was allowed: status 00, the
  usual header lines, and exactly these cnt_ lines in this order.  (A
  forbidden stat has no header lines and is shown in hex whole.)
* ``size`` when allowed: status 00 and an 8-byte number (the file size of
  a Tokyo Cabinet database, which depends on its history, not on masks).
* repl: ``XXXXXXXX then the stream`` (the first 4 bytes, then it stays
  open) or ``(connection closed, nothing sent)``.
"""
import binascii
import os
import re
import shlex
import socket
import struct

import pytest

from pylons_tcjson_template.devtyrant import protocol
from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, find_ttserver, free_port
from pylons_tcjson_template.devtyrant.mask import CommandMask, parse
from test_devtyrant_replication_support import (
    FakeMaster, get, put, setmst, stat, ulog_records, wait_until)
from test_devtyrant_replication_support import peers  # a fixture: noqa
from test_devtyrant_transcripts import connect, exchange, parse_error

MASK_FILE = os.path.join(os.path.dirname(__file__), 'data', 'tyrant-1.1.41-mask.txt')

_SECTION = re.compile(r'^== ttserver (?P<flags>.+)$')
_REQ = re.compile(r'^(?P<label>\S.*?)\s+REQ (?P<hex>[0-9a-f]+)(?:\s+(?P<forbidden>do_\w+: forbidden))?$')
_RSP = re.compile(r'^\s+RSP ?(?P<answer>.*)$')
_BITS = re.compile(r'^command bit mask: (?P<bits>0x[0-9a-f]+|none logged)$')
_RECORDS = re.compile(r'^update log records: (?P<count>\d+)$')
_FULL_STAT = re.compile(r'^00, full stat; its cnt_ lines: (?P<lines>.+)$')
_STREAM = re.compile(r'^(?P<hex>[0-9a-f]{8}) then the stream$')
_CLOSED = '(connection closed, nothing sent)'
_FORBIDDEN = re.compile(r'do_\w+: forbidden')
_LOGGED_BITS = re.compile(r'command bit mask: (0x[0-9a-f]+)')


class Section(object):
    """One ttserver run of the file: its flags, its steps, what it logged."""

    def __init__(self, flags, lineno):
        self.flags = flags
        self.lineno = lineno
        self.steps = []            # (label, request, answer text, forbidden line or None)
        self.bits = None
        self.records = None

    def __repr__(self):
        return 'line %d: %s' % (self.lineno, self.flags)


def parse_mask_file(path=MASK_FILE):
    """The sections of the file; ValueError names any line not understood."""
    with open(path) as mask_file:
        lines = mask_file.read().splitlines()
    sections, pending = [], None
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.startswith('#'):
            continue
        section = sections[-1] if sections else None
        for pattern, take in ((_SECTION, _new_section), (_REQ, _new_request),
                              (_RSP, _answer), (_BITS, _bits), (_RECORDS, _records)):
            match = pattern.match(line)
            if match:
                pending = take(sections, section, pending, match, lineno)
                break
        else:
            raise ValueError('line %d not understood: %r' % (lineno, line))
    return sections


def _new_section(sections, section, pending, match, lineno):
    sections.append(Section(match.group('flags'), lineno))


def _new_request(sections, section, pending, match, lineno):
    if section is None or pending is not None:
        raise ValueError('line %d: REQ out of place' % lineno)
    return (match.group('label'), binascii.unhexlify(match.group('hex')),
            match.group('forbidden'))


def _answer(sections, section, pending, match, lineno):
    if pending is None:
        raise ValueError('line %d: RSP without its REQ' % lineno)
    label, request, forbidden = pending
    section.steps.append((label, request, match.group('answer').strip(), forbidden))


def _bits(sections, section, pending, match, lineno):
    bits = match.group('bits')
    section.bits = None if bits == 'none logged' else int(bits, 16)


def _records(sections, section, pending, match, lineno):
    section.records = int(match.group('count'))


# ------------------------------------------------------------ the replay

def seeded_server(tmpdir, flags, ttserver):
    """A server with the section's flags on a database that already holds
    k1=v1 and k2=v2, logging to ulog/ as sid 1 (the recording's setup)."""
    dbpath = str(tmpdir.join('casket.tch'))
    seed = TyrantProcess(dbpath, ttserver=ttserver).start()
    try:
        put(seed, b'k1', b'v1')
        put(seed, b'k2', b'v2')
    finally:
        seed.stop()
    log = open(str(tmpdir.join('server.log')), 'wb')
    return TyrantProcess(dbpath, ttserver=ttserver, log=log, ulog=str(tmpdir.join('ulog')),
                         sid=1, **dict(flag_pairs(flags))).start()


def flag_pairs(flags):
    """``-mask X -unmask Y`` as (name, expression) pairs: every section has
    at most one of each, -mask first, as TyrantProcess passes them."""
    words = shlex.split(flags)
    return [(flag.lstrip('-'), expr) for flag, expr in zip(words[::2], words[1::2])]


def repl_answer(server, request):
    sock = connect(server)
    try:
        sock.sendall(request)
        first = b''
        while len(first) < 4:
            chunk = sock.recv(4 - len(first))
            if not chunk:
                return _CLOSED if not first else 'closed after %s' % binascii.hexlify(first)
            first += chunk
        return '%s then the stream' % binascii.hexlify(first).decode('ascii')
    finally:
        sock.close()


def check_answer(label, got, expected):
    """A mismatch described, or None."""
    full_stat = _FULL_STAT.match(expected)
    if full_stat:
        size, = struct.unpack('>I', got[1:5])
        lines = got[5:5 + size].decode('utf-8').splitlines()
        counters = ', '.join(line.replace('\t', ' ') for line in lines
                             if line.startswith('cnt_'))
        if got[:1] != b'\x00' or not lines[0].startswith('version\t'):
            return 'not a full stat: %r' % got[:40]
        if counters != full_stat.group('lines'):
            return 'cnt_ lines %s, ttserver had %s' % (counters, full_stat.group('lines'))
        return None
    if label == 'size' and expected != '000000000000000000':
        if len(got) != 9 or got[:1] != b'\x00':
            return 'size framing: %s' % binascii.hexlify(got)
        return None
    if binascii.hexlify(got).decode('ascii') != expected:
        return 'got %s, ttserver %s' % (binascii.hexlify(got), expected)
    return None


def replay(section, tmpdir, ttserver):
    """Every mismatch between the server and the section, as text."""
    server = seeded_server(tmpdir, section.flags, ttserver)
    failures = []
    try:
        for label, request, expected, _ in section.steps:
            if label.startswith('repl'):
                got = repl_answer(server, request)
                problem = None if got == expected else 'got %s, ttserver %s' % (got, expected)
            else:
                problem = check_answer(label, exchange(server, request), expected)
            if problem:
                failures.append('%s: %s' % (label, problem))
    finally:
        server.stop()
    log = tmpdir.join('server.log').read()
    forbidden = [line for _, _, _, line in section.steps if line]
    if _FORBIDDEN.findall(log) != forbidden:
        failures.append('forbidden in the log: %s; ttserver: %s'
                        % (_FORBIDDEN.findall(log), forbidden))
    logged_bits = _LOGGED_BITS.findall(log)
    if [int(bits, 16) for bits in logged_bits] != ([section.bits] if section.bits else []):
        failures.append('command bit mask logged: %s; ttserver: %s'
                        % (logged_bits, section.bits))
    records = len(ulog_records(str(tmpdir.join('ulog'))))
    if records != section.records:
        failures.append('%d update log records; ttserver had %d' % (records, section.records))
    return failures


SECTIONS = parse_mask_file()


def test_every_line_of_the_mask_file_is_understood():
    assert len(SECTIONS) == 13
    assert all(len(section.steps) == 28 for section in SECTIONS)
    assert all(section.records is not None for section in SECTIONS)
    first = SECTIONS[0]
    assert first.flags == '-mask all' and first.bits == 2 ** 64 - 1
    assert first.steps[0] == ('put k1=v1b', b'\xc8\x10\x00\x00\x00\x02\x00\x00\x00\x03k1v1b',
                              '01', 'do_put: forbidden')


def test_the_parser_rejects_lines_it_does_not_know(tmpdir):
    text = '== ttserver -mask all\nput   REQ c810\n   RSP 01\nsomething new\n'
    assert 'line 4' in parse_error(parse_mask_file, tmpdir, text)


@pytest.mark.parametrize('section', SECTIONS, ids=[s.flags for s in SECTIONS])
def test_replay_against_tcjson_tyrant(section, tmpdir):
    assert replay(section, tmpdir, ttserver=False) == []


@pytest.mark.skipif(find_ttserver() is None, reason='no real ttserver here')
@pytest.mark.parametrize('section', SECTIONS, ids=[s.flags for s in SECTIONS])
def test_replay_against_the_real_ttserver(section, tmpdir):
    assert replay(section, tmpdir, ttserver=find_ttserver()) == []


def test_the_logged_bit_masks_are_what_parse_computes():
    for section in SECTIONS:
        options = flag_pairs(section.flags)
        assert [name for name, _ in options] in (['mask'], ['mask', 'unmask']), section
        assert CommandMask.from_options(options).bits == (section.bits or 0), section


def test_hex_fields_wrap_at_64_bits_and_stop_at_the_first_non_hex_digit():
    # tcatoih reads hex digits up to the first other character; its int64
    # wraps, so only the low 64 bits count.
    assert parse('0x10zz') == 0x10
    assert parse('0X') == 0 and parse('0xg1') == 0
    assert parse('0x1' + '0' * 16) == 0
    assert parse('\tput') == 0                     # only spaces and commas split


# ------------------------------------------------------------ replication

def test_mask_slave_never_follows_its_master(tmpdir, peers):
    master = peers.start('m', ulog='mulog', sid=1)
    slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=master.port, rts='s.rts',
                        mask='slave')
    put(master, b'k', b'v')
    setmst(slave, '127.0.0.1', master.port)            # allowed, and changes nothing
    assert not wait_until(lambda: get(slave, b'k'), 3.0)
    assert not tmpdir.join('s.rts').exists()
    info = stat(slave)
    assert (info['mhost'], info['mport'], info['rts']) == ('127.0.0.1', str(master.port), '0')
    assert float(info['delay']) > 1.7e9                  # the whole epoch, as ttserver shows
    assert stat(master)['cnt_repl'] == '0'


def test_allorg_masks_clients_not_the_slaves_replication(tmpdir, peers):
    master = peers.start('m', ulog='mulog', sid=1)
    slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=master.port, rts='s.rts',
                        ulog='sulog', mask='allorg')
    put(master, b'k', b'v')
    assert wait_until(lambda: ulog_records(str(tmpdir.join('sulog'))), 6.0)
    assert get(slave, b'k') is None                      # get is forbidden to clients


@pytest.mark.parametrize('mask', [None, 'setmst', 'allmanage'])
def test_a_masked_setmst_cannot_point_the_server_at_another_master(tmpdir, peers, mask):
    # The review's attack: setmst from any client to a master of the
    # caller's choosing, whose stream then empties the database.  Without a
    # mask it works (as on ttserver); with one, the fake master never even
    # sees a connection.
    fake = FakeMaster()
    try:
        server = peers.start('s', sid=2, rts='s.rts', mask=mask)
        put(server, b'keep', b'me')
        answer = setmst(server, '127.0.0.1', fake.port, ts=5)
        if mask is None:
            assert answer == b'\x00'
            sock, request = fake.accept()
            assert request == b'\xc8\xa0' + struct.pack('>QI', 6, 2)
            sock.sendall(b'\x00\x00\x00\x09\xc9' + struct.pack('>QII', 7, 9, 3) + b'\xc8\x72\x00')
            assert wait_until(lambda: get(server, b'keep') is None, 6.0)     # vanished
            sock.close()
            return
        assert answer == b'\x01'
        fake.listener.settimeout(2.5)
        with pytest.raises(socket.timeout):
            fake.accept()
        assert get(server, b'keep') == b'me'
        assert not tmpdir.join('s.rts').exists()
        assert 'mhost' not in stat(server)
        assert 'do_setmst: forbidden' in tmpdir.join('s.log').read()
    finally:
        fake.close()


# ------------------------------------------------------------ README's production lines

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'README.txt')
SOURCES = os.path.join(os.path.dirname(README), 'pylons_tcjson_template')
# Sent by the application besides its request('...') calls: iternext (as
# next_keys, pipelined), putcat (pipelined), ext (its Lua functions) and
# stat (tcrmgr inform, the README's cron line).
SENT_OTHERWISE = set(['iternext', 'putcat', 'ext', 'stat'])
REFUSED = ['setmst', 'vanish', 'restore', 'copy', 'optimize']


def readme_ttserver_lines():
    """Every ttserver command line README.txt prints, continuations joined."""
    with open(README) as readme:
        text = readme.read().replace('\\\n', ' ')
    return [line for line in text.splitlines() if re.match(r'^\s+\w+\$ ttserver ', line)]


def application_commands():
    names = set(SENT_OTHERWISE)
    for name in os.listdir(SOURCES):
        if name.endswith('.py'):
            with open(os.path.join(SOURCES, name)) as source:
                text = source.read()
                names.update(re.findall(r"request\('(\w+)'", text))
                # ...and the commands of pipelines: ('get', key), ('ext', name, ...)
                names.update(re.findall(r"\('(\w+)', ", text))
    names.discard('next_keys')
    return set(name for name in names if name in protocol.CODES)


def test_readme_production_lines_refuse_what_no_client_should_send():
    lines = readme_ttserver_lines()
    assert len(lines) == 4
    masks = [re.findall(r' -mask (\S+) ', line) for line in lines]
    assert all(len(found) == 1 for found in masks) and '-unmask' not in ''.join(lines)
    mask = CommandMask(parse(masks[0][0]))
    assert set(found[0] for found in masks) == set([masks[0][0]])
    assert [name for name in REFUSED if mask.forbids(name)] == REFUSED
    assert [name for name in sorted(application_commands()) if mask.forbids(name)] == []
    assert not mask.forbids('repl') and mask.replicates_from_master
    assert {'get', 'mget', 'vsiz', 'put', 'out', 'fwmkeys', 'ext', 'stat'} <= \
        application_commands()


def test_a_pair_with_the_readme_mask_replicates_and_refuses(tmpdir):
    # The real ttserver where there is one, tcjson-tyrant otherwise.
    mask = re.findall(r' -mask (\S+) ', readme_ttserver_lines()[0])[0]
    ports = [free_port(), free_port()]
    members = [TyrantProcess(str(tmpdir.join('m%d.tch' % n)), port=ports[n],
                             log=open(str(tmpdir.join('m%d.log' % n)), 'wb'),
                             ulog=str(tmpdir.join('ulog%d' % n)), sid=n + 1,
                             mhost='127.0.0.1', mport=ports[1 - n],
                             rts=str(tmpdir.join('m%d.rts' % n)), mask=mask)
               for n in (0, 1)]
    try:
        for member in members:
            member.start()
        put(members[0], b'a', b'1')
        put(members[1], b'b', b'2')
        assert wait_until(lambda: get(members[1], b'a') == b'1', 6.0)
        assert wait_until(lambda: get(members[0], b'b') == b'2', 6.0)
        path = str(tmpdir).encode('utf-8')
        # copy "@/bin/true" would run /bin/true on ttserver's host (00).
        refused = [setmst(members[0], '127.0.0.1', free_port()),
                   exchange(members[0], b'\xc8\x72'),
                   exchange(members[0], b'\xc8\x74' + struct.pack('>IQI', len(path), 1, 0) + path),
                   exchange(members[0], b'\xc8\x73' + struct.pack('>I', 10) + b'@/bin/true'),
                   exchange(members[0], b'\xc8\x71' + struct.pack('>I', 0))]
        assert refused == [b'\x01'] * 5
        ext = exchange(members[0], b'\xc8\x68' + struct.pack('>IIII', 1, 0, 1, 1) + b'fkv')
        assert ext == b'\x01'                     # no Lua here, but not refused:
        assert (get(members[0], b'a'), get(members[0], b'b')) == (b'1', b'2')
    finally:
        for member in members:
            member.stop()
    log = tmpdir.join('m0.log').read()
    assert _FORBIDDEN.findall(log) == ['do_%s: forbidden' % name for name in (
        'setmst', 'vanish', 'restore', 'copy', 'optimize')]     # ext absent
