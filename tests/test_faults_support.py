"""Shared machinery of the fault tests (tests/test_faults_*.py) and of the
soak script (soak/run.py): a served project on a Tyrant .tch database,
raw HTTP clients that keep their own session cookie, raw Tyrant access,
and CPU time of a process.  No tests here.

Builds on test_template_support (generate, develop_install, Served...);
what is added is only what those helpers do not already do.
"""
import hashlib
import hmac
import httplib
import os
import re
import socket
import time
import urllib

import pytyrant

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, free_port
from test_template_support import (Served, develop_install, form_token, generate,
                                   page_value, set_ini_value)

CLOCK_TICKS = float(os.sysconf('SC_CLK_TCK'))


# ------------------------------------------------------------------ INI files

def put_ini_value(path, section, option, value):
    """Set `option` in [section]: rewrite its line if there is one, else add
    it right after the section header."""
    text = open(path).read()
    pattern = r'(?m)^%s\s*=' % re.escape(option)
    if re.search(pattern, text):
        set_ini_value(path, section, option, value)
        return
    header = '[%s]\n' % section
    assert header in text, (path, section)
    text = text.replace(header, '%s%s = %s\n' % (header, option, value), 1)
    open(path, 'w').write(text)


def ini_value(path, option):
    match = re.search(r'(?m)^%s\s*=\s*(.*)$' % re.escape(option), open(path).read())
    return match.group(1).strip() if match else None


# --------------------------------------------------------------- the project

class Project(object):
    """A generated, privately installed project and its settings."""

    def __init__(self, directory, env, http_port, tyrant_port):
        self.directory, self.env = directory, env
        self.http_port, self.tyrant_port = http_port, tyrant_port
        self.ini = os.path.join(directory, 'development.ini')
        self.cookie_name = ini_value(self.ini, 'beaker.session.key')
        self.secret = ini_value(self.ini, 'beaker.session.secret')
        self.prefix = ini_value(self.ini, 'beaker.session.prefix')
        self.connect_timeout = float(ini_value(self.ini, 'beaker.session.connect_timeout'))
        self.io_timeout = float(ini_value(self.ini, 'beaker.session.io_timeout'))


def make_project(base, name='FaultApp', connect_timeout=0.5, io_timeout=1.0,
                 workers=24):
    """Generate and install a project under `base` with short backend
    timeouts.  The HTTP server gets `workers` threads, as many Tyrant
    connections (pool_size), and a listen queue of 128: otherwise a client
    would also time a wait for a free worker thread, or a SYN retried after
    Paste's default backlog of 5 overflowed, and not only the app."""
    http_port, tyrant_port = free_port(), free_port()
    directory = generate(base, name, 'tyrant_url=127.0.0.1:%d' % tyrant_port,
                         'http_port=%d' % http_port, 'session_timeout=3600')
    env = develop_install(directory, base)
    ini = os.path.join(directory, 'development.ini')
    set_ini_value(ini, 'app:main', 'beaker.session.connect_timeout', connect_timeout)
    set_ini_value(ini, 'app:main', 'beaker.session.io_timeout', io_timeout)
    set_ini_value(ini, 'app:main', 'beaker.session.pool_size', workers)
    put_ini_value(ini, 'server:main', 'threadpool_workers', workers)
    put_ini_value(ini, 'server:main', 'request_queue_size', 128)
    # The per-request DEBUG/INFO lines would only fill the log.
    set_ini_value(ini, 'logger_root', 'level', 'WARN')
    return Project(directory, env, http_port, tyrant_port)


class Stack(object):
    """Tyrant on the project's port with a .tch file, and `paster serve`."""

    def __init__(self, project, workdir):
        self.project = project
        self.dbpath = os.path.join(str(workdir), 'sessions.tch')
        self.log_path = os.path.join(str(workdir), 'stack.log')
        self.tyrant = TyrantProcess(self.dbpath, port=project.tyrant_port)
        self.served = Served(project.directory, project.env, port=project.http_port,
                             log=self.log_path)

    def start(self):
        self.tyrant.start()
        self.served.start()
        return self

    def stop(self):
        self.served.stop()
        self.tyrant.stop()

    @property
    def app_pid(self):
        return self.served.process.pid

    def app_alive(self):
        return self.served.process.poll() is None

    def log(self):
        try:
            return open(self.log_path).read()
        except IOError:
            return ''

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def run_stack(project, tmpdir):
    """Body of the test modules' `stack` fixtures: started, then stopped."""
    stack = Stack(project, tmpdir).start()
    try:
        yield stack
    finally:
        stack.stop()


# ----------------------------------------------------------------- processes

def cpu_seconds(pid):
    """utime + stime of a process, in seconds (from /proc/PID/stat)."""
    with open('/proc/%d/stat' % pid) as stat:
        text = stat.read()
    fields = text[text.rindex(')') + 2:].split()     # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# ------------------------------------------------------------------- Tyrant

def raw_get(port, key, timeout=5.0):
    """The bytes stored at `key` (None if absent), over a fresh connection."""
    client = pytyrant.Tyrant.open('127.0.0.1', port)
    client.sock.settimeout(timeout)
    try:
        return client.get(key)
    except pytyrant.TyrantError:
        return None
    finally:
        client.sock.close()


def raw_put(port, key, value, timeout=30.0):
    """Store `value` at `key` as another program would."""
    client = pytyrant.Tyrant.open('127.0.0.1', port)
    client.sock.settimeout(timeout)
    try:
        client.put(key, value)
    finally:
        client.sock.close()


def raw_keys(port, prefix, timeout=5.0):
    client = pytyrant.Tyrant.open('127.0.0.1', port)
    client.sock.settimeout(timeout)
    try:
        return client.fwmkeys(prefix, 1 << 30)
    finally:
        client.sock.close()


# ---------------------------------------------------------------------- HTTP

def sign_cookie_value(secret, value):
    """What Beaker's SignedCookie sends: HMAC-SHA1 hex of `value`, then
    `value` itself."""
    return hmac.new(secret, value, hashlib.sha1).hexdigest() + value




class Response(object):
    def __init__(self, status, body, headers, seconds, error=None, cookies=()):
        self.status, self.body, self.headers = status, body, headers
        self.seconds, self.error = seconds, error
        self.cookies = list(cookies)     # each Set-Cookie header on its own

    def header(self, name):
        return dict(self.headers).get(name.lower())

    def value(self, element_id):
        return page_value(self.body, element_id)

    @property
    def visits(self):
        text = self.value('visits')
        return int(text) if text is not None else None


def http_request(port, method, path, headers=None, body=None, timeout=30.0):
    """One request on a fresh connection.  Never raises for socket
    trouble: `status` is None and `error` names what went wrong."""
    started = time.time()
    conn = httplib.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or []):
            conn.putheader(name, value)
        if body is not None:
            conn.putheader('Content-Type', 'application/x-www-form-urlencoded')
            conn.putheader('Content-Length', str(len(body)))
        conn.endheaders(body)
        reply = conn.getresponse()
        data = reply.read()
        return Response(reply.status, data, reply.getheaders(),
                        time.time() - started,
                        cookies=reply.msg.getheaders('set-cookie'))
    except (socket.error, httplib.HTTPException) as exc:
        return Response(None, '', [], time.time() - started,
                        '%s: %s' % (type(exc).__name__, exc))
    finally:
        conn.close()




class SessionClient(object):
    """A browser with one cookie: the project's session cookie.  It sends
    the sample's forms as a browser does, with the CSRF token of the last
    page it loaded."""

    def __init__(self, port, cookie_name, timeout=30.0):
        self.port, self.cookie_name, self.timeout = port, cookie_name, timeout
        self.cookie = None          # the value as the server set it
        self.token = None           # the forms' CSRF token, from the last page

    def _remember(self, response):
        for header in response.cookies:
            name, _, rest = header.partition('=')
            if name.strip() != self.cookie_name:
                continue
            value, _, attributes = rest.partition(';')
            if not value or 'max-age=0' in attributes.lower():
                self.cookie = None
            else:
                self.cookie = value

    def request(self, method, path, form=None):
        headers = []
        if self.cookie is not None:
            headers.append(('Cookie', '%s=%s' % (self.cookie_name, self.cookie)))
        body = urllib.urlencode(form) if form is not None else None
        response = http_request(self.port, method, path, headers, body, self.timeout)
        self._remember(response)
        token = form_token(response.body or '')
        if token:
            self.token = token
        return response

    def get(self, path='/session'):
        return self.request('GET', path)

    def post(self, path, **form):
        if self.token is None:
            self.get()                          # a page of the site: its forms' token
        form.setdefault('_authentication_token', self.token)
        return self.request('POST', path, form)

    def check_alive(self):
        """GET /session twice: the counter goes up by one (asserts)."""
        first = self.get()
        assert first.status == 200, (first.status, first.error, first.body[:300])
        second = self.get()
        assert second.status == 200, (second.status, second.error, second.body[:300])
        assert second.visits == first.visits + 1, (first.visits, second.visits)
        return second


# ---------------------------------------------------------------------- load

class Visitor(object):
    """One client thread's session and everything it saw: per request
    (start, end, status, visits shown or None, connection error or None)."""

    def __init__(self, index, port, cookie_name):
        self.index = index
        self.client = SessionClient(port, cookie_name)
        self.log = []
        self.record_key = None
        self.resets = 0             # fresh sessions handed out (400 pages)

    def visit(self):
        started = time.time()
        response = self.client.get()
        visits = response.visits if response.status == 200 else None
        if response.status == 200 and self.record_key is None:
            self.record_key = response.value('record-key')
        self.log.append((started, time.time(), response.status, visits, response.error))
        return response

    @property
    def ok(self):
        return sum(1 for entry in self.log if entry[2] == 200)

    @property
    def failed(self):
        return sum(1 for entry in self.log if entry[2] != 200)

    def last_visits_before(self, moment):
        """The counter of the last 200 page answered before `moment`."""
        seen = [entry[3] for entry in self.log if entry[2] == 200 and entry[1] < moment]
        return seen[-1] if seen else None


class Load(object):
    """`count` visitors, each in its own thread, loop GET /session until
    stopped."""

    def __init__(self, port, cookie_name, count, pause=0.0):
        import threading
        self.visitors = [Visitor(index, port, cookie_name) for index in range(count)]
        self.pause = pause
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(visitor,),
                                         name='visitor-%d' % visitor.index)
                        for visitor in self.visitors]
        for thread in self.threads:
            thread.daemon = True

    def _run(self, visitor):
        while not self.stopping.is_set():
            visitor.visit()
            if self.pause:
                self.stopping.wait(self.pause)

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self.threads)

    def entries(self):
        return [entry for visitor in self.visitors for entry in visitor.log]


def raw_http(port, request, timeout=30.0):
    """Send `request` (bytes, exactly as given) and read one response:
    for headers that httplib would refuse or rewrite."""
    started = time.time()
    sock = socket.create_connection(('127.0.0.1', port), timeout)
    try:
        sock.sendall(request)
        reply = httplib.HTTPResponse(sock)
        reply.begin()
        body = reply.read()
        return Response(reply.status, body, reply.getheaders(), time.time() - started,
                        cookies=reply.msg.getheaders('set-cookie'))
    except (socket.error, httplib.HTTPException) as exc:
        return Response(None, '', [], time.time() - started,
                        '%s: %s' % (type(exc).__name__, exc))
    finally:
        sock.close()
