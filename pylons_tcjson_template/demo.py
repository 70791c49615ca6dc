"""tcjson-demo: generate, install and run a demo application.

    tcjson-demo                 # ./demo, http://127.0.0.1:5000/
    tcjson-demo --dir /tmp/d --port 8080 --tyrant-port 19780

1. ``paster create -t pylons_tcjson`` makes the project TcjsonDemo in the
   directory (default ./demo); an existing directory is reused, with the
   ports of its development.ini unless --port or --tyrant-port name others,
   which are then written into it (the sessions stay in its
   data/tyrant/sessions.tch whatever the port).
2. ``python setup.py develop --no-deps`` installs it into this Python's
   environment unless it is installed from that directory already
   (``--no-install`` skips this; the children then find the project
   through PYTHONPATH).
3. ``paster tyrant development.ini`` starts a Tokyo Tyrant server (ttserver
   if on PATH, else tcjson-tyrant, from this package) on the INI's
   beaker.session.url with the project's lib/tcjson.lua, records in
   ``data/tyrant/sessions.tch``.
4. ``paster serve development.ini`` serves the application (Paste's
   threaded HTTP server).  The URL is printed; Ctrl-C stops both.
"""
from __future__ import print_function

import ConfigParser
import optparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .devtyrant.launcher import end_process, wait_for_port

PROJECT = 'TcjsonDemo'


def _paster():
    """The paster script next to this Python (the venv's)."""
    candidate = os.path.join(os.path.dirname(os.path.abspath(sys.executable)),
                             'paster')
    return [sys.executable, candidate] if os.path.isfile(candidate) else \
        [sys.executable, '-c', 'from paste.script.command import run; run()']


def _listening(host, port):
    return wait_for_port(host, port, 0.3)


def generate(target, http_port, tyrant_port, out=sys.stdout):
    """Create the project in `target` (which must not exist yet)."""
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    scratch = tempfile.mkdtemp(prefix='.tcjson-demo-', dir=parent)
    try:
        command = _paster() + [
            'create', '-t', 'pylons_tcjson', '--no-interactive',
            '-o', scratch, PROJECT,
            'tyrant_url=127.0.0.1:%d' % tyrant_port,
            'http_port=%d' % http_port,
            'description=Demo of Beaker sessions as JSON in Tokyo Tyrant']
        print('Generating %s in %s' % (PROJECT, target), file=out)
        output = subprocess.check_output(command, stderr=subprocess.STDOUT)
        if not os.path.isfile(os.path.join(scratch, PROJECT, 'setup.py')):
            raise SystemExit('paster create failed:\n%s' % output)
        os.rename(os.path.join(scratch, PROJECT), target)
    except subprocess.CalledProcessError as exc:
        raise SystemExit('paster create failed:\n%s' % exc.output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def installed_from(target):
    """True if PROJECT is installed (develop mode) from `target`."""
    probe = ('import pkg_resources, sys\n'
             'try:\n'
             '    print(pkg_resources.get_distribution(%r).location)\n'
             'except pkg_resources.DistributionNotFound:\n'
             '    pass\n' % PROJECT)
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    location = subprocess.check_output([sys.executable, '-c', probe],
                                       cwd=tempfile.gettempdir(), env=env)
    location = location.strip()
    return bool(location) and os.path.realpath(location) == os.path.realpath(target)


def install(target, out=sys.stdout):
    print('Installing %s in development mode (setup.py develop)' % PROJECT,
          file=out)
    process = subprocess.Popen([sys.executable, 'setup.py', 'develop', '--no-deps'],
                               cwd=target, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    output = process.communicate()[0]
    if process.returncode:
        raise SystemExit('setup.py develop failed:\n%s' % output)


def _set_ini_value(path, section, option, value):
    """Rewrite the `option = value` line of [section], keeping the rest of
    the file (comments included) as it is."""
    lines = open(path).read().splitlines(True)
    current = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith('[') and stripped.endswith(']'):
            current = stripped[1:-1]
        elif current == section and not stripped.startswith('#') \
                and stripped.split('=', 1)[0].strip() == option:
            lines[index] = '%s = %s\n' % (option, value)
            with open(path, 'w') as out:
                out.write(''.join(lines))
            return
    raise SystemExit('%s has no %s in [%s]' % (path, option, section))


def use_ports(target, http_port, tyrant_port, out=sys.stdout):
    """Write the ports asked for (None: keep) into an existing demo's
    development.ini, saying what changed."""
    ini = os.path.join(target, 'development.ini')
    _, old_http, tyrant_host, old_tyrant = read_addresses(target)
    if http_port is not None and http_port != old_http:
        _set_ini_value(ini, 'server:main', 'port', str(http_port))
        print('HTTP port %d (development.ini said %d: updated)' % (http_port, old_http),
              file=out)
    if tyrant_port is not None and tyrant_port != old_tyrant:
        _set_ini_value(ini, 'app:main', 'beaker.session.url',
                       '%s:%d' % (tyrant_host, tyrant_port))
        print('Tyrant port %d (development.ini said %d: updated)'
              % (tyrant_port, old_tyrant), file=out)


def read_addresses(target):
    """(http host, http port, tyrant host, tyrant port) from development.ini."""
    parser = ConfigParser.RawConfigParser()
    parser.read(os.path.join(target, 'development.ini'))
    http_host = parser.get('server:main', 'host')
    http_port = int(parser.get('server:main', 'port'))
    url = parser.get('app:main', 'beaker.session.url')
    tyrant_host, _, tyrant_port = url.rpartition(':')
    if not tyrant_port.isdigit() or '|' in url or ';' in url:
        raise SystemExit('%s: beaker.session.url = %s is not the one server the '
                         'demo starts; use --dir with a new directory' % (target, url))
    return http_host, http_port, tyrant_host, int(tyrant_port)


def _stop(process, name, out):
    if process is None or process.poll() is not None:
        return
    print('Stopping %s (pid %d)' % (name, process.pid), file=out)
    end_process(process, signal.SIGTERM)


DEFAULT_HTTP_PORT, DEFAULT_TYRANT_PORT = 5000, 1978


def run(target, install_project=True, http_port=None, tyrant_port=None,
        out=sys.stdout, ready=None):
    """Generate (if needed), install (if needed) and serve; blocks until
    Ctrl-C or SIGTERM.  `ready(url)` is called once the site answers.
    Ports None: a new demo's defaults, an existing demo's own."""
    target = os.path.abspath(target)
    if os.path.exists(os.path.join(target, 'development.ini')):
        print('Reusing %s' % target, file=out)
        use_ports(target, http_port, tyrant_port, out)
    elif os.path.exists(target) and os.listdir(target):
        raise SystemExit('%s exists but holds no generated project; choose '
                         'another --dir' % target)
    else:
        if os.path.isdir(target):
            os.rmdir(target)
        generate(target, http_port or DEFAULT_HTTP_PORT,
                 tyrant_port or DEFAULT_TYRANT_PORT, out)
    env = dict(os.environ)
    if install_project:
        if not installed_from(target):
            install(target, out)
    else:
        # Not installed: the project directory on sys.path (it holds the
        # .egg-info) lets paster find the application and its commands.
        env['PYTHONPATH'] = os.pathsep.join(
            [target] + [p for p in [env.get('PYTHONPATH')] if p])

    http_host, http_port, tyrant_host, tyrant_port = read_addresses(target)
    if _listening(http_host, http_port):
        raise SystemExit('Port %d is in use: stop what runs there, or give '
                         'another --port' % http_port)
    tyrant = server = None
    stop_signals = {}

    def terminate(signum, frame):
        raise KeyboardInterrupt()
    for signum in (signal.SIGINT, signal.SIGTERM):
        stop_signals[signum] = signal.signal(signum, terminate)
    try:
        if _listening(tyrant_host, tyrant_port):
            print('A Tyrant server already listens on %s:%d; using it'
                  % (tyrant_host, tyrant_port), file=out)
        else:
            tyrant = subprocess.Popen(_paster() + ['tyrant', 'development.ini'],
                                      cwd=target, env=env)
            if not wait_for_port(tyrant_host, tyrant_port, 30, tyrant):
                raise SystemExit('paster tyrant did not start on %s:%d'
                                 % (tyrant_host, tyrant_port))
        server = subprocess.Popen(_paster() + ['serve', 'development.ini'],
                                  cwd=target, env=env)
        if not wait_for_port(http_host, http_port, 60, server):
            raise SystemExit('paster serve did not start on %s:%d'
                             % (http_host, http_port))
        url = 'http://%s:%d/' % (http_host, http_port)
        print('\n  The demo runs at %s  (session sample: %ssession)\n'
              '  Project: %s.  Ctrl-C stops it.\n' % (url, url, target),
              file=out)
        out.flush()
        if ready is not None:
            ready(url)
        while True:
            if server.poll() is not None:
                raise SystemExit('paster serve exited (status %s)'
                                 % server.returncode)
            if tyrant is not None and tyrant.poll() is not None:
                raise SystemExit('paster tyrant exited (status %s)'
                                 % tyrant.returncode)
            time.sleep(0.3)
    except KeyboardInterrupt:
        print('', file=out)
    finally:
        _stop(server, 'paster serve', out)
        _stop(tyrant, 'paster tyrant', out)
        for signum, handler in stop_signals.items():
            signal.signal(signum, handler)
    return 0


def main(argv=None):
    parser = optparse.OptionParser(
        usage='%prog [--dir DIR] [--port N] [--tyrant-port N] [--no-install]',
        description='Generate a Pylons demo application from the '
                    'pylons_tcjson template, start a Tokyo Tyrant server '
                    'for its sessions and serve it.  Ctrl-C stops both.')
    parser.add_option('--dir', default='demo',
                      help='project directory, reused if it exists (default ./demo)')
    parser.add_option('--port', type='int',
                      help='HTTP port (default: 5000, or the existing demo\'s)')
    parser.add_option('--tyrant-port', type='int',
                      help='Tyrant port (default: 1978, or the existing demo\'s)')
    parser.add_option('--no-install', action='store_true',
                      help='do not install the project into this environment')
    options, args = parser.parse_args(argv)
    if args:
        parser.error('unexpected arguments: %s' % ' '.join(args))
    return run(options.dir, not options.no_install, options.port,
               options.tyrant_port)


if __name__ == '__main__':
    sys.exit(main())
