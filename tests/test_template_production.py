"""A generated project as production runs it: the production.ini that
`paster make-config` writes, served by `paster serve` (waitress) with debug
off, behind a proxy on 127.0.0.1 (here: the test itself).

What must not leak there: session ids and session contents into error
mails and logs (WebError reports the whole request of every 500), and the
Tyrant address, socket errors and development commands onto the 503 page.
"""
import asyncore
import httplib
import os
import re
import smtpd
import ssl
import subprocess
import sys
import threading
from distutils.spawn import find_executable

import pytest

from pylons_tcjson_template.devtyrant.launcher import (TyrantProcess, end_process, free_port,
                                                       wait_for_port)
from test_template_support import (PASTER, Served, generate, project_env, run,
                                   set_ini_value)

SECRET = 'CARD-4111-1111-1111-1111'
HOST = 'prod.example.test'            # production_hosts: the site's name
BUG = 'a bug in a controller'

# A controller of the project's own, with a bug: it loads the session (as
# nearly every page does) and fails.
BOOM_CONTROLLER = '''
from pylons import request, session
from prodapp.lib.base import BaseController


class BoomController(BaseController):

    def where(self):
        return '%%s %%s %%s' %% (request.scheme, request.remote_addr, request.host)

    def store(self):
        session['card'] = %r
        session.save()
        return 'stored'

    def fail(self):
        session.get('card')
        raise RuntimeError(%r)
''' % (SECRET, BUG)


class MailCatcher(smtpd.SMTPServer):
    """An SMTP server on a free port that keeps what it receives, or, with
    `refuse` set, refuses every mail."""

    def __init__(self):
        self.port = free_port()
        smtpd.SMTPServer.__init__(self, ('127.0.0.1', self.port), None)
        self.mails = []
        self.refuse = False
        self.running = True
        self.thread = threading.Thread(target=self._serve)
        self.thread.daemon = True
        self.thread.start()

    def _serve(self):
        while self.running:
            asyncore.loop(timeout=0.05, count=1)

    def process_message(self, peer, mailfrom, rcpttos, data):
        if self.refuse:
            return '554 refused for the test'
        self.mails.append(data)
        return None

    def stop(self):
        self.running = False
        self.thread.join(5)
        self.close()


@pytest.fixture(scope='module')
def production(tmpdir_factory):
    """(project dir, env, production.ini path, Tyrant server)."""
    base = tmpdir_factory.mktemp('production')
    tyrant = TyrantProcess('*').start()
    try:
        project = generate(base, 'ProdApp', 'tyrant_url=%s' % tyrant.url,
                           'production_hosts=%s' % HOST)
        env = project_env(project)
        code, output = run([sys.executable, PASTER, 'make-config', 'ProdApp',
                            'production.ini'], project, env)
        assert code == 0, output
        with open(os.path.join(project, 'prodapp', 'controllers', 'boom.py'), 'w') as out:
            out.write(BOOM_CONTROLLER)
        yield project, env, os.path.join(project, 'production.ini'), tyrant
    finally:
        tyrant.stop()


def serve(project, env, ini, log):
    port = free_port()
    set_ini_value(ini, 'server:main', 'host', '127.0.0.1')
    set_ini_value(ini, 'server:main', 'port', str(port))
    return Served(project, env, ini=os.path.basename(ini), port=port, log=log)


def request(port, path, cookie=None, method='GET', headers=None):
    """(status, body, response) of a request for HOST.  The production
    cookie is Secure, which a cookie jar would not send over plain HTTP:
    sent by hand."""
    connection = httplib.HTTPConnection('127.0.0.1', port, timeout=15)
    headers = dict(headers or {}, Host=HOST)
    if cookie:
        headers['Cookie'] = cookie
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


def get(port, path, cookie=None):
    """(status, body, Set-Cookie) of a GET."""
    status, body, response = request(port, path, cookie)
    return status, body, response.getheader('Set-Cookie')


def test_production_config_mails_no_placeholder_address(production):
    text = open(production[2]).read()
    assert not re.search(r'^\s*email_to\s*=', text, re.M)
    assert re.search(r'^debug = false$', text, re.M)


def test_a_500_reports_neither_the_cookie_nor_the_session(production, tmpdir):
    project, env, ini, _ = production
    catcher = MailCatcher()
    text = open(ini).read()
    # Error mail switched on, to our catcher.
    text = re.sub(r'^#email_to = .*$', 'email_to = ops@example.test', text, flags=re.M)
    open(ini, 'w').write(text)
    set_ini_value(ini, 'DEFAULT', 'smtp_server', '127.0.0.1:%d' % catcher.port)
    log = str(tmpdir.join('serve.log'))
    try:
        with serve(project, env, ini, log) as served:
            status, body, set_cookie = get(served.port, '/boom/store')
            assert status == 200 and 'secure' in set_cookie.lower(), (status, body)
            cookie = set_cookie.split(';')[0]
            session_id = cookie.split('=', 1)[1]

            # Mail works: the report goes by mail.
            status, body, _ = get(served.port, '/boom/fail', cookie)
            assert status == 500
            assert BUG not in body and SECRET not in body
            assert len(catcher.mails) == 1
            mail = catcher.mails[0]
            assert BUG in mail                          # it is the report
            assert 'HTTP_COOKIE' in mail and 'hidden from error reports' in mail
            assert session_id not in mail and SECRET not in mail

            # Mail fails: WebError writes the whole report to stderr.
            catcher.refuse = True
            status, body, _ = get(served.port, '/boom/fail', cookie)
            assert status == 500
            # The session itself is fine: the failing page changed nothing.
            assert get(served.port, '/boom/store', cookie)[0] == 200
        logged = open(log).read()
        assert BUG in logged and 'HTTP_COOKIE' in logged, logged[-3000:]
        assert session_id not in logged and SECRET not in logged
    finally:
        catcher.stop()


def test_the_503_page_shows_no_internals(production, tmpdir):
    project, env, ini, tyrant = production
    log = str(tmpdir.join('serve.log'))
    with serve(project, env, ini, log) as served:
        tyrant.stop()
        try:
            status, body, _ = get(served.port, '/boom/store')    # uses the session
        finally:
            tyrant.start()
    assert status == 503, body
    assert 'Sessions are unavailable' in body
    port = tyrant.url.rsplit(':', 1)[1]
    for internal in (tyrant.url, port, 'paster', 'development.ini', 'Errno',
                     'refused'):
        assert internal not in body, internal
    assert tyrant.url in open(log).read()        # the log keeps the details


def test_the_front_page_shows_no_internals(production, tmpdir):
    """Review finding 13: with debug = false the front page names no Tyrant
    address, port or key prefix, and gives no development command."""
    project, env, ini, tyrant = production
    with serve(project, env, ini, str(tmpdir.join('serve.log'))) as served:
        status, body, _ = get(served.port, '/')
    assert status == 200 and 'application is running' in body, body
    port = tyrant.url.rsplit(':', 1)[1]
    for internal in (tyrant.url, port, 'prodapp:session:', 'paster tyrant',
                     'development.ini'):
        assert internal not in body, internal


def test_waitress_serves_no_sample_a_health_check_and_an_access_log(production, tmpdir):
    project, env, ini, tyrant = production
    log = str(tmpdir.join('serve.log'))
    with serve(project, env, ini, log) as served:
        status, body, response = request(served.port, '/boom/store')
        assert status == 200 and response.getheader('Server') == 'waitress'
        cookie = response.getheader('Set-Cookie').split(';')[0]
        session_id = cookie.split('=', 1)[1]
        # The teaching sample and its sign-in as anyone are not there.
        assert request(served.port, '/session', cookie)[0] == 404
        assert request(served.port, '/session/login', cookie, 'POST')[0] == 404
        status, body, _ = request(served.port, '/_health')
        assert (status, body) == (200, 'ok\nup %s\n' % tyrant.url)
        # The proxy's client address (X-Forwarded-For, trusted from
        # 127.0.0.1), with the session cookie along.
        status, _, _ = request(served.port, '/boom/store?from=proxy', cookie,
                               headers={'X-Forwarded-For': '203.0.113.9',
                                        'Referer': 'https://%s/boom' % HOST})
        assert status == 200
        # Another name: refused, and logged as such.
        connection = httplib.HTTPConnection('127.0.0.1', served.port, timeout=15)
        connection.request('GET', '/', headers={'Host': 'rebind.attacker.example'})
        assert connection.getresponse().status == 400
        connection.close()
    lines = open(log).read().splitlines()
    access = [line for line in lines if '"GET /boom/store?from=proxy HTTP/1.1" 200' in line]
    assert len(access) == 1, lines
    assert access[0].startswith('203.0.113.9 - - [')
    assert '"https://%s/boom"' % HOST in access[0]
    assert [line for line in lines if '"GET /_health HTTP/1.1" 200' in line]
    assert [line for line in lines if '"GET / HTTP/1.1" 400' in line]
    text = '\n'.join(lines)
    assert session_id not in text and 'prodapp=' not in text
    assert 'Cookie' not in text


# ---- behind deploy/nginx-site.conf, as the README installs it

NGINX = find_executable('nginx') or find_executable('nginx', '/usr/sbin:/sbin')
OPENSSL = find_executable('openssl')


def replace_once(text, old, new):
    assert text.count(old) == 1, 'the site no longer holds %r once' % old
    return text.replace(old, new)


class Nginx(object):
    """nginx in the foreground with `site` as its only site, its files in
    `where`: what /etc/nginx/nginx.conf would wrap around it."""

    CONF = """daemon off;
master_process off;
pid %(where)s/nginx.pid;
error_log %(where)s/error.log;
events { worker_connections 64; }
http {
    access_log %(where)s/access.log;
    client_body_temp_path %(where)s/body;
    proxy_temp_path %(where)s/proxy;
    fastcgi_temp_path %(where)s/fastcgi;
    uwsgi_temp_path %(where)s/uwsgi;
    scgi_temp_path %(where)s/scgi;
    include %(where)s/site.conf;
}
"""

    def __init__(self, where, site, port):
        self.where, self.port = str(where), port
        with open(os.path.join(self.where, 'site.conf'), 'w') as out:
            out.write(site)
        with open(os.path.join(self.where, 'nginx.conf'), 'w') as out:
            out.write(self.CONF % {'where': self.where})

    def __enter__(self):
        conf, log = os.path.join(self.where, 'nginx.conf'), os.path.join(self.where, 'error.log')
        self.process = subprocess.Popen([NGINX, '-p', self.where, '-c', conf, '-e', log],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if not wait_for_port('127.0.0.1', self.port, 15, self.process):
            end_process(self.process)
            raise AssertionError('nginx did not start: %s %s' % (
                self.process.stdout.read(), open(log).read() if os.path.exists(log) else ''))
        return self

    def __exit__(self, *exc_info):
        end_process(self.process)


def over_https(port, path, host=HOST, headers=None):
    """(status, body, response) of a GET through nginx's TLS port (its
    certificate is the test's own, so it is not verified)."""
    connection = httplib.HTTPSConnection('127.0.0.1', port, timeout=15,
                                         context=ssl._create_unverified_context())
    try:
        connection.request('GET', path, headers=dict(headers or {}, Host=host))
        response = connection.getresponse()
        return response.status, response.read(), response
    finally:
        connection.close()


@pytest.mark.skipif(not (NGINX and OPENSSL),
                    reason='needs nginx and openssl (./setup.sh --all installs nginx)')
def test_behind_the_generated_nginx_site(production, tmpdir):
    """deploy/nginx-site.conf with only what its comment says to replace
    (the name, the certificate) and the test's ports: HTTP goes to HTTPS,
    HTTPS reaches waitress, which sees the scheme, the client's address
    (never one the client wrote) and the name; other names are refused by
    the application; /_health answers the local monitor."""
    project, env, ini, tyrant = production
    with open(os.path.join(project, 'deploy', 'nginx-site.conf')) as site_file:
        site = site_file.read()
    key, cert = str(tmpdir.join('key.pem')), str(tmpdir.join('cert.pem'))
    subprocess.check_call([OPENSSL, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                           '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=' + HOST],
                          stdout=open(os.devnull, 'w'), stderr=subprocess.STDOUT)
    http_port, https_port = free_port(), free_port()
    log = str(tmpdir.join('serve.log'))
    with serve(project, env, ini, log) as served:
        site = site.replace('www.example.com', HOST)
        site = replace_once(site, 'listen 80;', 'listen 127.0.0.1:%d;' % http_port)
        site = replace_once(site, 'listen 443 ssl;', 'listen 127.0.0.1:%d ssl;' % https_port)
        site = replace_once(site, '/etc/letsencrypt/live/%s/fullchain.pem' % HOST, cert)
        site = replace_once(site, '/etc/letsencrypt/live/%s/privkey.pem' % HOST, key)
        upstream = re.search(r'proxy_pass http://127\.0\.0\.1:(\d+);', site).group(0)
        site = site.replace(upstream, 'proxy_pass http://127.0.0.1:%d;' % served.port)
        with Nginx(tmpdir.mkdir('nginx'), site, https_port):
            connection = httplib.HTTPConnection('127.0.0.1', http_port, timeout=15)
            connection.request('GET', '/boom/where?x=1', headers={'Host': HOST})
            response = connection.getresponse()
            assert response.status == 301
            assert response.getheader('Location') == 'https://%s/boom/where?x=1' % HOST
            connection.close()

            status, body, response = over_https(https_port, '/boom/store')
            assert status == 200 and body == 'stored'
            assert 'secure' in response.getheader('Set-Cookie').lower()
            status, body, _ = over_https(https_port, '/boom/where',
                                         headers={'X-Forwarded-For': '203.0.113.9'})
            assert (status, body) == (200, 'https 127.0.0.1 %s' % HOST)
            status, body, _ = over_https(https_port, '/_health')
            assert (status, body) == (200, 'ok\nup %s\n' % tyrant.url)
            assert over_https(https_port, '/', host='rebind.attacker.example')[0] == 400
    access = [line for line in open(log).read().splitlines()
              if '"GET /boom/where HTTP/1.0" 200' in line or '"GET /boom/where HTTP/1.1" 200' in line]
    assert len(access) == 1 and access[0].startswith('127.0.0.1 - - ['), access
