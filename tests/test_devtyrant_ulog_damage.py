"""A damaged update log, a failing one, and a stalled replication.

What ttserver 1.1.41 did, measured (a master with three records; bytes
appended to its log; restart; three more writes; a slave asking from ts 1):

* 10 bytes of a header appended: the slave got the three old records and
  then nothing; the three new ones were never sent.
* a record 3 bytes short: the slave got the old records and then the torn
  put with three bytes of the next record inside it; nothing after that.
* a size field of 0x10000: as the first case.  0xFFFFFFF0: the master died
  ("assertion failed: size >= 0 && size < INT_MAX") when the slave asked.
* a ttserver slave sent a wire record of size 0xFFFFFFF0 by its master died
  of the same assertion (SIGABRT) at once.

tcjson-tyrant does the safe thing instead (see devtyrant/ulogfile.py): a
torn tail is cut off when the log is opened and right after a write fails,
and bytes that are not a record are reported and skipped.  The tests build
the damage on disk and watch what a slave receives over the wire.
"""
import os
import struct
import subprocess
import sys
import time

import pytest

from pylons_tcjson_template.devtyrant import ulog, ulogfile
from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, free_port
from test_devtyrant_replication_support import (
    FakeMaster, FakeSlave, call, disk_record, get, put, server_log, setmst, stat,
    ulog_records, wait_until)
from test_devtyrant_replication_support import peers  # a fixture: noqa

CATCH_UP = 6.0


def put_body(key, value):
    """A logged put: the request and its result byte 00."""
    return b'\xc8\x10' + struct.pack('>II', len(key), len(value)) + key + value + b'\x00'


def put_bodies(*keys):
    return [put_body(key, key.replace(b'k', b'v')) for key in keys]


def wire_bodies(slave, count):
    return [body for _, _, body, _ in slave.records(count)]


# ------------------------------------------------------------ a torn tail

TORN = {'header': lambda record: record[:10],          # a crash inside the header
        'body': lambda record: record[:-3]}             # ... or inside the body


@pytest.mark.parametrize('torn', sorted(TORN))
def test_a_torn_last_record_is_cut_off_when_the_log_opens(tmpdir, peers, torn):
    master = peers.start('m', ulog='ulog', sid=1)
    put(master, b'k1', b'v1')
    put(master, b'k2', b'v2')
    master.stop()
    log_file = tmpdir.join('ulog', '00000001.ulog')
    whole = log_file.read_binary()
    torn_bytes = TORN[torn](disk_record(12345, 1, 0, put_body(b'k3', b'v3')))
    log_file.write_binary(whole + torn_bytes)
    master.start()
    assert log_file.read_binary() == whole                    # cut before anything else
    put(master, b'k4', b'v4')
    assert [r['body'] for r in ulog_records(str(tmpdir.join('ulog')))] == put_bodies(
        b'k1', b'k2', b'k4')
    slave = FakeSlave(master, ts=1, sid=9)
    assert slave.read(4) == b'\x00\x00\x00\x01'
    assert wire_bodies(slave, 3) == put_bodies(b'k1', b'k2', b'k4')
    slave.close()
    assert ('update log %s: cut off its last %d bytes, a torn record'
            % (log_file, len(torn_bytes))) in server_log(tmpdir, 'm')


# ------------------------------------------------------------ bytes that are no record

def damaged_log(directory):
    """Two files, each with a record whose size field lies: in the first
    (finished) file one no record could have, in the second (the newest)
    one that leads into the middle of the next record.  Returns the bodies
    of the records that are whole, in order."""
    directory.mkdir()
    a, b, c, d, e, f = put_bodies(b'kA', b'kB', b'kC', b'kD', b'kE', b'kF')
    bad_b = disk_record(200, 1, 0, b)
    bad_b = bad_b[:13] + struct.pack('>I', 0xFFFFFFF0) + bad_b[17:]
    bad_e = disk_record(500, 1, 0, e)
    bad_e = bad_e[:13] + struct.pack('>I', len(e) + 5) + bad_e[17:]
    directory.join('00000001.ulog').write_binary(
        disk_record(100, 1, 0, a) + bad_b + disk_record(300, 1, 0, c))
    directory.join('00000002.ulog').write_binary(
        disk_record(400, 1, 0, d) + bad_e + disk_record(600, 1, 0, f))
    return [a, c, d, f]


def test_records_with_impossible_sizes_are_reported_and_skipped(tmpdir, peers):
    whole = damaged_log(tmpdir.join('ulog'))
    newest = tmpdir.join('ulog', '00000002.ulog').read_binary()
    master = peers.start('m', ulog='ulog', sid=1)
    # Damage followed by whole records is not a torn tail: nothing is cut.
    assert tmpdir.join('ulog', '00000002.ulog').read_binary() == newest
    slave = FakeSlave(master, ts=1, sid=9)
    assert slave.read(4) == b'\x00\x00\x00\x01'
    assert wire_bodies(slave, 4) == whole
    put(master, b'kG', b'vG')                      # and the stream goes on
    assert wire_bodies(slave, 1) == put_bodies(b'kG')
    slave.close()
    log = server_log(tmpdir, 'm')
    first, newest = (tmpdir.join('ulog', name) for name in ('00000001.ulog', '00000002.ulog'))
    assert ('update log %s: impossible record size 4294967280 at offset 32' % first) in log
    assert ('update log %s: a record whose size does not lead to the next one at offset 32'
            % newest) in log
    for path in (first, newest):
        assert 'update log %s: skipped 32 bytes (offsets 32 to 64)' % path in log


def test_restore_skips_the_damage_too(tmpdir, peers):
    whole = damaged_log(tmpdir.join('source'))
    server = peers.start('r', ulog='ulog', sid=7)
    path = str(tmpdir.join('source')).encode('utf-8')
    answer = call(server, b'\xc8\x74' + struct.pack('>IQI', len(path), 1, 0) + path, 1)
    assert answer == b'\x00'
    assert [r['body'] for r in ulog_records(str(tmpdir.join('ulog')))] == whole
    assert [get(server, key) for key in (b'kA', b'kB', b'kF')] == [b'vA', None, b'vF']


# ------------------------------------------------------------ a write that fails

FILE_LIMIT = 65536


def limited_server(tmpdir, port):
    """tcjson-tyrant whose files may not grow past FILE_LIMIT bytes
    (RLIMIT_FSIZE): its update log meets a full disk without a full disk."""
    wrapper = ('import os, resource, sys; '
               'resource.setrlimit(resource.RLIMIT_FSIZE, (%d, %d)); '
               'os.execv(sys.executable, [sys.executable, "-m", '
               '"pylons_tcjson_template.devtyrant.server"] + sys.argv[1:])'
               % (FILE_LIMIT, FILE_LIMIT))
    server = TyrantProcess('*', port=port, ttserver=False, ulog=str(tmpdir.join('ulog')),
                           sid=1, log=open(str(tmpdir.join('limited.log')), 'wb'))
    command = server.command()
    server.command = lambda: [sys.executable, '-c', wrapper] + command[3:]
    return server.start()


def test_a_failed_write_leaves_no_torn_record_and_answers_failure(tmpdir, peers):
    server = limited_server(tmpdir, free_port())
    try:
        big = b'x' * 10000                         # a record of 10030 bytes
        for number in range(6):                    # 60180 bytes: the 7th does not fit
            put(server, b'k%d' % number, big)
        answer = call(server, b'\xc8\x10' + struct.pack('>II', 2, len(big)) + b'k6' + big, 1)
        assert answer == b'\x01'                   # what ttserver answers a failed log write
        assert 'ulog_error' in stat(server)
        assert 'cannot write' in stat(server)['ulog_error']
        put(server, b'k7', b'small')               # fits: the log goes on
        assert 'ulog_error' not in stat(server)
        records = ulog_records(str(tmpdir.join('ulog')))    # every record whole
        assert [r['body'][6:10] for r in records] == [
            struct.pack('>I', len(big))] * 6 + [struct.pack('>I', 5)]
        assert get(server, b'k6') == big           # applied, though not logged (as ttserver)
        slave = FakeSlave(server, ts=1, sid=9)
        assert slave.read(4) == b'\x00\x00\x00\x01'
        assert wire_bodies(slave, 7)[-1] == put_body(b'k7', b'small')
        slave.close()
    finally:
        server.stop()
    log = tmpdir.join('limited.log').read()
    assert 'ERROR do_put: operation failed: cannot write' in log
    assert 'Traceback' not in log


# ------------------------------------------------------------ the slave's side

def test_a_wire_record_no_master_could_send_is_skipped(tmpdir, peers):
    fake = FakeMaster()
    try:
        slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=fake.port, rts='s.rts')
        sock, _ = fake.accept()
        good = struct.pack('>BQII', 0xC9, 10, 5, 15) + put_body(b'k1', b'v1')
        sock.sendall(b'\x00\x00\x00\x05' + good + struct.pack('>BQII', 0xC9, 20, 5, 0xFFFFFFF0)
                     + b'\xc8\x10' * 8)
        sock.settimeout(5)
        assert sock.recv(1) == b''                 # it hung up at once
        again, request = fake.accept()             # and asks for what follows the bad one
        assert request == b'\xc8\xa0' + struct.pack('>QI', 21, 2)
        again.close()
        assert get(slave, b'k1') == b'v1'
        assert tmpdir.join('s.rts').read_binary() == b'20\n'
        assert 'impossible record size 4294967280 at ts 20; skipped' in server_log(tmpdir, 's')
    finally:
        fake.close()


def test_stat_shows_a_stalled_replication_until_it_runs_again(tmpdir, peers):
    port = free_port()
    slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=port, rts='s.rts')
    stalled = wait_until(lambda: stat(slave).get('repl_stalled'), CATCH_UP)
    since, why = stalled.split(' ', 1)
    assert float(since) > 1.7e9
    assert why == 'no replication from 127.0.0.1:%d: cannot connect, or refused ' \
                  '(tcreplopen failed)' % port
    master = peers.start('m', port=port, ulog='mulog', sid=1)
    put(master, b'k', b'v')
    assert wait_until(lambda: get(slave, b'k'), CATCH_UP)
    assert 'repl_stalled' not in stat(slave)


def test_a_masked_repl_shows_as_a_stall_on_the_slave(tmpdir, peers):
    master = peers.start('m', ulog='mulog', sid=1, mask='repl')
    slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=master.port, rts='s.rts')
    assert 'tcreplopen failed' in wait_until(lambda: stat(slave).get('repl_stalled'), CATCH_UP)
    assert 'do_repl: forbidden' in server_log(tmpdir, 'm')


def test_the_rts_file_is_not_opened_through_a_symbolic_link(tmpdir, peers):
    target = tmpdir.join('precious')
    target.write('keep me\n')
    tmpdir.join('s.rts').mksymlinkto(target)
    master = peers.start('m', ulog='mulog', sid=1)
    put(master, b'k', b'v')
    slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=master.port, rts='s.rts')
    assert setmst(slave, '127.0.0.1', master.port, ts=123) == b'\x00'
    assert wait_until(lambda: target.read() != 'keep me\n' or stat(slave).get('repl_stalled'),
                      CATCH_UP)
    assert target.read() == 'keep me\n'
    stalled = stat(slave)['repl_stalled']
    assert 'is a symbolic link, which is not followed' in stalled
    assert get(slave, b'k') is None
    log = server_log(tmpdir, 's')
    assert log.count('is a symbolic link') == 1                # said once, not every second
    tmpdir.join('s.rts').remove()                             # a regular file again: it goes on
    assert wait_until(lambda: get(slave, b'k'), CATCH_UP)
    assert 'repl_stalled' not in stat(slave)
    assert target.read() == 'keep me\n' and os.path.isfile(str(tmpdir.join('s.rts')))


# ------------------------------------------------------------ a record being written

def records_of(bodies, first_ts=100):
    return [disk_record(first_ts + n, 1, 0, body) for n, body in enumerate(bodies)]


def append(path, data):
    with open(str(path), 'ab') as log_file:
        log_file.write(data)


def bodies_read(reader):
    return [body for _, _, _, body in reader.read(65536)]


@pytest.mark.parametrize('cut', ['header', 'body'])
def test_a_record_seen_half_written_is_read_once_it_is_whole(tmpdir, capsys, cut):
    """The server appends each record with one write under its lock, yet a
    reader can see part of it (a write across a page boundary grows the
    file page by page).  Taken for a torn record, it would be skipped and
    never reach the slave; the reader waits for the rest instead."""
    directory = tmpdir.mkdir('ulog')
    first, second = records_of(put_bodies(b'k1', b'k2'))
    split = 10 if cut == 'header' else len(second) - 3
    log_file = directory.join('00000001.ulog')
    log_file.write_binary(first + second[:split])
    reader = ulog.LogReader(str(directory), 0)
    assert bodies_read(reader) == put_bodies(b'k1')
    assert reader.exhausted
    append(log_file, second[split:])
    assert bodies_read(reader) == put_bodies(b'k2')
    assert 'update log' not in capsys.readouterr().err       # no damage reported


def test_a_record_appended_between_the_size_and_the_read_is_not_skipped(tmpdir, capsys,
                                                                       monkeypatch):
    """The reader takes the file's size, then reads: a record the server
    appends in between arrives whole, past the size the reader took."""
    directory = tmpdir.mkdir('ulog')
    first, second = records_of(put_bodies(b'k1', b'k2'))
    directory.join('00000001.ulog').write_binary(first + second)
    sizes_before_the_append = [len(first)]
    real_fstat = os.fstat

    def fstat(fd):
        fields = list(real_fstat(fd))
        if sizes_before_the_append:
            fields[6] = sizes_before_the_append.pop()          # st_size
        return os.stat_result(fields[:10])
    monkeypatch.setattr(ulogfile.os, 'fstat', fstat)
    reader = ulog.LogReader(str(directory), 0)
    assert bodies_read(reader) + bodies_read(reader) == put_bodies(b'k1', b'k2')
    assert 'update log' not in capsys.readouterr().err


def test_a_tail_that_stays_short_is_skipped_as_torn_after_a_while(tmpdir, capsys,
                                                                monkeypatch):
    monkeypatch.setattr(ulogfile, 'TAIL_PATIENCE', 0.2)
    directory = tmpdir.mkdir('ulog')
    first, torn, third = records_of(put_bodies(b'k1', b'k2', b'k3'))
    log_file = directory.join('00000001.ulog')
    log_file.write_binary(first + torn[:-3])
    reader = ulog.LogReader(str(directory), 0)
    assert bodies_read(reader) == put_bodies(b'k1')
    assert bodies_read(reader) == []                          # waiting for the rest
    time.sleep(0.3)
    append(log_file, third)
    assert bodies_read(reader) == put_bodies(b'k3')
    assert 'skipping to the next whole record' in capsys.readouterr().err


def test_a_short_record_before_a_newer_file_is_damage_at_once(tmpdir, capsys):
    """A file with a successor was finished before the successor was
    created: a record it ends in the middle of is torn, not in progress."""
    directory = tmpdir.mkdir('ulog')
    first, torn, third = records_of(put_bodies(b'k1', b'k2', b'k3'))
    directory.join('00000001.ulog').write_binary(first + torn[:-3])
    directory.join('00000002.ulog').write_binary(third)
    reader = ulog.LogReader(str(directory), 0)
    assert bodies_read(reader) == put_bodies(b'k1', b'k3')
    assert 'runs past the end of the file' in capsys.readouterr().err
