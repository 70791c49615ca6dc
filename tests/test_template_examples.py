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

from pylons_tcjson_template import records
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
EXIT_USAGE, EXIT_COOKIE, EXIT_NO_SESSION, EXIT_UNREADABLE, EXIT_NO_EXTENSION, EXIT_TYRANT = \
    2, 3, 4, 5, 8, 7

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

    def put_record(self, session_id, text):
        """Store a session record's bytes as another program could."""
        self.client()[self.record_key(session_id)] = text

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
    assert app.client().prefix_keys(app.prefix + 'lock:') == []  # no lock records


def test_app_and_examples_change_one_session_at_once_and_lose_nothing(app):
    """The browser keeps counting visits while the examples set keys: both
    sides change the record with lib/tcjson.lua's merge under the record's
    lock in Tyrant, so no change of either is lost."""
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


@each_example
def test_refuses_to_make_a_record_the_app_cannot_load(app, example):
    browser, session_id, cookie = new_session(app)
    client = app.client()
    record_before = client[app.record_key(session_id)]
    code, _, err = run_example(app, example, cookie, 'set', 'big', json.dumps('x' * 4096),
                               ini='fast.ini')                     # max_session_size=4096
    assert code == EXIT_USAGE and 'max_session_size' in err, err
    assert client[app.record_key(session_id)] == record_before
    code, _, err = run_example(app, example, cookie, 'set', 'small', json.dumps('x' * 100),
                               ini='fast.ini')
    assert code == 0, err


def one_line_failure(code, out, err, status, *words):
    """The example failed with `status` and one line naming `words`."""
    assert code == status, (code, err)
    assert out == '' and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert all(word in err for word in words), (words, err)


@each_example
def test_two_session_cookies_in_one_header_are_refused(app, example):
    """Beaker takes the last of two session cookies: a program that took the
    first would read and write another (validly signed) session."""
    _, first_id, first = new_session(app)
    _, second_id, second = new_session(app)
    client = app.client()
    before = [client[app.record_key(first_id)], client[app.record_key(second_id)]]
    name = app.cookie_name
    for header in ('%s=%s; %s=%s' % (name, first, name, second),
                   'Cookie: a=1; %s=%s;%s = "%s"' % (name, first, name, second),
                   '%s=%s; %s=%s' % (name, first, name, first)):
        for command in (['get'], ['set', 'planted', '1']):
            one_line_failure(*run_example(app, example, header, *command) +
                             (EXIT_COOKIE, '2 %s cookies' % name, 'Beaker uses the last'))
    assert [client[app.record_key(first_id)], client[app.record_key(second_id)]] == before


@each_example
def test_set_rewrites_no_other_byte_and_get_prints_the_record_as_stored(app, example):
    """Numbers a double cannot hold exactly, 1.0, -0.0, escapes and spacing
    in other members stay byte for byte: the set is one merge inside Tyrant.
    The value set is stored as written."""
    browser, session_id, cookie = new_session(app)
    shown = json.loads(app.client()[app.record_key(session_id)])
    stored = ('{"_accessed_time":%r,"_creation_time":%r,"_expires":%r,'
              '"big":9007199254740993,"one":1.0,"minus_zero":-0.0,"tiny":1e-320,'
              '"caf\\u00e9":"\\/x\\u00e9","spaced":[1 , {"a" :  2.50}],"visits":1}'
              % (shown['_accessed_time'], shown['_creation_time'], shown['_expires']))
    app.put_record(session_id, stored)
    code, out, err = run_example(app, example, cookie, 'get')
    assert code == 0 and out == stored + '\n', err
    value = ' {"n": 12345678901234567890, "f": 1.0, "z": -0.0, "s": "\\u00e9"} '
    code, out, err = run_example(app, example, cookie, 'set', 'k', value)
    assert code == 0 and out == 'stored k = %s\n' % value.strip(), err
    assert app.client()[app.record_key(session_id)] == stored[:-1] + ',"k":%s}' % value.strip()
    code, out, err = run_example(app, example, cookie, 'set', 'big', '9007199254740995')
    assert code == 0, err
    assert app.client()[app.record_key(session_id)] == stored.replace(
        '9007199254740993', '9007199254740995')[:-1] + ',"k":%s}' % value.strip()
    # The application loads what the examples wrote.
    assert record_shown(browser.get('/session')[1])['big'] == 9007199254740995


NESTED_32 = '[' * 31 + ']' * 31          # with the record: 32 levels, the most allowed


@each_example
def test_values_the_application_could_not_load_are_not_set(app, example):
    browser, session_id, cookie = new_session(app)
    client = app.client()
    before = client[app.record_key(session_id)]
    for text, words in [('NaN', ['is not JSON', 'quotes']), ('Infinity', ['is not JSON']),
                        ('-Infinity', ['is not JSON']), ('[1, NaN]', ['is not JSON']),
                        ('1e999', ['number too large for a double']),
                        ('{"a": [-1e309]}', ['number too large for a double']),
                        ('1' + '0' * 400, ['number too large for a double']),
                        ('[' + NESTED_32 + ']', ['nested deeper than 32 levels']),
                        ('[' * 5000 + ']' * 5000, ['nested deeper than 32 levels']),
                        ('[%s]' % ','.join(['0'] * 20000), ['more than 20000 values'])]:
        one_line_failure(*run_example(app, example, cookie, 'set', 'n', text) +
                         (EXIT_USAGE, 'the value') + tuple(words))
    assert client[app.record_key(session_id)] == before
    code, _, err = run_example(app, example, cookie, 'set', 'n', NESTED_32)
    assert code == 0, err
    assert record_shown(browser.get('/session')[1])['n'] == json.loads(NESTED_32)


@each_example
def test_set_keeps_the_record_within_the_application_value_count(app, example):
    """MAX_VALUES counts the record as the application does (the object, every
    value, an empty array or object twice); a key's old value is replaced."""
    _, session_id, cookie = new_session(app)
    shown = json.loads(app.client()[app.record_key(session_id)])
    times = '"_accessed_time":%r,"_creation_time":%r,"_expires":%r' % (
        shown['_accessed_time'], shown['_creation_time'], shown['_expires'])
    # object 1, times 3, list 1, items 19993, "e": [] 2: 20000
    stored = '{%s,"list":[%s],"e":[]}' % (times, ','.join(['0'] * 19993))
    assert records.parse_session_record(stored) is not None      # the app's own check
    app.put_record(session_id, stored)
    code, _, err = run_example(app, example, cookie, 'set', 'list',
                               '[%s]' % ','.join(['1'] * 19993))
    assert code == 0, err                                        # the same count
    one_line_failure(*run_example(app, example, cookie, 'set', 'x', '1') +
                     (EXIT_USAGE, 'more than 20000 values', 'nothing was written'))
    code, _, err = run_example(app, example, cookie, 'set', 'e', '1')    # 2 values become 1
    assert code == 0, err
    code, _, err = run_example(app, example, cookie, 'set', 'x', '1')
    assert code == 0, err
    records.parse_session_record(app.client()[app.record_key(session_id)])
    with pytest.raises(ValueError):                               # one more: refused by all
        records.parse_session_record(stored.replace('[0,', '[0,0,'))


def unloadable_records(times):
    """(record text, words of the examples' message): records the application
    refuses to load."""
    def record(member):
        return '{%s,%s}' % (times, member)
    return [
        (record('"n":NaN'), 'is not JSON'),
        (record('"n":-Infinity'), 'is not JSON'),
        (record('"n":1e999'), 'number too large for a double'),
        (record('"d":[' + NESTED_32 + ']'), 'nested deeper than 32 levels'),
        (record('"d":' + '[' * 100000 + ']' * 100000), 'nested deeper than 32 levels'),
        (record('"d":{' + '"a":{' * 32 + '}' * 32 + '}'), 'nested deeper than 32 levels'),
        (record('"many":[%s]' % ','.join(['0'] * 19997)), 'more than 20000 values'),
        (record('"e":[%s]' % ','.join(['[]'] * 9999)), 'more than 20000 values'),
        ('{"_expires":"soon"}', '_expires that is not a Unix time'),
        ('{%s,"_creation_time":true}' % times, '_creation_time that is not a Unix time'),
        (record('"s":"\xff"'), 'is not JSON'),
        (record('"s":"' + 'x' * 1048576 + '"'), 'over beaker.session.max_session_size'),
        ('[1, 2]', 'is not a JSON object'),
    ]


@each_example
def test_records_the_application_could_not_load_are_refused(app, example):
    """The size, depth, value count and number rules of lib/records.py hold
    on read, for get and set alike: a one-line refusal, no traceback, nothing
    printed as if it were JSON, nothing written."""
    _, session_id, cookie = new_session(app)
    shown = json.loads(app.client()[app.record_key(session_id)])
    times = '"_accessed_time":%r,"_expires":%r' % (shown['_accessed_time'], shown['_expires'])
    for stored, words in unloadable_records(times):
        with pytest.raises(ValueError):                      # the application refuses it too
            records.parse_session_record(stored, 1048576)
        app.put_record(session_id, stored)
        for command in (['get'], ['set', 'k', '1']):
            one_line_failure(*run_example(app, example, cookie, *command) +
                             (EXIT_UNREADABLE, 'the session record', words))
        assert app.client()[app.record_key(session_id)] == stored
    # lib/records.py loads an integer beyond a double's range (Python keeps
    # it exact); the examples refuse it, as they refuse 1e999: a reader in
    # JavaScript or Java could not hold it.
    stored = '{%s,"n":1%s}' % (times, '0' * 400)
    app.put_record(session_id, stored)
    for command in (['get'], ['set', 'k', '1']):
        one_line_failure(*run_example(app, example, cookie, *command) +
                         (EXIT_UNREADABLE, 'number too large for a double'))
    # At the limits: what the application loads, the examples read.
    for member in ['"d":' + NESTED_32, '"many":[%s]' % ','.join(['0'] * 19996),
                   '"n":1' + '0' * 300, '"n":1.7976931348623157e308']:
        stored = '{%s,%s}' % (times, member)
        records.parse_session_record(stored, 1048576)
        app.put_record(session_id, stored)
        code, out, err = run_example(app, example, cookie, 'get')
        assert code == 0 and out == stored + '\n', err


def test_both_examples_answer_alike(app):
    """The same inputs give the same exit status and message from both."""
    if not all(found for _, found, _ in EXAMPLES.values()):
        pytest.skip('python3 or node is not on PATH')
    _, session_id, cookie = new_session(app)
    _, ended_id, ended = new_session(app)
    app.client().pop(app.record_key(ended_id))
    cases = [[cookie, 'get', 'extra'], [cookie, 'set', 'k'], [cookie, 'set', '_k', '1'],
             [cookie, 'set', 'k', 'x'], [cookie, 'set', 'k', '1e999'],
             [cookie, 'set', 'k', '[' * 40 + ']' * 40], [cookie[:-1], 'get'],
             ['%s=%s; %s=%s' % (app.cookie_name, cookie, app.cookie_name, ended), 'get'],
             [ended, 'get'], [ended, 'set', 'k', '1'],
             [cookie, 'set', 'big', json.dumps('x' * 4096)], [cookie, 'get'],
             [cookie, 'set', 'same', '[1.0, -0.0, 9007199254740993]'],
             [cookie, 'set', 'bad\xffkey', '"bad\xfe"']]           # not UTF-8: U+FFFD
    for case in cases:
        answers = []
        for example in sorted(EXAMPLES):
            code, out, err = run_example(app, example, case[0], *case[1:], ini='fast.ini')
            answers.append((code, out, err.split(': ', 1)[-1]))
        assert answers[0] == answers[1], case
        assert 'Traceback' not in answers[0][2]
    record = json.loads(app.client()[app.record_key(session_id)])
    assert record[u'bad\ufffdkey'] == u'bad\ufffd'


@each_example
def test_server_without_the_extension_is_named_and_nothing_is_written(app, example, tmpdir):
    """set needs lib/tcjson.lua (ttserver -ext); get does not."""
    _, session_id, cookie = new_session(app)
    stored = app.client()[app.record_key(session_id)]
    plain = TyrantProcess('*', ext='').start()
    try:
        pytyrant.PyTyrant.open(plain.host, plain.port)[app.record_key(session_id)] = stored
        ini = str(tmpdir.join('plain.ini'))
        shutil.copy(os.path.join(app.directory, 'development.ini'), ini)
        set_ini_value(ini, 'app:main', 'beaker.session.url', plain.url)
        one_line_failure(*run_example(app, example, cookie, 'set', 'k', '1', ini=ini) +
                         (EXIT_NO_EXTENSION, 'Tokyo Tyrant at %s' % plain.url,
                          'lib/tcjson.lua', '-ext', 'nothing was written'))
        assert pytyrant.PyTyrant.open(plain.host, plain.port)[app.record_key(session_id)] == stored
        code, out, err = run_example(app, example, cookie, 'get', ini=ini)
        assert code == 0 and out == stored + '\n', err
    finally:
        plain.stop()


def readme_section(app):
    """The README's "Sharing the session with other programs", up to the
    next section, its whitespace made single spaces."""
    text = open(os.path.join(app.directory, 'README.txt')).read()
    section = text.split('Sharing the session with other programs\n', 1)[1]
    section = re.split(r'\n\S[^\n]*\n-{3,}\n', section, 1)[0]
    return ' '.join(section.split())


def test_readme_and_examples_document_the_protocol_and_exit_statuses(app):
    def text(*path):
        return ' '.join(open(os.path.join(app.directory, *path)).read().split())
    section = readme_section(app)
    for fact in ('examples/session_tool.py', 'examples/session-tool.mjs', 'HMAC-SHA1',
                 '_expires', '_accessed_time', 'beaker-opaque', 'C8 68', 'probe', 'merge',
                 '{"set": {', '"limit"', '"ok"', '"missing"', '"too large"', 'RDBXOLCKREC',
                 'C8 30', 'MAX_DEPTH', '32', '20000', 'max_session_size', 'double',
                 'last one'):
        assert fact in section, fact
    for gone in ('putkeep', 'lock:', 'busy'):
        assert gone not in section, gone
    statuses = ['%d %s' % pair for pair in [
        (EXIT_USAGE, 'bad usage'), (EXIT_COOKIE, 'cookie refused'),
        (EXIT_NO_SESSION, 'no live session'), (EXIT_UNREADABLE, 'record not readable'),
        (EXIT_NO_EXTENSION, 'Tyrant without lib/tcjson.lua'),
        (EXIT_TYRANT, 'Tokyo Tyrant unavailable')]]
    for document in (section, text('examples', 'session_tool.py'),
                     text('examples', 'session-tool.mjs').replace(' // ', ' ')):
        assert [status for status in statuses if status not in document] == []
        assert 'busy' not in document


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
