"""tcjson-tyrant's update log (-ulog -ulim -sid) against the records of a
real ttserver 1.1.41 (tests/data/tyrant-1.1.41-replication.txt, section 1),
and the two command fixes found by comparing random command streams
(putshl on a missing record, misc putlist with an odd argument count).
"""
import re
import struct
import subprocess
import sys
import time

import pytest

from pylons_tcjson_template.devtyrant import ulog
from pylons_tcjson_template.devtyrant.launcher import free_port, wait_for_port
from pylons_tcjson_template.devtyrant.protocol import request_bytes
from test_devtyrant_replication_support import (
    DISK_HEADER, call, disk_record, get, put, reference_section, ulog_records, unhex)
from test_devtyrant_replication_support import peers  # a fixture: noqa

SERVER = [sys.executable, '-m', 'pylons_tcjson_template.devtyrant.server']

# The table "What each command logs": label, body (without R), R; or
# "(nothing logged)".
_LOGGED = re.compile(r'^  (?P<label>\S.*?)\s+(?P<body>c8[0-9a-f]{2}(?: [0-9a-f]+)*)\s+R=(?P<r>0[01])')
_NOT_LOGGED = re.compile(r'^  (?P<label>\S.*?)\s{2,}\(nothing logged')
# Requests for the lines that log nothing (the table has no bytes for them).
_SILENT_REQUESTS = {
    'addint n +0': request_bytes('addint', 1, 0, b'n'),
    'adddouble d +0.0': b'\xc8\x61' + struct.pack('>Iqq', 1, 0, 0) + b'd',
    'misc putlist b=2, opts=1': request_bytes('misc', 7, 1, 2, b'putlist', 1, b'b', 1, b'2'),
}


def command_table():
    """(label, request, logged body or None) for each line of the table."""
    section = reference_section('What each command logs')
    section = section[:section.index('The misc body is NOT the request')]
    steps = []
    for line in section.splitlines():
        logged, silent = _LOGGED.match(line), _NOT_LOGGED.match(line)
        if logged:
            label, body = logged.group('label'), unhex(logged.group('body'))
            steps.append((label, _request_for(label, body), body + unhex(logged.group('r'))))
        elif silent:
            steps.append((silent.group('label'), _SILENT_REQUESTS[silent.group('label')], None))
    return steps


def _request_for(label, body):
    """The request that logs `body`: the body itself, except putnr (logged
    as put) and misc (logged without its 4-byte opts field)."""
    if label.startswith('putnr'):
        return b'\xc8\x18' + body[2:]
    if label.startswith('misc'):
        return body[:6] + struct.pack('>I', 0) + body[6:]
    return body


def test_the_table_is_read_whole():
    section = reference_section('What each command logs')
    section = section[:section.index('The misc body is NOT the request')]
    entries = [line for line in section.splitlines() if line.startswith('  ') and line.strip()]
    steps = command_table()
    assert len(steps) == len(entries) == 21
    assert [label for label, _, body in steps if body is None] == [
        'addint n +0', 'adddouble d +0.0', 'misc putlist b=2, opts=1']


def test_every_command_logs_what_ttserver_logged(tmpdir, peers):
    server = peers.start('db', ulog='ulog', sid=1)
    started = int(time.time() * 1e6)
    for label, request, logged in command_table():
        answer = call(server, request)
        if logged is not None and not label.startswith('putnr'):
            # The result byte logged is the status the client was sent.
            assert answer[:1] == logged[-1:], label
    finished = int(time.time() * 1e6)
    server.stop()
    records = ulog_records(str(tmpdir.join('ulog')))
    expected = [logged for _, _, logged in command_table() if logged is not None]
    assert [record['body'] for record in records] == expected
    assert set((record['sid'], record['mid']) for record in records) == set([(1, 0)])
    stamps = [record['ts'] for record in records]
    assert stamps == sorted(set(stamps))          # increasing, never two alike (see ulog)
    assert started <= stamps[0] and stamps[-1] <= finished
    assert set(record['file'] for record in records) == set(['00000001.ulog'])


def test_first_records_match_the_recorded_bytes_but_for_the_time(tmpdir, peers):
    # "The same bytes as xxd prints them": put k1=v1, then the failed putkeep.
    section = reference_section('Record layout on disk')
    dump = section[section.index('The same bytes as xxd'):]
    recorded = unhex(''.join(re.findall(r'^  [0-9a-f]{8}: ((?:[0-9a-f]{4} ){7}[0-9a-f]{4})',
                                         dump, re.M)))
    server = peers.start('db', ulog='ulog', sid=1)
    put(server, b'k1', b'v1')
    assert call(server, request_bytes('putkeep', 2, 2, b'k1', b'zz'), 1) == b'\x01'
    server.stop()
    ours = tmpdir.join('ulog', '00000001.ulog').read_binary()
    assert len(ours) == len(recorded) == 64
    for start in (0, 32):                       # two 32-byte records
        assert ours[start:start + 1] == recorded[start:start + 1] == b'\xc9'
        assert ours[start + 9:start + 32] == recorded[start + 9:start + 32]


def test_reads_and_management_commands_log_nothing(tmpdir, peers):
    server = peers.start('db', ulog='ulog', sid=1)
    put(server, b'k', b'v')
    for request in [request_bytes('get', 1, b'k'), request_bytes('mget', 1, 1, b'k'),
                    request_bytes('vsiz', 1, b'k'), request_bytes('iterinit'),
                    request_bytes('iternext'), request_bytes('fwmkeys', 1, 0xffffffff, b'k'),
                    request_bytes('rnum'), request_bytes('size'), request_bytes('stat'),
                    request_bytes('copy', 4, b'/tmp'),
                    b'\xc8\x74' + struct.pack('>IQI', 4, 1, 0) + b'/tmp',
                    request_bytes('ext', 1, 0, 1, 1, b'f', b'k', b'v'),
                    b'\xc8\x78' + struct.pack('>IIQI', 0, 0, 0, 0)]:
        call(server, request)
    server.stop()
    assert len(ulog_records(str(tmpdir.join('ulog')))) == 1


def test_files_rotate_at_the_limit_and_a_restart_appends_to_the_newest(tmpdir, peers):
    # -ulim 100: a file is closed after the record that brings it to 100
    # bytes or more, and the next number opened at once.
    server = peers.start('db', ulog='ulog', ulim=100, sid=7)
    for i in range(10):
        put(server, b'key%d' % i, b'v' * (i + 1))
    server.stop()
    directory = tmpdir.join('ulog')
    before = ulog_records(str(directory))
    names = sorted(path.basename for path in directory.listdir())
    assert names == ['%08d.ulog' % n for n in range(1, len(names) + 1)]
    for name in names[:-1]:
        in_file = [r for r in before if r['file'] == name]
        size = directory.join(name).size()
        assert size >= 100
        assert size - (DISK_HEADER.size + len(in_file[-1]['body'])) < 100
    assert directory.join(names[-1]).size() < 100
    assert [r['body'][10:14] for r in before][:2] == [b'key0', b'key1']
    assert len(before) == 10 and set((r['sid'], r['mid']) for r in before) == set([(7, 0)])

    server.start()
    put(server, b'after', b'restart')
    server.stop()
    after = ulog_records(str(directory))
    assert after[:10] == before
    assert after[10]['file'] == names[-1] and after[10]['body'][10:15] == b'after'


def test_ulim_takes_ttservers_suffixes():
    assert ulog.DEFAULT_LIMIT == 1073741824          # "limit=1073741824" by default
    assert ulog.parse_limit('64m') == 67108864         # "-ulim 64m -> limit=67108864"
    assert ulog.parse_limit('100') == 100
    assert ulog.parse_limit('2k') == 2048 and ulog.parse_limit('1G') == 1024 ** 3


def run_cli(args, tmpdir, writes=()):
    """Start the CLI, make `writes` (key, value) if it listens, stop it:
    (exit status, stderr)."""
    port = free_port()
    proc = subprocess.Popen(SERVER + ['-port', str(port)] + args, cwd=str(tmpdir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
    if wait_for_port('127.0.0.1', port, 10, proc):
        server = type('Address', (), {'host': '127.0.0.1', 'port': port})
        for key, value in writes:
            put(server, key, value)
        proc.terminate()
    out, err = proc.communicate()
    return proc.returncode, err.decode('utf-8')


def test_missing_ulog_directory_is_an_error(tmpdir):
    status, err = run_cli(['-ulog', 'nodir', '-sid', '1'], tmpdir)
    assert status == 1
    assert 'warning: ulog(nodir) is not a directory' in err
    assert 'tculogopen failed' in err and 'Traceback' not in err


@pytest.mark.parametrize('sid_args, warnings', [
    (['-sid', '65536'], ['warning: the SID is ignored because it exceeds 65535',
                         'warning: update logging is omitted because the SID is not specified']),
    ([], ['warning: update logging is omitted because the SID is not specified']),
], ids=['sid-65536', 'no-sid'])
def test_ulog_without_a_valid_sid_logs_nothing(tmpdir, sid_args, warnings):
    tmpdir.mkdir('ulog')
    status, err = run_cli(['-ulog', 'ulog'] + sid_args, tmpdir, writes=[(b'k', b'v')])
    assert status == 0
    lines = [line for line in err.splitlines() if 'warning' in line]
    assert [line.split('tcjson-tyrant: ', 1)[1] for line in lines] == warnings
    assert tmpdir.join('ulog').listdir() == []


def test_mhost_without_a_sid_is_not_followed(tmpdir):
    status, err = run_cli(['-mhost', '127.0.0.1', '-mport', str(free_port())], tmpdir)
    assert status == 0
    assert 'warning: replication is omitted because the SID is not specified' in err
    assert not tmpdir.join('ttserver.rts').exists()


# ------------------------------------------------------------ command fixes

def test_putshl_on_a_missing_record_stores_the_whole_value(peers):
    # ttserver trims to the width only when it appends to an existing value.
    server = peers.start('db')
    assert call(server, request_bytes('putshl', 3, 5, 2, b'new', b'abcde'), 1) == b'\x00'
    assert get(server, b'new') == b'abcde'
    assert call(server, request_bytes('putshl', 3, 2, 4, b'new', b'XY'), 1) == b'\x00'
    assert get(server, b'new') == b'deXY'
    server.stop()


def test_misc_putlist_with_an_odd_argument_count_stores_the_complete_pairs(tmpdir, peers):
    server = peers.start('db', ulog='ulog', sid=1)
    request = request_bytes('misc', 7, 0, 3, b'putlist', 1, b'a', 1, b'1', 1, b'b')
    assert call(server, request) == b'\x00' + struct.pack('>I', 0)
    assert get(server, b'a') == b'1'
    assert get(server, b'b') is None
    server.stop()
    # Logged as asked, all three arguments, with success.
    body, = [r['body'] for r in ulog_records(str(tmpdir.join('ulog')))]
    assert body == unhex('c890 00000007 00000003') + b'putlist' + unhex(
        '00000001 61 00000001 31 00000001 62 00')


def test_restore_replays_a_log_keeping_its_sid_and_mid(tmpdir, peers):
    # "restoring a log holding 1:0, 3:3, 2:3 into a -sid 7 server logged
    # 1:0, 3:3, 2:3", with new timestamps.
    bodies = [b'\xc8\x10' + struct.pack('>II', 2, 1) + key + b'v\x00'
              for key in (b'r1', b'r3', b'r2')]
    origins = [(1, 0), (3, 3), (2, 3)]
    source = tmpdir.mkdir('old')
    source.join('00000001.ulog').write_binary(b''.join(
        disk_record(1000 + n, sid, mid, body)
        for n, ((sid, mid), body) in enumerate(zip(origins, bodies))))
    server = peers.start('db', ulog='ulog', sid=7)
    path = str(source).encode('utf-8')
    restore = b'\xc8\x74' + struct.pack('>IQI', len(path), 1, 0) + path
    assert call(server, restore, 1) == b'\x00'
    assert [get(server, key) for key in (b'r1', b'r2', b'r3')] == [b'v'] * 3
    missing = b'/no/such/ulog'
    assert call(server, b'\xc8\x74' + struct.pack('>IQI', len(missing), 1, 0) + missing,
                1) == b'\x01'
    server.stop()
    records = ulog_records(str(tmpdir.join('ulog')))
    assert [(r['sid'], r['mid']) for r in records] == origins
    assert [r['body'] for r in records] == bodies
    assert all(r['ts'] > 10 ** 15 for r in records)            # stamped now, not 1000
