"""A generated project installed as its README says, into a virtualenv of
its own, with nothing from this repository but an sdist of the template
package for the dev extra; then run as its systemd units run it.

The one slow test of the suite (a new virtualenv, pip from its cache).
"""
import httplib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from pylons_tcjson_template.devtyrant.launcher import (TyrantProcess, end_process, free_port,
                                                       wait_for_port)
from test_template_support import generate, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = 'www.example.com'          # the README's make-config names it
MAKE_CONFIG = '.venv/bin/paster make-config FreshApp production.ini allowed_hosts="%s"' % HOST


def clean_env(**extra):
    """The environment of a user's shell: no PYTHONPATH or virtualenv of
    this repository's, and no apt (the test must not install packages)."""
    env = dict((name, value) for name, value in os.environ.items()
               if name not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV'))
    env['PATH'] = os.pathsep.join(p for p in env.get('PATH', '').split(os.pathsep)
                                  if not p.startswith(ROOT))
    env['SKIP_APT'] = '1'
    env.update(extra)
    return env


def shell(command, cwd, env, timeout=300):
    code, output = run(['bash', '-c', command], cwd, env, timeout)
    assert code == 0, '%s\n%s' % (command, output)
    return output


def unit(project, name):
    """(ExecStart, WorkingDirectory) of a generated unit, /srv/freshapp
    being this project's directory."""
    text = open(os.path.join(project, 'deploy', name)).read()
    text = text.replace('/srv/freshapp', project)
    start = re.search(r'^ExecStart=(.*?)(?<!\\)$', text, re.M | re.S).group(1)
    workdir = re.search(r'^WorkingDirectory=(.*)$', text, re.M).group(1)
    return start.replace('\\\n', ' '), workdir


def request(port, path, cookie=None):
    connection = httplib.HTTPConnection('127.0.0.1', port, timeout=15)
    headers = {'Host': HOST}
    if cookie:
        headers['Cookie'] = cookie
    try:
        connection.request('GET', path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader('Set-Cookie')
    finally:
        connection.close()


@pytest.fixture
def tyrant():
    with TyrantProcess('*') as server:
        yield server


@pytest.mark.timeout(480)
def test_install_serve_and_test_as_the_readme_says(tmpdir, tyrant):
    project = generate(tmpdir, 'FreshApp', 'tyrant_url=%s' % tyrant.url)
    readme = open(os.path.join(project, 'README.txt')).read()
    for command in ('./setup.sh', MAKE_CONFIG, 'PIP_FIND_LINKS=', './setup.sh --dev',
                    '.venv/bin/nosetests', '.venv/bin/paster tyrant development.ini'):
        assert command in readme, command
    # The project's own files, away from the directory paster wrote into.
    assert not os.path.exists(os.path.join(project, '.venv'))
    env = clean_env()

    # 1. The application alone: its files and its pins.
    output = shell('./setup.sh', project, env)
    assert 'FreshApp (development mode)' in output and 'installed' in output, output
    python = os.path.join(project, '.venv', 'bin', 'python')
    assert subprocess.call([python, '-c', 'import pylons_tcjson_template'], env=env, cwd=project,
                           stderr=open(os.devnull, 'w')) == 1      # no dev extra yet
    versions = subprocess.check_output([python, '-m', 'pip', 'freeze'], env=env)
    pinned = dict(line.split('==') for line in open(os.path.join(project, 'constraints.txt'))
                  .read().splitlines() if '==' in line and not line.startswith('#'))
    for line in versions.splitlines():
        if '==' in line:
            name, version = line.split('==')
            if name in pinned:
                assert pinned[name] == version, line
    assert 'PasteScript==3.2.1' in versions and 'Tempita==0.5.2' in versions
    shell(MAKE_CONFIG, project, env)
    production = os.path.join(project, 'production.ini')
    assert 'allowed_hosts = %s' % HOST in open(production).read()
    code, output = run(['.venv/bin/paster', 'tyrant', 'development.ini'], project, env)
    assert code != 0 and "pip install -c constraints.txt -e '.[dev]'" in output, output

    # 2. Served as deploy/freshapp.service serves it: waitress, production.ini.
    port = free_port()
    text = open(production).read()
    text = re.sub(r'(?m)^port = \d+$', 'port = %d' % port, text)
    text = re.sub(r'(?m)^beaker\.session\.url = .*$', 'beaker.session.url = %s' % tyrant.url,
                  text)
    open(production, 'w').write(text)
    os.mkdir(os.path.join(project, 'data'))
    start, workdir = unit(project, 'freshapp.service')
    assert start.split()[1:] == ['serve', 'production.ini'] and workdir == project
    log = str(tmpdir.join('waitress.log'))
    with open(log, 'wb') as out:
        server = subprocess.Popen(start.split(), cwd=workdir, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        assert wait_for_port('127.0.0.1', port, 60, server), open(log).read()
        status, body, set_cookie = request(port, '/_health')
        assert (status, body) == (200, 'ok\nup %s\n' % tyrant.url), body
        assert request(port, '/session')[0] == 404
        status, body, _ = request(port, '/')
        assert status == 200 and tyrant.url not in body
    finally:
        end_process(server, signal.SIGTERM)
    logged = open(log).read()
    # waitress's words (Paste's server says "serving on").
    assert re.search(r'^Serving on http://(localhost|127\.0\.0\.1):%d$' % port, logged,
                     re.M), logged
    assert '"GET /session HTTP/1.1" 404' in logged, logged
    assert '"GET /_health HTTP/1.1" 200' in logged and 'Cookie' not in logged

    # 3. The purge, as deploy/freshapp-purge.service (the timer) runs it:
    # nothing printed when all is well; the error when Tyrant is down.
    start, workdir = unit(project, 'freshapp-purge.service')
    assert '--quiet' in start
    code, output = run(start.split(), workdir, env)
    assert (code, output) == (0, ''), output
    tyrant.stop()
    try:
        code, output = run(start.split(), workdir, env)
    finally:
        tyrant.start()
    assert code != 0 and tyrant.url in output and 'cannot connect' in output, output

    # 4. The dev extra, from an sdist of this package, and the tests.
    dist = tmpdir.mkdir('dist')
    code, output = run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(dist)], ROOT)
    assert code == 0, output
    output = shell('PIP_FIND_LINKS=%s ./setup.sh --dev' % dist, project, env)
    assert 'with its dev extra' in output, output
    output = shell('.venv/bin/nosetests 2>&1', project, env)
    assert re.search(r'Ran \d+ tests', output) and '\nOK' in output, output
    port = free_port()
    text = open(os.path.join(project, 'development.ini')).read()
    text = re.sub(r'(?m)^beaker\.session\.url = .*$',
                  'beaker.session.url = 127.0.0.1:%d' % port, text)
    open(os.path.join(project, 'development.ini'), 'w').write(text)
    log = str(tmpdir.join('paster-tyrant.log'))
    with open(log, 'wb') as out:
        process = subprocess.Popen(['.venv/bin/paster', 'tyrant', 'development.ini'],
                                   cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_for_port('127.0.0.1', port, 30, process), open(log).read()
        deadline = time.time() + 30        # Ctrl-C once it says Ctrl-C stops it
        while 'Ctrl-C stops it' not in open(log).read() and time.time() < deadline:
            time.sleep(0.1)
    finally:
        assert end_process(process, signal.SIGINT, timeout=15) == 0, open(log).read()
    assert 'tcjson-tyrant (pid' in open(log).read() or 'ttserver (pid' in open(log).read()

    # 5. The units, as systemd reads them.  verify also wants each ExecStart
    # program to exist: the project's .venv stands for /srv/freshapp/.venv,
    # and ttserver (not installed here) for the tcjson-tyrant of the dev extra.
    verify_units(project, str(tmpdir.mkdir('units')))


SECTIONS = {'.service': ('Unit', 'Service'), '.timer': ('Unit', 'Timer', 'Install')}


def parse_unit(path):
    """{section: {key: [values]}} of a unit file, as systemd reads it:
    comments, continuation lines, repeated keys."""
    sections, current = {}, None
    text = open(path).read().replace('\\\n', ' ')
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in '#;':
            continue
        if line.startswith('['):
            assert line.endswith(']'), line
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and '=' in line, (path, line)
        key, value = line.split('=', 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def verify_units(project, directory):
    """systemd-analyze verify of the generated units where it exists (with
    this machine's paths), and their parsed directives in any case."""
    names = [name for name in os.listdir(os.path.join(project, 'deploy'))
             if name.endswith(('.service', '.timer'))]
    assert sorted(names) == ['freshapp-purge.service', 'freshapp-purge.timer',
                             'freshapp-tyrant.service', 'freshapp.service']
    for name in names:
        text = open(os.path.join(project, 'deploy', name)).read()
        text = text.replace('/srv/freshapp', project).replace(
            '/usr/local/bin/ttserver', os.path.join(project, '.venv', 'bin', 'tcjson-tyrant'))
        open(os.path.join(directory, name), 'w').write(text)
    paths = [os.path.join(directory, name) for name in sorted(names)]
    analyze = None
    for candidate in ('/usr/bin/systemd-analyze', '/bin/systemd-analyze'):
        if os.access(candidate, os.X_OK):
            code, output = run([candidate, 'verify'] + paths, directory)
            assert code == 0 and output.strip() == '', output
            analyze = candidate
    units = dict((name, parse_unit(path)) for name, path in zip(sorted(names), paths))
    for name, sections in units.items():
        for section in SECTIONS[os.path.splitext(name)[1]]:
            assert section in sections, (name, section)
    member = units['freshapp-tyrant.service']['Service']
    flags = member['ExecStart'][0].split()
    for flag in ('-ext', '-ulog', '-sid', '-mhost', '-mport', '-rts', '-mask'):
        assert flag in flags, flag
    assert flags[flags.index('-ext') + 1].endswith('/tcjson.lua')
    mask = open(os.path.join(project, 'deploy', 'freshapp-tyrant.default')).read()
    masked = re.search(r'^TT_MASK=(.*)$', mask, re.M).group(1).split(',')
    assert {'vanish', 'restore', 'copy', 'optimize', 'setmst', 'allhttp'} <= set(masked)
    assert 'repl' not in masked and 'ext' not in masked and 'all' not in masked
    timer = units['freshapp-purge.timer']['Timer']
    assert timer['OnCalendar'] == ['hourly'] and timer['Persistent'] == ['true']
    app = units['freshapp.service']['Service']
    assert app['User'] == ['freshapp'] and app['ExecStart'][0].endswith('serve production.ini')
    return analyze
