"""Beaker sessions through SessionMiddleware + WebTest, stored as plain JSON."""
import datetime
import socket
import struct
import threading
import time

import pytest
import simplejson as json
from beaker.middleware import SessionMiddleware
from webtest import TestApp as WebApp

from pylons_tcjson_template import tcjson


def session_app(url, **options):
    """A tiny WSGI app; the path says what to do with the session."""
    def app(environ, start_response):
        session = environ['beaker.session']
        path = environ['PATH_INFO']
        if path == '/inc':
            session['counter'] = session.get('counter', 0) + 1
            session.save()
        elif path == '/when':
            session['when'] = datetime.datetime(2009, 5, 1)
            session.save()                         # fails at the end of the request
            start_response('200 OK', [])
            return ['saved?']
        elif path == '/flash':
            session.setdefault('flash', []).append(('notice', u'Saved \u2713'))
            session.save()
        elif path == '/logout':
            tcjson.destroy_session(session)
        elif path == '/login':
            tcjson.regenerate_session_id(session)
        body = json.dumps({'id': session.id, 'data': dict(session),
                           'key': tcjson.session_record_key(session)})
        start_response('200 OK', [('Content-Type', 'application/json')])
        return [body]
    config = {'session.type': 'ext:tcjson', 'session.url': url, 'session.timeout': '600'}
    config.update(('session.' + k, v) for k, v in options.items())
    tcjson.register()
    return WebApp(SessionMiddleware(app, config, invalidate_corrupt=False,
                                     data_serializer=tcjson.JSONSerializer()))


def raw(server, key):
    try:
        return tcjson.get_pool(server.url).request('get', str(key))
    except Exception:
        return None


def raw_put(server, key, value):
    """Write a record as another program would: a bare Tyrant put."""
    sock = socket.create_connection((server.host, server.port), 5)
    try:
        sock.sendall(struct.pack('>BBII', 0xC8, 0x10, len(key), len(value)) + key + value)
        assert sock.recv(1) == '\x00'
    finally:
        sock.close()


def test_the_stored_record_is_a_plain_json_object(tyrant):
    app = session_app(tyrant.url)
    app.get('/inc')
    reply = app.get('/inc').json
    record = json.loads(raw(tyrant, reply['key']))
    assert reply['key'] == 'beaker:%s:session' % reply['id']
    assert record['counter'] == 2
    assert set(record) == set(['counter', '_accessed_time', '_creation_time', '_expires',
                               '_domain', '_path'])          # Beaker's cookie settings
    assert record['_expires'] == pytest.approx(record['_accessed_time'] + 720, abs=1)


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
    stored = app.get('/flash').json['data']['flash']
    assert stored == [['notice', u'Saved \u2713']] * 2
    assert [Message(*m).message for m in stored] == [u'Saved \u2713'] * 2


def test_a_session_request_costs_two_round_trips(tyrant, monkeypatch):
    app = session_app(tyrant.url)
    app.get('/inc')                                # the session exists now
    pool, calls = tcjson.get_pool(tyrant.url), []
    request = pool.request
    monkeypatch.setattr(pool, 'request', lambda *a: calls.append(a[0]) or request(*a))
    app.get('/inc')
    assert calls == ['get', 'put']
    del calls[:]
    app.get('/')                                   # read only: the access time is saved
    assert calls == ['get', 'put']


def test_destroying_one_session_leaves_another_intact(tyrant):
    alice, bob = session_app(tyrant.url), session_app(tyrant.url)
    alice_key = alice.get('/inc').json['key']
    bob_key = bob.get('/inc').json['key']
    reply = alice.get('/logout')
    assert 'beaker.session.id=' in reply.headers['Set-Cookie']
    assert 'expires=' in reply.headers['Set-Cookie'].lower()
    assert raw(tyrant, alice_key) is None          # record gone, not re-saved empty
    assert json.loads(raw(tyrant, bob_key))['counter'] == 1
    assert bob.get('/inc').json['data']['counter'] == 2


def test_regenerating_the_id_moves_the_record_and_deletes_the_old_one(tyrant):
    app = session_app(tyrant.url)
    old = app.get('/inc').json
    new = app.get('/login').json
    assert new['id'] != old['id'] and new['data']['counter'] == 1
    assert raw(tyrant, old['key']) is None
    assert json.loads(raw(tyrant, new['key']))['counter'] == 1
    assert app.get('/inc').json['data']['counter'] == 2      # the cookie follows


def test_raw_record_shows_the_stored_bytes(tyrant):
    from beaker.session import Session
    tcjson.register()
    session = Session({}, type='ext:tcjson', url=tyrant.url, use_cookies=False,
                      data_serializer=tcjson.JSONSerializer())
    session['x'] = 1
    session.save()
    assert json.loads(tcjson.raw_record(session))['x'] == 1


def test_with_encrypt_key_the_record_is_the_json_envelope(tyrant):
    app = session_app(tyrant.url, encrypt_key='k' * 32, validate_key='v' * 32)
    app.get('/inc')
    reply = app.get('/inc').json
    record = json.loads(raw(tyrant, reply['key']))
    assert record['tcjson'] == 'beaker-opaque' and 'counter' not in record
    assert reply['data']['counter'] == 2


def test_the_default_pickle_serializer_also_works_through_the_envelope(tyrant):
    tcjson.register()
    def app(environ, start_response):
        environ['beaker.session']['n'] = environ['beaker.session'].get('n', 0) + 1
        environ['beaker.session'].save()
        start_response('200 OK', [])
        return [str(environ['beaker.session']['n'])]
    client = WebApp(SessionMiddleware(app, {'session.type': 'ext:tcjson',
                                             'session.url': tyrant.url}))
    client.get('/')
    assert client.get('/').body == '2'


def test_a_loaded_record_is_parsed_once_and_only_for_its_own_bytes(tyrant, monkeypatch):
    """The manager parses the record to check it; JSONSerializer.loads then
    reuses that parse instead of parsing again, but only for identical
    bytes, only once, and only in the thread that parsed it."""
    app = session_app(tyrant.url)
    app.get('/inc')
    parses = []
    real_loads = json.loads
    monkeypatch.setattr(tcjson.json, 'loads',
                        lambda *a, **k: parses.append(1) or real_loads(*a, **k))
    response = app.get('/inc')
    assert len(parses) == 1                 # (simplejson.loads is json.loads here)
    assert response.json['data']['counter'] == 2

    serializer = tcjson.JSONSerializer()
    tcjson._last_parse.remember('{"a":1}', {'a': 'memo'})
    assert serializer.loads('{"a":2}') == {'a': 2}           # other bytes: parsed
    assert serializer.loads('{"a":1}') == {'a': 1}           # the memo went with it
    tcjson._last_parse.remember('{"a":1,"_expires":9}', {'a': 'memo', '_expires': 9})
    seen = []
    thread = threading.Thread(target=lambda: seen.append(
        serializer.loads('{"a":1,"_expires":9}')))
    thread.start()
    thread.join()
    assert seen == [{'a': 1}]                                # not this thread's memo
    assert serializer.loads('{"a":1,"_expires":9}') == {'a': 'memo'}
