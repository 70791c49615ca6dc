"""Which server the fixtures start: a real ttserver when there is one.

No ttserver can be installed on this machine, so a stand-in named
``ttserver`` (a script that writes down its arguments and then runs
tcjson-tyrant with them) plays it: the launcher must find it on PATH or
through $TCJSON_TTSERVER, start it with ttserver's own command line, and
stop it.
"""
import os
import stat
import sys

import pytyrant

from pylons_tcjson_template.devtyrant.launcher import TCJSON_LUA, TyrantProcess, find_ttserver

STAND_IN = """#!/bin/sh
echo "$@" > "%(argv_file)s"
exec "%(python)s" -m pylons_tcjson_template.devtyrant.server "$@"
"""


def stand_in_ttserver(directory):
    """An executable ``ttserver`` in `directory`; returns (path, argv file)."""
    argv_file = str(directory.join('argv.txt'))
    path = str(directory.join('ttserver'))
    with open(path, 'w') as script:
        script.write(STAND_IN % {'argv_file': argv_file, 'python': sys.executable})
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path, argv_file


def test_without_ttserver_the_development_server_is_used(tmpdir, monkeypatch):
    monkeypatch.delenv('TCJSON_TTSERVER', raising=False)
    monkeypatch.setenv('PATH', str(tmpdir))                # nothing in it
    assert find_ttserver() is None
    assert TyrantProcess().kind == 'tcjson-tyrant'


def test_a_ttserver_on_path_is_preferred_and_started_with_its_own_flags(tmpdir, monkeypatch):
    bin_dir = tmpdir.mkdir('bin')
    path, argv_file = stand_in_ttserver(bin_dir)
    monkeypatch.delenv('TCJSON_TTSERVER', raising=False)
    monkeypatch.setenv('PATH', str(bin_dir) + os.pathsep + os.environ['PATH'])
    assert find_ttserver() == path

    dbpath = str(tmpdir.join('sessions.tch'))
    with TyrantProcess(dbpath) as server:
        assert server.kind == 'ttserver'
        client = pytyrant.PyTyrant.open(server.host, server.port)
        client['k'] = 'v'
        assert client['k'] == 'v'
        client.t.sock.close()
    assert open(argv_file).read().split() == [
        '-host', '127.0.0.1', '-port', str(server.port), '-ext', TCJSON_LUA, dbpath]
    assert server.process.returncode == 0             # SIGTERM: synced and exited


def test_every_server_runs_tcjson_lua_unless_told_otherwise(tmpdir, monkeypatch):
    path, argv_file = stand_in_ttserver(tmpdir)
    monkeypatch.setenv('TCJSON_TTSERVER', path)
    assert os.path.isfile(TCJSON_LUA) and TCJSON_LUA.endswith('/pylons_tcjson_template/tcjson.lua')
    assert '-ext' not in TyrantProcess('*', ext=False).command()
    other = str(tmpdir.join('other.lua'))
    assert TyrantProcess('*', ext=other).command()[-3:] == ['-ext', other, '*']
    with TyrantProcess('*') as server:
        client = pytyrant.PyTyrant.open(server.host, server.port)
        assert client.call_func('probe', '', '', record_locking=True).startswith('{"tcjson":1,')
        client.t.sock.close()
    assert open(argv_file).read().split()[-3:] == ['-ext', TCJSON_LUA, '*']


def test_tcjson_ttserver_names_one_or_forces_the_builtin(tmpdir, monkeypatch):
    path, _ = stand_in_ttserver(tmpdir)
    monkeypatch.setenv('PATH', str(tmpdir))
    monkeypatch.setenv('TCJSON_TTSERVER', 'builtin')
    assert find_ttserver() is None
    monkeypatch.setenv('TCJSON_TTSERVER', '/opt/tokyotyrant/bin/ttserver')
    assert find_ttserver() == '/opt/tokyotyrant/bin/ttserver'
    assert TyrantProcess(ttserver=False).kind == 'tcjson-tyrant'     # tests of our server


def test_replication_options_become_ttservers_flags(tmpdir, monkeypatch):
    path, argv_file = stand_in_ttserver(tmpdir)
    monkeypatch.setenv('TCJSON_TTSERVER', path)
    ulog, rts = str(tmpdir.join('ulog')), str(tmpdir.join('a.rts'))
    server = TyrantProcess('*', ulog=ulog, ulim='64m', sid=3, mhost='127.0.0.1', mport=1,
                           rts=rts, rcc=True)
    with server:
        assert os.path.isdir(ulog)                     # created: ttserver wants it to exist
    assert open(argv_file).read().split() == [
        '-host', '127.0.0.1', '-port', str(server.port), '-ulog', ulog, '-ulim', '64m',
        '-sid', '3', '-mhost', '127.0.0.1', '-mport', '1', '-rts', rts, '-rcc',
        '-ext', TCJSON_LUA, '*']


def test_a_killed_server_starts_again_on_its_port_and_files(tmpdir):
    dbpath = str(tmpdir.join('db.tch'))
    server = TyrantProcess(dbpath, ttserver=False, ulog=str(tmpdir.join('ulog')), sid=1)
    with server:
        client = pytyrant.PyTyrant.open(server.host, server.port)
        client['k'] = 'v'
        client.t.sock.close()
        first_pid = server.pid
        server.kill()                                  # kill -9: nothing synced
        assert not server.running
        server.start()
        assert server.pid != first_pid
        client = pytyrant.PyTyrant.open(server.host, server.port)
        assert client['k'] == 'v'
        client['after'] = 'restart'
        client.t.sock.close()
    assert len(os.listdir(str(tmpdir.join('ulog')))) == 1
