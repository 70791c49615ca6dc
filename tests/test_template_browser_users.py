"""Sessions per user in a generated project: two browsers, one user.

Headless Chromium (PipeBrowser from test_template_browser) signs in as
alice from two browsers with separate profiles, and one signs the other
out through the "Your sessions" panel; then the operator command
``paster tcjson-sessions`` counts, lists and revokes over HTTP-made
sessions.  One project, server and Tyrant serve the whole module.
"""
import cookielib
import hashlib
import os
import re
import sys
import time
import urllib
import urllib2

import pytest

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, free_port
from test_template_browser import CHROMIUM, PipeBrowser, keep
from test_template_support import PASTER, Served, generate, project_env, run

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason='no Chromium at %s (set TCJSON_CHROMIUM)' % CHROMIUM)


class Site(object):
    def __init__(self, url, project, env):
        self.url, self.project, self.env = url, project, env

    def paster(self, *args):
        """`paster tcjson-sessions development.ini ARGS`: (status, output)."""
        return run([sys.executable, PASTER, 'tcjson-sessions', 'development.ini'] +
                   list(args), self.project, self.env, timeout=60)


@pytest.fixture(scope='module')
def site(tmpdir_factory):
    tmpdir = tmpdir_factory.mktemp('users')
    with TyrantProcess('*') as tyrant:
        port = free_port()
        project = generate(tmpdir, 'UsersApp', 'tyrant_url=%s' % tyrant.url,
                           'http_port=%d' % port)
        env = project_env(project)
        code, output = run([sys.executable, 'setup.py', 'egg_info'], project, env)
        assert code == 0, output                       # paster finds the commands
        with Served(project, env, port=port, log=str(tmpdir.join('serve.log'))) as served:
            yield Site(served.url, project, env)


@needs_chromium
def test_sign_out_another_browser_from_this_one(site, tmpdir):
    laptop = PipeBrowser(str(tmpdir.mkdir('laptop')))
    phone = PipeBrowser(str(tmpdir.mkdir('phone')))
    try:
        for browser in (laptop, phone):
            browser.open_page()
            browser.navigate(site.url + '/session')
            assert browser.js('document.querySelector("#user-sessions")') is None
            browser.fill('#name', 'alice')
            browser.click_and_wait('#login')
            assert browser.text('#user') == 'alice'
        phone_id = phone.text('#session-id')

        # A new id for the signed-in laptop: the index learns it.
        laptop.navigate(site.url + '/session')
        laptop_id = laptop.text('#session-id')
        laptop.click_and_wait('#regenerate')
        assert laptop.text('#session-id') != laptop_id
        assert laptop.text('#index-raw').count(handle(laptop.text('#session-id'))) == 1

        # The laptop lists both; it is the one marked.
        assert laptop.js('document.querySelectorAll("#sessions tbody tr").length') == 2
        assert laptop.js('document.querySelectorAll("#sessions tr.current").length') == 1
        assert '(this browser)' in laptop.text('#sessions tr.current')
        assert laptop.text('#index-key') == 'usersapp:session:user:alice'
        # The index as Tyrant holds it, each id shown as its handle: a bare
        # id would be the other browser's session for whoever sees the page.
        assert handle(phone_id) in laptop.text('#index-raw')
        assert phone_id not in laptop.js('document.documentElement.outerHTML')
        keep(laptop.screenshot(str(tmpdir.join('user-sessions.png'))))

        # Sign out the other one: the phone is anonymous on its next page.
        laptop.click_and_wait('#sessions tr.other button')
        assert 'Signed out that session' in laptop.text('.flash')
        assert laptop.js('document.querySelectorAll("#sessions tbody tr").length') == 1
        phone.navigate(site.url + '/session')
        assert phone.text('#user') is None
        assert phone.text('#session-id') != phone_id
        assert phone.js('document.querySelector("#login-form")') is not None
        keep(phone.screenshot(str(tmpdir.join('signed-out-phone.png'))))

        # Sign in again on the phone; "Sign out everywhere else" ends it too.
        phone.fill('#name', 'alice')
        phone.click_and_wait('#login')
        laptop.navigate(site.url + '/session')
        assert laptop.js('document.querySelectorAll("#sessions tbody tr").length') == 2
        laptop.click_and_wait('#signout-others')
        assert 'Signed out of 1 other session' in laptop.text('.flash')
        assert laptop.text('#user') == 'alice'
        phone.navigate(site.url + '/session')
        assert phone.text('#user') is None

        # "Sign out this one" on its own row: a logout.
        laptop.click_and_wait('#sessions tr.current button')
        assert 'Logged out' in laptop.text('.flash')
        assert laptop.text('#user') is None
    finally:
        laptop.close()
        phone.close()


def handle(session_id):
    return hashlib.sha256(session_id).hexdigest()[:16]


def http_browser(agent=None):
    opener = urllib2.build_opener(urllib2.HTTPCookieProcessor(cookielib.CookieJar()))
    if agent:
        opener.addheaders = [('User-Agent', agent)]
    return opener


def sign_in(site, browser, name):
    page = browser.open(site.url + '/session', timeout=15).read()
    token = re.search(r'name="_authentication_token" type="hidden" value="(\w+)"',
                      page).group(1)
    browser.open(site.url + '/session/login', urllib.urlencode(
        {'name': name, '_authentication_token': token}), timeout=15).read()


def signed_in_as(site, browser):
    found = re.search(r'<strong id="user">([^<]*)</strong>',
                      browser.open(site.url + '/session', timeout=15).read())
    return found and found.group(1)


def test_the_operator_command_counts_lists_and_revokes(site):
    browsers = [http_browser() for _ in range(3)]
    for browser, name in zip(browsers, ['bob', 'bob', 'carol']):
        sign_in(site, browser, name)
    assert [signed_in_as(site, b) for b in browsers] == ['bob', 'bob', 'carol']

    code, output = site.paster()
    assert code == 0, output
    counts = dict(re.findall(r'^  (\w+) +(\d+)', output, re.M))
    assert int(counts['sessions']) >= 3 and int(counts['users']) >= 2, output
    assert re.search(r'oldest +created \d{4}-\d\d-\d\d', output), output

    code, output = site.paster('--user', 'bob')
    assert code == 0 and 'bob has 2 session(s)' in output, output
    assert output.count('agent=Python-urllib') == 2, output

    code, output = site.paster('--revoke-user', 'bob')
    assert code == 0 and 'Signed bob out of 2 session(s)' in output, output
    assert [signed_in_as(site, b) for b in browsers] == [None, None, 'carol']
    code, output = site.paster('--user', 'bob')
    assert 'bob has 0 session(s)' in output, output


def test_the_operator_command_never_prints_control_characters(site):
    sign_in(site, http_browser('curl\x1b]2;owned\x07\x1b[31m/8'), 'dave')
    code, output = site.paster('--user', 'dave')
    assert code == 0 and 'dave has 1 session(s)' in output, output
    assert 'agent=curl]2;owned[31m/8' in output and '\x1b' not in output and '\x07' not in output


@pytest.mark.parametrize('args, problem', [
    (['--revoke-user', ''], '--revoke-user needs a user id'),
    (['--user', '  '], '--user needs a user id'),
    (['--user', 'a', '--revoke-user', 'b'], 'not both'),
])
def test_the_operator_command_refuses_empty_or_conflicting_options(site, args, problem):
    code, output = site.paster(*args)
    assert code != 0 and problem in output, output


def form_token_of(page):
    return re.search(r'name="_authentication_token" type="hidden" value="(\w+)"',
                     page).group(1)


def session_cookie(browser):
    jar = [handler for handler in browser.handlers
           if isinstance(handler, urllib2.HTTPCookieProcessor)][0].cookiejar
    return jar


def test_a_stolen_cookie_pressing_new_session_id_never_survives_sign_out_elsewhere(site):
    """Finding 1 of the second review, over HTTP: a copy of the cookie of
    one of a user's sessions keeps asking the sample for a new session id
    (three loops) while the user, in another browser, signs out everywhere
    else; afterwards no cookie the copy holds is signed in."""
    import copy
    import threading
    for attempt in range(3):
        phone, owner = http_browser(), http_browser()
        sign_in(site, phone, 'erin%d' % attempt)
        sign_in(site, owner, 'erin%d' % attempt)
        stolen_jar = cookielib.CookieJar()
        for cookie in session_cookie(phone):
            stolen_jar.set_cookie(copy.copy(cookie))
        thieves = [urllib2.build_opener(urllib2.HTTPCookieProcessor(stolen_jar))
                   for _ in range(3)]
        stop, errors = threading.Event(), []

        def press_new_session_id(thief):
            while not stop.is_set():
                try:
                    page = thief.open(site.url + '/session', timeout=15).read()
                    thief.open(site.url + '/session/regenerate', urllib.urlencode(
                        {'_authentication_token': form_token_of(page)}), timeout=15).read()
                except urllib2.HTTPError as exc:
                    if exc.code not in (400, 403):       # a token of a session just ended
                        errors.append(exc.code)
                except Exception as exc:                 # counted, then asserted
                    errors.append(repr(exc))
        loops = [threading.Thread(target=press_new_session_id, args=(thief,))
                 for thief in thieves]
        for loop in loops:
            loop.start()
        time.sleep(0.3)
        page = owner.open(site.url + '/session', timeout=15).read()
        owner.open(site.url + '/session/signout_others', urllib.urlencode(
            {'_authentication_token': form_token_of(page)}), timeout=15).read()
        time.sleep(0.3)
        stop.set()
        for loop in loops:
            loop.join(30)
        assert errors == []
        assert signed_in_as(site, thieves[0]) is None, attempt
        assert signed_in_as(site, owner) == 'erin%d' % attempt


def test_the_sign_in_key_cannot_be_set_from_the_sample(site):
    """Finding 2: a value under the key that keeps the sign-in must not turn
    "New session id" into an error that signs the user out."""
    browser = http_browser()
    sign_in(site, browser, 'frank')
    for name in ('_sign_in', 'sign_in_detail'):
        page = browser.open(site.url + '/session', timeout=15).read()
        data = urllib.urlencode({'_authentication_token': form_token_of(page), 'key': name,
                                 'value': '{"line": "x"}', 'kind': 'json'})
        try:
            browser.open(site.url + '/session/set', data, timeout=15).read()
            stored = True
        except urllib2.HTTPError as exc:
            assert exc.code == 400, exc.code
            stored = False
        assert stored == (name == 'sign_in_detail')     # "_sign_in" is refused
    page = browser.open(site.url + '/session', timeout=15).read()
    browser.open(site.url + '/session/regenerate', urllib.urlencode(
        {'_authentication_token': form_token_of(page)}), timeout=15).read()
    assert signed_in_as(site, browser) == 'frank'
