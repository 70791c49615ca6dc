"""A generated project, installed privately: its own nosetests, its paster
commands, and `paster serve` driven over real HTTP with a cookie jar."""
import cookielib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib
import urllib2

import pytest
import pytyrant

from pylons_tcjson_template.devtyrant.launcher import end_process, free_port
from test_template_support import (CSRF_FIELD, NOSETESTS, PASTER, Served, develop_install,
                                   form_token, generate, page_value, run, wait_for_port)


@pytest.fixture(scope='module')
def project(tmpdir_factory):
    """(directory, env, http port, tyrant port) of a generated project."""
    base = tmpdir_factory.mktemp('project')
    http_port, tyrant_port = free_port(), free_port()
    directory = generate(base, 'LiveApp', 'tyrant_url=127.0.0.1:%d' % tyrant_port,
                         'http_port=%d' % http_port, 'session_timeout=900')
    env = develop_install(directory, base)
    return directory, env, http_port, tyrant_port


class PasterTyrant(object):
    """`paster tyrant development.ini` of the project (its own command)."""

    def __init__(self, directory, env, port, log):
        self.directory, self.env, self.port, self.log = directory, env, port, log
        self.process = None

    def start(self):
        out = open(self.log, 'ab')
        self.process = subprocess.Popen(
            [sys.executable, PASTER, 'tyrant', 'development.ini'],
            cwd=self.directory, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        assert wait_for_port(self.port, self.process, 30), open(self.log).read()
        return self

    def stop(self, signum=signal.SIGINT):
        """Ctrl-C (SIGINT) by default, as a developer stops it."""
        return end_process(self.process, signum, timeout=15)




class Browser(object):
    """urllib2 with a cookie jar; answers 4xx/5xx instead of raising.

    Like a browser submitting a form of the page it shows, post() sends
    the CSRF token of the last page loaded."""

    def __init__(self, base):
        self.base = base
        self.jar = cookielib.CookieJar()
        self.opener = urllib2.build_opener(urllib2.HTTPCookieProcessor(self.jar))
        self.page = ''

    def request(self, path, data=None, headers=None):
        body = urllib.urlencode(data) if data is not None else None
        request = urllib2.Request(self.base + path, body, headers or {})
        try:
            response = self.opener.open(request, timeout=15)
        except urllib2.HTTPError as error:
            response = error
        self.page = response.read()
        return response.getcode(), self.page, response.info()

    def get(self, path):
        return self.request(path)

    def post(self, path, **data):
        token = form_token(self.page)
        if token:
            data.setdefault(CSRF_FIELD, token)
        return self.request(path, data)




def visits(page):
    return int(page_value(page, 'visits'))


def test_generated_project_tests_pass(project):
    directory, env, _, _ = project
    code, output = run([NOSETESTS], directory, env, timeout=280)
    assert code == 0, output
    assert re.search(r'Ran \d+ tests', output), output
    assert '\nOK' in output, output


def test_served_over_http_sessions_survive_restarts(project, tmpdir):
    directory, env, http_port, tyrant_port = project
    log = str(tmpdir.join('servers.log'))
    tyrant = PasterTyrant(directory, env, tyrant_port, log).start()
    served = Served(directory, env, port=http_port, log=log)
    try:
        served.start()
        browser = Browser(served.url)

        code, page, headers = browser.get('/')
        assert code == 200 and 'href="/session"' in page
        # Development shows where the sessions go; the command that starts
        # Tyrant only while it is down (review finding 13).
        assert '127.0.0.1:%d' % tyrant_port in page and 'liveapp:session:' in page
        assert 'paster tyrant development.ini' not in page

        code, page, headers = browser.get('/session')
        assert code == 200, page
        assert visits(page) == 1
        cookie = headers.getheader('Set-Cookie')
        assert cookie.startswith('liveapp=') and 'httponly' in cookie.lower()
        assert 'samesite=lax' in cookie.lower()          # the README's CSRF defence
        assert visits(browser.get('/session')[1]) == 2

        # Store a number and a string (POST, then the redirect is followed).
        code, page, _ = browser.post('/session/set', key='n', value='7', kind='json')
        assert code == 200 and 'a JSON number' in page
        code, page, _ = browser.post('/session/set', key='s', value='x y', kind='string')
        key = page_value(page, 'record-key')
        assert key.startswith('liveapp:session:') and key.endswith(':session')
        record = json.loads(page_value(page, 'raw'))
        assert record['n'] == 7 and record['s'] == 'x y'
        assert record['_expires'] > time.time() + 800      # session_timeout=900
        count = visits(page)

        # Restart the application: the session lives in Tyrant.
        served.stop()
        served.start()
        count += 1
        assert visits(browser.get('/session')[1]) == count

        # Restart Tyrant itself (Ctrl-C): the .tch file keeps the records.
        assert tyrant.stop() == 0
        assert os.path.isfile(os.path.join(directory, 'data', 'tyrant',
                                           'sessions.tch'))
        tyrant.start()
        count += 1
        code, page, _ = browser.get('/session')
        assert visits(page) == count
        assert json.loads(page_value(page, 'raw'))['n'] == 7

        # The record as any Tyrant client sees it.
        client = pytyrant.PyTyrant.open('127.0.0.1', tyrant_port)
        assert json.loads(client[key])['visits'] == count

        # The purge command finds nothing expired yet.
        code, output = run([sys.executable, PASTER, 'tcjson-purge',
                            'development.ini'], directory, env)
        assert code == 0 and 'Deleted 0 of 1 records' in output, output

        # A sign-in forged by another site: no token of this session, no
        # cookie (SameSite), an Origin elsewhere.  403, and no Set-Cookie
        # that would swap the browser's session for the attacker's.
        attacker = Browser(served.url)
        attacker.get('/session')
        stolen_token = form_token(attacker.page)
        assert stolen_token
        forged = Browser(served.url)
        code, page, headers = forged.request(
            '/session/login', {'name': 'mallory', CSRF_FIELD: stolen_token},
            {'Origin': 'http://attacker.example'})
        assert code == 403 and headers.getheader('Set-Cookie') is None, page
        code, page, headers = forged.request(
            '/session/login', {'name': 'mallory', CSRF_FIELD: stolen_token})
        assert code == 403 and headers.getheader('Set-Cookie') is None, page
        count += 1
        code, page, _ = browser.get('/session')
        assert visits(page) == count and page_value(page, 'user') is None

        # Logout deletes the record.
        code, page, _ = browser.post('/session/logout')
        assert code == 200 and 'Logged out' in page
        assert client.get(key) is None
        assert visits(page) == 1

        # Tyrant down: 503 with instructions, front page still fine.
        tyrant.stop(signal.SIGTERM)
        code, page, headers = browser.get('/session')
        assert code == 503, page
        assert 'paster tyrant development.ini' in page
        assert headers.getheader('Retry-After')
        code, page, _ = browser.get('/')
        assert code == 200 and 'paster tyrant development.ini' in page
    finally:
        served.stop()
        tyrant.stop()
