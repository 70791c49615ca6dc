"""GET /_health of a generated project, served over HTTP, its sessions on a
dual-master pair of live Tyrant servers: 200 while both answer, 503 and
which one when a member is down, no session touched, one probe at a time."""
import httplib
import os
import socket
import threading
import time

import pytest

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, free_port
from test_template_support import Served, generate, project_env, set_ini_value

IO_TIMEOUT = 1.5


@pytest.fixture(scope='module')
def site(tmpdir_factory):
    base = tmpdir_factory.mktemp('health')
    pair = [TyrantProcess('*'), TyrantProcess('*')]
    for server in pair:
        server.start()
    pair.sort(key=lambda server: server.url)   # the url's members are read sorted
    try:
        port = free_port()
        url = '|'.join(server.url for server in pair)
        project = generate(base, 'HealthApp', 'tyrant_url=%s' % url, 'http_port=%d' % port)
        ini = os.path.join(project, 'development.ini')
        set_ini_value(ini, 'app:main', 'beaker.session.io_timeout', str(IO_TIMEOUT))
        set_ini_value(ini, 'app:main', 'beaker.session.connect_timeout', str(IO_TIMEOUT))
        with Served(project, project_env(project), port=port,
                    log=str(base.join('serve.log'))) as served:
            yield served, pair
    finally:
        for server in pair:
            server.stop()


def health(port, host='127.0.0.1', method='GET'):
    connection = httplib.HTTPConnection('127.0.0.1', port, timeout=30)
    try:
        connection.putrequest(method, '/_health', skip_host=True)
        if host:
            connection.putheader('Host', '%s:%d' % (host, port))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def stat(server):
    """The server's counters (Tyrant's stat command, raw 0xC8 0x88)."""
    sock = socket.create_connection((server.host, server.port), 5)
    try:
        sock.sendall(b'\xc8\x88')
        data = b''
        while len(data) < 5 or len(data) < 5 + int(data[1:5].encode('hex'), 16):
            data += sock.recv(65536)
        text = data[5:]
    finally:
        sock.close()
    return dict(line.split('\t', 1) for line in text.splitlines() if '\t' in line)


def writes(server):
    counters = stat(server)
    return sum(int(counters.get(name, 0)) for name in ('cnt_put', 'cnt_out', 'cnt_misc'))


def test_ok_while_every_server_answers_and_nothing_is_written(site):
    served, pair = site
    before = [writes(server) for server in pair]
    for _ in range(30):
        status, body, headers = health(served.port)
        assert status == 200, body
        assert body == 'ok\nup %s\nup %s\n' % (pair[0].url, pair[1].url)
        assert 'set-cookie' not in headers and headers['cache-control'] == 'no-store'
    assert health(served.port, method='HEAD')[:2] == (200, '')
    assert [writes(server) for server in pair] == before       # never a session write


def test_503_names_the_member_that_is_down(site):
    served, pair = site
    pair[1].stop()
    try:
        deadline = time.time() + 5
        while time.time() < deadline:          # the last result is kept 1 s
            status, body, _ = health(served.port)
            if status == 503:
                break
            time.sleep(0.2)
        assert status == 503, body
        assert body == 'down\nup %s\ndown %s\n' % (pair[0].url, pair[1].url)
    finally:
        pair[1].start()
    wait_until_ok(served.port)


def test_a_hanging_server_holds_one_probe_not_every_request(site):
    """Requests that arrive while a probe waits for a stopped (SIGSTOP)
    server get the last result at once; one request waits, for at most the
    configured timeouts."""
    served, pair = site
    assert health(served.port)[0] == 200
    time.sleep(1.1)                               # the kept result has expired
    pair[1].pause()
    try:
        results = []

        def ask():
            started = time.time()
            status = health(served.port)[0]
            results.append((time.time() - started, status))
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join(30)
    finally:
        pair[1].resume()
    slow = [seconds for seconds, status in results if seconds > 1.0]
    assert len(results) == 8 and len(slow) == 1, results
    assert slow[0] < 2 * IO_TIMEOUT + 1, results
    assert [status for seconds, status in results if seconds <= 1.0] == [200] * 7, results
    wait_until_ok(served.port)


def wait_until_ok(port):
    deadline = time.time() + 10
    while health(port)[0] != 200 and time.time() < deadline:
        time.sleep(0.2)
    assert health(port)[0] == 200


def test_under_the_allowed_host_names_only(site):
    served, _ = site
    assert health(served.port, host='10.9.8.7')[0] == 400          # not in allowed_hosts
    assert health(served.port, host=None)[0] == 200                 # HTTP/1.0 style, no Host
