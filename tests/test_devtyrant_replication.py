"""tcjson-tyrant's replication against ttserver 1.1.41's recorded behaviour
(tests/data/tyrant-1.1.41-replication.txt, sections 2-5).

Without a ttserver on this machine, the mixed pairs are played byte for
byte: a raw socket acting as a slave checks the stream tcjson-tyrant sends
against the recorded captures, and a raw socket acting as a master feeds
recorded records to a tcjson-tyrant slave and checks the request it sends.
Pairs of tcjson-tyrant servers then show the whole thing working: catch-up
after kill -9 of either side, and dual master.

Replication has about a second of delay on purpose (a slave tries its
master once a second; a master sends its backlog after waiting up to a
second for a new write), so tests poll with deadlines instead of sleeping.
"""
import os
import re
import struct
import threading
import time

import pytest

from pylons_tcjson_template.devtyrant import replication
from pylons_tcjson_template.devtyrant.launcher import free_port
from pylons_tcjson_template.devtyrant.server import TyrantServer
from pylons_tcjson_template.devtyrant.storage import MemoryStore
from test_devtyrant_replication_support import (
    FakeMaster, FakeSlave, addint, get, out, put, reference_section, rnum, server_log,
    setmst, stat, stat_pairs, ulog_records, unhex, wait_until)
from test_devtyrant_replication_support import peers  # a fixture: noqa

TRANSCRIPTS = os.path.join(os.path.dirname(__file__), 'data', 'tyrant-1.1.41-transcripts.txt')
CATCH_UP = 6.0           # the reference: 2.05 s after a (re)start; generous for a busy CI


def capture_records(title):
    """The wire records of a capture in the reference, as bytes."""
    section = reference_section('== 2. Replication request and stream')
    section = section[section.index(title):]
    return [unhex('c9' + ''.join(m)) for m in re.findall(
        r'\bc9 ([0-9a-f]{16}) ([0-9a-f]{8}) ([0-9a-f]{8}) (c8[0-9a-f]+)', section)]


def with_ts(record, ts):
    """A recorded wire record with its timestamp replaced."""
    return record[:1] + struct.pack('>Q', ts) + record[9:]


# ------------------------------------------------------------ the master's stream

def test_stream_to_a_slave_is_the_recorded_capture(peers, tmpdir):
    # Capture A: put k1, put k2, out k2 before the slave connects; then its
    # sid, a nop at once, the backlog about a second later, new writes at once.
    recorded = capture_records('Capture A')
    assert len(recorded) == 5
    master = peers.start('m', ulog='ulog', sid=1)
    put(master, b'k1', b'v1')
    put(master, b'k2', b'v2')
    assert out(master, b'k2')
    logged = ulog_records(str(tmpdir.join('ulog')))

    slave = FakeSlave(master, ts=1, sid=2)
    assert slave.read(4) == b'\x00\x00\x00\x01'
    assert slave.next_item() == ('nop', None)
    backlog = slave.records(3)
    waited = time.time() - slave.started
    assert 0.8 <= waited <= 2.5, waited
    assert [raw for _, _, _, raw in backlog] == [
        with_ts(recorded[i], logged[i]['ts']) for i in range(3)]

    put(master, b'k3', b'v3')
    written = time.time()
    (ts, sid, body, raw), = slave.records(1)
    assert time.time() - written < 0.5
    assert raw == with_ts(recorded[3], ulog_records(str(tmpdir.join('ulog')))[-1]['ts'])

    # Idle: nothing but nops, 1-2 s apart.
    gap_start = time.time()
    assert slave.next_item() == ('nop', None)
    assert slave.next_item() == ('nop', None)
    assert 0.9 <= time.time() - gap_start <= 4.5
    slave.close()
    assert stat(master)['cnt_repl'] == '1'


def test_stream_starts_at_the_requested_timestamp_and_a_write_wakes_it(peers, tmpdir):
    master = peers.start('m', ulog='ulog', sid=1)
    for i in range(5):
        put(master, b'k%02d' % i, b'v')
    logged = ulog_records(str(tmpdir.join('ulog')))
    slave = FakeSlave(master, ts=logged[2]['ts'], sid=2)   # TS >= requested is included
    assert slave.read(5) == b'\x00\x00\x00\x01\xca'
    put(master, b'k05', b'v')                               # ends the 1 s wait at once
    got = slave.records(4)
    assert time.time() - slave.started < 0.8
    assert [body[10:13] for _, _, body, _ in got] == [b'k02', b'k03', b'k04', b'k05']
    slave.close()


def dual_master_log(tmpdir):
    """Server B's update log in a dual master with A (sid 1): a write of
    A's as B relayed it (recorded bytes), B's own writes (2:0), and a write
    from a third server that B received through A (3:1)."""
    relayed = relayed_wire_record()[WIRE_HEADER_SIZE:]
    records = [
        (0x00066159b8e16525, 1, 1, relayed),
        (0x00066159b8e16600, 2, 0, b'\xc8\x10' + struct.pack('>II', 2, 1) + b'b1' + b'x\x00'),
        (0x00066159b8e16700, 3, 1, b'\xc8\x10' + struct.pack('>II', 2, 1) + b'c1' + b'y\x00'),
        (0x00066159b8e16800, 2, 0, b'\xc8\x20' + struct.pack('>I', 2) + b'b1' + b'\x00'),
    ]
    directory = tmpdir.mkdir('bulog')
    directory.join('00000001.ulog').write_binary(b''.join(
        struct.pack('>BQHHI', 0xC9, ts, sid, mid, len(body)) + body
        for ts, sid, mid, body in records))
    return records


WIRE_HEADER_SIZE = 17


def relayed_wire_record():
    """"put a1" as B sent it to a stranger (sid 9) in the recorded dual
    master: A's origin sid, B's timestamp."""
    section = reference_section('== 4. Dual master')
    return unhex(re.search(r'to sid 9: (c9 [0-9a-f ]+)', section).group(1))


def test_records_from_the_requester_are_never_sent_back(peers, tmpdir):
    records = dual_master_log(tmpdir)
    b = peers.start('b', ulog='bulog', sid=2)

    stranger = FakeSlave(b, ts=1, sid=9)                  # gets everything
    assert stranger.read(5) == b'\x00\x00\x00\x02\xca'
    got = stranger.records(4)
    assert got[0][3] == relayed_wire_record()             # byte for byte, as recorded
    assert [(ts, sid) for ts, sid, _, _ in got] == [(r[0], r[1]) for r in records]
    stranger.close()

    # A (sid 1) gets neither its own writes (SID 1) nor what B got from it (MID 1).
    as_a = FakeSlave(b, ts=1, sid=1)
    assert as_a.read(5) == b'\x00\x00\x00\x02\xca'
    own = as_a.records(2)
    assert [(ts, sid) for ts, sid, _, _ in own] == [(r[0], r[1]) for r in records if r[1] == 2]
    put(b, b'b2', b'z')                                   # a new write of B's: sent too
    (ts, sid, body, _), = as_a.records(1)
    assert sid == 2 and body[10:12] == b'b2'
    as_a.close()


def test_requests_ttserver_rejects(peers, tmpdir):
    master = peers.start('m', ulog='ulog', sid=1)
    for ts, sid in [(1, 1), (0, 2), (1, 0)]:        # circular, ts 0, sid 0: 0 bytes, closed
        slave = FakeSlave(master, ts=ts, sid=sid)
        assert slave.closed_by_server(), (ts, sid)
        slave.close()
    no_ulog = peers.start('n', sid=1)               # its sid, then closed
    slave = FakeSlave(no_ulog, ts=1, sid=2)
    assert slave.read(4) == b'\x00\x00\x00\x01' and slave.closed_by_server()
    no_sid = peers.start('o', ulog='oulog')         # sid 0, then closed
    slave = FakeSlave(no_sid, ts=1, sid=2)
    assert slave.read(4) == b'\x00\x00\x00\x00' and slave.closed_by_server()
    assert 'rejected circular replication' in server_log(tmpdir, 'm')


# ------------------------------------------------------------ the slave's side

MASTER_RECORD = unhex('c9 00066159b2c493fd 00000001 00000011 '
                      'c81000000005000000016669727374 31 00')     # put first=1, sid 1


def test_slave_asks_applies_logs_and_remembers_as_recorded(tmpdir, peers):
    # Section 3: first start with no .rts asks from ts=1; the record is
    # applied, logged with the slave's clock as origin:master, and its TS
    # written to .rts; after a hang-up it asks again from .rts + 1.
    section = reference_section('== 3. Slave')
    assert 'c9 00066159b2c493fd 0001 0000 00000011 c81000000005000000016669727374 31 00' \
        in section
    fake = FakeMaster()
    try:
        slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=fake.port, rts='s.rts',
                            ulog='sulog')
        sock, request = fake.accept()
        assert request == unhex('c8a0 0000000000000001 00000002')
        assert tmpdir.join('s.rts').read_binary() == b''          # created empty
        sock.sendall(b'\x00\x00\x00\x05\xca' + MASTER_RECORD)
        applied = time.time()
        assert wait_until(lambda: get(slave, b'first') == b'1', CATCH_UP)
        assert tmpdir.join('s.rts').read_binary() == b'1795887739474941\n'
        record, = ulog_records(str(tmpdir.join('sulog')))
        assert (record['sid'], record['mid']) == (1, 5)
        assert record['body'] == MASTER_RECORD[17:]
        assert abs(record['ts'] / 1e6 - applied) < 2.0            # the slave's clock
        pairs = stat_pairs(slave)
        names = [name for name, _ in pairs]
        at = names.index('bigend')
        assert names[at + 1:at + 5] == ['mhost', 'mport', 'rts', 'delay']
        values = dict(pairs)
        assert (values['sid'], values['mhost'], values['mport'], values['rts']) == (
            '2', '127.0.0.1', str(fake.port), '1795887739474941')
        assert float(values['delay']) > 0 and values['cnt_put'] == '0'

        sock.close()                                              # the master goes away
        hung_up = time.time()
        again, request = fake.accept()
        assert request == unhex('c8a0 00066159b2c493fe 00000002')
        assert 0.5 <= time.time() - hung_up <= 3.0
        again.sendall(b'\x00\x00\x00\x00')                        # sid 0: the slave gives up
        again.settimeout(5)
        assert again.recv(1) == b''
        again.close()
        third, request = fake.accept()                            # and tries again
        assert request == unhex('c8a0 00066159b2c493fe 00000002')
        third.close()
    finally:
        fake.close()


def test_slave_resumes_from_an_rts_file_it_finds_or_setmst_gives(tmpdir, peers):
    # "reconnect, .rts=1234567890123456  c8a0 000462d53c8abac1 00000002"
    tmpdir.join('s.rts').write_binary(b'1234567890123456\n')
    fake = FakeMaster()
    try:
        slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=fake.port, rts='s.rts')
        sock, request = fake.accept()
        assert request == unhex('c8a0 000462d53c8abac1 00000002')
        # setmst with a TS replaces the .rts file: the next request asks from TS + 1.
        assert setmst(slave, '127.0.0.1', fake.port, ts=5) == b'\x00'
        again, request = fake.accept()
        assert request == unhex('c8a0 0000000000000006 00000002')
        assert tmpdir.join('s.rts').read_binary() == b'5\n'
        sock.close()
        again.close()
    finally:
        fake.close()


def putkeep_record(ts, key, value):
    body = b'\xc8\x11' + struct.pack('>II', len(key), len(value)) + key + value + b'\x00'
    return struct.pack('>BQII', 0xC9, ts, 1, len(body)) + body


def put_record(ts, key, value):
    body = b'\xc8\x10' + struct.pack('>II', len(key), len(value)) + key + value + b'\x00'
    return struct.pack('>BQII', 0xC9, ts, 1, len(body)) + body


@pytest.mark.parametrize('rcc', [False, True], ids=['default', 'rcc'])
def test_consistency_check(tmpdir, peers, rcc):
    # x exists on the slave only; the master's putkeep x succeeded there.
    fake = FakeMaster()
    try:
        slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=fake.port, rts='s.rts',
                            ulog='sulog', rcc=rcc)
        put(slave, b'x', b'local')
        sock, _ = fake.accept()
        sock.sendall(b'\x00\x00\x00\x01' + putkeep_record(10, b'x', b'm')
                     + put_record(11, b'y', b'1'))
        logged = wait_until(lambda: [r for r in ulog_records(str(tmpdir.join('sulog')))
                                     if r['mid'] == 1], CATCH_UP)
        assert logged[0]['body'][-3:] == b'xm\x01'                # failed here: R=01
        if not rcc:
            assert wait_until(lambda: get(slave, b'y') == b'1', CATCH_UP)
            assert 'INFO do_slave: detected inconsistency' in server_log(tmpdir, 's')
            return
        assert wait_until(lambda: 'ERROR do_slave: detected inconsistency'
                          in server_log(tmpdir, 's'), CATCH_UP)
        assert get(slave, b'y') is None
        assert stat(slave)['repl_stalled'].endswith(               # not in ttserver's stat
            ' detected inconsistency at ts 10; stopped until setmst (-rcc)')
        sock.settimeout(5)
        assert sock.recv(1) == b''                                # it hung up
        fake.listener.settimeout(2.5)
        with pytest.raises(Exception):                            # and stays away
            fake.accept()
        assert setmst(slave, '127.0.0.1', fake.port) == b'\x00'   # until setmst
        assert 'repl_stalled' not in stat(slave)
        fake.listener.settimeout(5)
        again, request = fake.accept()
        assert request == unhex('c8a0 000000000000000b 00000002')   # rts 10 -> 11 and on
        again.close()
    finally:
        fake.close()


# ------------------------------------------------------------ pairs of tcjson-tyrant

def bodies(records, sid, mid):
    return [r['body'] for r in records if (r['sid'], r['mid']) == (sid, mid)]


def test_slave_catches_up_after_kill_9_of_slave_and_of_master(tmpdir, peers):
    master = peers.start('m', ulog='mulog', sid=1)
    slave = peers.start('s', ulog='sulog', sid=2, mhost='127.0.0.1', mport=master.port,
                        rts='s.rts')
    put(master, b'first', b'1')
    assert wait_until(lambda: get(slave, b'first') == b'1', CATCH_UP)

    slave.kill()
    for i in range(10):
        put(master, b'down%d' % i, b'v%d' % i)
    assert out(master, b'first')
    slave.start()
    assert wait_until(lambda: get(slave, b'down9') == b'v9', CATCH_UP)
    assert wait_until(lambda: get(slave, b'first') is None, CATCH_UP)

    master_log = ulog_records(str(tmpdir.join('mulog')))
    slave_log = ulog_records(str(tmpdir.join('sulog')))
    assert bodies(slave_log, 1, 1) == bodies(master_log, 1, 0)   # each once, in order
    last_ts = master_log[-1]['ts']
    assert tmpdir.join('s.rts').read_binary() == b'%d\n' % last_ts
    assert stat(slave)['rts'] == str(last_ts)
    assert stat(slave)['cnt_put'] == '0'                          # replicated: not counted

    master.kill()
    time.sleep(0.2)
    assert stat(slave)['mhost'] == '127.0.0.1'                    # still configured
    master.start()
    put(master, b'after', b'restart')
    assert wait_until(lambda: get(slave, b'after') == b'restart', CATCH_UP)
    assert len(bodies(ulog_records(str(tmpdir.join('sulog'))), 1, 1)) == 13


def test_setmst_drops_and_restores_the_master(tmpdir, peers):
    master = peers.start('m', ulog='mulog', sid=1)
    slave = peers.start('s', sid=2, mhost='127.0.0.1', mport=master.port, rts='s.rts')
    put(master, b'a', b'1')
    assert wait_until(lambda: get(slave, b'a') == b'1', CATCH_UP)
    assert setmst(slave, '', 0) == b'\x00'
    assert 'mhost' not in stat(slave)                             # at once
    put(master, b'b', b'2')
    time.sleep(0.5)                     # connected, it would have had it in milliseconds
    assert get(slave, b'b') is None
    assert setmst(slave, '127.0.0.1', master.port) == b'\x00'     # ts 0: from its .rts
    assert wait_until(lambda: get(slave, b'b') == b'2', CATCH_UP)
    assert stat(slave)['mport'] == str(master.port)


def test_dual_master(tmpdir, peers):
    a_port, b_port = free_port(), free_port()
    a = peers.start('a', port=a_port, ulog='aulog', sid=1, mhost='127.0.0.1', mport=b_port,
                    rts='a.rts')
    b = peers.start('b', port=b_port, ulog='bulog', sid=2, mhost='127.0.0.1', mport=a_port,
                    rts='b.rts')
    for i in range(5):
        put(a, b'a%d' % i, b'fromA')
        put(b, b'b%d' % i, b'fromB')
    addint(a, b'cnt', 1)
    addint(b, b'cnt', 10)
    assert wait_until(lambda: get(a, b'b4') and get(b, b'a4'), CATCH_UP)
    assert wait_until(lambda: rnum(a) == rnum(b) == 11, CATCH_UP)
    assert wait_until(lambda: get(a, b'cnt') == get(b, b'cnt') == struct.pack('<i', 11),
                      CATCH_UP)

    # Every write is logged exactly once on each server: A's own as 1:0,
    # B's as 2:2 on A; B's own as 2:0, A's as 1:1 on B.  Nothing bounced.
    a_log = ulog_records(str(tmpdir.join('aulog')))
    b_log = ulog_records(str(tmpdir.join('bulog')))
    assert set((r['sid'], r['mid']) for r in a_log) == set([(1, 0), (2, 2)])
    assert set((r['sid'], r['mid']) for r in b_log) == set([(2, 0), (1, 1)])
    assert bodies(a_log, 1, 0) == bodies(b_log, 1, 1)
    assert bodies(b_log, 2, 0) == bodies(a_log, 2, 2)
    assert len(a_log) == len(b_log) == 12

    for server in (a, b):
        names = [name for name, _ in stat_pairs(server)]
        assert names[names.index('bigend') + 1:names.index('bigend') + 5] == [
            'mhost', 'mport', 'rts', 'delay']
        assert int(stat(server)['cnt_repl']) >= 1

    a.kill()                                       # A down, writes on B, A back
    for i in range(5):
        put(b, b'while%d' % i, b'down')
    assert out(b, b'a0')
    a.start()
    assert wait_until(lambda: get(a, b'while4') == b'down' and get(a, b'a0') is None, CATCH_UP)
    put(a, b'back', b'A')                          # and B follows A again
    assert wait_until(lambda: get(b, b'back') == b'A', CATCH_UP)
    assert rnum(a) == rnum(b) == 16


def test_a_timestamp_older_than_the_log_starts_at_the_oldest_file_left(peers, tmpdir):
    # Files 1..n after rotation, file 1 removed by the operator, request
    # ts=1: no error, the stream starts with the first record of file 2.
    master = peers.start('m', ulog='ulog', ulim=100, sid=1)
    for i in range(8):
        put(master, b'key%d' % i, b'value')
    first_file = ulog_records(str(tmpdir.join('ulog')))
    tmpdir.join('ulog', '00000001.ulog').remove()
    left = ulog_records(str(tmpdir.join('ulog')))
    assert left[0]['file'] == '00000002.ulog' and len(left) < len(first_file)
    slave = FakeSlave(master, ts=1, sid=2)
    assert slave.read(5) == b'\x00\x00\x00\x01\xca'
    put(master, b'wake', b'up')
    got = slave.records(len(left) + 1)
    assert [body for _, _, body, _ in got[:-1]] == [r['body'] for r in left]
    slave.close()


def test_a_silent_master_is_given_up_and_nops_keep_it_alive(tmpdir, monkeypatch):
    # "no byte for 60 s = dead master; the nop every second is what keeps
    # an idle link alive".  The server runs in this process with the 60 s
    # shortened to 1 s, so the test takes seconds.
    monkeypatch.setattr(replication, 'MASTER_SILENCE', 1.0)
    fake = FakeMaster()
    settings = replication.Settings(sid=2, master_host='127.0.0.1', master_port=fake.port,
                                    rts_path=str(tmpdir.join('s.rts')))
    server = TyrantServer(MemoryStore(), '127.0.0.1', 0, settings)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        sock, _ = fake.accept()
        sock.sendall(b'\x00\x00\x00\x05\xca' + MASTER_RECORD)
        for _ in range(5):                          # 2 s of nops, 0.4 s apart: kept
            time.sleep(0.4)
            sock.sendall(b'\xca')
        last_byte = time.time()
        sock.settimeout(5)
        assert sock.recv(1) == b''                  # then silence: given up
        assert 0.8 <= time.time() - last_byte <= 2.0
        again, request = fake.accept()              # and asked again from .rts + 1
        assert request == unhex('c8a0 00066159b2c493fe 00000002')
        assert tmpdir.join('s.rts').read_binary() == b'1795887739474941\n'
        again.close()
    finally:
        server.stop()
        thread.join(5)
        server.close()
        fake.close()


def test_stat_lines_come_in_ttservers_order(peers):
    # The recorded stat (transcripts file) up to where it was cut off, then
    # the order of 1.1.41's do_stat: every command's count, cnt_repl after
    # cnt_misc, and the three miss counts last.
    with open(TRANSCRIPTS) as transcripts:
        lines = transcripts.read().splitlines()
    shown = lines[[n for n, l in enumerate(lines) if l.startswith('stat (c888) RSP')][0] + 1]
    recorded = [field.strip().split('\t')[0] for field in shown.split('|')][:-1]
    assert recorded[:2] == ['version', 'libver'] and recorded[-1] == 'cnt_iternext'
    master = peers.start('m', ulog='ulog', sid=1)
    slave = FakeSlave(master, ts=1, sid=2)
    assert slave.read(4) == b'\x00\x00\x00\x01'
    names = [name for name, _ in stat_pairs(master)]
    ours = [name for name in names if name in recorded]
    assert ours == [name for name in recorded if name in names]
    assert len(ours) >= len(recorded) - 3                     # all but fd, loadavg... at most
    counts = [name for name in names if name.startswith('cnt_')]
    assert counts[counts.index('cnt_misc') + 1:] == [
        'cnt_repl', 'cnt_put_miss', 'cnt_out_miss', 'cnt_get_miss']
    assert 'mhost' not in names and dict(stat_pairs(master))['sid'] == '1'
    assert dict(stat_pairs(master))['cnt_repl'] == '1'
    slave.close()


def test_ring_of_three(tmpdir, peers):
    # A pulls from C, B from A, C from B: every server gets every write, and
    # each write is logged once on each (the origin SID stops a record one
    # hop before it would come home): A 1:0, 3:3, 2:3; B 1:1, 2:0, 3:1; C 3:0, 1:2, 2:2.
    ports = dict((name, free_port()) for name in 'abc')
    follows = {'a': 'c', 'b': 'a', 'c': 'b'}
    servers = {}
    for sid, name in enumerate('abc', 1):
        servers[name] = peers.start(name, port=ports[name], ulog=name + 'ulog', sid=sid,
                                    mhost='127.0.0.1', mport=ports[follows[name]],
                                    rts=name + '.rts')
    for name in 'acb':
        put(servers[name], b'from-' + name.encode('ascii'), b'1')
    for name in 'abc':
        assert wait_until(lambda: rnum(servers[name]) == 3, CATCH_UP), name
    time.sleep(0.3)                          # anything that would bounce has bounced by now
    origins = {}
    for name in 'abc':
        records = ulog_records(str(tmpdir.join(name + 'ulog')))
        origins[name] = sorted((r['sid'], r['mid']) for r in records)
    assert origins == {'a': [(1, 0), (2, 3), (3, 3)], 'b': [(1, 1), (2, 0), (3, 1)],
                       'c': [(1, 2), (2, 2), (3, 0)]}
