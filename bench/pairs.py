#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""One Tyrant server vs a dual-master pair vs two shards of pairs: speed,
failover and replication delay.

    .venv/bin/python bench/pairs.py                 # ~1 minute per server kind
    .venv/bin/python bench/pairs.py --out bench/RESULTS.md

Each part runs on tcjson-tyrant and, where $TCJSON_TTSERVER names one (or
one is on PATH), on ttserver too; every server runs tcjson.lua (-ext).

Throughput: for each url (one server; one pair; two pairs as shards) the
same --threads client threads run for --seconds, each making write
requests as the generated app does: user_sessions.UserSession loads one
of --sessions stored sessions by its id, changes a key and saves (on one
server a get, then tcjson.lua's merge; on a pair an mget on both members
at once, then the merge on the session's preferred member).  The urls
take turns for --rounds rounds; the median round is shown, with commands
per request counted by the servers (stat cnt_*, summed over every server;
a member does not count what it applies by replication) and round trips
and commands per read and per write request counted in an untimed pass on
one thread (bench/peers.py's RoundTripCounter).

Failover: one client thread makes the same write requests on a session
whose preferred member is then killed (SIGKILL) and started again, or
stopped (SIGSTOP) and continued.  Rows: fault -> first request served by
the other member, the slowest request, failed requests, and member back
-> the first write on it again (the watcher probes every PROBE_INTERVAL;
a member takes writes again WRITE_HOLD after it answers).

Replication delay: the time from a write acknowledged by one member (its
answer read) to its visibility on the other (a get there returns it),
polled every --poll-us from a separate process; writes are tcjson.lua
merges of a pair slot, as sessions make them, alternating between the
members.  Measured with no other traffic, then under the throughput load
on the pair.  It is the window in which a member that dies takes with it
writes it acknowledged and had not sent yet.

With --out, the tables replace the section "Several servers" of that
Markdown file (bench/run.py keeps it).
"""
from __future__ import division, print_function

import argparse
import contextlib
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests'))

import inproc  # noqa: E402
import peers  # noqa: E402
from pair_support import DualMaster  # noqa: E402
from pylons_tcjson_template import records, tcjson, tyrant, user_sessions  # noqa: E402
from pylons_tcjson_template.devtyrant.launcher import (  # noqa: E402
    TyrantProcess, find_ttserver)
from pylons_tcjson_template.devtyrant.protocol import recv_exactly  # noqa: E402

CONNECT_TIMEOUT, IO_TIMEOUT = 0.5, 1.0
SECTION = '## Several servers (bench/pairs.py)'
# The module that builds a url's servers and knows the pairs' WRITE_HOLD
# (tcjson.get_servers comes from it, wherever the backend keeps it).
SERVERS = sys.modules[tcjson.get_servers.__module__]


# ------------------------------------------------------------ the servers

@contextlib.contextmanager
def server_kind(ttserver):
    """Servers started inside are `ttserver` (a path), or tcjson-tyrant
    (None): the launcher reads $TCJSON_TTSERVER when a server is made."""
    old = os.environ.get('TCJSON_TTSERVER')
    os.environ['TCJSON_TTSERVER'] = ttserver or 'builtin'
    try:
        yield
    finally:
        if old is None:
            del os.environ['TCJSON_TTSERVER']
        else:
            os.environ['TCJSON_TTSERVER'] = old


class Servers(object):
    """One server, one pair and two pairs of one kind, in `work`."""

    def __init__(self, work, ttserver):
        with server_kind(ttserver):
            self.single = TyrantProcess(os.path.join(work, 'single.tch'))
            self.pair = DualMaster(os.path.join(work, 'pair'))
            self.shards = [DualMaster(os.path.join(work, 'shard1'), first_sid=1),
                           DualMaster(os.path.join(work, 'shard2'), first_sid=3)]
        self.kind = self.single.kind

    def start(self):
        self.single.start()
        for pair in [self.pair] + self.shards:
            pair.start()
        for pair in [self.pair] + self.shards:
            pair.wait_replicating()
        return self

    def cases(self):
        """(name, url, its servers) of the three urls."""
        return [('one server', self.single.url, [self.single]),
                ('one pair', self.pair.url, self.pair.members),
                ('two pairs (shards)', '%s;%s' % (self.shards[0].url, self.shards[1].url),
                 self.shards[0].members + self.shards[1].members)]

    def stop(self):
        for server in [self.single, self.pair] + self.shards:
            server.stop()


def server_commands(servers):
    """Commands the servers have answered so far (stat cnt_*, not *_miss)."""
    return sum(peers.commands(peers.tyrant_stat(server.host, server.port))
               for server in servers)


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------ the requests

def session_options(url):
    return {'type': 'ext:tcjson', 'url': url, 'prefix': 'bench:', 'timeout': 3600,
            'use_cookies': False, 'connect_timeout': CONNECT_TIMEOUT,
            'io_timeout': IO_TIMEOUT, 'pool_size': 16}


def new_sessions(url, count):
    """`count` stored sessions (their ids)."""
    ids = []
    for _ in range(count):
        session = user_sessions.UserSession({}, **session_options(url))
        session['visits'] = 0
        session.save()
        ids.append(session.id)
    return ids


def write_request(url, session_id):
    """What a request of the generated app that changes the session does."""
    session = user_sessions.UserSession({}, id=session_id, **session_options(url))
    session['visits'] = session.get('visits', 0) + 1
    session.save()


def read_request(url, session_id):
    session = user_sessions.UserSession({}, id=session_id, **session_options(url))
    session.get('visits')
    session.save(accessed_only=True)


def traffic(url, servers, ids, count=50):
    """{kind: (commands, round trips) per request} of read and write
    requests, one thread, untimed."""
    out = {}
    for kind, call in (('read', read_request), ('write', write_request)):
        for session_id in ids[:5]:
            call(url, session_id)               # every connection opened and probed
        before = server_commands(servers) + len(servers)       # the stats themselves
        with peers.RoundTripCounter() as trips:
            for number in range(count):
                call(url, ids[number % len(ids)])
        commands = server_commands(servers) - before
        out[kind] = (commands / count, trips.round_trips / count)
    return out


class Load(object):
    """`threads` client threads making write requests on `ids` until stopped."""

    def __init__(self, url, ids, threads):
        self.url, self.ids, self.threads = url, ids, threads
        self.done = [0] * threads
        self.stopping = threading.Event()
        self.workers = [threading.Thread(target=self._client, args=(n,))
                        for n in range(threads)]

    def _client(self, number):
        count = 0
        while not self.stopping.is_set():
            write_request(self.url, self.ids[(number * 7919 + count) % len(self.ids)])
            count += 1
        self.done[number] = count

    def start(self):
        self.started, self.cpu = time.time(), cpu_seconds()
        for worker in self.workers:
            worker.start()
        return self

    def stop(self):
        """(requests, wall seconds, CPU seconds of this process)."""
        self.stopping.set()
        for worker in self.workers:
            worker.join()
        return sum(self.done), time.time() - self.started, cpu_seconds() - self.cpu


def throughput(url, servers, ids, threads, seconds):
    """(requests per second, commands per request, client CPU ms per request)."""
    before = server_commands(servers)
    load = Load(url, ids, threads).start()
    time.sleep(seconds)
    requests, wall, cpu = load.stop()
    return (requests / wall, (server_commands(servers) - before - len(servers)) / requests,
            1000 * cpu / requests)


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def throughput_lines(servers, args):
    """The throughput table of one server kind."""
    cases = servers.cases()
    ids = dict((url, new_sessions(url, args.sessions)) for _, url, _ in cases)
    counted = dict((name, traffic(url, members, ids[url])) for name, url, members in cases)
    figures = dict((name, []) for name, _, _ in cases)
    for _ in range(args.rounds):
        for name, url, members in cases:
            figures[name].append(throughput(url, members, ids[url], args.threads,
                                            args.seconds))
    lines = ['%s, %d client threads in one process, %d rounds of %g s, median round; a '
             'request loads a session, changes a key and saves (UserSession).'
             % (servers.kind, args.threads, args.rounds, args.seconds), '',
             '| url | write requests/s | vs one server | commands/request (load) | '
             'client CPU ms/request | read: commands / round trips | write: commands / '
             'round trips |', '|---|---:|---:|---:|---:|---:|---:|']
    base = median([row[0] for row in figures['one server']])
    for name, _, _ in cases:
        rows = figures[name]
        rate = median([row[0] for row in rows])
        lines.append('| %s | %.0f | %.2fx | %.2f | %.3f | %.2f / %.2f | %.2f / %.2f |' % (
            name, rate, rate / base, median([row[1] for row in rows]),
            median([row[2] for row in rows]), counted[name]['read'][0],
            counted[name]['read'][1], counted[name]['write'][0], counted[name]['write'][1]))
    return lines


# ------------------------------------------------------------ failover

class MemberLog(object):
    """Wraps a pair's write() to note which member took each write."""

    def __init__(self, pair):
        self.local = threading.local()
        original = pair.write

        def write(key, commands):
            member, results = original(key, commands)
            self.local.member = member.url
            return member, results
        pair.write = write

    def take(self):
        member, self.local.member = getattr(self.local, 'member', None), None
        return member


def failover(url, failed, fault, cure):
    """(fault -> first request served by the other member, slowest request,
    failed requests, back -> first write on the member again), seconds."""
    pair = tcjson.get_servers(url, CONNECT_TIMEOUT, IO_TIMEOUT).shard_list[0]
    members = [member.url for member in pair.members]
    session_id = None
    while session_id is None:                 # one whose writes go to `failed`
        candidate = new_sessions(url, 1)[0]
        if members[pair.preferred(candidate)] == failed.url:
            session_id = candidate
    written, log, stop = MemberLog(pair), [], threading.Event()

    def client():
        while not stop.is_set():
            began = time.time()
            try:
                write_request(url, session_id)
                log.append((began, time.time(), written.take()))
            except tcjson.TcjsonError:
                log.append((began, time.time(), False))
    worker = threading.Thread(target=client)
    worker.start()
    try:
        time.sleep(0.5)
        faulted = time.time()
        fault()
        time.sleep(2.0)
        cured = time.time()
        cure()
        deadline = cured + 15
        while time.time() < deadline and not [
                1 for began, _, member in log if began >= cured and member == failed.url]:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join()
    served = [end for began, end, member in log
              if began >= faulted and member and member != failed.url]
    back = [end for began, end, member in log if began >= cured and member == failed.url]
    return (min(served) - faulted if served else None,
            max(end - began for began, end, _ in log if faulted - 1 <= began <= cured),
            sum(1 for _, _, member in log if member is False),
            min(back) - cured if back else None)


def failover_lines(servers):
    member = servers.pair.members[0]
    kill = failover(servers.pair.url, member, member.kill, member.start)
    stop = failover(servers.pair.url, member, member.pause, member.resume)
    lines = ['', 'Failover in a pair of %s (connect_timeout=%g s, io_timeout=%g s, watcher '
             'every %g s, writes back after %g s), one client thread making write requests '
             'on a session preferring the failed member:'
             % (servers.kind, CONNECT_TIMEOUT, IO_TIMEOUT, tyrant.PROBE_INTERVAL,
                SERVERS.WRITE_HOLD), '',
             '| fault | fault -> first request served by the other member | slowest request '
             '| failed requests | member back -> first write on it again |',
             '|---|---:|---:|---:|---:|']
    for name, (first, slowest, failed, back) in (('kill -9, then started again', kill),
                                                 ('SIGSTOP, then SIGCONT', stop)):
        lines.append('| %s | %s | %.1f ms | %d | %s |' % (
            name, '-' if first is None else '%.1f ms' % (1000 * first), 1000 * slowest,
            failed, '-' if back is None else '%.2f s' % back))
    return lines


# ------------------------------------------------------------ replication

def _exchange(sock, request):
    """Send a get or ext request; its value, or None for the server's "no"
    (a status byte alone)."""
    sock.sendall(request)
    if recv_exactly(sock, 1) != b'\x00':
        return None
    return recv_exactly(sock, struct.unpack('>I', recv_exactly(sock, 4))[0])


def _probe(addresses, sids, samples, poll, pause, give_up, out):
    """In a child process: `samples` merges alternating between the two
    members, each followed by gets on the other until its slot is there,
    or `give_up` seconds have passed (None: it never arrived).  Sends the
    delays (seconds) through `out`, or the error that stopped it."""
    try:
        out.send(_delays(addresses, sids, samples, poll, pause, give_up))
    except Exception as exc:
        out.send(exc)


def _delays(addresses, sids, samples, poll, pause, give_up):
    socks = [socket.create_connection(address, 5) for address in addresses]
    for sock in socks:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    delays = []
    tag = uuid.uuid4().hex[:8]
    for number in range(samples):
        writer = number % 2
        key = 'bench:repl-%s-%d:session' % (tag, number)
        request = records.merge_request({'n': str(number)}, [], records.MAX_SESSION_SIZE,
                                        {}, sids, create=True)
        answer = _exchange(socks[writer], inproc.tyrant_ext('merge', key, request, 'ok')[0])
        acknowledged = time.time()
        if answer != 'ok':
            raise RuntimeError('merge answered %r' % (answer,))
        slot = inproc.tyrant_get('%s@%d' % (key, sids[writer]), '')[0]
        delay = None
        while delay is None and time.time() - acknowledged < give_up:
            if _exchange(socks[1 - writer], slot) is not None:
                delay = time.time() - acknowledged
            else:
                time.sleep(poll)
        delays.append(delay)
        time.sleep(pause)
    return delays


GIVE_UP = 5.0       # seconds after which a write counts as never replicated


def replication_delays(pair, samples, poll, pause=0.02, give_up=GIVE_UP):
    """(sorted delays in seconds, writes that never arrived) of `samples`
    writes, measured in a child process (so that this process's threads do
    not hold its timing up)."""
    sids = [member.sid for member in pair.members]
    receive, send = multiprocessing.Pipe(False)
    child = multiprocessing.Process(target=_probe, args=(
        [(member.host, member.port) for member in pair.members], sids, samples, poll,
        pause, give_up, send))
    child.start()
    try:
        while not receive.poll(1.0):
            if not child.is_alive():
                raise RuntimeError('the replication probe died (exit status %s)'
                                   % child.exitcode)
        found = receive.recv()
    finally:
        child.join()
    if isinstance(found, Exception):
        raise found
    return sorted(d for d in found if d is not None), found.count(None)


def _percentile(values, fraction):
    if not values:
        return None
    return values[min(len(values) - 1, int(round(fraction * (len(values) - 1))))]


def replication_lines(servers, args):
    pair = servers.pair
    idle = replication_delays(pair, args.samples, args.poll_us / 1e6)
    ids = new_sessions(pair.url, args.sessions)
    load = Load(pair.url, ids, args.threads).start()
    try:
        busy = replication_delays(pair, args.samples, args.poll_us / 1e6)
    finally:
        requests, wall, _ = load.stop()
    lines = ['', 'Replication delay in a pair of %s: from a write acknowledged by one member '
             'to its visibility on the other; %d writes (tcjson.lua merges of a pair slot, '
             'alternating between the members), polled every %d µs from a separate process; '
             'a write not there after %g s counts as never replicated.'
             % (servers.kind, args.samples, args.poll_us, GIVE_UP), '',
             '| traffic | median | p99 | max | never replicated |', '|---|---:|---:|---:|---:|']
    for name, (delays, lost) in (('none but the probe', idle),
                                 ('the throughput load: %d threads, %.0f write requests/s'
                                  % (args.threads, requests / wall), busy)):
        lines.append('| %s | %s | %s | %s | %d of %d |' % (
            name, _ms(_percentile(delays, 0.5)), _ms(_percentile(delays, 0.99)),
            _ms(delays[-1] if delays else None), lost, args.samples))
    return lines


def _ms(seconds):
    return '-' if seconds is None else '%.2f ms' % (1000 * seconds)


# ------------------------------------------------------------ the report

def run_kind(ttserver, args):
    """Every table of one server kind."""
    work = tempfile.mkdtemp(prefix='bench-pairs-')
    servers = Servers(work, ttserver)
    try:
        servers.start()
        lines = throughput_lines(servers, args)
        lines += ['', 'Each member of a pair also applies every write of its partner and '
                  'streams its own update log to it, and a read asks both members; with %d '
                  'CPUs shared by the clients and the server processes (2 for one pair, 4 '
                  'for two), that work is what the lower rows pay.'
                  % os.sysconf('SC_NPROCESSORS_ONLN')]
        lines += replication_lines(servers, args)
        lines += failover_lines(servers)
        return lines
    finally:
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(args):
    kinds = [None] + ([find_ttserver()] if find_ttserver() else [])
    lines = ['`bench/pairs.py %s` on %s, %s; load average at the start %s.'
             % (' '.join(args.argv), platform.node() or 'this host',
                time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                '%.2f, %.2f, %.2f' % os.getloadavg())]
    for ttserver in kinds:
        lines += [''] + run_kind(ttserver, args)
    return lines


def write_section(path, lines):
    """Replace (or append) this script's section of a Markdown file."""
    text = open(path).read() if os.path.exists(path) else ''
    start = text.find(SECTION)
    if start >= 0:
        end = text.find('\n## ', start + len(SECTION))
        text = text[:start] + (text[end + 1:] if end >= 0 else '')
    text = text.rstrip('\n') + '\n\n' + SECTION + '\n\n' + '\n'.join(lines) + '\n'
    with open(path, 'w') as out:
        out.write(text.lstrip('\n'))


def main(argv=None):
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=8)
    parser.add_argument('--seconds', type=float, default=3.0)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--sessions', type=int, default=1000)
    parser.add_argument('--samples', type=int, default=400,
                        help='writes timed for the replication delay, per traffic')
    parser.add_argument('--poll-us', type=int, default=100,
                        help='pause between two looks for a replicated write')
    parser.add_argument('--out', help='Markdown file whose "Several servers" section '
                        'to replace')
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    tcjson.register()
    lines = run(args)
    print('\n'.join(lines))
    if args.out:
        write_section(args.out, lines)
    return 0


if __name__ == '__main__':
    sys.exit(main())
