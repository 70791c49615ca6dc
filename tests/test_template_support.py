"""Helpers for the template tests: generate, install privately, serve.

Generated projects are never installed into the shared venv: ``setup.py
develop`` goes to a throwaway directory under the test's tmpdir, and the
children run with PYTHONPATH=<project dir>, which is what a develop install
amounts to (the directory holds the .egg-info that pkg_resources and
paster look for).  So parallel runs cannot disturb each other or the venv.
"""
import os
import re
import select
import signal
import subprocess
import sys
import time
from HTMLParser import HTMLParser

from pylons_tcjson_template.devtyrant import launcher
from pylons_tcjson_template.devtyrant.launcher import end_process

BIN = os.path.dirname(os.path.abspath(sys.executable))
PASTER = os.path.join(BIN, 'paster')
NOSETESTS = os.path.join(BIN, 'nosetests')


def run(command, cwd, env=None, timeout=300):
    """Run a command; (returncode, combined output).  A command still
    running (or still holding its output open) after `timeout` seconds is
    killed, and its output ends with a line saying so."""
    process = subprocess.Popen(command, cwd=str(cwd), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    output = []
    # communicate() has no timeout on Python 2, and a read blocks until
    # EOF: wait for output with select, read what is there, until EOF.
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            process.kill()
            process.wait()
            output.append(b'\n[killed after %ds]' % timeout)
            break
        if select.select([process.stdout], [], [], min(remaining, 1.0))[0]:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output.append(chunk)
    process.stdout.close()
    return process.wait(), b''.join(output).decode('utf-8', 'replace')


def paster_create(parent, project='MyApp', *variables):
    """`paster create -t pylons_tcjson --no-interactive` in `parent`."""
    return run([sys.executable, PASTER, 'create', '-t', 'pylons_tcjson',
                '--no-interactive', project] + list(variables), parent)


def generate(parent, project='MyApp', *variables):
    """Generate a project; returns its directory (asserts success)."""
    code, output = paster_create(parent, project, *variables)
    assert code == 0, output
    directory = os.path.join(str(parent), project)
    assert os.path.isfile(os.path.join(directory, 'setup.py')), output
    return directory


def project_env(project_dir, **extra):
    """Environment in which the project counts as installed."""
    env = dict(os.environ)
    env['PYTHONPATH'] = str(project_dir)
    env.pop('PYTHONHOME', None)
    env.update(extra)
    return env


def develop_install(project_dir, scratch):
    """`setup.py develop` into a private directory, proving the project
    installs; returns the environment to run it in."""
    site = os.path.join(str(scratch), 'site')
    scripts = os.path.join(str(scratch), 'bin')
    for path in (site, scripts):
        if not os.path.isdir(path):
            os.makedirs(path)
    env = project_env(project_dir)
    env['PYTHONPATH'] = site            # setuptools insists on it
    code, output = run([sys.executable, 'setup.py', 'develop', '--no-deps',
                        '--install-dir', site, '--script-dir', scripts],
                       project_dir, env)
    assert code == 0, output
    assert os.path.isfile(os.path.join(site, os.path.basename(
        str(project_dir)) + '.egg-link')), output
    return project_env(project_dir)


def wait_for_port(port, process=None, timeout=60):
    """Whether 127.0.0.1:port accepts connections within `timeout`."""
    return launcher.wait_for_port('127.0.0.1', port, timeout, process)


class Served(object):
    """`paster serve INI` of a generated project, as a child process."""

    def __init__(self, project_dir, env, ini='development.ini', port=None,
                 log=None):
        self.project_dir = str(project_dir)
        self.env = env
        self.ini = ini
        self.port = port
        self.log = log
        self.process = None

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def start(self):
        out = open(self.log, 'ab') if self.log else open(os.devnull, 'wb')
        self.process = subprocess.Popen(
            [sys.executable, PASTER, 'serve', self.ini], cwd=self.project_dir,
            env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        if not wait_for_port(self.port, self.process):
            self.stop()
            raise AssertionError('paster serve did not start; log: %s'
                                 % (open(self.log).read() if self.log else '-'))
        return self

    def stop(self):
        if self.process is not None:
            end_process(self.process, signal.SIGTERM)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def set_ini_value(path, section, option, value):
    """Rewrite one `option = value` line inside [section] of an INI file."""
    lines = open(path).read().splitlines(True)
    current, done = None, False
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith('[') and stripped.endswith(']'):
            current = stripped[1:-1]
        elif current == section and stripped.split('=', 1)[0].strip() == option \
                and not stripped.startswith('#'):
            lines[index] = '%s = %s\n' % (option, value)
            done = True
    assert done, (path, section, option)
    open(path, 'w').write(''.join(lines))


# ---------------------------------------------------------- reading pages

CSRF_FIELD = '_authentication_token'      # the sample's forms carry it (lib/csrf.py)
_unescape = HTMLParser().unescape


def page_value(page, element_id):
    """The text of the element with this id in a page of the sample."""
    match = re.search(r'id="%s"[^>]*>([^<]*)<' % element_id, page)
    return _unescape(match.group(1).decode('utf-8')) if match else None


def form_token(page):
    """The CSRF token in the forms of a page of the sample."""
    match = re.search(r'<input name="%s" type="hidden" value="([^"]*)"' % CSRF_FIELD, page)
    return match.group(1) if match else None
