"""A real browser clicks through the generated application.

Headless Chromium is driven over the Chrome DevTools Protocol through
``--remote-debugging-pipe``: JSON messages separated by NUL bytes on file
descriptors 3 (to Chromium) and 4 (from it).  No WebSocket client and no
WebDriver are needed, so this runs under the Python 2.7 test command.

Screenshots go to the test's tmpdir and are copied to
bench/out/template-browser/ for humans.
"""
import BaseHTTPServer
import SocketServer
import base64
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib2

import pytest

from pylons_tcjson_template.devtyrant.launcher import end_process, free_port
from test_template_support import Served, generate, project_env

CHROMIUM = os.environ.get('TCJSON_CHROMIUM', '/usr/bin/chromium')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, 'bench', 'out', 'template-browser')

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason='no Chromium at %s (set TCJSON_CHROMIUM)' % CHROMIUM)


class CDPError(RuntimeError):
    pass


class PipeBrowser(object):
    """Headless Chromium with a minimal DevTools Protocol client."""

    def __init__(self, profile_dir, width=1200, height=900):
        self.width, self.height = width, height
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        # Move the child's ends above 10 so dup2 onto 3 and 4 cannot clash.
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        for fd in (to_child_r, from_child_w):
            os.close(fd)

        def wire_fds():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.log = open(os.path.join(profile_dir, 'chromium.log'), 'wb')
        self.process = subprocess.Popen(
            [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu',
             '--disable-quic', '--no-first-run', '--disable-background-networking',
             '--disable-component-update', '--disable-sync',
             '--disable-dev-shm-usage', '--hide-scrollbars',
             '--user-data-dir=%s' % os.path.join(profile_dir, 'profile'),
             '--window-size=%d,%d' % (width, height),
             '--remote-debugging-pipe', 'about:blank'],
            stdout=self.log, stderr=subprocess.STDOUT, close_fds=False,
            preexec_fn=wire_fds)
        os.close(high_r)
        os.close(high_w)
        self.next_id = 0
        self.replies = {}
        self.events = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read)
        self.reader.daemon = True
        self.reader.start()
        self.session = None

    # -- protocol
    def _read(self):
        buffered = b''
        while True:
            try:
                chunk = os.read(self.from_child, 65536)
            except OSError:
                chunk = b''
            if not chunk:
                with self.cond:
                    self.replies['closed'] = True
                    self.cond.notify_all()
                return
            buffered += chunk
            while b'\0' in buffered:
                raw, buffered = buffered.split(b'\0', 1)
                message = json.loads(raw)
                with self.cond:
                    if 'id' in message:
                        self.replies[message['id']] = message
                    else:
                        self.events.append(message)
                    self.cond.notify_all()

    def call(self, method, params=None, timeout=30, browser_level=False):
        with self.cond:
            self.next_id += 1
            ident = self.next_id
        message = {'id': ident, 'method': method, 'params': params or {}}
        if self.session and not browser_level:
            message['sessionId'] = self.session
        os.write(self.to_child, json.dumps(message).encode('utf-8') + b'\0')
        deadline = time.time() + timeout
        with self.cond:
            while ident not in self.replies:
                if 'closed' in self.replies:
                    raise CDPError('Chromium closed the pipe during %s' % method)
                remaining = deadline - time.time()
                if remaining <= 0:
                    raise CDPError('no answer to %s' % method)
                self.cond.wait(remaining)
            reply = self.replies.pop(ident)
        if 'error' in reply:
            raise CDPError('%s: %s' % (method, reply['error']))
        return reply.get('result', {})

    def wait_event(self, name, since, timeout=30):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for event in self.events[since:]:
                    if event.get('method') == name:
                        return event
                remaining = deadline - time.time()
                if remaining <= 0:
                    raise CDPError('no %s event' % name)
                self.cond.wait(remaining)

    def mark(self):
        with self.cond:
            return len(self.events)

    # -- page
    def open_page(self):
        target = self.call('Target.createTarget', {'url': 'about:blank'},
                           browser_level=True)
        attached = self.call('Target.attachToTarget',
                             {'targetId': target['targetId'], 'flatten': True},
                             browser_level=True)
        self.session = attached['sessionId']
        self.call('Page.enable')
        self.call('Emulation.setDeviceMetricsOverride', {
            'width': self.width, 'height': self.height,
            'deviceScaleFactor': 1, 'mobile': False})
        return self

    def navigate(self, url):
        since = self.mark()
        self.call('Page.navigate', {'url': url})
        self.wait_event('Page.loadEventFired', since)

    def js(self, expression):
        result = self.call('Runtime.evaluate', {
            'expression': expression, 'returnByValue': True})
        if 'exceptionDetails' in result:
            raise CDPError('%s: %s' % (expression, result['exceptionDetails']))
        return result['result'].get('value')

    def click_and_wait(self, selector):
        """Click something that loads a new page (a link, a submit button)."""
        since = self.mark()
        self.js('document.querySelector(%s).click()' % json.dumps(selector))
        self.wait_event('Page.loadEventFired', since)

    def wait_for(self, expression, timeout=15):
        """Poll until a JavaScript expression is true."""
        deadline = time.time() + timeout
        while not self.js(expression):
            if time.time() > deadline:
                raise CDPError('still false: %s' % expression)
            time.sleep(0.05)

    def fill(self, selector, value):
        self.js('document.querySelector(%s).value = %s'
                % (json.dumps(selector), json.dumps(value)))

    def text(self, selector):
        return self.js('(function(e){return e ? e.textContent : null})'
                       '(document.querySelector(%s))' % json.dumps(selector))

    def screenshot(self, path):
        """A PNG of the whole page."""
        height = self.js('Math.ceil(document.documentElement.scrollHeight)')
        self.call('Emulation.setDeviceMetricsOverride', {
            'width': self.width, 'height': max(int(height), 200),
            'deviceScaleFactor': 1, 'mobile': False})
        data = self.call('Page.captureScreenshot', {'format': 'png'})['data']
        self.call('Emulation.setDeviceMetricsOverride', {
            'width': self.width, 'height': self.height,
            'deviceScaleFactor': 1, 'mobile': False})
        with open(path, 'wb') as out:
            out.write(base64.b64decode(data))
        assert os.path.getsize(path) > 5000
        return path

    def close(self):
        try:
            if self.process.poll() is None:
                try:
                    self.call('Browser.close', browser_level=True, timeout=5)
                except CDPError:
                    pass
                end_process(self.process, signum=None)
        finally:
            for fd in (self.to_child, self.from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.log.close()


def keep(path):
    """Copy a screenshot where humans look (bench/out is git-ignored)."""
    if not os.path.isdir(OUT_DIR):
        os.makedirs(OUT_DIR)
    target = os.path.join(OUT_DIR, os.path.basename(path))
    shutil.copyfile(path, target)
    return target


class _ThreadingServer(SocketServer.ThreadingMixIn, BaseHTTPServer.HTTPServer):
    daemon_threads = True


class AttackerSite(object):
    """Another site (http://localhost:PORT, not the app's 127.0.0.1): one
    page whose form signs in to the app as the attacker, submitted by
    script as soon as it loads -- a login CSRF."""

    PAGE = """<!DOCTYPE html><html><body>
<form id="forged" method="post" action="%(action)s">
<input type="hidden" name="name" value="mallory">
<input type="hidden" name="_authentication_token" value="%(token)s">
</form>
<script>document.getElementById("forged").submit()</script>
</body></html>"""

    def __init__(self, action, token):
        page = self.PAGE % dict(action=action, token=token)

        class Handler(BaseHTTPServer.BaseHTTPRequestHandler):
            # Chromium opens spare connections it may never use: do not
            # wait on them for long.
            timeout = 2

            def do_GET(self):
                self.send_response(200)
                self.send_header('Content-Type', 'text/html')
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.server = _ThreadingServer(('127.0.0.1', free_port()), Handler)
        self.url = 'http://localhost:%d/' % self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.daemon = True

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()


def attacker_token(app_url):
    """A valid CSRF token -- of a session the attacker opened himself."""
    page = urllib2.urlopen(app_url + '/session', timeout=15).read()
    return re.search(r'name="_authentication_token" type="hidden" value="(\w+)"',
                     page).group(1)


def test_click_through_the_session_sample(tmpdir, tyrant_factory):
    tyrant = tyrant_factory()
    http_port = free_port()
    project = generate(tmpdir, 'BrowserApp', 'tyrant_url=%s' % tyrant.url,
                       'http_port=%d' % http_port)
    served = Served(project, project_env(project), port=http_port,
                    log=str(tmpdir.join('serve.log'))).start()
    browser = PipeBrowser(str(tmpdir))
    try:
        browser.open_page()
        browser.navigate(served.url + '/')
        assert 'application is running' in browser.text('h1')
        keep(browser.screenshot(str(tmpdir.join('home.png'))))

        # The front page's button leads to the sample: visit 1, then 2.
        browser.click_and_wait('a.button')
        assert browser.js('location.pathname') == '/session'
        assert browser.text('#visits') == '1'
        browser.navigate(served.url + '/session')
        assert browser.text('#visits') == '2'

        # Set a string and a JSON number through the form.
        browser.fill('#key', 'colour')
        browser.fill('#value', 'blue')
        browser.click_and_wait('#store')
        assert 'Stored colour = "blue" (a JSON string)' in browser.text('.flash')
        browser.fill('#key', 'answer')
        browser.fill('#value', '42')
        browser.js('document.querySelector("#kind").value = "json"')
        browser.click_and_wait('#store')
        assert 'a JSON number' in browser.text('.flash')
        types = browser.js('Array.prototype.map.call('
                           'document.querySelectorAll("#values .type"),'
                           'function(e){return e.textContent})')
        assert types == ['number', 'string']
        assert '"colour":"blue"' in browser.text('#raw')
        # HttpOnly: the session cookie is invisible to JavaScript.
        assert browser.js('document.cookie') == ''
        shot = keep(browser.screenshot(str(tmpdir.join('session.png'))))

        # New session id: values kept.
        old_id = browser.text('#session-id')
        browser.click_and_wait('#regenerate')
        assert browser.text('#session-id') != old_id
        assert 'New session id' in browser.text('.flash')
        assert 'colour' in browser.text('#values')
        assert '"blue"' in browser.text('#values')

        # JSON nested 2000 deep: 400 and the reason, not a 500 (which in
        # development would open the interactive debugger).
        browser.fill('#key', 'deep')
        browser.fill('#value', '[' * 2000)
        browser.js('document.querySelector("#kind").value = "json"')
        browser.click_and_wait('#store')
        assert 'levels deep' in browser.text('#problem')
        assert browser.js('document.querySelector("#value").value') == '[' * 2000
        keep(browser.screenshot(str(tmpdir.join('bad-input.png'))))

        # Sign in; then a page of another site forges a sign-in as the
        # attacker.  The browser keeps its own session: 403, no new cookie.
        browser.fill('#name', 'alice')
        browser.click_and_wait('#login')
        assert browser.text('#user') == 'alice'
        signed_in_id = browser.text('#session-id')
        with AttackerSite(served.url + '/session/login',
                          attacker_token(served.url)) as attacker:
            browser.navigate(attacker.url)
            deadline = time.time() + 15
            while browser.js('location.pathname') != '/session/login':
                assert time.time() < deadline, 'the forged form was not sent'
                time.sleep(0.05)
            browser.wait_for('document.readyState == "complete"')
            assert '403' in browser.text('h1')
            keep(browser.screenshot(str(tmpdir.join('forged-login.png'))))
        browser.navigate(served.url + '/session')
        assert browser.text('#user') == 'alice'
        assert browser.text('#session-id') == signed_in_id

        # Start over: a new, empty session under a new id.
        browser.click_and_wait('#start-over')
        assert 'Started over' in browser.text('.flash')
        assert browser.text('#session-id') != signed_in_id
        assert browser.text('#user') is None
        assert browser.js('document.querySelector("#values")') is None

        # Log out: a new, empty session.
        browser.click_and_wait('#logout')
        assert 'Logged out' in browser.text('.flash')
        assert browser.text('#visits') == '1'
        assert browser.js('document.querySelector("#values")') is None
        keep(browser.screenshot(str(tmpdir.join('logged-out.png'))))

        # Tyrant down: the 503 page.
        tyrant.stop()
        browser.navigate(served.url + '/session')
        assert 'Sessions are unavailable' in browser.text('h1')
        keep(browser.screenshot(str(tmpdir.join('outage.png'))))
        sys.stdout.write('screenshot: %s\n' % shot)
    finally:
        browser.close()
        served.stop()
