"""Soak: a served project under load while Tyrant is killed, hung and fed
junk, then an account of every session.

    .venv/bin/python soak/run.py                 # 3 minutes
    .venv/bin/python soak/run.py --minutes 10 --clients 24
    .venv/bin/python soak/run.py --seconds 8     # the smoke test's run

Loopback only.  It generates a project from the template into --dir
(default soak/work; reused on the next run), starts Tyrant on a fresh .tch
file there (ttserver if on PATH, else tcjson-tyrant) and `paster serve`,
and runs --clients threads, each a browser with its own session cookie
looping GET /session.  Every --fault-every seconds the next fault of the
cycle is injected:

  kill -9    SIGKILL the Tyrant server, 1.5 s down, restart on the same
             port and file;
  SIGSTOP    the server hangs with its sockets open for 2 s, then SIGCONT;
  junk       another program overwrites one client's session record with
             junk (not JSON, not an object, bad UTF-8, too big); that
             client must get a 400 and a fresh session, the junk stays.

With --pair the sessions live on a dual-master pair of Tyrant servers
(README.txt, "Several Tyrant servers") and the cycle is: kill -9 member 0,
junk, SIGSTOP member 1, kill -9 member 1, junk, SIGSTOP member 0.  Then no
request may fail except one sent to a member as it failed (begun before
the failure could be noticed: io_timeout into a stop), and at the end both
members must hold the same record for every session.

At the end it prints its figures and checks each session: the counter
Tyrant holds is at least the last one the client was shown (nothing saved
was lost) and at most that client's 200s plus its failed requests (a put
applied just before the server died may have lost its reply).  Exit
status 1 if a session lost data, a 500 or a connection error was seen, a
request outlasted connect_timeout + io_timeout + margin, a request begun
1 s after the server returned failed, the idle app used CPU, or a junk
record was changed; 0 otherwise.
"""
from __future__ import print_function

import argparse
import collections
import json
import os
import random
import shutil
import sys
import threading
import time

from pylons_tcjson_template import records
from pylons_tcjson_template.devtyrant.launcher import free_port
from pylons_tcjson_template.servers import get_servers
from pylons_tcjson_template.tyrant import PROBE_INTERVAL

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests'))

from pair_support import DualMaster  # noqa: E402
from test_faults_support import (Project, SessionClient, Stack, cpu_seconds,  # noqa: E402
                                 make_project, raw_get, raw_put, set_ini_value)
from test_template_support import Served, project_env  # noqa: E402

NAME = 'SoakApp'
MARGIN = 2.0            # seconds over connect + io timeout (see the tests)
RECOVERY = 1.0          # requests begun this long after a return must succeed
IDLE, IDLE_CPU = 1.5, 0.3
KILL_DOWN, STOP_FOR = 1.5, 2.0
# How long before a member failed a write may have been acknowledged and
# not yet sent to its partner (replication takes well under a millisecond
# on loopback; see bench/RESULTS.md).
TAIL_WINDOW = 0.05
JUNK = [('not JSON', 'soak junk {'),
        ('JSON array', '[1, 2, 3]'),
        ('invalid UTF-8', '{"visits": 1, "x": "\xff\xfe"}'),
        ('2 MB object', '{"visits": 1, "pad": "%s"}' % ('p' * (2 * 1024 * 1024)))]


class Epoch(object):
    """One session of one client: from its first cookie to its 400."""

    def __init__(self):
        self.record_key = None
        self.ok = self.failed = 0
        self.last = 0               # the last counter shown on a 200 page
        self.backwards = 0          # pages whose counter was below `last`
        self.stalls = []            # (end of the page before, start of this one):
                                    # a 200 page that counted no more than the last
        self.junk = None            # what was written over it, if anything
        self.answered_400 = False


class Client(object):
    """A client thread's browser, its sessions and what it saw."""

    def __init__(self, index, port, cookie_name):
        self.index = index
        self.browser = SessionClient(port, cookie_name)
        self.epochs = [Epoch()]
        self.busy = threading.Lock()    # held per request; the junk injector
        self.log = []                   # waits for it: no request in flight
        self.unexpected = []

    @property
    def epoch(self):
        return self.epochs[-1]

    def visit(self):
        with self.busy:
            started = time.time()
            response = self.browser.get()
            ended = time.time()
            epoch = self.epoch
            if response.status == 200:
                epoch.ok += 1
                if response.visits < epoch.last:
                    epoch.backwards += 1
                elif epoch.ok > 1 and response.visits == epoch.last and self.log:
                    epoch.stalls.append((self.log[-1][1], ended))
                epoch.last = response.visits
                if epoch.record_key is None:
                    epoch.record_key = response.value('record-key')
            elif response.status == 400 and epoch.junk is not None:
                epoch.answered_400 = True
                self.epochs.append(Epoch())           # the cookie was expired
            elif response.status == 503:
                epoch.failed += 1
            else:
                epoch.failed += 1
                self.unexpected.append((response.status, response.error,
                                        response.body[:200]))
            self.log.append((started, ended, response.status, response.error))


class PairStack(object):
    """Like test_faults_support.Stack, with a dual-master pair for Tyrant:
    member 0 on the project's Tyrant port, member 1 on a free one."""

    def __init__(self, project, workdir):
        self.project = project
        self.pair = DualMaster(workdir, ports=(project.tyrant_port, free_port()))
        self.tyrant = self.pair.members[0]
        set_ini_value(project.ini, 'app:main', 'beaker.session.url', self.pair.url)
        self.served = Served(project.directory, project.env, port=project.http_port,
                             log=os.path.join(str(workdir), 'stack.log'))

    def start(self):
        self.pair.start()
        self.pair.wait_replicating()
        self.served.start()
        return self

    def stop(self):
        self.served.stop()
        self.pair.stop()

    @property
    def app_pid(self):
        return self.served.process.pid

    def app_alive(self):
        return self.served.process.poll() is None


def prepare(directory):
    """A project in `directory`/SoakApp: reused if there, else generated;
    fresh ports either way."""
    project_dir = os.path.join(directory, NAME)
    if not os.path.isfile(os.path.join(project_dir, 'development.ini')):
        if os.path.isdir(project_dir):
            shutil.rmtree(project_dir)
        if not os.path.isdir(directory):
            os.makedirs(directory)
        return make_project(directory, NAME)
    http_port, tyrant_port = free_port(), free_port()
    ini = os.path.join(project_dir, 'development.ini')
    set_ini_value(ini, 'server:main', 'port', http_port)
    set_ini_value(ini, 'app:main', 'beaker.session.url', '127.0.0.1:%d' % tyrant_port)
    return Project(project_dir, project_env(project_dir), http_port, tyrant_port)


class Soak(object):

    def __init__(self, options):
        self.options = options
        self.rng = random.Random(options.seed)
        self.faults = []            # (kind, began, back)
        self.junked = []            # (client, epoch, junk)

    def run(self):
        options = self.options
        project = self.project = prepare(os.path.abspath(options.dir))
        workdir = os.path.join(os.path.abspath(options.dir), 'run')
        if os.path.isdir(workdir):
            shutil.rmtree(workdir)
        os.makedirs(workdir)
        self.bound = project.connect_timeout + project.io_timeout + MARGIN
        self.stack = (PairStack if options.pair else Stack)(project, workdir).start()
        self.clients = [Client(index, project.http_port, project.cookie_name)
                        for index in range(options.clients)]
        stopping = threading.Event()

        def loop(client):
            while not stopping.is_set():
                client.visit()

        threads = [threading.Thread(target=loop, args=(client,)) for client in self.clients]
        for thread in threads:
            thread.daemon = True
            thread.start()
        self.started = time.time()
        try:
            self.inject_faults()
        finally:
            stopping.set()
            for thread in threads:
                thread.join(60)
            self.ended = time.time()
            try:
                time.sleep(0.5)
                before = cpu_seconds(self.stack.app_pid)
                time.sleep(IDLE)
                self.idle_cpu = cpu_seconds(self.stack.app_pid) - before
                self.app_alive = self.stack.app_alive()
                self.verify()
            finally:
                self.stack.stop()
        return self.report()

    def inject_faults(self):
        options = self.options
        kinds = ['kill -9', 'junk', 'SIGSTOP']
        # A server fault needs time after it for the recovery to be seen.
        needs = {'kill -9': KILL_DOWN + RECOVERY + 1.5, 'SIGSTOP': STOP_FOR + RECOVERY + 1.5,
                 'junk': 1.0}
        if options.pair:
            kinds = ['kill -9 member 0', 'junk', 'SIGSTOP member 1', 'kill -9 member 1',
                     'junk', 'SIGSTOP member 0']
            # ...and for a member to catch up and get its sessions back.
            for kind in kinds:
                needs[kind] = needs[kind.split(' member')[0]] + PROBE_INTERVAL + 3.0
        deadline = self.started + options.seconds
        next_fault = self.started + min(2.0, options.seconds / 4.0)
        count = 0
        while True:
            now = time.time()
            kind = kinds[count % len(kinds)]
            if now >= next_fault and now + needs[kind] < deadline:
                self.inject(kind)
                count += 1
                next_fault = time.time() + options.fault_every
            if now >= deadline:
                return
            time.sleep(min(0.1, max(0.0, deadline - now)))

    def inject(self, kind):
        tyrant = self.stack.tyrant
        if ' member ' in kind:
            tyrant = self.stack.pair.members[int(kind[-1])]
        began = time.time()
        if kind.startswith('kill -9'):
            tyrant.kill()
            time.sleep(KILL_DOWN)
            tyrant.start()
        elif kind.startswith('SIGSTOP'):
            tyrant.pause()
            time.sleep(STOP_FOR)
            tyrant.resume()
        else:
            candidates = [client for client in self.clients
                          if client.epoch.record_key and client.epoch.junk is None]
            if not candidates:
                return
            client = self.rng.choice(candidates)
            label, junk = JUNK[len(self.junked) % len(JUNK)]
            with client.busy:
                for port in self.tyrant_ports():
                    for key in self.stored_keys(client.epoch.record_key, tombstone=False):
                        raw_put(port, key, junk)
                client.epoch.junk = junk
            self.junked.append((client, client.epoch, label))
            kind = 'junk record'
        self.faults.append((kind, began, time.time()))
        if self.options.pair and kind != 'junk record':
            # One member at a time: the next fault waits until this one is
            # over (replicating both ways, and seen by the app's watcher).
            self.stack.pair.wait_replicating()
            time.sleep(PROBE_INTERVAL + 1.0)

    def tyrant_ports(self):
        if self.options.pair:
            return [member.port for member in self.stack.pair.members]
        return [self.project.tyrant_port]

    def stored_keys(self, record_key, tombstone=True):
        """The keys a session's record is stored under: the one key, or on a
        pair each member's copy and the tombstone (lib/records.py)."""
        if not self.options.pair:
            return [record_key]
        return ['%s@%d' % (record_key, member.sid) for member in self.stack.pair.members] + \
            ([record_key + records.ENDED] if tombstone else [])

    def read_back(self, record_key):
        """The record as the application reads it (a pair's copies merged)."""
        if not self.options.pair:
            return raw_get(self.project.tyrant_port, record_key)
        servers = get_servers(self.stack.pair.url)
        session_id = record_key[len(self.project.prefix):-len(':session')]
        try:
            return records.Record(servers.for_key(session_id), record_key,
                                  records.MAX_SESSION_SIZE).load()[0]
        except ValueError:                           # a junk copy
            return raw_get(self.tyrant_ports()[0], self.stored_keys(record_key)[0])

    def verify(self):
        """Read every session back from Tyrant (as the application does),
        and each member's copies of it: the members must agree."""
        self.lost, self.intact, self.junk_kept, self.junk_changed = [], 0, 0, []
        self.members_differ = []
        for client in self.clients:
            for epoch in client.epochs:
                if epoch.record_key is None:
                    continue
                raw = self.read_back(epoch.record_key)
                held = [[raw_get(port, key) for key in self.stored_keys(epoch.record_key)]
                        for port in self.tyrant_ports()]
                if any(copies != held[0] for copies in held):
                    self.members_differ.append(client.index)
                if epoch.junk is not None:
                    if raw == epoch.junk and epoch.answered_400:
                        self.junk_kept += 1
                    else:
                        self.junk_changed.append(client.index)
                    continue
                try:
                    stored = json.loads(raw)['visits']
                except (TypeError, ValueError, KeyError):
                    stored = None
                # >= last: nothing saved was lost; <= ok + failed: a failed
                # request may still have written (its reply was lost).  On a
                # pair, a visit a member counted just before it failed, and
                # had not sent its partner yet, is missing (README, "Dual-
                # master pairs"): such stalls are counted, any other is a loss.
                tail = self.tail_losses(epoch)
                if (stored is None or epoch.backwards or stored < epoch.last
                        or len(tail) < len(epoch.stalls)
                        or not epoch.ok - len(tail) <= stored <= epoch.ok + epoch.failed):
                    self.lost.append((client.index, epoch.last, epoch.ok,
                                      epoch.failed, stored, epoch.backwards))
                else:
                    self.intact += 1

    def tail_losses(self, epoch):
        """The stalls of `epoch` that a member's unsent writes explain: the
        page before was answered at most TAIL_WINDOW before a member failed
        (killed or stopped), and the stalled one after."""
        if not self.options.pair:
            return []
        failures = [began for kind, began, _ in self.faults if kind != 'junk record']
        return [stall for stall in epoch.stalls
                if any(stall[0] - TAIL_WINDOW <= began <= stall[1] for began in failures)]

    def report(self):
        entries = [entry for client in self.clients for entry in client.log]
        statuses = collections.Counter(entry[2] for entry in entries)
        errors = collections.Counter(entry[3].split(':')[0] for entry in entries if entry[3])
        slow = [entry for entry in entries if entry[1] - entry[0] > self.bound]
        late = []
        ends = [fault[1] for fault in self.faults[1:]] + [self.ended]
        for (kind, began, back), end in zip(self.faults, ends):
            if kind != 'junk record':
                late += [entry for entry in entries
                         if back + RECOVERY <= entry[0] and entry[1] < end
                         and entry[2] != 200]
        # With a pair, only a request sent to a member as it failed may fail.
        outside = []
        if self.options.pair:
            outage_began = [began for kind, began, _ in self.faults if kind != 'junk record']
            noticed = self.project.io_timeout + 0.2
            outside = [entry for entry in entries
                       if entry[2] not in (200, 400)
                       and not any(entry[0] <= began + noticed and
                                   entry[1] <= began + noticed + self.bound
                                   for began in outage_began)]
        faults = collections.Counter(fault[0] for fault in self.faults)
        unexpected = [item for client in self.clients for item in client.unexpected]
        sessions = sum(1 for client in self.clients for epoch in client.epochs
                       if epoch.record_key and epoch.junk is None)
        out = []
        out.append('soak: %.0f s under load, %d clients, Tyrant: %s%s, connect_timeout=%g '
                   'io_timeout=%g, bound %.1f s'
                   % (self.ended - self.started, len(self.clients), self.stack.tyrant.kind,
                      ' dual-master pair' if self.options.pair else '',
                      self.project.connect_timeout, self.project.io_timeout, self.bound))
        kinds = sorted(faults) if self.options.pair else ('kill -9', 'SIGSTOP', 'junk record')
        out.append('faults injected: %d (%s)' % (len(self.faults), ', '.join(
            '%s: %d' % (kind, faults[kind]) for kind in kinds)))
        out.append('requests served: %d (%.0f/s)'
                   % (len(entries), len(entries) / max(0.001, self.ended - self.started)))
        out.append('responses by status: %s' % ', '.join(
            '%s: %d' % (status if status else 'none', statuses[status])
            for status in sorted(statuses, key=lambda s: s or 0)))
        out.append('slowest request: %.2f s' % max([entry[1] - entry[0] for entry in entries]
                                                  or [0]))
        out.append('errors by kind: 503: %d, 400: %d, 500: %d, connection errors: %d%s, '
                   'slow (> %.1f s): %d, failed after recovery: %d, other: %d'
                   % (statuses[503], statuses[400], statuses[500], sum(errors.values()),
                      ' (%s)' % ', '.join('%s %d' % item for item in errors.items())
                      if errors else '', self.bound, len(slow), len(late),
                      len([u for u in unexpected if u[0] not in (500, None)])))
        out.append('sessions verified intact: %d/%d' % (self.intact, sessions))
        if self.options.pair:
            out.append("visits lost to a failed member's unsent writes: %d" % sum(
                len(self.tail_losses(epoch)) for client in self.clients
                for epoch in client.epochs))
        if self.options.pair:
            out.append('failed requests not in flight on a failing member: %d; sessions '
                       'whose members differ: %d' % (len(outside), len(self.members_differ)))
        out.append('junk records answered 400 and left unchanged: %d/%d'
                   % (self.junk_kept, len(self.junked)))
        out.append('idle app CPU after the load: %.2f s in %.1f s; app alive: %s'
                   % (self.idle_cpu, IDLE, self.app_alive))
        problems = []
        if self.lost:
            problems.append('sessions lost data (client, last shown, 200s, failed, stored, '
                            'went backwards): %s' % self.lost[:10])
        if statuses[500]:
            problems.append('%d responses were 500' % statuses[500])
        if errors:
            problems.append('connection errors: %s' % dict(errors))
        if slow:
            problems.append('%d requests over %.1f s' % (len(slow), self.bound))
        if late:
            problems.append('%d requests failed after the server was back' % len(late))
        if outside:
            problems.append('%d requests failed while the other member was up: %s'
                            % (len(outside), outside[:3]))
        if self.members_differ:
            problems.append('the members of the pair hold different records for clients %s'
                            % self.members_differ[:10])
        if unexpected:
            problems.append('unexpected answers: %s' % unexpected[:5])
        if self.junk_changed:
            problems.append('junk records changed or not answered 400: clients %s'
                            % self.junk_changed)
        if self.idle_cpu >= IDLE_CPU:
            problems.append('the idle app used %.2f s CPU' % self.idle_cpu)
        if not self.app_alive:
            problems.append('the app process died')
        for problem in problems:
            out.append('PROBLEM: ' + problem)
        out.append('result: %s' % ('FAIL' if problems else 'PASS'))
        print('\n'.join(out))
        sys.stdout.flush()
        return 1 if problems else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument('--minutes', type=float, help='length of the load (default 3)')
    length.add_argument('--seconds', type=float, help='length of the load in seconds')
    parser.add_argument('--clients', type=int, default=16,
                        help='client threads, each its own session (default 16)')
    parser.add_argument('--fault-every', type=float, default=8.0,
                        help='seconds from the end of one fault to the next (default 8)')
    parser.add_argument('--dir', default=os.path.join(HERE, 'work'),
                        help='where the project and the .tch file live (default soak/work)')
    parser.add_argument('--seed', type=int, default=1, help='for the junk victims')
    parser.add_argument('--pair', action='store_true',
                        help='sessions on a dual-master pair; faults hit its members in turn')
    options = parser.parse_args(argv)
    if options.seconds is None:
        options.seconds = 60.0 * (options.minutes if options.minutes is not None else 3.0)
    if not 0 < options.seconds <= 24 * 3600 or not 0 < options.clients <= 256:
        parser.error('--seconds/--minutes up to a day, 1 to 256 clients')
    return Soak(options).run()


if __name__ == '__main__':
    sys.exit(main())
