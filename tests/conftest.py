"""Fixtures shared by the whole suite: live Tokyo Tyrant servers.

Every server is a child process on its own free port with its own database,
started by `pylons_tcjson_template.devtyrant.launcher.TyrantProcess`: the
real ttserver where one is on PATH (or named by $TCJSON_TTSERVER; it must be
built with Lua), the development server tcjson-tyrant otherwise.  Each one
runs pylons_tcjson_template/tcjson.lua (``-ext``, `launcher.TCJSON_LUA`);
pass ``ext=False`` to a factory for a server without it, or ``ext=PATH``
for another script.
"""
import socket

import pytest

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess


@pytest.fixture(scope='session')
def tyrant_server():
    """One in-memory server for the whole run (use `tyrant` in tests)."""
    with TyrantProcess('*') as server:
        yield server


def vanish(server):
    """Remove every record (raw VANISH 0xC8 0x72), as ttserver 1.1.41 codes it."""
    sock = socket.create_connection((server.host, server.port), 5)
    try:
        sock.sendall(b'\xc8\x72')
        assert sock.recv(1) == b'\x00'
    finally:
        sock.close()


@pytest.fixture
def tyrant(tyrant_server):
    """A running in-memory server, emptied before the test."""
    if not tyrant_server.running:
        tyrant_server.start()
    vanish(tyrant_server)
    return tyrant_server


def _server_factory(tmpdir, **defaults):
    """Yield a function that starts servers, then stop every one of them."""
    started = []

    def start(dbname='*', **kwargs):
        dbpath = dbname if dbname == '*' else str(tmpdir.join(dbname))
        for name, value in defaults.items():
            kwargs.setdefault(name, value)
        server = TyrantProcess(dbpath, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def tyrant_factory(tmpdir):
    """Start private servers: ``tyrant_factory()`` in memory,
    ``tyrant_factory('name.tch')`` on a Tokyo Cabinet file in tmpdir.
    Each one is stopped after the test."""
    for start in _server_factory(tmpdir):
        yield start


@pytest.fixture
def devtyrant_factory(tmpdir):
    """Like `tyrant_factory`, but always tcjson-tyrant, never ttserver: for
    the tests of the development server itself."""
    for start in _server_factory(tmpdir, ttserver=False):
        yield start
