"""Part 1: in-process cost of one session load + change + save.

A trivial WSGI app (it increments ``session['count']`` and saves) sits in
Beaker's SessionMiddleware; the bench calls the middleware directly with a
prepared environ carrying the session cookie, so what is timed is Beaker plus
the backend, not an HTTP stack.  Server-side counters (and a count of TCP
connects made by this process) give the round trips per request.
"""
from __future__ import print_function

import cProfile
import io
import json
import math
import pstats
import shutil
import socket
import tempfile
import time
import timeit

from beaker.middleware import SessionMiddleware

from pylons_tcjson_template import records
from pylons_tcjson_template.devtyrant.protocol import recv_exactly, request_bytes
from pylons_tcjson_template.tyrant import RECORD_LOCK

import peers

timer = timeit.default_timer


def small_payload():
    """5 keys, the shape of a typical login session."""
    return {'user_id': 48213, 'user_name': u'ada.lovelace',
            'roles': [u'editor', u'reviewer'], 'theme': u'dark', 'count': 0}


def large_payload():
    """About 20 KB of JSON-able data (a cart / wizard state), plus count."""
    items = []
    for i in range(180):
        items.append({'sku': u'SKU-%06d' % (i * 7919), 'qty': i % 5 + 1,
                      'price': round(3.25 * (i % 17 + 1), 2),
                      'title': u'Item number %d, colour %s' % (i, u'blue'),
                      'tags': [u'a%d' % (i % 3), u'b%d' % (i % 7)]})
    return {'cart': items, 'user_id': 48213, 'locale': u'en_GB',
            'flags': {'beta': True, 'seen_tour': False}, 'count': 0}


PAYLOADS = {'small': small_payload, 'large': large_payload}


def payload_json_size(size):
    return len(json.dumps(PAYLOADS[size](), separators=(',', ':')))


# Request kinds.  A read request looks at the session and does not change
# it; a write request changes one key and calls session.save(); a mix is 9
# reads then 1 write, over and over (a read-mostly site).
KINDS = ('read', 'write', 'mix')
MIX = ['/read'] * 9 + ['/write']


def request_paths(kind, count):
    """The PATH_INFO of `count` requests of `kind` (a mix: whole blocks)."""
    if kind == 'mix':
        return MIX * int(math.ceil(count / float(len(MIX))))
    return ['/' + kind] * count


def per_request_costs(kind, samples):
    """Seconds per request.  For a mix, each block of 9 reads + 1 write
    gives one figure, its total / 10: the median of those is what a
    request costs on average at that ratio (a median of single requests
    would only be the median read)."""
    if kind != 'mix':
        return list(samples)
    width = len(MIX)
    return [sum(samples[i:i + width]) / width
            for i in range(0, len(samples) - width + 1, width)]


def session_app(size):
    """/write: increments session['count'] (first call: fills the session)
    and saves; /read: only reads it.  The body is the count."""
    make = PAYLOADS[size]

    def app(environ, start_response):
        session = environ['beaker.session']
        if environ['PATH_INFO'] == '/write':
            if 'count' not in session:
                session.update(make())
            session['count'] += 1
            session.save()
        body = str(session['count']).encode('ascii')
        start_response('200 OK', [('Content-Type', 'text/plain'),
                                  ('Content-Length', str(len(body)))])
        return [body]
    return app


def base_environ():
    return {
        'REQUEST_METHOD': 'GET', 'SCRIPT_NAME': '', 'PATH_INFO': '/count',
        'QUERY_STRING': '', 'SERVER_NAME': 'bench.local', 'SERVER_PORT': '80',
        'HTTP_HOST': 'bench.local', 'SERVER_PROTOCOL': 'HTTP/1.1',
        'wsgi.url_scheme': 'http', 'wsgi.version': (1, 0),
        'wsgi.input': io.BytesIO(b''), 'wsgi.errors': io.BytesIO(),
        'wsgi.multithread': False, 'wsgi.multiprocess': False,
        'wsgi.run_once': False,
    }


class Backend(object):
    """One row of part 1: a Beaker session type, maybe against a server."""

    kinds = KINDS                 # the request kinds measured for it

    def __init__(self, name, peer=None, note=''):
        self.name = name
        self.peer = peer
        self.note = note
        self.tmp = None
        self.skip_reason = None

    def prepare(self):
        """Import/register what the backend needs; set skip_reason if not."""
        if self.peer is not None and not self.peer.available():
            self.skip_reason = self.peer.missing_reason()
        return self.skip_reason is None

    def options(self):
        raise NotImplementedError

    def kwargs(self):
        return {}

    def middleware(self, app):
        self.tmp = tempfile.mkdtemp(prefix='sessbench-')
        config = {'session.key': 'bench_sid', 'session.secret': 's3cret',
                  'session.timeout': '3600'}
        config.update(self.options())
        return SessionMiddleware(app, config, **self.kwargs())

    def cleanup(self):
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


class Memory(Backend):
    def options(self):
        return {'session.type': 'memory'}


class MemoryJSON(Backend):
    """memory with tcjson's JSONSerializer: separates serializer cost
    from backend cost (not a target row)."""

    def prepare(self):
        try:
            from pylons_tcjson_template import tcjson
        except ImportError as exc:
            self.skip_reason = 'tcjson not importable (%s)' % exc
            return False
        self.module = tcjson
        return True

    def options(self):
        return {'session.type': 'memory'}

    def kwargs(self):
        return {'data_serializer': self.module.JSONSerializer()}


class File(Backend):
    def options(self):
        return {'session.type': 'file', 'session.data_dir': self.tmp,
                'session.lock_dir': self.tmp + '/lock'}


class MemcachedBackend(Backend):
    def prepare(self):
        try:
            import memcache  # noqa: F401  python-memcached
        except ImportError:
            self.skip_reason = 'python-memcached not installed'
            return False
        return Backend.prepare(self)

    def options(self):
        return {'session.type': 'ext:memcached', 'session.url': self.peer.url}


class RedisBackend(Backend):
    def prepare(self):
        try:
            import redis  # noqa: F401
        except ImportError:
            self.skip_reason = 'redis (redis-py) not installed'
            return False
        return Backend.prepare(self)

    def options(self):
        return {'session.type': 'ext:redis',
                'session.url': 'redis://%s/0' % self.peer.url}


class OursBackend(Backend):
    """The project's ext:tcjson configured as the generated middleware does
    it: session_class=user_sessions.UserSession (TyrantSession plus the
    users' indexes, which a request that does not sign in never touches),
    refresh_interval at its default."""

    def prepare(self):
        try:
            from pylons_tcjson_template import tcjson, user_sessions
        except ImportError as exc:
            self.skip_reason = ('pylons_tcjson_template.tcjson not importable '
                                '(%s)' % exc)
            return False
        self.session_class = user_sessions.UserSession
        tcjson.register()
        return Backend.prepare(self)

    def options(self):
        return {'session.type': 'ext:tcjson', 'session.url': self.peer.url}

    def kwargs(self):
        return {'session_class': self.session_class, 'prefix': 'bench:',
                'pool_size': 4}


class Baseline2009(Backend):
    """The 2009 backend, for write requests only: it opens a connection
    per request, and three kinds of rows would leave more sockets in
    TIME_WAIT than the machine has ephemeral ports."""

    kinds = ('write',)

    def prepare(self):
        from baseline_2009 import tcjson2009
        tcjson2009.register()
        return Backend.prepare(self)

    def options(self):
        # The 2009 manager needs data_dir (Pylons always passed cache_dir).
        return {'session.type': 'ext:tcjson2009', 'session.url': self.peer.url,
                'session.data_dir': self.tmp}


def median_us(call, count, before=None, after=None):
    """Median microseconds of `count` calls of `call`; `before` and
    `after`, if given, run around each call, untimed (set-up and undo)."""
    samples = []
    for _ in range(count):
        if before is not None:
            before()
        t0 = timer()
        call()
        samples.append(timer() - t0)
        if after is not None:
            after()
    samples.sort()
    return percentile(samples, 0.5) * 1e6


def percentile(sorted_values, fraction):
    if not sorted_values:
        return float('nan')
    index = min(len(sorted_values) - 1,
                int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


class Client(object):
    """Calls a SessionMiddleware-wrapped app as a browser holding the
    session cookie would, and counts the writes it asked for."""

    def __init__(self, app):
        self.app = app
        self.environ = base_environ()
        self.headers = []
        self.status = None
        self.body = b''
        self.writes = 0

    def _start_response(self, status, headers, exc_info=None):
        self.status, self.headers = status, headers

    def get(self, path):
        environ = dict(self.environ, PATH_INFO=path)
        self.body = b''.join(self.app(environ, self._start_response))
        self.writes += path == '/write'
        return self.body

    def sign_in(self):
        """First request: a write creates the session; keep its cookie."""
        self.get('/write')
        for name, value in self.headers:
            value = value.strip()
            if name.lower() == 'set-cookie' and value.startswith('bench_sid='):
                self.environ['HTTP_COOKIE'] = value.split(';', 1)[0]
                return
        raise RuntimeError('no session cookie set')


def count_traffic(client, peer, paths):
    """(commands, round trips, connects) for `paths`, counted by the server
    and by a RoundTripCounter on this thread; nothing is timed."""
    before = peer.snapshot()[0] if peer is not None else None
    with peers.RoundTripCounter() as traffic:
        for path in paths:
            client.get(path)
    commands = (peer.commands_between(before, peer.snapshot()[0])
                if peer is not None else 0)
    return commands, traffic.round_trips, traffic.connects


def measure(backend, size, kind, requests, warmup, counted=100, profile=False):
    """Time `requests` requests of `kind` with one session; count the
    commands and round trips of `counted` more, in a separate pass."""
    client = Client(backend.middleware(session_app(size)))
    try:
        client.sign_in()
    except RuntimeError as exc:
        raise RuntimeError('%s: %s' % (backend.name, exc))
    for path in request_paths(kind, warmup):
        client.get(path)

    peer = backend.peer
    counted_paths = request_paths(kind, counted)
    commands, round_trips, connects = count_traffic(client, peer, counted_paths)

    paths = request_paths(kind, requests)
    cpu_before = peer.snapshot()[1] if peer is not None else None
    samples = []
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    started = timer()
    for path in paths:
        t0 = timer()
        client.get(path)
        samples.append(timer() - t0)
    elapsed = timer() - started
    if profiler:
        profiler.disable()
    cpu_after = peer.snapshot()[1] if peer is not None else None

    if int(client.body) != client.writes or not client.status.startswith('200'):
        raise RuntimeError('%s/%s/%s: counter is %s, expected %d (session not '
                           'persisted?)' % (backend.name, size, kind, client.body,
                                            client.writes))
    costs = sorted(per_request_costs(kind, samples))
    result = {
        'backend': backend.name, 'size': size, 'kind': kind,
        'server': peer.kind if peer is not None else '-',
        'costs': costs, 'elapsed': elapsed, 'requests': len(paths),
        'counted': len(counted_paths), 'commands': commands,
        'round_trips': round_trips, 'connects': connects,
        'server_cpu': (cpu_after - cpu_before) if peer is not None else None,
        'median_us': percentile(costs, 0.5) * 1e6,
        'rps': len(paths) / elapsed,
    }
    if profiler:
        out = io.BytesIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats('cumulative').print_stats(30)
        stats.sort_stats('tottime').print_stats(25)
        result['profile'] = out.getvalue().decode('utf-8', 'replace')
    return result


def aggregate(results):
    """Merge the rounds of one backend, size and kind into one row."""
    first = results[0]
    costs = sorted(c for r in results for c in r['costs'])
    requests = sum(r['requests'] for r in results)
    counted = float(sum(r['counted'] for r in results))
    row = dict((k, first[k]) for k in ('backend', 'size', 'kind', 'server'))
    row.update({
        'requests': requests, 'rounds': len(results),
        'median_us': percentile(costs, 0.5) * 1e6,
        'p99_us': percentile(costs, 0.99) * 1e6,
        'rps': requests / sum(r['elapsed'] for r in results),
        'cmds_per_req': sum(r['commands'] for r in results) / counted,
        'round_trips_per_req': sum(r['round_trips'] for r in results) / counted,
        'connects_per_req': sum(r['connects'] for r in results) / counted,
    })
    cpu = [r['server_cpu'] for r in results if r.get('server_cpu') is not None]
    row['server_cpu_us'] = (sum(cpu) / float(requests) * 1e6
                            if len(cpu) == len(results) else None)
    profiles = [r['profile'] for r in results if r.get('profile')]
    if profiles:
        row['profile'] = profiles[-1]
    return row


def _running(peer):
    return peer is not None and peer.process is not None


def roundtrip_latency(tyrants, memcached, redis_peer, count=2000):
    """Median microseconds of one bare get and one bare put/set per client
    and server (`tyrants`: the Tyrant peers), same value sizes as the
    sessions: splits server + wire time from the client-side work that the
    session rows add on top."""
    from pylons_tcjson_template import tcjson
    values = dict((size, stored_record(size)) for size in PAYLOADS)
    clients = []
    for tyrant in [t for t in tyrants if _running(t)]:
        pool = tcjson.get_pool(tyrant.url)
        clients.append(('tcjson pool -> %s' % tyrant.kind,
                        lambda k, pool=pool: pool.request('get', k),
                        lambda k, v, pool=pool: pool.request('put', k, v)))
    if _running(memcached):
        import memcache
        mc = memcache.Client([memcached.url])
        clients.append(('python-memcached -> memcached', mc.get, mc.set))
    if _running(redis_peer):
        import redis
        rc = redis.StrictRedis(host=redis_peer.host, port=redis_peer.port)
        clients.append(('redis-py -> redis', rc.get, rc.set))
    for tyrant in [t for t in tyrants if _running(t)]:
        clients.append(('bare socket -> %s' % tyrant.kind,)
                       + BareSocket(tyrant, tyrant_get, tyrant_put).calls())
    if _running(memcached):
        clients.append(('bare socket -> memcached',)
                       + BareSocket(memcached, memcached_get, memcached_set).calls())
    rows = []
    for name, get, put in clients:
        for size in ('small', 'large'):
            key, value = 'rtt-probe-%s' % size, values[size]
            put(key, value)
            rows.append({'client': name, 'size': size, 'bytes': len(value),
                         'get_us': median_us(lambda: get(key), count),
                         'put_us': median_us(lambda: put(key, value), count)})
    return rows


def stored_record(size, now=None):
    """A session record of `size` as TyrantSession stores it (compact JSON,
    with Beaker's times and the expiry)."""
    now = time.time() if now is None else now
    record = dict(PAYLOADS[size](), _creation_time=now, _accessed_time=now,
                  _expires=round(now + 3600, 3))
    return records.dumps(record, 'session')


def write_merge_request(count, now=None):
    """The merge request TyrantSession sends for the bench's write (one key
    changed, the access time and expiry refreshed), built by records.py as
    tcjson.py builds it."""
    now = time.time() if now is None else now
    changed = {'count': records.dumps(count), '_accessed_time': records.dumps(now),
               '_expires': records.dumps(round(now + 3600, 3))}
    return records.merge_request(changed, [], records.MAX_SESSION_SIZE)


def session_floor(tyrant, count=2000):
    """Median microseconds of what a TyrantSession request sends, replayed on
    a bare socket against `tyrant` (no client library, no Python beyond a
    sendall and a recv per round trip): a read is the get; a write is the
    get, then the ext call of tcjson.lua's merge under the record lock.  No
    client can take less than this for the same commands."""
    sock = BareSocket(tyrant, tyrant_get, tyrant_put)
    rows = []
    for size in ('small', 'large'):
        key = b'bench:floor-%s:session' % size
        # The merge sets what the record holds: it stays the same size, so
        # the get's reply size stays known.
        now = time.time()
        value = stored_record(size, now)
        sock.put(key, value)
        get = tyrant_get(key, value)
        merge = tyrant_ext('merge', key, write_merge_request(PAYLOADS[size]()['count'], now),
                           b'ok')

        def write():
            sock.exchange(*get)
            sock.exchange(*merge)
        rows.append({'server': tyrant.kind, 'size': size, 'bytes': len(value),
                     'read_us': median_us(lambda: sock.exchange(*get), count),
                     'write_us': median_us(write, count)})
    sock.close()
    return rows


# What a request and its reply are on the wire, for the bare-socket rows:
# the floor under any client library, the machine's loopback round trip.
def tyrant_get(key, value):
    return (request_bytes('get', len(key), key), 5 + len(value))


def tyrant_put(key, value):
    return (request_bytes('put', len(key), len(value), key, value), 1)


def tyrant_ext(name, key, value, answer, opts=RECORD_LOCK):
    """An ext call of tcjson.lua's `name` and the size of its reply when it
    answers `answer`."""
    return (request_bytes('ext', len(name), opts, len(key), len(value), name, key, value),
            5 + len(answer))


def memcached_get(key, value):
    header = 'VALUE %s 0 %d\r\n' % (key, len(value))
    return ('get %s\r\n' % key, len(header) + len(value) + len('\r\nEND\r\n'))


def memcached_set(key, value):
    return ('set %s 0 0 %d\r\n%s\r\n' % (key, len(value), value), len('STORED\r\n'))


class BareSocket(object):
    """get/put as one sendall and reads of the known reply size, nothing else."""

    def __init__(self, peer, get_bytes, put_bytes):
        self.sock = socket.create_connection((peer.host, peer.port), 5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.get_bytes, self.put_bytes = get_bytes, put_bytes
        self.values = {}

    def exchange(self, request, reply_size):
        """One round trip: send `request`, read `reply_size` bytes."""
        self.sock.sendall(request)
        recv_exactly(self.sock, reply_size)

    def put(self, key, value):
        self.values[key] = value
        self.exchange(*self.put_bytes(key, value))

    def get(self, key):
        self.exchange(*self.get_bytes(key, self.values[key]))

    def close(self):
        self.sock.close()

    def calls(self):
        return self.get, self.put
