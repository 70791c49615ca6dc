"""Where tcjson-tyrant spends its time under session traffic (py-spy).

    .venv/bin/python bench/profile_server.py [--size small|large]
        [--kind read|write|mix] [--seconds 8] [--py-spy PATH]

Starts tcjson-tyrant (with tcjson.lua), attaches ``py-spy record`` (raw
collapsed stacks) to it, drives it with in-process ext:tcjson session
requests of one kind (as part 1 of run.py: user_sessions.UserSession) for
the given time, and prints the share of samples per function (self time)
and inclusive.  Samples of every thread are counted, idle ones too: the
event loop's poll is the server waiting, and the ext worker threads'
``call`` (scripting.py) is tcjson.lua running in lupa.  py-spy is not a
project dependency: install it anywhere (``pip install --target DIR
py-spy``) and pass its path, or have it on PATH.
"""
from __future__ import print_function

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import inproc  # noqa: E402
import peers  # noqa: E402


def summarize(raw_path, top=25):
    self_counts = collections.Counter()
    incl_counts = collections.Counter()
    total = 0
    with open(raw_path) as raw:
        for line in raw:
            stack, _, count = line.rstrip('\n').rpartition(' ')
            if not stack:
                continue
            count = int(count)
            total += count
            frames = stack.split(';')
            self_counts[frames[-1]] += count
            for frame in set(frames):
                incl_counts[frame] += count
    print('%d samples' % total)
    print('\n-- self time (leaf frame) --')
    for frame, count in self_counts.most_common(top):
        print('%5.1f%%  %s' % (100.0 * count / total, frame))
    print('\n-- inclusive --')
    for frame, count in incl_counts.most_common(top):
        print('%5.1f%%  %s' % (100.0 * count / total, frame))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--size', default='small', choices=['small', 'large'])
    parser.add_argument('--kind', default='write', choices=inproc.KINDS)
    parser.add_argument('--seconds', type=float, default=8)
    parser.add_argument('--py-spy', default=peers.which('py-spy') or 'py-spy')
    args = parser.parse_args()
    tyrant = peers.Tyrant().start()
    raw = tempfile.mktemp(suffix='.txt', prefix='tyrant-pyspy-')
    try:
        spy = subprocess.Popen([args.py_spy, 'record', '--pid',
                                str(tyrant.process.pid), '--format', 'raw',
                                '--rate', '1000', '--nonblocking',
                                '--duration', str(int(args.seconds) + 1),
                                '--output', raw])
        time.sleep(1.0)
        backend = inproc.OursBackend('tcjson', tyrant)
        backend.prepare()
        deadline = time.time() + args.seconds
        done = 0
        while time.time() < deadline:
            done += inproc.measure(backend, args.size, args.kind, 500, 0,
                                   counted=0)['requests']
            backend.cleanup()
        print('%d %s %s session requests driven' % (done, args.size, args.kind))
        spy.wait()
        summarize(raw)
    finally:
        tyrant.stop()


if __name__ == '__main__':
    main()
