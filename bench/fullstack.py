"""Part 2: the full stack -- an app under ``paster serve`` driven by wrk.

`generated_app()` runs ``paster create -t pylons_tcjson`` into a temporary
directory (the real template, as a user would), and `Served` starts
``paster serve`` on an ini derived from the generated development.ini:
debug off, quiet logging, and either the template's ext:tcjson sessions
(user_sessions.UserSession, as the generated middleware.py chooses for
that type) or, for comparison, memory, ext:memcached or ext:redis, for
which the same middleware.py gives Beaker's own Session -- nothing else
differs, and the generated code is not changed.  Each runs
under development.ini's server (Paste's threaded HTTP server) and, in the
rows labelled "waitress:", under production.ini's (waitress, its
[server:main] section as the generated config/deployment.ini_tmpl has
it).  wrk replays one session cookie at 1 and at 16 connections, with
the bench's small session (a visit counter) and its large one (the ~18 KB
cart of inproc.py, then the visit counter); lost_updates.py sends 8
threads of concurrent writes to one session of each size.

`mini_app_ini()` is the additional, NOT equivalent, comparison: a Pylons-less
WSGI app (bench/mini_app.py) under the same paste HTTP server and the same
SessionMiddleware options.
"""
from __future__ import print_function

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    from urllib2 import Request, urlopen, HTTPError
except ImportError:                      # pragma: no cover (py3)
    from urllib.request import Request, urlopen
    from urllib.error import HTTPError

from pylons_tcjson_template.devtyrant.launcher import end_process, free_port, wait_for_port

import inproc
import lost_updates

HERE = os.path.dirname(os.path.abspath(__file__))
VISIT_PATH = '/benchvisit/index'
LARGE_PATH = '/benchvisit/large'      # the large session, then a visit
PATH_SIZES = {VISIT_PATH: 'small', LARGE_PATH: 'large'}
BIN = os.path.dirname(sys.executable)


class Unavailable(Exception):
    """This part cannot run here; the message says why."""


def _run(argv, cwd, env=None):
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = proc.communicate()[0].decode('utf-8', 'replace')
    if proc.returncode:
        raise Unavailable('%s failed (%d): %s' % (' '.join(argv),
                                                  proc.returncode, out[-800:]))
    return out


def generated_app(workdir, tyrant_url):
    """Create BenchApp from the pylons_tcjson template; return its dir."""
    try:
        import pylons_tcjson_template.template  # noqa: F401
    except Exception as exc:
        raise Unavailable('template not importable yet (%s)' % exc)
    paster = os.path.join(BIN, 'paster')
    _run([paster, 'create', '-t', 'pylons_tcjson', '--no-interactive',
          'BenchApp', 'tyrant_url=%s' % tyrant_url], cwd=workdir)
    appdir = os.path.join(workdir, 'BenchApp')
    _run([sys.executable, 'setup.py', '-q', 'egg_info'], cwd=appdir)
    with open(os.path.join(appdir, 'benchapp', 'controllers',
                           'benchvisit.py'), 'w') as out:
        out.write(VISIT_CONTROLLER % {'large': json.dumps(inproc.large_payload())})
    check_session_classes(os.path.join(appdir, 'benchapp', 'config', 'middleware.py'))
    return appdir


# Added to the generated project by the bench (reached through the
# template's generic /{controller}/{action} route): the visit counter alone,
# without the sample page's tcjson-only extras, so that the peers' sessions
# run the very same code; the same with the large session; bump and counts
# for lost_updates.py.
VISIT_CONTROLLER = """import json

from pylons import request, session

from benchapp.lib.base import BaseController

LARGE = json.loads(%(large)r)


class BenchvisitController(BaseController):

    def index(self):
        session['visits'] = session.get('visits', 0) + 1
        session.save()
        return 'visits: %%d' %% session['visits']

    def large(self):
        if 'cart' not in session:
            session.update(LARGE)
        return self.index()

    def bump(self):
        key = str(request.params['key'])
        session[key] = session.get(key, 0) + 1
        session.save()
        return str(session[key])

    def counts(self):
        return json.dumps(dict((key, value) for key, value in session.items()
                               if key.startswith('t') and key[1:].isdigit()))
"""

# What the bench relies on in the generated middleware.py: UserSession for
# ext:tcjson, Beaker's own Session for the types it compares.
SESSION_CLASSES = ('session_class=user_sessions.UserSession',
                   'app = SessionMiddleware(app, config)\n')


def check_session_classes(path):
    """Unavailable unless the generated middleware.py still chooses the
    session classes the bench compares (SESSION_CLASSES)."""
    text = open(path).read()
    missing = [code for code in SESSION_CLASSES if code not in text]
    if missing:
        raise Unavailable('%s no longer has %s; bench/fullstack.py must follow it'
                          % (path, ' and '.join(repr(code) for code in missing)))


WAITRESS = 'waitress: '


def production_server(appdir):
    """The [server:main] section of the generated production config
    (config/deployment.ini_tmpl): waitress and its settings."""
    text = open(os.path.join(appdir, 'benchapp', 'config', 'deployment.ini_tmpl')).read()
    match = re.search(r'(?ms)^\[server:main\]\n.*?(?=^\[)', text)
    if not match or 'egg:waitress#main' not in match.group(0):
        raise Unavailable('the generated deployment.ini_tmpl no longer serves with '
                          'waitress; bench/fullstack.py must follow it')
    return match.group(0)


def derive_ini(source, target, port, session_type, url=None, server=None):
    """Copy an ini with: debug off, WARN logging, port, session type, and
    `server` (a [server:main] section) in place of its own."""
    text = open(source).read()
    if server:
        text = re.sub(r'(?ms)^\[server:main\]\n.*?(?=^\[)', lambda m: server, text, 1)
    text = re.sub(r'(?m)^debug\s*=.*$', 'debug = false', text)
    text = re.sub(r'(?m)^#?\s*set debug\s*=.*$', 'set debug = false', text)
    text = re.sub(r'(?m)^port\s*=.*$', 'port = %d' % port, text)
    text = re.sub(r'(?m)^level\s*=\s*(DEBUG|INFO)\s*$', 'level = WARN', text)
    text = re.sub(r'(?m)^beaker\.session\.type\s*=.*$',
                  'beaker.session.type = %s' % session_type, text)
    if url:
        text = re.sub(r'(?m)^beaker\.session\.url\s*=.*$',
                      'beaker.session.url = %s' % url, text)
    with open(target, 'w') as out:
        out.write(text)
    return target


MINI_INI = """[server:main]
use = egg:Paste#http
host = 127.0.0.1
port = %(port)d

[app:main]
paste.app_factory = mini_app:make_app
session_type = %(session_type)s
session_url = %(url)s
"""


def mini_app_ini(workdir, port, session_type, url):
    path = os.path.join(workdir, 'mini-%s.ini' % session_type.replace(':', '_'))
    with open(path, 'w') as out:
        out.write(MINI_INI % {'port': port, 'session_type': session_type,
                              'url': url or ''})
    return path


class Served(object):
    """``paster serve INI`` as a child process."""

    def __init__(self, ini, port, pythonpath, log_path):
        self.ini, self.port = ini, port
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [p for p in pythonpath + [env.get('PYTHONPATH', '')] if p])
        self.log = open(log_path, 'wb')
        self.process = subprocess.Popen(
            [os.path.join(BIN, 'paster'), 'serve', ini],
            cwd=os.path.dirname(ini), env=env, stdout=self.log,
            stderr=subprocess.STDOUT, close_fds=True)
        if not wait_for_port('127.0.0.1', port, 30, self.process):
            self.stop()
            raise Unavailable('paster serve %s did not start; see %s'
                              % (ini, log_path))

    def stop(self):
        end_process(self.process)
        self.log.close()


def process_cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc."""
    try:
        with open('/proc/%d/stat' % pid) as stat:
            fields = stat.read().rsplit(')', 1)[1].split()
    except (IOError, OSError):
        return None
    ticks = float(os.sysconf('SC_CLK_TCK'))
    return (int(fields[11]) + int(fields[12])) / ticks


def session_cookie(url, cookie_name):
    """GET url once, return 'name=value' of the session cookie it sets."""
    try:
        response = urlopen(Request(url), timeout=10)
    except HTTPError as exc:
        raise Unavailable('GET %s: HTTP %s: %s' % (url, exc.code,
                                                   exc.read()[:300]))
    for header in response.info().getallmatchingheaders('set-cookie'):
        value = header.split(':', 1)[1].strip()
        if value.startswith(cookie_name + '='):
            return value.split(';', 1)[0]
    raise Unavailable('GET %s set no %s cookie' % (url, cookie_name))


def check_session_sticks(url, cookie):
    """Two GETs with the cookie: the page must change (a visit counter)."""
    bodies = []
    for _ in range(2):
        request = Request(url, headers={'Cookie': cookie})
        bodies.append(urlopen(request, timeout=10).read())
    return bodies[0] != bodies[1]


_UNITS = {'us': 1.0, 'ms': 1e3, 's': 1e6}


def _to_us(text):
    match = re.match(r'([\d.]+)(us|ms|s)$', text.strip())
    return float(match.group(1)) * _UNITS[match.group(2)] if match else None


WRK_SESSIONS = os.path.join(HERE, 'wrk_sessions.lua')


def wrk_missing():
    """Why wrk cannot run here, or None."""
    for directory in os.environ.get('PATH', '').split(os.pathsep):
        if os.access(os.path.join(directory, 'wrk'), os.X_OK):
            return None
    return 'wrk is not on PATH (./setup.sh --all installs it)'


def wrk(url, cookies, connections, seconds):
    """One wrk run; with one cookie every request carries it, with several
    wrk_sessions.lua spreads them over the connections."""
    threads = min(connections, 2)
    argv = ['wrk', '-t%d' % threads, '-c%d' % connections, '-d%ds' % seconds, '--latency']
    env = dict(os.environ)
    if len(cookies) == 1:
        argv += ['-H', 'Cookie: ' + cookies[0]]
    else:
        argv += ['-s', WRK_SESSIONS]
        env.update(BENCH_COOKIES='\n'.join(cookies), BENCH_THREADS=str(threads))
    # close_fds: wrk sizes each thread's event loop for its own connections
    # (10 + 3 per connection), so a socket numbered above that, as one
    # becomes when wrk inherits this process's descriptors, fails as a
    # "connect" error and the run gets no response at all.
    out = subprocess.check_output(argv + [url], env=env, close_fds=True).decode(
        'utf-8', 'replace')
    result = {'connections': connections, 'seconds': seconds, 'raw': out}
    match = re.search(r'Requests/sec:\s*([\d.]+)', out)
    result['rps'] = float(match.group(1)) if match else float('nan')
    for pct in ('50', '99'):
        match = re.search(r'^\s*%s(?:\.000)?%%\s+(\S+)' % pct, out, re.M)
        result['p%s_us' % pct] = _to_us(match.group(1)) if match else None
    match = re.search(r'Non-2xx or 3xx responses:\s*(\d+)', out)
    result['non2xx'] = int(match.group(1)) if match else 0
    match = re.search(r'Socket errors:.*', out)
    result['socket_errors'] = match.group(0) if match else ''
    match = re.search(r'(\d+) requests in', out)
    result['requests'] = int(match.group(1)) if match else 0
    return result


class Site(object):
    """One row label: a served ini, its URL and session cookie, and the
    Tyrant peer (`counter`) when its sessions live there."""

    def __init__(self, label, ini, port, path, cookie_name, pythonpath,
                 workdir, counter=None, warm_up=True, many_sessions=False):
        self.label, self.counter = label, counter
        self.cookie_name = cookie_name
        # Also measured with one session per connection (more than one).
        self.many_sessions = many_sessions
        self.base = 'http://127.0.0.1:%d' % port
        self.served = Served(ini, port, pythonpath, os.path.join(
            workdir, 'serve-%s.log' % re.sub(r'\W+', '_', label)))
        try:
            self.url = self.base + path
            self.cookies = [session_cookie(self.url, cookie_name)]
            if not check_session_sticks(self.url, self.cookies[0]):
                raise Unavailable('%s: page did not change between two '
                                  'requests with the session cookie' % label)
            if warm_up:
                wrk(self.url, self.cookies, 1, 1)
        except Exception:
            self.served.stop()
            raise

    def session_cookies(self, count):
        """`count` session cookies, the first one the site's own."""
        while len(self.cookies) < count:
            self.cookies.append(session_cookie(self.url, self.cookie_name))
        return self.cookies[:count]

    def measure(self, connections, seconds, progress, sessions=1):
        """One wrk run with `sessions` session cookies, with the app's (and
        Tyrant's) CPU and commands."""
        pid = self.served.process.pid
        cookies = self.session_cookies(sessions)
        for attempt in (1, 2):
            before, tyrant_cpu = (self.counter.snapshot() if self.counter
                                  else (None, None))
            app_cpu = process_cpu_seconds(pid)
            result = wrk(self.url, cookies, connections, seconds)
            app_cpu_after = process_cpu_seconds(pid)
            if result['requests'] or attempt == 2:
                break
            # wrk finished without a response (seen when it inherited many
            # descriptors, before close_fds).  Show its output, try again.
            progress('  wrk gave no requests; its output:\n%s\n  running it '
                     'again' % result['raw'])
        result['app_cpu'] = (app_cpu_after - app_cpu
                             if None not in (app_cpu, app_cpu_after) else None)
        if self.counter:
            after, tyrant_cpu_after = self.counter.snapshot()
            result['cmds'] = self.counter.commands_between(before, after)
            result['tyrant_cpu'] = tyrant_cpu_after - tyrant_cpu
        return result

    def stop(self):
        self.served.stop()


def _median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def combine(label, connections, runs):
    """One row from the rounds of one site at one connection count."""
    requests = sum(r['requests'] for r in runs)
    done = float(requests or 1)
    seconds = sum(r['seconds'] for r in runs)
    row = {'label': label, 'connections': connections, 'rounds': len(runs),
           'seconds': seconds, 'requests': requests,
           'rps': requests / float(seconds),
           # A run in which wrk got no response at all (see Site.measure).
           'empty_runs': sum(1 for r in runs if not r['requests']),
           'round_rps': [r['rps'] for r in runs],
           # wrk's percentiles cannot be merged: the median round's.
           'p50_us': _median(r['p50_us'] for r in runs),
           'p99_us': _median(r['p99_us'] for r in runs),
           'non2xx': sum(r['non2xx'] for r in runs)}
    cpu = [r['app_cpu'] for r in runs]
    # wrk counts completed responses; requests cut off at the end of a run
    # add a little to the per-request figures.
    row['app_cpu_us'] = sum(cpu) / done * 1e6 if None not in cpu else None
    if 'cmds' in runs[0]:
        row['cmds_per_req'] = sum(r['cmds'] for r in runs) / done
        row['tyrant_cpu_us'] = sum(r['tyrant_cpu'] for r in runs) / done * 1e6
    else:
        row['cmds_per_req'] = row['tyrant_cpu_us'] = None
    return row


MANY_SESSIONS = ', one session per connection'


def row_plan(sites, connections):
    """(site, connections, sessions, label) of every row: each site with
    one session at each connection count; the many_sessions sites also
    with one session per connection where there are several."""
    plan = []
    for conns in connections:
        for site in sites:
            plan.append((site, conns, 1, site.label))
            if site.many_sessions and conns > 1:
                plan.append((site, conns, conns, site.label + MANY_SESSIONS))
    return plan


def measure_interleaved(sites, connections, seconds, rounds, progress):
    """Every row of row_plan, `rounds` times in turn, so that a slow
    spell of the machine hits all rows alike."""
    plan = row_plan(sites, connections)
    runs = dict(((label, conns), []) for _, conns, _, label in plan)
    for number in range(1, rounds + 1):
        for site, conns, sessions, label in plan:
            result = site.measure(conns, seconds, progress, sessions)
            runs[label, conns].append(result)
            progress('  full stack round %d/%d %-44s c=%-3d %8.1f req/s  '
                     'non-2xx %d' % (number, rounds, label, conns,
                                     result['rps'], result['non2xx']))
    return [combine(label, conns, runs[label, conns]) for _, conns, _, label in plan]


def serve_generated(appdir, workdir, tyrants, peer_urls, measured, lost_only):
    """Serve the generated app: append the sites wrk measures to `measured`,
    those for the lost-update runs only to `lost_only` (appended one by one,
    so that the caller stops every one that started, even after an error).
    `tyrants`: the Tyrant peers, tcjson-tyrant first; the app's ext:tcjson
    rows run on each (the others' labels name their server)."""
    source = os.path.join(appdir, 'development.ini')
    waitress = production_server(appdir)
    warm_up = wrk_missing() is None

    def serve(label, session_type, path, url=None, counter=None, warm_up=warm_up,
              many_sessions=False, server=None):
        port = free_port()
        ini = derive_ini(source, os.path.join(appdir, 'bench-%d.ini' % port), port,
                         session_type, url, server)
        return Site(label, ini, port, path, 'benchapp', [appdir], workdir,
                    counter, warm_up, many_sessions)
    main, others = tyrants[0], tyrants[1:]
    for session_type, path, label, server in (
            ('ext:tcjson', VISIT_PATH, 'generated app %s, ext:tcjson' % VISIT_PATH, None),
            ('memory', VISIT_PATH, 'generated app %s, memory' % VISIT_PATH, None),
            ('ext:tcjson', LARGE_PATH, 'generated app %s, ext:tcjson' % LARGE_PATH, None),
            ('memory', LARGE_PATH, 'generated app %s, memory' % LARGE_PATH, None),
            ('ext:tcjson', VISIT_PATH, WAITRESS + 'generated app %s, ext:tcjson' % VISIT_PATH,
             waitress),
            ('memory', VISIT_PATH, WAITRESS + 'generated app %s, memory' % VISIT_PATH,
             waitress),
            ('ext:tcjson', '/session', 'generated app /session sample page, ext:tcjson',
             None)):
        measured.append(serve(label, session_type, path,
                              counter=main if session_type == 'ext:tcjson' else None,
                              many_sessions=path == VISIT_PATH, server=server))
    for other in others:
        for path in (VISIT_PATH, LARGE_PATH):
            measured.append(serve('generated app %s, ext:tcjson%s' % (path, on_server(other.kind)),
                                  'ext:tcjson', path, other.url, counter=other))
    for session_type, url in sorted(peer_urls.items()):
        lost_only.append(serve('generated app, %s (Beaker Session)' % session_type,
                               session_type, VISIT_PATH, url, warm_up=False))


def on_server(kind):
    """The label suffix of rows on a Tyrant server other than tcjson-tyrant."""
    return ' on %s' % kind


LOST_PATH = VISIT_PATH.rsplit('/', 1)[0]


LARGE_SESSION = ', large session'


def measure_lost_updates(sites, threads, requests, progress):
    """lost_updates.hammer on each site, with a small session of its own
    and with a large one (its first request stores the large cart)."""
    rows = []
    for site in sites:
        for path, suffix in ((VISIT_PATH, ''), (LARGE_PATH, LARGE_SESSION)):
            cookie = session_cookie(site.base + path, 'benchapp')
            result = lost_updates.hammer(site.base + LOST_PATH + '/bump',
                                         site.base + LOST_PATH + '/counts', cookie,
                                         threads, requests)
            result['label'] = site.label + suffix
            rows.append(result)
            progress('  lost updates %-60s %d of %d answered bumps lost, %d errors'
                     % (result['label'], result['lost'], result['answered'],
                        result['errors']))
    return rows


def run(tyrants, connections, seconds, progress, mini=True, rounds=4, peer_urls=None,
        lost_threads=8, lost_requests=100):
    """All full-stack rows; a dict with 'rows', 'lost' and 'notes'.
    `tyrants` are the running Tyrant peers (urls, and counters for the
    commands), tcjson-tyrant first.  Each row gets `seconds` of wrk in all,
    split over `rounds` interleaved runs.  `peer_urls` ({session type:
    url}) adds the peers to the lost-update runs (lost_threads x
    lost_requests each, per session size)."""
    tyrant = tyrants[0]
    workdir = tempfile.mkdtemp(prefix='sessbench-full-')
    sites, lost_sites, notes, lost = [], [], [], []
    per_run = max(1, int(round(float(seconds) / rounds)))
    try:
        try:
            appdir = generated_app(workdir, tyrant.url)
            serve_generated(appdir, workdir, tyrants, peer_urls or {}, sites, lost_sites)
            notes += GENERATED_NOTES
        except Unavailable as exc:
            notes.append('generated app: NOT MEASURED: %s' % exc)
            progress('  full stack (generated app) not measured: %s' % exc)
        if mini and wrk_missing() is None:
            serve_mini(workdir, tyrant, sites, notes, progress)
        if wrk_missing():
            notes.append('full-stack rows: NOT MEASURED: %s' % wrk_missing())
            progress('  full-stack rows not measured: %s' % wrk_missing())
            rows = []
        else:
            rows = measure_interleaved(sites, connections, per_run, rounds, progress)
        if lost_threads and lost_requests:
            tcjson_visit = [site for site in sites if site.label.startswith(
                'generated app %s, ext:tcjson' % VISIT_PATH)]
            lost = measure_lost_updates(tcjson_visit + lost_sites, lost_threads,
                                        lost_requests, progress)
    finally:
        for site in sites + lost_sites:
            site.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {'rows': rows, 'notes': notes, 'rounds': rounds, 'lost': lost,
            'seconds_per_run': per_run}


GENERATED_NOTES = [
    '%s is a 4-line visit counter in the controller the bench adds to the generated '
    'project; %s stores the large session (%d bytes of JSON) at its first request, '
    "then counts visits the same way.  The template's /session sample page also reads "
    'the raw record back (one more get) and renders Mako, and needs ext:tcjson (it calls '
    'tcjson.raw_record), so it has no memory row.'
    % (VISIT_PATH, LARGE_PATH, inproc.payload_json_size('large')),
    'wrk sends one session cookie on every connection, so at 16 connections up to 16 '
    'requests of one session write at once: each is one merge that the server applies '
    'under the record lock, after the others, with no retry (the commands per request '
    'stay at 2).  The rows "%s" spread as many sessions as connections over them '
    '(wrk_sessions.lua), as many users would.' % MANY_SESSIONS.lstrip(', '),
]


def serve_mini(workdir, tyrant, sites, notes, progress):
    """The Pylons-less app's rows, ext:tcjson and memory (information only)."""
    for session_type in ('ext:tcjson', 'memory'):
        port = free_port()
        ini = mini_app_ini(workdir, port, session_type, tyrant.url)
        label = 'mini WSGI app (not Pylons), %s' % session_type
        try:
            sites.append(Site(label, ini, port, '/', 'bench_sid', [HERE], workdir,
                              tyrant if session_type == 'ext:tcjson' else None))
        except Unavailable as exc:
            notes.append('mini app %s: NOT MEASURED: %s' % (session_type, exc))
            progress('  mini app %s not measured: %s' % (session_type, exc))
