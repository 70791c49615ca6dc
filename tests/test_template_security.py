"""DNS rebinding against a generated project served as development runs it
(debug = true, the interactive debugger on), over real HTTP.

A page on rebind.attacker.example has the victim's browser resolve that
name to 127.0.0.1: the browser then sends the attacker's name as Host (and
as Origin on posts) to this application, and lets the page read every
answer.  Forged here with the Host and Origin headers a browser would send.
"""
import cookielib
import os
import re
import urllib
import urllib2

import pytest

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, free_port
from test_template_support import CSRF_FIELD, Served, form_token, generate, project_env

ATTACKER = 'rebind.attacker.example'

# A controller of the project's own with a bug, as every application has
# one some day: the 500 it raises is what opens the debugger.
BOOM_CONTROLLER = '''
from rebindapp.lib.base import BaseController


class BoomController(BaseController):

    def fail(self):
        secret_of_this_process = 'the-debugger-reached-me'
        raise RuntimeError('a bug in a controller')
'''


@pytest.fixture(scope='module')
def served(tmpdir_factory):
    base = tmpdir_factory.mktemp('rebinding')
    tyrant = TyrantProcess('*').start()
    try:
        port = free_port()
        project = generate(base, 'RebindApp', 'tyrant_url=%s' % tyrant.url,
                           'http_port=%d' % port)
        with open(os.path.join(project, 'rebindapp', 'controllers', 'boom.py'), 'w') as out:
            out.write(BOOM_CONTROLLER)
        with Served(project, project_env(project), port=port,
                    log=str(base.join('serve.log'))) as site:
            yield site
    finally:
        tyrant.stop()


class Client(object):
    """urllib2 with a cookie jar that sends the Host (and Origin) a browser
    on `name` would send; answers 4xx/5xx instead of raising."""

    def __init__(self, site, name=None):
        self.site = site
        self.host = '%s:%d' % (name, site.port) if name else None
        self.jar = cookielib.CookieJar()
        self.opener = urllib2.build_opener(urllib2.HTTPCookieProcessor(self.jar))

    def request(self, path, data=None, origin=None):
        request = urllib2.Request(self.site.url + path,
                                  urllib.urlencode(data) if data is not None else None)
        if self.host:
            request.add_unredirected_header('Host', self.host)
        if origin:
            request.add_header('Origin', origin)
        try:
            response = self.opener.open(request, timeout=15)
        except urllib2.HTTPError as error:
            response = error
        return response.getcode(), response.read()


def debugger_handles(page):
    """debugcount, the CSRF token and a frame id of a debugger page."""
    count = re.search(r'debug_count = (\d+)', page)
    token = re.search(r"csrf_token = '([^']+)'", page)
    frames = re.findall(r'tbid="(\d+)"', page)
    assert count and token and frames, page[:2000]
    return count.group(1), token.group(1), frames


def run_in_debugger(client, handles, code):
    count, token, frames = handles
    outputs = []
    for tbid in frames:              # the innermost frame with the local
        status, body = client.request('/_debug/exec_input', dict(
            debugcount=count, tbid=tbid, csrf_token=token, input=code))
        outputs.append((status, body))
    return outputs


def test_the_debugger_answers_this_sites_names_only(served):
    # The debugger is really on: from the site's own name one error hands
    # out a console that runs Python in the application's process.
    own = Client(served)
    status, page = own.request('/boom/fail')
    assert status == 500 and 'a bug in a controller' in page
    handles = debugger_handles(page)
    outputs = run_in_debugger(own, handles, 'secret_of_this_process')
    assert [s for s, body in outputs if 'the-debugger-reached-me' in body], outputs

    # Under the attacker's name nothing of it is reachable: not the error
    # page, not the console (even with valid handles), not its files.
    rebound = Client(served, ATTACKER)
    status, page = rebound.request('/boom/fail')
    assert status == 400 and 'debug_count' not in page, page[:500]
    for status, body in run_in_debugger(rebound, handles, 'secret_of_this_process'):
        assert status == 400 and 'the-debugger-reached-me' not in body, body[:500]
    status, body = rebound.request('/_debug/media/debug.js')
    assert status == 400 and 'function' not in body
    assert own.request('/_debug/media/debug.js')[0] == 200
    # Nor any other page, nor a static file.
    for path in ('/', '/session', '/style.css'):
        assert rebound.request(path)[0] == 400, path


def test_a_rebound_page_cannot_sign_in(served):
    """The review's first step: under the attacker's name the page loads
    the sample, reads its token and posts the sign-in with a matching
    Host and Origin.  Refused before the session is touched."""
    rebound = Client(served, ATTACKER)
    status, page = rebound.request('/session')
    assert status == 400 and not form_token(page)
    # Even a token of a real session of this site does not help.
    own = Client(served)
    token = form_token(own.request('/session')[1])
    assert token
    for cookie in own.jar:
        rebound.jar.set_cookie(cookie)
    status, page = rebound.request('/session/login', {'name': 'mallory', CSRF_FIELD: token},
                                   origin='http://%s' % rebound.host)
    assert status == 400, page[:500]
    assert 'mallory' not in own.request('/session')[1]


def test_origin_is_compared_with_the_allowed_names(served):
    """The CSRF check takes Origin against allowed_hosts, not against the
    request's own Host: localhost and 127.0.0.1 are both this site."""
    browser = Client(served, 'localhost')
    token = form_token(browser.request('/session')[1])
    status, page = browser.request('/session/login', {'name': 'alice', CSRF_FIELD: token},
                                   origin='http://127.0.0.1:%d' % served.port)
    assert status == 200 and 'alice' in page, page[:500]
    token = form_token(page)
    status, page = browser.request('/session/set', {'key': 'k', 'value': 'v', 'kind': 'string',
                                                    CSRF_FIELD: token},
                                   origin='http://%s:%d' % (ATTACKER, served.port))
    assert status == 403 and 'not sent from a page of this site' in page
