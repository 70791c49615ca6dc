#!/usr/bin/env python
"""One Tyrant server vs a dual-master pair vs two shards of pairs (issue 11).

    .venv/bin/python bench/pairs.py                 # ~1 minute, prints the tables
    .venv/bin/python bench/pairs.py --out bench/RESULTS.md

Part 1, throughput: for each url (one server; one pair; two pairs) the
same --threads client threads run for --seconds, each repeating what
TyrantSession does for a request that saves (lib/tcjson.py): get the
record; putkeep the lock + get the record (pipelined); put the record + out
the lock (pipelined), through ``tyrant.get_servers(url).for_key(id)`` on
--sessions session ids.  Rows: requests per second, round trips and
commands per request (commands counted by the servers: Tyrant stat cnt_*
summed over every server; a pair member does not count what it applies by
replication) and the client process's CPU per request.  The urls take
turns for --rounds rounds; the median round is shown.

Part 2, failover: one client thread repeats the same requests on a session
preferring one member of a pair; that member is killed with SIGKILL (and,
separately, stopped with SIGSTOP).  Rows: the time from the fault to the
first request served by the other member, the slowest request around it,
and the time from the restart (SIGCONT) to the member having its sessions
back (the watcher's catch-up and handover).

Servers are tcjson-tyrant (ttserver when on PATH), databases .tch files in
a temporary directory.  With --out, the tables replace the section
"Several servers" of that Markdown file (bench/run.py does not run this).
"""
from __future__ import division, print_function

import argparse
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests'))

import pytyrant  # noqa: E402

from pair_support import DualMaster  # noqa: E402
from pylons_tcjson_template import tyrant  # noqa: E402
from pylons_tcjson_template.devtyrant.launcher import TyrantProcess  # noqa: E402

CONNECT_TIMEOUT, IO_TIMEOUT = 0.5, 1.0
ROUND_TRIPS = 3                  # per request: get; putkeep+get; put+out
SECTION = '## Several servers (bench/pairs.py)'


def session_request(route, sid, counter):
    """What a saving request of TyrantSession sends (see module doc)."""
    key, lock = 'bench:%s:session' % sid, 'bench:lock:%s:session' % sid
    try:
        route.request('get', key)
    except pytyrant.TyrantError:
        pass
    route.pipeline(('putkeep', lock, '{"owner": "%s"}' % uuid.uuid4().hex), ('get', key))
    route.pipeline(('put', key, '{"visits": %d, "_accessed_time": %f}' % (counter, time.time())),
                   ('out', lock))


def server_commands(servers):
    total = 0
    for server in servers:
        conn = pytyrant.Tyrant.open(server.host, server.port)
        try:
            for line in conn.stat().splitlines():
                name, _, value = line.partition('\t')
                if name.startswith('cnt_') and not name.endswith('_miss'):
                    total += int(value)
        finally:
            conn.close()
    return total


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def throughput(url, servers, threads, seconds, sessions):
    """(requests per second, commands per request, CPU ms per request)."""
    tyrant.get_servers(url, CONNECT_TIMEOUT, IO_TIMEOUT, threads + 2)
    ids = [uuid.UUID(int=index + 1, version=4).hex for index in range(sessions)]
    done = [0] * threads
    stop = threading.Event()

    def client(number):
        servers_ = tyrant.get_servers(url)
        count = 0
        while not stop.is_set():
            sid = ids[(number * 7919 + count) % len(ids)]
            session_request(servers_.for_key(sid), sid, count)
            count += 1
        done[number] = count
    before, cpu = server_commands(servers), cpu_seconds()
    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    started = time.time()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    wall, cpu = time.time() - started, cpu_seconds() - cpu
    requests = sum(done)
    return (requests / wall, (server_commands(servers) - before) / requests,
            1000 * cpu / requests)


def failover(pair, fault, cure):
    """Seconds from `fault` to the first request served by the other
    member, the slowest request, and seconds from `cure` to the member
    having its sessions back."""
    servers = tyrant.get_servers(pair.url, CONNECT_TIMEOUT, IO_TIMEOUT)
    both = servers.servers[0]
    sid = next(s for s in (uuid.uuid4().hex for _ in range(100))
               if servers.for_key(s).preferred == 0)
    route, log, stop = servers.for_key(sid), [], threading.Event()

    def client():
        count = 0
        while not stop.is_set():
            began = time.time()
            try:
                session_request(route, sid, count)
                log.append((began, time.time(), True))
            except tyrant.TcjsonError:
                log.append((began, time.time(), False))
            count += 1
    worker = threading.Thread(target=client)
    worker.start()
    time.sleep(0.5)
    faulted = time.time()
    fault()
    time.sleep(2.0)
    cured = time.time()
    cure()
    while both.is_down(0) and time.time() < cured + 30:
        time.sleep(0.005)
    back = time.time() - cured
    time.sleep(0.3)
    stop.set()
    worker.join()
    first_served = min(end for began, end, ok in log if ok and began >= faulted) - faulted
    slowest = max(end - began for began, end, ok in log if faulted - 1 <= began <= cured)
    failed = sum(1 for _, _, ok in log if not ok)
    return first_served, slowest, back, failed


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def run(args):
    work = tempfile.mkdtemp(prefix='bench-pairs-')
    single = TyrantProcess(os.path.join(work, 'single.tch'))
    pair = DualMaster(os.path.join(work, 'pair'))
    shards = [DualMaster(os.path.join(work, 'shard1'), first_sid=1),
              DualMaster(os.path.join(work, 'shard2'), first_sid=3)]
    lines = []
    try:
        single.start()
        for started in [pair] + shards:
            started.start()
        for started in [pair] + shards:
            started.wait_replicating()
        cases = [('one server', single.url, [single]),
                 ('one pair', pair.url, pair.members),
                 ('two pairs (shards)', '%s;%s' % (shards[0].url, shards[1].url),
                  shards[0].members + shards[1].members)]
        figures = dict((name, []) for name, _, _ in cases)
        for _ in range(args.rounds):
            for name, url, servers in cases:
                figures[name].append(throughput(url, servers, args.threads, args.seconds,
                                                 args.sessions))
        lines += ['%s, %d client threads in one process, %d rounds of %g s, median round;'
                  % (servers_kind(single), args.threads, args.rounds, args.seconds),
                  'a request = get; putkeep+get; put+out (%d round trips).' % ROUND_TRIPS, '',
                  '| url | requests/s | vs one server | commands/request | '
                  'client CPU ms/request |', '|---|---|---|---|---|']
        base = median([row[0] for row in figures['one server']])
        for name, _, _ in cases:
            rows = figures[name]
            rate = median([row[0] for row in rows])
            lines.append('| %s | %.0f | %.2fx | %.2f | %.3f |' % (
                name, rate, rate / base, median([row[1] for row in rows]),
                median([row[2] for row in rows])))
        lines += ['', 'Each member of a pair also applies every write of its partner and '
                  'streams its own update log to it, so a pair does about twice the server '
                  'work per write of one server; with %d CPUs shared by the clients and '
                  'the server processes (%d for one pair, %d for two), that work is what the '
                  'lower rows pay.' % (os.sysconf('SC_NPROCESSORS_ONLN'), 2, 4)]
        member = pair.members[0]
        kill = failover(pair, member.kill, member.start)
        stop = failover(pair, member.pause, member.resume)
        lines += ['', 'Failover in a pair (connect_timeout=%g s, io_timeout=%g s, watcher every '
                  '%g s), one client thread on a session preferring the failed member:'
                  % (CONNECT_TIMEOUT, IO_TIMEOUT, tyrant.PROBE_INTERVAL), '',
                  '| fault | fault -> first request served by the other member | '
                  'slowest request | failed requests | restart -> sessions back |',
                  '|---|---|---|---|---|']
        for name, (first, slowest, back, failed) in (('kill -9', kill), ('SIGSTOP', stop)):
            lines.append('| %s | %.1f ms | %.1f ms | %d | %.2f s |'
                         % (name, 1000 * first, 1000 * slowest, failed, back))
    finally:
        for server in [single, pair] + shards:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return lines


def servers_kind(server):
    return '%s on %s' % (server.kind, platform.node() or 'this host')


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
    parser.add_argument('--out', help='Markdown file whose "Several servers" section '
                        'to replace')
    args = parser.parse_args(argv)
    lines = run(args)
    print('\n'.join(lines))
    if args.out:
        write_section(args.out, lines)
    return 0


if __name__ == '__main__':
    sys.exit(main())
