"""TyrantSession: Beaker's documented session API over Tokyo Tyrant.

Each test drives Beaker's SessionMiddleware (through WebTest) or Beaker's
Session API against a live Tyrant server and reads Tyrant directly to see
what was stored.  The specification, in short:

* records are plain JSON objects that other programs can read and write;
* a read costs one command and writes nothing until the access time is
  ``refresh_interval`` old; a write costs two: the read and one merge that
  Tyrant runs under the record's lock (lib/tcjson.lua);
* ``invalidate()``, ``regenerate_id()`` and ``delete()`` remove the old
  record at once, and no request still in flight brings it back;
* concurrent saves merge key by key, and no lock record ever exists.
"""
import datetime
import socket
import struct
import threading
import time

import pytest
import pytyrant
import simplejson as json
from beaker.middleware import SessionMiddleware
from webtest import TestApp as WebApp

from pylons_tcjson_template import purge, tcjson


def session_app(url, **options):
    """A tiny WSGI app; the path says what to do with the session."""
    def app(environ, start_response):
        session = environ['beaker.session']
        path, query = environ['PATH_INFO'], environ.get('QUERY_STRING', '')
        if path == '/untouched':
            start_response('200 OK', [])
            return ['no session']
        if path == '/inc':
            session['counter'] = session.get('counter', 0) + 1
            session.save()
        elif path == '/set':
            key, _, value = query.partition('=')
            session[key] = value
            session.save()
        elif path == '/when':
            session['when'] = datetime.datetime(2009, 5, 1)
            session.save()                         # fails at the end of the request
            start_response('200 OK', [])
            return ['saved?']
        elif path == '/flash':
            session.setdefault('flash', []).append(('notice', u'Saved \u2713'))
            session.save()
        elif path == '/invalidate':
            session.invalidate()
        elif path == '/regenerate':
            session.regenerate_id()
        elif path == '/delete':
            session.delete()
        elif path == '/delete-then-set':
            session.delete()
            session['after'] = 'delete'
            session.save()
        body = json.dumps({'id': session.id, 'data': dict(session),
                           'key': tcjson.session_record_key(session)})
        start_response('200 OK', [('Content-Type', 'application/json')])
        return [body]
    # Beaker's SessionMiddleware would turn an unreadable record into a new
    # session unless told not to (config/middleware.py tells it so too).
    config = {'session.type': 'ext:tcjson', 'session.url': url, 'session.timeout': '600',
              'session.invalidate_corrupt': 'false'}
    config.update(('session.' + k, v) for k, v in options.items())
    tcjson.register()
    return WebApp(SessionMiddleware(app, config, session_class=tcjson.TyrantSession))


def raw(server, key):
    try:
        return tcjson.get_pool(server.url).request('get', str(key))
    except Exception:
        return None


def stored(server, key):
    text = raw(server, key)
    return None if text is None else json.loads(text)


def raw_put(server, key, value):
    """Write a record as another program would: a bare Tyrant put."""
    sock = socket.create_connection((server.host, server.port), 5)
    try:
        key, value = str(key), str(value)
        sock.sendall(struct.pack('>BBII', 0xC8, 0x10, len(key), len(value)) + key + value)
        assert sock.recv(1) == '\x00'
    finally:
        sock.close()


def server_counts(server):
    """The server's own count of each command it ran (stat), but stat."""
    lines = tcjson.get_pool(server.url).request('stat').splitlines()
    return dict((name, int(value)) for name, _, value in (line.partition('\t')
                                                           for line in lines)
                if name.startswith('cnt_') and not name.endswith('_miss')
                and name != 'cnt_stat')


@pytest.fixture
def round_trips(tyrant, monkeypatch):
    """What the process sends to Tyrant: one list per round trip, of the
    command names sent in it (for ext, the tcjson.lua function)."""
    pool, trips = tcjson.get_pool(tyrant.url), []
    pool.pipeline(('ext', 'probe', '', '', 0))      # the connection's probe, done
    request, pipeline = pool.request, pool.pipeline
    monkeypatch.setattr(pool, 'request', lambda name, *a: trips.append([name]) or
                        request(name, *a))
    monkeypatch.setattr(pool, 'pipeline', lambda *cmds: trips.append(
        [c[1] if c[0] == 'ext' else c[0] for c in cmds]) or pipeline(*cmds))
    return trips


def run_at_once(worker, count):
    """worker(n) for n in range(count), each in its own thread, all at
    once: the exceptions they raised (a test asserts there are none)."""
    errors = []

    def guarded(n):
        try:
            worker(n)
        except Exception as exc:
            errors.append(repr(exc))
    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    return errors


def tyrant_session(server, session_id, **options):
    """Beaker's session API without the middleware: what one request sees."""
    tcjson.register()
    request = {'cookie': 'beaker.session.id=%s' % str(session_id)} if session_id else {}
    params = dict(type='ext:tcjson', url=server.url, timeout=600)
    params.update(options)
    return tcjson.TyrantSession(request, **params)


# ---- the record

def test_the_stored_record_is_a_plain_json_object(tyrant):
    app = session_app(tyrant.url)
    app.get('/inc')
    reply = app.get('/inc').json
    record = stored(tyrant, reply['key'])
    assert reply['key'] == 'beaker:%s:session' % reply['id']
    assert record['counter'] == 2
    # Beaker's time fields and the expiry; the cookie's domain and path
    # come from the configuration, so they are not stored.
    assert set(record) == set(['counter', '_accessed_time', '_creation_time', '_expires'])
    assert record['_expires'] == pytest.approx(record['_accessed_time'] + 600, abs=0.001)


def test_a_record_written_by_another_program_loads_as_the_session(tyrant):
    sid = 'f' * 32
    raw_put(tyrant, 'beaker:%s:session' % sid,
            json.dumps({'user': 'alice', 'roles': ['admin'], '_accessed_time': time.time()}))
    app = session_app(tyrant.url)
    app.set_cookie('beaker.session.id', sid)
    data = app.get('/').json['data']
    assert data['user'] == 'alice' and data['roles'] == ['admin']


def test_a_datetime_value_is_a_clear_error_and_the_old_record_stays(tyrant):
    app = session_app(tyrant.url)
    key = app.get('/inc').json['key']
    before = raw(tyrant, key)
    with pytest.raises(tcjson.UnstorableValue) as info:
        app.get('/when')
    assert "'when'" in str(info.value) and 'datetime.datetime' in str(info.value)
    assert raw(tyrant, key) == before


def test_flash_messages_survive_as_lists(tyrant):
    from webhelpers.pylonslib.flash import Message
    app = session_app(tyrant.url)
    app.get('/flash')
    stored_flash = app.get('/flash').json['data']['flash']
    assert stored_flash == [['notice', u'Saved \u2713']] * 2
    assert [Message(*m).message for m in stored_flash] == [u'Saved \u2713'] * 2


# ---- what a request costs

def test_a_request_that_never_touches_the_session_costs_nothing(tyrant, round_trips):
    app = session_app(tyrant.url)
    app.get('/inc')
    del round_trips[:]
    assert app.get('/untouched').body == 'no session'
    assert round_trips == []


def test_a_new_session_that_is_never_changed_is_never_written(tyrant, round_trips):
    reply = session_app(tyrant.url).get('/')
    assert round_trips == [] and 'Set-Cookie' not in reply.headers
    assert raw(tyrant, reply.json['key']) is None


def test_a_new_session_costs_one_put(tyrant, round_trips):
    reply = session_app(tyrant.url).get('/inc')
    assert round_trips == [['put']]
    assert 'beaker.session.id=' in reply.headers['Set-Cookie']


def test_a_read_only_request_costs_one_get_and_writes_nothing(tyrant, round_trips):
    app = session_app(tyrant.url)
    key = app.get('/inc').json['key']
    before = raw(tyrant, key)
    del round_trips[:]
    assert app.get('/').json['data']['counter'] == 1
    assert round_trips == [['get']]
    assert raw(tyrant, key) == before


def test_a_write_request_costs_the_read_and_one_merge(tyrant, round_trips):
    app = session_app(tyrant.url)
    key = app.get('/inc').json['key']
    del round_trips[:]
    app.get('/inc')
    assert round_trips == [['get'], ['merge']]
    assert stored(tyrant, key)['counter'] == 2


def test_the_server_counts_one_command_per_read_and_two_per_write(tyrant):
    """Counted by the server itself (stat's cnt_ lines), not by the client."""
    app = session_app(tyrant.url)
    app.get('/inc')
    tcjson.get_pool(tyrant.url).pipeline(('ext', 'probe', '', '', 0))
    before = server_counts(tyrant)
    app.get('/')
    after_read = server_counts(tyrant)
    app.get('/inc')
    after_write = server_counts(tyrant)
    assert sum(after_read.values()) - sum(before.values()) == 1
    assert after_read['cnt_get'] - before['cnt_get'] == 1
    assert sum(after_write.values()) - sum(after_read.values()) == 2
    assert after_write['cnt_ext'] - after_read['cnt_ext'] == 1


def test_saving_an_unchanged_session_writes_nothing(tyrant, round_trips):
    app = session_app(tyrant.url)
    app.get('/set?a=1')
    del round_trips[:]
    app.get('/set?a=1')                          # save() called, nothing differs
    assert round_trips == [['get']]


# ---- sliding expiry

def test_the_access_time_is_refreshed_only_after_the_refresh_interval(tyrant, round_trips):
    app = session_app(tyrant.url, refresh_interval='0.3')
    key = app.get('/inc').json['key']
    first = stored(tyrant, key)
    del round_trips[:]
    app.get('/')
    assert round_trips == [['get']]
    time.sleep(0.35)
    app.get('/')
    assert round_trips[1:] == [['get'], ['merge']]
    refreshed = stored(tyrant, key)
    assert refreshed['_accessed_time'] >= first['_accessed_time'] + 0.35
    assert refreshed['_expires'] == pytest.approx(refreshed['_accessed_time'] + 600, abs=0.001)
    assert refreshed['counter'] == 1 and refreshed['_creation_time'] == first['_creation_time']


def test_the_default_refresh_interval_follows_the_timeout():
    assert tcjson.refresh_seconds(None, 3600) == 60
    assert tcjson.refresh_seconds(None, 300) == 30
    assert tcjson.refresh_seconds(None, None) == 60
    assert tcjson.refresh_seconds('0', 300) == 0
    for bad in ('300', '-1', 'soon', 'nan'):
        with pytest.raises(tcjson.ConfigError) as info:
            tcjson.refresh_seconds(bad, 300)
        assert 'refresh_interval' in str(info.value)


def test_an_idle_session_times_out_and_purge_agrees(tyrant):
    app = session_app(tyrant.url, timeout='1', refresh_interval='0')
    first = app.get('/inc').json
    assert purge.purge_expired(tyrant.url)['deleted'] == 0
    time.sleep(1.1)
    # Expired for Beaker and for purge at the same moment: _expires is
    # _accessed_time + timeout.
    assert purge.purge_expired(tyrant.url, now=time.time())['deleted'] == 1
    second = app.get('/inc').json
    assert second['id'] != first['id'] and second['data']['counter'] == 1


def test_a_timed_out_record_is_a_new_session_under_a_new_id(tyrant):
    sid = 'a' * 32
    raw_put(tyrant, 'beaker:%s:session' % sid,
            json.dumps({'user': 'alice', '_accessed_time': time.time() - 700}))
    app = session_app(tyrant.url)
    app.set_cookie('beaker.session.id', sid)
    reply = app.get('/inc').json
    assert reply['id'] != sid and 'user' not in reply['data']


# ---- ending a session, or its id

def test_invalidate_deletes_the_old_record_and_starts_empty_under_a_new_id(tyrant):
    app = session_app(tyrant.url)
    old = app.get('/set?user=alice').json
    new = app.get('/invalidate').json
    assert new['id'] != old['id'] and 'user' not in new['data']
    assert raw(tyrant, old['key']) is None
    assert raw(tyrant, new['key']) is None          # an empty new session: not written
    app.reset()
    app.set_cookie('beaker.session.id', str(old['id']))     # the old cookie, replayed
    assert 'user' not in app.get('/').json['data']


def test_regenerate_id_keeps_the_data_under_the_new_id_only(tyrant):
    app = session_app(tyrant.url)
    old = app.get('/set?user=alice').json
    new = app.get('/regenerate').json
    assert new['id'] != old['id'] and new['data']['user'] == 'alice'
    assert raw(tyrant, old['key']) is None
    assert stored(tyrant, new['key'])['user'] == 'alice'
    after = app.get('/inc').json                   # the cookie follows the new id
    assert after['id'] == new['id'] and after['data']['user'] == 'alice'
    assert stored(tyrant, new['key'])['counter'] == 1


def test_delete_removes_the_record_expires_the_cookie_and_stays_deleted(tyrant):
    app = session_app(tyrant.url)
    old = app.get('/set?user=alice').json
    reply = app.get('/delete-then-set')             # saves after delete()
    cookie = reply.headers['Set-Cookie'].lower()
    assert 'beaker.session.id=' in cookie and 'expires=' in cookie
    assert raw(tyrant, old['key']) is None


@pytest.mark.parametrize('call', ['/invalidate', '/regenerate', '/delete'])
def test_ending_a_session_works_across_a_tyrant_restart(tyrant_factory, call):
    server = tyrant_factory('restart.tch')
    app = session_app(server.url)
    old = app.get('/set?user=alice').json
    server.stop()
    server.start()                                    # same file, pooled sockets dead
    app.get(call)
    assert raw(server, old['key']) is None


def test_destroying_one_session_leaves_another_intact(tyrant):
    alice, bob = session_app(tyrant.url), session_app(tyrant.url)
    alice_key = alice.get('/inc').json['key']
    bob_key = bob.get('/inc').json['key']
    alice.get('/delete')
    assert raw(tyrant, alice_key) is None
    assert stored(tyrant, bob_key)['counter'] == 1
    assert bob.get('/inc').json['data']['counter'] == 2


# ---- concurrent requests of one session

def test_concurrent_saves_of_different_keys_both_survive(tyrant):
    sid = session_app(tyrant.url).get('/inc').json['id']
    first, second = tyrant_session(tyrant, sid), tyrant_session(tyrant, sid)
    first['colour'] = 'blue'
    second['size'] = 'L'
    second['counter'] = 5
    first.save()
    second.save()
    record = stored(tyrant, 'beaker:%s:session' % sid)
    assert (record['colour'], record['size'], record['counter']) == ('blue', 'L', 5)


def test_a_deleted_key_stays_deleted_and_a_key_set_by_another_request_stays(tyrant):
    sid = session_app(tyrant.url).get('/set?a=1').json['id']
    first, second = tyrant_session(tyrant, sid), tyrant_session(tyrant, sid)
    del first['a']
    second['b'] = 2
    second.save()
    first.save()
    record = stored(tyrant, 'beaker:%s:session' % sid)
    assert 'a' not in record and record['b'] == 2


def test_in_place_changes_count_as_changes(tyrant):
    app = session_app(tyrant.url)
    sid = app.get('/flash').json['id']
    session = tyrant_session(tyrant, sid)
    session['flash'].append(['notice', 'second'])
    session.save()
    assert len(stored(tyrant, 'beaker:%s:session' % sid)['flash']) == 2


def test_an_access_time_refresh_changes_only_the_time_fields(tyrant):
    sid = session_app(tyrant.url).get('/set?a=1').json['id']
    reader = tyrant_session(tyrant, sid, refresh_interval=0)
    writer = tyrant_session(tyrant, sid)
    writer['a'] = 'changed'
    writer.save()
    reader.save(accessed_only=True)                 # loaded a=1 before the change
    assert stored(tyrant, 'beaker:%s:session' % sid)['a'] == 'changed'


@pytest.mark.parametrize('end', ['delete', 'invalidate', 'regenerate_id'])
def test_a_request_in_flight_cannot_bring_an_ended_session_back(tyrant, end):
    sid = session_app(tyrant.url).get('/set?user=alice').json['id']
    key = 'beaker:%s:session' % sid
    slow_reader = tyrant_session(tyrant, sid, refresh_interval=0)
    slow_writer = tyrant_session(tyrant, sid)
    getattr(tyrant_session(tyrant, sid), end)()      # logout meanwhile
    slow_reader.save(accessed_only=True)
    slow_writer['cart'] = ['book']
    slow_writer.save()
    assert raw(tyrant, key) is None


# ---- configuration

def test_encrypt_key_stores_an_envelope_nobody_else_can_read(tyrant):
    app = session_app(tyrant.url, encrypt_key='k' * 32, validate_key='v' * 32,
                      crypto_type='cryptography')
    app.get('/set?card=4111111111111111')
    reply = app.get('/inc').json
    text = raw(tyrant, reply['key'])
    record = json.loads(text)
    assert record['tcjson'] == 'beaker-opaque' and '4111' not in text
    assert set(record) == set(['tcjson', 'data', '_accessed_time', '_expires'])
    assert reply['data']['counter'] == 1 and reply['data']['card'] == '4111111111111111'


def test_every_encrypted_save_loads_again(tyrant):
    """The envelope is chosen by the configuration, never guessed from the
    payload: with 96-bit nonces about 1 save in 250 used to start with '{'
    and end with '}' and was stored as if it were JSON, then unreadable."""
    options = dict(encrypt_key='k' * 32, validate_key='v' * 32, encrypt_nonce_bits=96,
                   crypto_type='cryptography')
    for n in range(2000):
        session = tyrant_session(tyrant, None, **options)
        session['n'] = n
        session.save()
        assert tyrant_session(tyrant, session.id, **options)['n'] == n


def test_encrypt_key_without_an_aes_library_is_refused():
    from beaker import crypto
    from beaker.crypto import noencryption
    crypto.register_crypto_module('no-aes', noencryption)
    with pytest.raises(tcjson.ConfigError) as info:
        tcjson.check_session_options({'type': 'ext:tcjson', 'encrypt_key': 'k' * 32,
                                      'secret': 's' * 32,
                                      'validate_key': 'v', 'crypto_type': 'no-aes'})
    assert 'AES' in str(info.value) and 'crypto_type = cryptography' in str(info.value)


def test_an_application_without_a_cookie_secret_is_refused():
    """Without a secret the cookie is the bare session id: any id seen in a
    log or a page would be a usable cookie."""
    with pytest.raises(tcjson.ConfigError) as info:
        tcjson.check_session_options({'type': 'ext:tcjson', 'secret': ''})
    assert 'beaker.session.secret' in str(info.value)


@pytest.mark.parametrize('serializer', ['pickle', 'json'])
def test_beakers_serializers_are_refused(serializer):
    with pytest.raises(tcjson.ConfigError) as info:
        tcjson.check_session_options({'type': 'ext:tcjson', 'data_serializer': serializer,
                                      'secret': 's' * 32})
    assert 'data_serializer' in str(info.value)


def test_raw_record_shows_the_stored_bytes(tyrant):
    session = tyrant_session(tyrant, None)
    session['x'] = 1
    session.save()
    assert json.loads(tcjson.raw_record(session))['x'] == 1


# ---- many requests at once, over HTTP

def test_eight_threads_over_http_on_one_session_lose_no_update(tyrant):
    """Each thread increments its own key 100 times through a threaded HTTP
    server; last-writer-wins for the whole record would lose most."""
    from paste import httpserver
    import urllib2

    def app(environ, start_response):
        session = environ['beaker.session']
        key = environ['QUERY_STRING']
        session[key] = session.get(key, 0) + 1
        session.save()
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return ['ok']
    tcjson.register()
    wrapped = SessionMiddleware(app, {'session.type': 'ext:tcjson', 'session.url': tyrant.url,
                                      'session.io_timeout': '5', 'session.secret': 's3cret'},
                                session_class=tcjson.TyrantSession)
    server = httpserver.serve(wrapped, host='127.0.0.1', port=0, start_loop=False,
                              use_threadpool=True, threadpool_workers=8)
    thread = threading.Thread(target=server.serve_forever)
    thread.daemon = True
    thread.start()
    base = 'http://127.0.0.1:%d/' % server.server_address[1]
    try:
        cookie = urllib2.urlopen(base + '?start').info()['Set-Cookie'].split(';')[0]

        def client(n):
            for _ in range(100):
                request = urllib2.Request(base + '?t%d' % n, headers={'Cookie': cookie})
                urllib2.urlopen(request, timeout=10).read()
        errors = run_at_once(client, 8)
    finally:
        server.server_close()
        server.thread_pool.shutdown()
    sid = cookie.split('=', 1)[1].strip('"')[40:]        # signature, then the id
    record = stored(tyrant, 'beaker:%s:session' % sid)
    assert errors == []
    assert [record['t%d' % n] for n in range(8)] == [100] * 8


# ---- a record is untrusted input

@pytest.mark.parametrize('call', ['/regenerate', '/delete', '/invalidate', '/inc'])
def test_cookie_attributes_never_come_from_a_record(tyrant, call):
    """Beaker copies _domain and _path from the session into Set-Cookie;
    a record written by another program must not choose them."""
    sid = 'c' * 32
    raw_put(tyrant, 'beaker:%s:session' % sid, json.dumps({
        '_accessed_time': time.time(), '_domain': 'attacker.example',
        '_path': '/\r\nX-Injected: 1', 'visits': 1}))
    app = session_app(tyrant.url, cookie_path='/app')
    app.set_cookie('beaker.session.id', sid)
    reply = app.get(call)
    cookies = ' '.join(value for name, value in reply.headerlist if name.lower() == 'set-cookie')
    assert 'attacker' not in cookies and '\r' not in cookies and '\n' not in cookies
    if call in ('/regenerate', '/delete'):          # the calls that send a cookie
        assert 'Path=/app' in cookies
    assert not any(name.lower() == 'x-injected' for name, _ in reply.headerlist)


# ---- what the record lock inside Tyrant guarantees

def count_up(tyrant, sid, key, times):
    """`times` requests of session `sid`, each adding 1 to `key` and saving."""
    for _ in range(times):
        session = tyrant_session(tyrant, sid)
        session[key] = session.get(key, 0) + 1
        session.save()


def test_sixteen_threads_saving_different_keys_of_one_session_lose_nothing(tyrant):
    sid = session_app(tyrant.url).get('/inc').json['id']
    errors = run_at_once(lambda n: count_up(tyrant, sid, 'k%02d' % n, 100), 16)
    record = stored(tyrant, 'beaker:%s:session' % sid)
    assert errors == []
    assert [record['k%02d' % n] for n in range(16)] == [100] * 16


@pytest.fixture
def proxy(tyrant):
    from proxy_support import HoldingProxy
    proxy = HoldingProxy(tyrant.host, tyrant.port)
    yield proxy
    proxy.close()


def save_held_past_its_timeout(tyrant, proxy, path, key, value):
    """A session made by `path`; a request that sets `key` and saves
    through `proxy`, which holds the merge: the save times out, the merge
    is still on its way.  Returns the session id."""
    sid = session_app(tyrant.url).get(path).json['id']
    slow = tyrant_session(tyrant, sid, url=proxy.url, io_timeout='0.3')
    slow[key] = value
    tcjson.get_pool(proxy.url).pipeline(('ext', 'probe', '', '', 0))
    proxy.hold()                               # the slow request's merge is stuck
    with pytest.raises(tcjson.TyrantUnavailable):
        slow.save()
    return sid


def test_a_save_delayed_past_its_timeout_cannot_undo_a_later_save(tyrant, proxy):
    sid = save_held_past_its_timeout(tyrant, proxy, '/set?a=1', 'a', 'late')
    later = tyrant_session(tyrant, sid)
    later['b'] = 'later'
    later.save()                               # acknowledged meanwhile
    proxy.release()                            # the stuck merge arrives now
    time.sleep(0.2)
    record = stored(tyrant, 'beaker:%s:session' % sid)
    assert record['b'] == 'later'              # kept: the late merge names only "a"
    assert record['a'] == 'late'               # ...and its one key is the newest write


def test_a_save_delayed_past_its_timeout_cannot_bring_a_logout_back(tyrant, proxy):
    sid = save_held_past_its_timeout(tyrant, proxy, '/set?user=alice', 'cart', ['book'])
    tyrant_session(tyrant, sid).delete()       # logout, acknowledged
    proxy.release()
    time.sleep(0.2)
    assert raw(tyrant, 'beaker:%s:session' % sid) is None


def test_two_hosts_with_clocks_ten_seconds_apart_lose_nothing(tyrant, monkeypatch):
    """No decision about a write depends on the clocks of the application
    hosts: their saves interleave and every one of them is kept."""
    sid = session_app(tyrant.url).get('/inc').json['id']
    real_time = time.time
    ahead = threading.local()
    monkeypatch.setattr(tcjson.time, 'time',
                        lambda: real_time() + (10.0 if getattr(ahead, 'on', False) else 0))

    def host(n):
        ahead.on = n % 2 == 0                  # hosts 0 and 2 run 10 s ahead
        count_up(tyrant, sid, 'host%d' % n, 50)
    errors = run_at_once(host, 4)
    record = stored(tyrant, 'beaker:%s:session' % sid)
    assert errors == []
    assert [record['host%d' % n] for n in range(4)] == [50] * 4


def test_no_key_with_a_lock_in_its_name_ever_exists(tyrant):
    app, other = session_app(tyrant.url, timeout='1'), session_app(tyrant.url)
    for path in ('/inc', '/inc', '/set?a=1', '/regenerate', '/flash', '/invalidate',
                 '/inc', '/delete', '/inc'):
        app.get(path)
        other.get(path)
    purge.purge_expired(tyrant.url, now=time.time() + 2)
    keys = tcjson.get_pool(tyrant.url).request('fwmkeys', '', 100000)
    assert keys and not [key for key in keys if 'lock' in key]


def test_regenerating_the_id_of_a_session_ended_meanwhile_starts_empty(tyrant):
    sid = session_app(tyrant.url).get('/set?user=alice').json['id']
    request = tyrant_session(tyrant, sid)          # loaded while still signed in
    tyrant_session(tyrant, sid).delete()           # logged out elsewhere
    request.regenerate_id()
    assert 'user' not in request and request.id != sid
    request.save(accessed_only=True)              # as the middleware does at the end
    assert raw(tyrant, 'beaker:%s:session' % request.id) is None   # nothing to store


def test_a_server_without_the_extension_is_named_and_nothing_is_written(tyrant_factory):
    # Probed before the first command of every connection: not even a new
    # session (a plain put) or a read reaches a server without it.
    server = tyrant_factory(ext=False)
    app = session_app(server.url)
    for _ in range(2):
        with pytest.raises(tcjson.ExtensionMissing) as info:
            app.get('/inc')
        assert '-ext' in str(info.value) and 'tcjson.lua' in str(info.value)
    bare = pytyrant.Tyrant.open(server.host, server.port)     # no probe: a plain client
    assert bare.rnum() == 0


def test_invalidate_corrupt_starts_a_new_session_and_keeps_the_record(tyrant, caplog):
    sid = 'e' * 32
    raw_put(tyrant, 'beaker:%s:session' % sid, '{"visits": [[[')
    app = session_app(tyrant.url, invalidate_corrupt='true')
    app.set_cookie('beaker.session.id', sid)
    reply = app.get('/inc').json
    assert reply['id'] != sid and reply['data']['counter'] == 1
    assert raw(tyrant, 'beaker:%s:session' % sid) == '{"visits": [[['
    assert 'unreadable' in caplog.text and sid not in caplog.text


def test_without_invalidate_corrupt_an_unreadable_record_is_an_error(tyrant):
    sid = 'e' * 32
    raw_put(tyrant, 'beaker:%s:session' % sid, '[1, 2]')
    app = session_app(tyrant.url)
    app.set_cookie('beaker.session.id', sid)
    with pytest.raises(tcjson.UnreadableRecord):
        app.get('/inc')
