"""When the server dies, hangs or restarts; the connection pool under load."""
import os
import threading
import time

import pytest
from beaker.middleware import SessionMiddleware
from webtest import TestApp as WebApp

from pylons_tcjson_template import tcjson, tyrant
from pylons_tcjson_template.devtyrant.launcher import free_port


def manager(server, **options):
    return tcjson.TyrantNamespaceManager('ns', url=server.url, **options)


def in_thread(func):
    """Run func in a thread; return (thread, outcome dict)."""
    outcome = {}

    def run():
        started = time.time()
        try:
            outcome['value'] = func()
        except Exception as exc:
            outcome['error'] = exc
        outcome['seconds'] = time.time() - started
    thread = threading.Thread(target=run)
    thread.daemon = True
    thread.start()
    return thread, outcome


def established_connections(port):
    """This process's established TCP connections to `port` (/proc)."""
    inodes = set()
    for fd in os.listdir('/proc/self/fd'):
        try:
            target = os.readlink('/proc/self/fd/' + fd)
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[8:-1])
    count = 0
    with open('/proc/net/tcp') as table:
        for line in list(table)[1:]:
            fields = line.split()
            if int(fields[2].split(':')[1], 16) == port and fields[3] == '01' \
                    and fields[9] in inodes:
                count += 1
    return count


def test_no_server_gives_tyrant_unavailable_naming_url_and_cause_once():
    url = '127.0.0.1:%d' % free_port()
    nsm = tcjson.TyrantNamespaceManager('ns', url=url)
    with pytest.raises(tcjson.TyrantUnavailable) as info:
        nsm['k']
    message = str(info.value)
    assert message.startswith('Tokyo Tyrant at %s: cannot connect' % url)
    assert message.count('Tokyo Tyrant') == 1      # said once, not repeated
    # How to start a server is the development 503 page's business, not a
    # production log's (lib/session_errors.py).
    assert 'paster tyrant' not in message
    assert isinstance(info.value, tcjson.TcjsonError)


def test_server_killed_mid_request_fails_fast_without_a_spinning_thread(tyrant_factory):
    server = tyrant_factory()
    nsm = manager(server, io_timeout=5)
    nsm['k'] = 'before'
    server.pause()                                 # the request below hangs...
    thread, outcome = in_thread(lambda: nsm['k'])
    time.sleep(0.3)
    assert thread.is_alive()                       # ...blocked in recv
    server.kill()                                  # ...until the server dies
    thread.join(3)
    assert not thread.is_alive()                   # finished: no spinning loop
    assert isinstance(outcome['error'], tcjson.TyrantUnavailable)
    assert outcome['seconds'] < 5                  # EOF, not the io_timeout
    assert nsm.pool.open_count == 0                # the dead socket was dropped
    server.start()                                 # same port, empty database
    nsm['k'] = 'after'
    assert nsm['k'] == 'after'


def test_a_stopped_server_costs_one_io_timeout_then_requests_fail_at_once(tyrant_factory):
    """After a timeout a single server is skipped (fail fast) while a
    watcher thread probes it; it is used again once it answers."""
    server = tyrant_factory()
    nsm = manager(server, io_timeout=0.5)
    nsm['k'] = 1
    server.pause()
    try:
        thread, outcome = in_thread(lambda: nsm['k'])
        thread.join(3)
        assert not thread.is_alive()
        assert isinstance(outcome['error'], tcjson.TyrantUnavailable)
        assert 'io_timeout=0.5' in str(outcome['error'])
        assert 0.4 < outcome['seconds'] < 1.5
        for _ in range(20):                        # the next ones do not wait
            thread, outcome = in_thread(lambda: nsm['k'])
            thread.join(3)
            assert isinstance(outcome['error'], tcjson.TyrantUnavailable)
            assert outcome['seconds'] < 0.05 and 'skipped since' in str(outcome['error'])
    finally:
        server.resume()
    deadline = time.time() + 3 * tyrant.PROBE_INTERVAL + 1
    while time.time() < deadline:
        try:
            assert nsm['k'] == 1                   # and it recovers
            break
        except tcjson.TyrantUnavailable:
            time.sleep(0.05)
    assert nsm['k'] == 1


def test_a_restarted_server_is_used_again_transparently(tyrant_factory):
    server = tyrant_factory('sessions.tch')
    nsm = manager(server)
    nsm['k'] = 'kept on disk'
    assert nsm.pool.open_count == 1               # one idle pooled connection
    server.restart()                              # that connection is now dead
    assert nsm['k'] == 'kept on disk'             # no error reaches the caller
    assert nsm.pool.open_count == 1


def test_the_retry_resends_once_on_a_broken_idle_connection(tyrant_factory, monkeypatch):
    server = tyrant_factory()
    nsm = manager(server)
    nsm['k'] = 'v'
    conn = nsm.pool._idle[0]
    monkeypatch.setattr(conn, 'idle_ok', lambda: True)   # the check missed it
    server.restart()
    with pytest.raises(KeyError):                 # resent: the restarted db is empty
        nsm['k']
    assert nsm.pool.open_count == 1


def test_a_thousand_requests_from_threads_stay_within_the_pool(tyrant_factory):
    server = tyrant_factory()
    tcjson.register()
    pool = tcjson.get_pool(server.url, pool_size=4)
    busiest = [0]
    request = pool.request

    def counting(*args):
        busiest[0] = max(busiest[0], pool.open_count)
        return request(*args)
    pool.request = counting

    def app(environ, start_response):
        environ['beaker.session']['n'] = environ['beaker.session'].get('n', 0) + 1
        environ['beaker.session'].save()
        start_response('200 OK', [])
        return [str(environ['beaker.session']['n'])]
    wsgi = SessionMiddleware(app, {'session.type': 'ext:tcjson', 'session.url': server.url},
                             session_class=tcjson.TyrantSession)
    peak_sockets = [0]

    def client():
        browser = WebApp(wsgi)
        for i in range(125):
            assert browser.get('/').body == str(i + 1)
            if i % 25 == 0:
                peak_sockets[0] = max(peak_sockets[0], established_connections(server.port))
    threads = [in_thread(client) for _ in range(8)]
    for thread, outcome in threads:
        thread.join(60)
        assert 'error' not in outcome
    assert busiest[0] <= 4 and peak_sockets[0] <= 4
    assert established_connections(server.port) == pool.open_count <= 4


def test_a_forked_child_opens_its_own_connections(tyrant_factory):
    server = tyrant_factory()
    nsm = manager(server)
    nsm['k'] = 'parent'
    parent_socket = nsm.pool._idle[0]
    pid = os.fork()
    if pid == 0:                                  # child: never share the parent's socket
        try:
            ok = nsm['k'] == 'parent' and parent_socket not in nsm.pool._idle
            nsm['k'] = 'child'
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0
    assert nsm.pool._idle == [parent_socket]
    assert nsm['k'] == 'child'                    # the parent's socket still works
