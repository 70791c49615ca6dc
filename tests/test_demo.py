"""tcjson-demo: generate, serve with a Tyrant server, stop on Ctrl-C, reuse.

Run with --no-install so the shared venv is never changed (the demo then
puts the project directory on its children's PYTHONPATH).
"""
import cookielib
import os
import re
import signal
import subprocess
import sys
import time
import urllib2

from pylons_tcjson_template.devtyrant.launcher import end_process, free_port
from test_template_support import wait_for_port

DEMO = os.path.join(os.path.dirname(os.path.abspath(sys.executable)),
                    'tcjson-demo')


def start_demo(directory, http_port, tyrant_port, log):
    out = open(log, 'ab')
    ports = ['--port', str(http_port), '--tyrant-port', str(tyrant_port)] if http_port else []
    process = subprocess.Popen(
        [sys.executable, DEMO, '--dir', directory, '--no-install'] + ports,
        stdout=out, stderr=subprocess.STDOUT)
    out.close()
    deadline = time.time() + 120
    while time.time() < deadline:
        if 'The demo runs at' in open(log).read():
            return process
        assert process.poll() is None, open(log).read()
        time.sleep(0.2)
    process.kill()
    raise AssertionError(open(log).read())


def stop_demo(process):
    return end_process(process, signal.SIGINT, timeout=30)    # Ctrl-C


def visits(opener, port):
    page = opener.open('http://127.0.0.1:%d/session' % port, None, 15).read()
    return int(re.search(r'id="visits"[^>]*>(\d+)<', page).group(1))


def test_demo_generates_serves_stops_and_reuses(tmpdir):
    directory = str(tmpdir.join('demo'))
    log = str(tmpdir.join('demo.log'))
    http_port, tyrant_port = free_port(), free_port()
    opener = urllib2.build_opener(urllib2.HTTPCookieProcessor(cookielib.CookieJar()))

    process = start_demo(directory, http_port, tyrant_port, log)
    try:
        assert os.path.isfile(os.path.join(directory, 'development.ini'))
        assert 'http://127.0.0.1:%d/' % http_port in open(log).read()
        assert visits(opener, http_port) == 1
        assert visits(opener, http_port) == 2
    finally:
        assert stop_demo(process) == 0, open(log).read()
    # Both servers are gone.
    assert not wait_for_port(http_port, timeout=1)
    assert not wait_for_port(tyrant_port, timeout=1)
    assert os.path.isfile(os.path.join(directory, 'data', 'tyrant',
                                       'sessions.tch'))

    # Second run, other ports: the directory is reused, the ports asked for
    # are used (and written into its INI), the sessions are still there.
    log = str(tmpdir.join('demo-again.log'))
    new_http, new_tyrant = free_port(), free_port()
    process = start_demo(directory, new_http, new_tyrant, log)
    try:
        output = open(log).read()
        assert 'Reusing %s' % directory in output
        assert 'HTTP port %d (development.ini said %d: updated)' % (new_http, http_port) in output
        assert 'Tyrant port %d (development.ini said %d: updated)' % (
            new_tyrant, tyrant_port) in output
        assert wait_for_port(new_tyrant, timeout=1)
        assert visits(opener, new_http) == 3
    finally:
        assert stop_demo(process) == 0, open(log).read()

    # Third run without ports: the INI's, now the new ones.
    log = str(tmpdir.join('demo-third.log'))
    process = start_demo(directory, None, None, log)
    try:
        assert 'updated' not in open(log).read()
        assert visits(opener, new_http) == 4
    finally:
        assert stop_demo(process) == 0, open(log).read()


def test_demo_refuses_a_foreign_directory(tmpdir):
    tmpdir.join('taken', 'file.txt').write('x', ensure=True)
    process = subprocess.Popen(
        [sys.executable, DEMO, '--dir', str(tmpdir.join('taken')), '--no-install'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.communicate()[0]
    assert process.returncode != 0
    assert 'holds no generated project' in output
