"""What ``paster tyrant CONFIG`` of a generated project does.

The project's own ``TyrantCommand`` (its commands.py) reads the INI file
and calls `serve`: the Tyrant servers of ``beaker.session.url`` start here
as child processes, ttserver where installed, tcjson-tyrant otherwise, each
with the project's ``lib/tcjson.lua`` (ttserver's -ext).  This code lives
in the template package, the project's ``dev`` extra, because only
development needs it: a deployed project runs ttserver under systemd (its
deploy/ directory) and never imports it.
"""
from __future__ import absolute_import, print_function

import os
import signal
import socket
import sys
import time

from paste.script.command import BadCommand

from .launcher import ServerFailed, TyrantProcess


def _listening(host, port):
    try:
        socket.create_connection((host, port), 0.5).close()
        return True
    except socket.error:
        return False


def _on_this_host(host):
    """Whether `host` names an address of this machine (one can bind it)."""
    try:
        address = socket.gethostbyname(host)
    except socket.error:
        return False
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind((address, 0))
        return True
    except socket.error:
        return False
    finally:
        probe.close()


def plan_servers(shards, data_dir, dbpath=None):
    """The servers to start for `shards`, as TyrantProcess keyword
    arguments: one server keeps its records in data_dir/sessions.tch (or
    `dbpath`); with several, each gets data_dir/HOST-PORT/ with its own
    sessions.tch, and the members of a pair also their update log (ulog/)
    and replication.rts, a server id (1, 2, ... in url order) and each
    other as master, like the production pair of the project's README."""
    servers = [address for shard in shards for address in shard]
    if len(servers) == 1:
        host, _, port = servers[0].rpartition(':')
        return [dict(dbpath=dbpath or os.path.join(data_dir, 'sessions.tch'),
                     host=host, port=int(port))]
    if dbpath:
        raise BadCommand('--db names the database of a single server; the url '
                         'names %d' % len(servers))
    plans = []
    for shard in shards:
        for index, address in enumerate(shard):
            host, _, port = address.rpartition(':')
            home = os.path.join(data_dir, '%s-%s' % (host, port))
            plan = dict(dbpath=os.path.join(home, 'sessions.tch'), host=host, port=int(port))
            if len(shard) == 2:
                master_host, _, master_port = shard[1 - index].rpartition(':')
                plan.update(ulog=os.path.join(home, 'ulog'), sid=servers.index(address) + 1,
                            mhost=master_host, mport=int(master_port),
                            rts=os.path.join(home, 'replication.rts'))
            plans.append(plan)
    return plans


def serve(shards, data_dir, ext, dbpath=None, out=sys.stdout):
    """Start every server of `shards` (parsed beaker.session.url), each
    with the Lua script `ext`, and supervise them until Ctrl-C, SIGTERM or
    until none runs; returns the command's exit status.  BadCommand says
    what is wrong when a server cannot start."""
    plans = plan_servers(shards, data_dir, dbpath)
    for plan in plans:
        if len(plans) > 1 and not _on_this_host(plan['host']):
            raise BadCommand('%s:%d is not an address of this host: `paster tyrant` '
                             'starts servers here only' % (plan['host'], plan['port']))
        if _listening(plan['host'], plan['port']):
            raise BadCommand('Something already listens on %s:%d -- a Tyrant '
                             'server started earlier?' % (plan['host'], plan['port']))
        if plan['dbpath'] != '*':
            dbdir = os.path.dirname(os.path.abspath(plan['dbpath']))
            if not os.path.isdir(dbdir):
                os.makedirs(dbdir)
    servers = [TyrantProcess(log=out, ext=ext, **plan) for plan in plans]
    try:
        for server in servers:
            server.start()
            print('%s (pid %d) serving %s on %s'
                  % (server.kind, server.pid, server.dbpath, server.url), file=out)
            if len(servers) > 1:
                print('  started as: %s' % ' '.join(server.command()), file=out)
    except ServerFailed as exc:
        for server in servers:
            server.stop()
        raise BadCommand(str(exc))
    print('Ctrl-C stops %s' % ('it' if len(servers) == 1 else 'them all'), file=out)
    out.flush()
    return supervise(servers, out)


def supervise(servers, out=sys.stdout):
    """Wait until Ctrl-C (or SIGTERM), or until no server runs; a server
    that exits meanwhile is reported (then left down)."""
    # Ctrl-C (SIGINT, even when a parent shell ignored it) and SIGTERM
    # (kill, a process manager) both stop the servers cleanly.
    def terminate(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGINT, terminate)
    signal.signal(signal.SIGTERM, terminate)
    reported = set()
    try:
        while True:
            for server in servers:
                if not server.running and server.url not in reported:
                    reported.add(server.url)
                    print('%s on %s exited with status %s'
                          % (server.kind, server.url, server.process.returncode), file=out)
                    out.flush()
            if len(reported) == len(servers):
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print('Stopping ...', file=out)
    finally:
        for server in servers:
            server.stop()
    return 0
