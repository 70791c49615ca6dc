#!/usr/bin/env python
"""Operations per second of tcjson-tyrant (and ttserver, where installed).

    .venv/bin/python bench/tyrant_ops.py                  # 3 runs of 1 s per case
    .venv/bin/python bench/tyrant_ops.py --seconds 0.2 --clients 1,2

For each server (tcjson-tyrant; ttserver too when one is on PATH or named by
$TCJSON_TTSERVER), each database (in memory ``*`` and a fresh ``.tch`` file
in a temporary directory) and each client count, the clients run together
for --seconds: every client has its own connection and repeats put(key,
value) then get(key) on keys of its own, checking each answer.  One
operation is one request answered; a run's figure is all clients'
operations divided by its wall time.  Each case runs --repeat times (on a
small shared machine single runs vary a lot): the median is printed, with
the lowest and highest.

Clients are separate processes by default, so that the client side of a
single Python process (the GIL) does not set the pace; --mode threads runs
them as threads of this process instead.  The output says which.  Loopback
only; the servers are stopped and the files removed at the end.
"""
from __future__ import division, print_function

import argparse
import multiprocessing
import os
import platform
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, find_ttserver  # noqa
from pylons_tcjson_template.devtyrant.protocol import recv_exactly, request_bytes  # noqa

_SIZE = struct.Struct('>I')


def run_client(host, port, client_id, keys, value_size, start, seconds, results):
    """One client: put then get until the time is up; report the count."""
    try:
        sock = socket.create_connection((host, port), 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        value = (b'%08d' % client_id * (value_size // 8 + 1))[:value_size]
        names = [b'bench:%d:%d' % (client_id, i) for i in range(keys)]
        puts = [request_bytes('put', len(k), len(value), k, value) for k in names]
        gets = [request_bytes('get', len(k), k) for k in names]
        expected = b'\x00' + _SIZE.pack(len(value)) + value
        start.wait()
        deadline = time.time() + seconds
        ops = 0
        i = 0
        while time.time() < deadline:
            sock.sendall(puts[i])
            if recv_exactly(sock, 1) != b'\x00':
                raise IOError('put failed')
            sock.sendall(gets[i])
            if recv_exactly(sock, len(expected)) != expected:
                raise IOError('get returned something else')
            ops += 2
            i = (i + 1) % keys
        sock.close()
        results.put((client_id, ops, None))
    except Exception as exc:                    # reported by the parent
        results.put((client_id, 0, '%s: %s' % (type(exc).__name__, exc)))


def measure(server, clients, args):
    """Run ``clients`` clients at once against server: operations per second."""
    if args.mode == 'processes':
        start, results = multiprocessing.Event(), multiprocessing.Queue()
        make = multiprocessing.Process
    else:
        import Queue as queue_module
        start, results = threading.Event(), queue_module.Queue()
        make = threading.Thread
    workers = [make(target=run_client,
                    args=(server.host, server.port, n, args.keys, args.value_size,
                          start, args.seconds, results))
               for n in range(clients)]
    for worker in workers:
        worker.daemon = True
        worker.start()
    time.sleep(0.2)                    # let every client connect first
    began = time.time()
    start.set()
    outcomes = [results.get(timeout=args.seconds + 30) for _ in workers]
    elapsed = time.time() - began
    for worker in workers:
        worker.join(10)
    errors = [error for _, _, error in outcomes if error]
    if errors:
        raise RuntimeError('client failed: %s' % errors[0])
    return sum(ops for _, ops, _ in outcomes) / elapsed


def servers_to_try():
    kinds = [('tcjson-tyrant', False)]
    real = find_ttserver()
    if real:
        kinds.append(('ttserver', real))
    return kinds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=1.0,
                        help='how long each run of a case lasts (default 1)')
    parser.add_argument('--repeat', type=int, default=3,
                        help='runs per case; the median is shown (default 3)')
    parser.add_argument('--clients', default='1,8',
                        help='comma-separated client counts (default 1,8)')
    parser.add_argument('--mode', choices=['processes', 'threads'], default='processes',
                        help='run clients as processes (default) or threads')
    parser.add_argument('--keys', type=int, default=1000,
                        help='distinct keys per client (default 1000)')
    parser.add_argument('--value-size', type=int, default=100,
                        help='bytes per value (default 100)')
    parser.add_argument('--db', default='*,tch',
                        help='databases: * (memory) and/or tch (default both)')
    args = parser.parse_args(argv)
    args.clients = [int(n) for n in args.clients.split(',') if n.strip()]
    args.dbs = [d.strip() for d in args.db.split(',') if d.strip()]
    if not args.clients or min(args.clients) < 1 or args.keys < 1 or args.repeat < 1:
        parser.error('need at least one client, one key and one run')
    if set(args.dbs) - set(['*', 'tch']):
        parser.error('--db takes * and tch')
    return args


def main(argv=None):
    args = parse_args(argv)
    print('tyrant_ops: put+get on 127.0.0.1, %s-byte values, %d keys per client, '
          '%d runs of %.1f s per case; clients are %s, each with its own '
          'connection; one op = one request answered'
          % (args.value_size, args.keys, args.repeat, args.seconds, args.mode))
    print('python %s on %s, %d CPUs'
          % (platform.python_version(), platform.platform(), multiprocessing.cpu_count()))
    workdir = tempfile.mkdtemp(prefix='tyrant-ops-')
    try:
        for name, ttserver in servers_to_try():
            for db in args.dbs:
                dbpath = '*' if db == '*' else os.path.join(workdir, '%s.tch' % name)
                label = 'memory' if db == '*' else '.tch'
                with TyrantProcess(dbpath, ttserver=ttserver) as server:
                    for clients in args.clients:
                        rates = sorted(measure(server, clients, args)
                                       for _ in range(args.repeat))
                        print('%-14s %-7s %2d client%s  %10.0f ops/s  (%.0f-%.0f)'
                              % (name, label, clients, ' ' if clients == 1 else 's',
                                 rates[len(rates) // 2], rates[0], rates[-1]))
                        sys.stdout.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
