"""The generated project's examples/: a Python 3 and a Node.js program that
share the Beaker session with the served Pylons application.

One project is generated, installed privately and served for the whole
file, against a live Tyrant server.  Each test starts its own browser
session over HTTP and hands the cookie to the examples, so the tests do
not depend on each other.
"""
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from distutils.spawn import find_executable
from HTMLParser import HTMLParser

import pytest
import pytyrant

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, free_port
from test_template_project import Browser
from test_template_support import (Served, develop_install, generate, page_value,
                                   set_ini_value)

PYTHON3 = find_executable('python3')
NODE = find_executable('node')
EXAMPLES = {
    'python': ([PYTHON3, 'examples/session_tool.py'], PYTHON3,
               'python3 is not on PATH'),
    'node': ([NODE, 'examples/session-tool.mjs'], NODE,
             "node is not on PATH (setup.sh installs Debian's nodejs)"),
}
# The exit statuses both examples document.
EXIT_USAGE, EXIT_COOKIE, EXIT_NO_SESSION, EXIT_UNREADABLE, EXIT_BUSY, EXIT_TYRANT = 2, 3, 4, 5, 6, 7

each_example = pytest.mark.parametrize('example', [
    pytest.param(name, marks=pytest.mark.skipif(found is None, reason=reason))
    for name, (_, found, reason) in sorted(EXAMPLES.items())])


class App(object):
    """The served project: its directory, settings, servers and Tyrant."""

    def __init__(self, directory, served, tyrant):
        self.directory, self.served, self.tyrant = directory, served, tyrant
        ini = open(os.path.join(directory, 'development.ini')).read()
        setting = lambda name: re.search(r'^beaker\.session\.%s = (.*)$' % name,
                                         ini, re.M).group(1).strip()
        self.cookie_name, self.secret = setting('key'), setting('secret')
        self.prefix = setting('prefix')

    def client(self):
        return pytyrant.PyTyrant.open(self.tyrant.host, self.tyrant.port)

    def record_key(self, session_id):
        return '%s%s:session' % (self.prefix, session_id)

    def lock_key(self, session_id):
        return '%slock:%s:session' % (self.prefix, session_id)

    def signed(self, session_id, secret=None):
        """A cookie value as Beaker signs it."""
        key = (secret or self.secret).encode('utf-8')
        return hmac.new(key, session_id, hashlib.sha1).hexdigest() + session_id


@pytest.fixture(scope='module')
def app(tmpdir_factory):
    base = tmpdir_factory.mktemp('examples')
    tyrant = TyrantProcess('*').start()
    served = None
    try:
        http_port = free_port()
        directory = generate(base, 'SharedApp', 'tyrant_url=%s' % tyrant.url,
                             'http_port=%d' % http_port, 'session_timeout=900')
        # A copy of the settings with short waits, for the tests that wait.
        fast_ini = os.path.join(directory, 'fast.ini')
        shutil.copy(os.path.join(directory, 'development.ini'), fast_ini)
        set_ini_value(fast_ini, 'app:main', 'beaker.session.io_timeout', '0.5')
        set_ini_value(fast_ini, 'app:main', 'beaker.session.max_session_size', '4096')
        served = Served(directory, develop_install(directory, base), port=http_port,
                        log=str(base.join('serve.log'))).start()
        yield App(directory, served, tyrant)
    finally:
        if served is not None:
            served.stop()
        tyrant.stop()


def run_example(app, example, cookie, *command, **options):
    """Run an example in the project directory: (exit status, stdout, stderr)."""
    ini = options.get('ini', 'development.ini')
    env = dict((k, v) for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME'))
    process = subprocess.Popen(EXAMPLES[example][0] + [ini, cookie] + list(command),
                               cwd=app.directory, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    guard = threading.Timer(30, process.kill)        # a hang fails, never blocks
    guard.start()
    try:
        out, err = process.communicate()
    finally:
        guard.cancel()
    return process.returncode, out.decode('utf-8'), err.decode('utf-8')


class FormFields(HTMLParser):
    """The action and the named fields (hidden tokens too) of the first
    form whose attribute `name` is `wanted`."""

    def __init__(self, page, name, wanted):
        HTMLParser.__init__(self)
        self.wanted, self.inside, self.action, self.fields = (name, wanted), False, None, {}
        self.feed(page.decode('utf-8'))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'form':
            name, wanted = self.wanted
            self.inside = self.action is None and attrs.get(name) == wanted
            if self.inside:
                self.action = attrs.get('action')
        elif self.inside and tag in ('input', 'select', 'textarea') and attrs.get('name'):
            self.fields.setdefault(attrs['name'], attrs.get('value') or '')

    def handle_endtag(self, tag):
        if tag == 'form':
            self.inside = False


def new_session(app):
    """(browser, session id, signed cookie value) of a fresh session that
    the application has saved once (visits = 1)."""
    browser = Browser(app.served.url)
    code, page, _ = browser.get('/session')
    assert code == 200, page
    cookie = [c.value for c in browser.jar if c.name == app.cookie_name][0]
    return browser, cookie[40:], cookie


def submit(browser, name, wanted, **fields):
    """Fill in and submit a form of the session page; the page after it."""
    form = FormFields(browser.get('/session')[1], name, wanted)
    assert form.action, 'the session page has no form with %s="%s"' % (name, wanted)
    form.fields.update(fields)
    code, page, _ = browser.post(form.action, **form.fields)
    assert code == 200, page
    return page


def store_through_the_page(browser, key, text):
    """The sample's "store a value" form, the value given as JSON."""
    return submit(browser, 'id', 'set-form', key=key, value=text, kind='json')


def record_shown(page):
    """The record as the session page shows it (the state before the request)."""
    return json.loads(page_value(page, 'raw'))


@each_example
def test_example_reads_what_the_app_wrote(app, example):
    browser, session_id, cookie = new_session(app)
    page = store_through_the_page(browser, 'colour', '"blue"')
    header = 'other=1; %s=%s' % (app.cookie_name, cookie)       # as a browser sends it
    code, out, err = run_example(app, example, header, 'get')
    assert code == 0, err
    record = json.loads(out)
    assert record['colour'] == 'blue' and record['visits'] == int(page_value(page, 'visits'))
    assert record['_expires'] > time.time() + 800                # session_timeout=900
    # The app changes the session again: the example sees the change.
    store_through_the_page(browser, 'colour', '"green"')
    code, out, err = run_example(app, example, cookie, 'get')
    assert code == 0 and json.loads(out)['colour'] == 'green', err


@each_example
def test_value_set_by_example_shows_on_the_page(app, example):
    browser, session_id, cookie = new_session(app)
    store_through_the_page(browser, 'kept', '[1, 2]')
    key = 'from_%s' % example
    code, out, err = run_example(app, example, cookie, 'set', key,
                                 '{"lang": "%s", "n": 7, "ok": true}' % example)
    assert code == 0, err
    assert key in out
    code, page, _ = browser.get('/session')
    assert code == 200
    assert '<code>%s</code>' % key in page                       # the values table
    record = record_shown(page)
    assert record[key] == {'lang': example, 'n': 7, 'ok': True}
    assert record['kept'] == [1, 2]                              # nothing else lost
    assert record['visits'] == int(page_value(page, 'visits')) - 1   # the raw record is one behind
    # The app saved the session after loading it: the value stays.
    assert record_shown(browser.get('/session')[1])[key]['lang'] == example
    assert app.client().get(app.lock_key(session_id)) is None    # lock released


def test_app_and_examples_change_one_session_at_once_and_lose_nothing(app):
    """The browser keeps counting visits while the examples set keys: both
    sides write under the session's lock, so no change of either is lost."""
    examples = [name for name, (_, found, _) in sorted(EXAMPLES.items()) if found]
    if not examples:
        pytest.skip('neither python3 nor node is on PATH')
    browser, session_id, cookie = new_session(app)
    failures, writes = [], 6

    def writer(example):
        for n in range(writes):
            code, _, err = run_example(app, example, cookie, 'set', '%s_%d' % (example, n), str(n))
            if code != 0:
                failures.append((example, code, err))

    threads = [threading.Thread(target=writer, args=(example,)) for example in examples]
    for thread in threads:
        thread.start()
    views = 1                                         # new_session's
    while any(thread.is_alive() for thread in threads) or views < 5:
        assert browser.get('/session')[0] == 200
        views += 1
    for thread in threads:
        thread.join()
    assert not failures
    record = record_shown(browser.get('/session')[1])
    assert record['visits'] == views
    for example in examples:
        assert [record.get('%s_%d' % (example, n)) for n in range(writes)] == list(range(writes))


@each_example
def test_forged_or_malformed_cookie_is_refused(app, example):
    browser, session_id, cookie = new_session(app)
    record_before = app.client()[app.record_key(session_id)]
    wrong_digit = ('0' if cookie[0] != '0' else '1') + cookie[1:]
    other_secret = app.signed(session_id, secret='not-' + app.secret)
    for forged in (wrong_digit, other_secret, '"%s"' % wrong_digit):
        for command in (['get'], ['set', 'admin', 'true']):
            code, out, err = run_example(app, example, forged, *command)
            assert code == EXIT_COOKIE and 'forged' in err and out == '', (command, err)
    for malformed in (cookie[:-1], cookie.upper(), '%s=' % app.cookie_name, 'x' * 72):
        code, _, err = run_example(app, example, malformed, 'get')
        assert code == EXIT_COOKIE and len(err.strip().splitlines()) == 1, err
    code, _, err = run_example(app, example, 'other=1', 'get')
    assert code == EXIT_COOKIE and app.cookie_name in err
    assert app.client()[app.record_key(session_id)] == record_before


@each_example
def test_logged_out_session_is_not_written(app, example):
    browser, session_id, cookie = new_session(app)
    assert 'Logged out' in submit(browser, 'action', '/session/logout')
    client = app.client()
    assert client.get(app.record_key(session_id)) is None
    for command in (['get'], ['set', 'after', '1']):
        code, out, err = run_example(app, example, cookie, *command)
        assert code == EXIT_NO_SESSION and 'logged out' in err, err
    assert client.get(app.record_key(session_id)) is None        # not resurrected
    assert client.get(app.lock_key(session_id)) is None


@each_example
def test_expired_or_encrypted_record_is_refused(app, example):
    browser, session_id, cookie = new_session(app)
    client, key = app.client(), app.record_key(session_id)
    record = json.loads(client[key])
    client[key] = json.dumps(dict(record, _expires=time.time() - 1))
    code, _, err = run_example(app, example, cookie, 'set', 'late', '1')
    assert code == EXIT_NO_SESSION and 'expired' in err, err
    client[key] = json.dumps(dict(record, _accessed_time=time.time() - 1000))   # > 900 idle
    code, _, err = run_example(app, example, cookie, 'get')
    assert code == EXIT_NO_SESSION and 'expired' in err, err
    client[key] = json.dumps({'tcjson': 'beaker-opaque', 'data': 'c2VjcmV0',
                              '_expires': time.time() + 60})
    for command in (['get'], ['set', 'k', '1']):
        code, _, err = run_example(app, example, cookie, *command)
        assert code == EXIT_UNREADABLE and 'encrypted' in err, err
    assert json.loads(client[key])['data'] == 'c2VjcmV0'
    assert client.get(app.lock_key(session_id)) is None


@each_example
def test_waits_for_a_held_lock_and_takes_over_a_dead_one(app, example):
    browser, session_id, cookie = new_session(app)
    client, lock_key = app.client(), app.lock_key(session_id)
    held = json.dumps({'tcjson': 'lock', 'owner': 'elsewhere/1/x', '_expires': time.time() + 60})
    client[lock_key] = held
    started = time.time()
    code, _, err = run_example(app, example, cookie, 'set', 'busy', '1', ini='fast.ini')
    assert code == EXIT_BUSY and 'busy' in err, err
    assert 0.4 < time.time() - started < 5            # gave up after io_timeout=0.5
    assert client[lock_key] == held                   # someone else's: left alone
    assert 'busy' not in json.loads(client[app.record_key(session_id)])
    # Its holder died (the lock expired), or it is no lock at all: taken
    # over, used and released, as the application does.
    dead = json.dumps({'tcjson': 'lock', 'owner': 'crashed/1/x', '_expires': time.time() - 1})
    for number, lock in enumerate([dead, 'junk', '{"_expires": "soon"}'], 2):
        client[lock_key] = lock
        code, _, err = run_example(app, example, cookie, 'set', 'busy', str(number),
                                   ini='fast.ini')
        assert code == 0, err
        assert client.get(lock_key) is None
    assert record_shown(browser.get('/session')[1])['busy'] == 4


@each_example
def test_refuses_to_make_a_record_the_app_cannot_load(app, example):
    browser, session_id, cookie = new_session(app)
    client = app.client()
    record_before = client[app.record_key(session_id)]
    code, _, err = run_example(app, example, cookie, 'set', 'big', json.dumps('x' * 4096),
                               ini='fast.ini')                     # max_session_size=4096
    assert code == EXIT_USAGE and 'max_session_size' in err, err
    assert client[app.record_key(session_id)] == record_before
    assert client.get(app.lock_key(session_id)) is None
    code, _, err = run_example(app, example, cookie, 'set', 'small', json.dumps('x' * 100),
                               ini='fast.ini')
    assert code == 0, err


def test_readme_and_examples_document_the_protocol_and_exit_statuses(app):
    def text(*path):
        return ' '.join(open(os.path.join(app.directory, *path)).read().split())
    section = text('README.txt').split('Sharing the session with other programs', 1)[1]
    for fact in ('examples/session_tool.py', 'examples/session-tool.mjs', 'HMAC-SHA1',
                 '_expires', '_accessed_time', 'putkeep', 'beaker-opaque', 'lock:'):
        assert fact in section, fact
    statuses = ['%d %s' % pair for pair in [
        (EXIT_USAGE, 'bad usage'), (EXIT_COOKIE, 'cookie refused'),
        (EXIT_NO_SESSION, 'no live session'), (EXIT_UNREADABLE, 'record not readable'),
        (EXIT_BUSY, 'session busy'), (EXIT_TYRANT, 'Tokyo Tyrant unavailable')]]
    for document in (section, text('examples', 'session_tool.py'),
                     text('examples', 'session-tool.mjs').replace(' // ', ' ')):
        assert [status for status in statuses if status not in document] == []


class HangUp(threading.Thread):
    """A server that accepts every connection and closes it at once."""

    def __init__(self, host, port):
        threading.Thread.__init__(self)
        self.daemon = True
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(8)

    def run(self):
        while True:
            try:
                self.listener.accept()[0].close()
            except socket.error:          # closed by stop()
                return

    def stop(self):
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.join(5)


@each_example
def test_tyrant_hung_closing_or_down_fails_cleanly(app, example):
    browser, session_id, cookie = new_session(app)
    tyrant = app.tyrant

    def fails_cleanly(reasons, command=('get',)):
        code, out, err = run_example(app, example, cookie, *command, ini='fast.ini')
        assert code == EXIT_TYRANT, err
        assert err.strip().splitlines() == [err.strip()]         # one line
        assert 'Tokyo Tyrant at %s is unavailable' % tyrant.url in err, err
        assert any(reason in err for reason in reasons.split('|')), err
        assert 'Traceback' not in err and out == ''

    try:
        tyrant.pause()                                # accepts, never answers
        fails_cleanly('no answer within io_timeout=0.5s')
        tyrant.resume()
        tyrant.stop()
        for command in (['get'], ['set', 'k', '1']):
            fails_cleanly('refused', command)
        hang_up = HangUp(tyrant.host, tyrant.port)
        hang_up.start()
        try:
            fails_cleanly('closed|reset')           # as the kernel tells it
        finally:
            hang_up.stop()
    finally:
        tyrant.resume()
        tyrant.start()
