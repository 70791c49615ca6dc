"""Sessions per user (user_sessions.py) against live Tyrant servers.

A user's index is JSON lines that lib/tcjson.lua changes under the index's
record lock; listing and revoking read the session records, which stay the
truth; a sign-out marks the lineages it ends before it deletes their
records, so no new id of a signed-out session survives; purge prunes the
indexes.
"""
import threading
import time
import urllib

import pytest
import simplejson as json
from beaker.middleware import SessionMiddleware
from webtest import TestApp as WebApp

from pylons_tcjson_template import purge, tcjson, user_sessions
from pylons_tcjson_template.user_sessions import SIGN_IN_GRACE, UserSessions

LATER = SIGN_IN_GRACE + 1      # seconds after which an entry needs its record


def user_app(url):
    """A tiny WSGI app whose path says what to do; answers with the session."""
    def app(environ, start_response):
        session = environ['beaker.session']
        path, query = environ['PATH_INFO'], environ.get('QUERY_STRING', '')
        if path == '/login':
            user_sessions.sign_in(session, urllib.unquote(query).decode('utf-8'),
                                  {'agent': environ.get('HTTP_USER_AGENT')})
        elif path == '/visit':
            session['visits'] = session.get('visits', 0) + 1
            session.save()
        elif path == '/signout-others':
            user_sessions.sign_out_others(session)
        elif path == '/signout-everywhere':
            user_sessions.sign_out_everywhere(session)
        elif path == '/signout':
            user_sessions.sign_out_session(session, query)
        listed = [dict(info._asdict()) for info in user_sessions.list_sessions(session)] \
            if path == '/sessions' else None
        body = json.dumps({'id': session.id, 'user': session.get('user'), 'sessions': listed})
        start_response('200 OK', [('Content-Type', 'application/json')])
        return [body]
    tcjson.register()
    config = {'session.type': 'ext:tcjson', 'session.url': url, 'session.timeout': '600',
              'session.invalidate_corrupt': 'false'}
    return SessionMiddleware(app, config, session_class=user_sessions.UserSession)


def browser(app, agent='Browser'):
    """One browser: its own cookie jar."""
    return WebApp(app, extra_environ={'HTTP_USER_AGENT': agent})


def signed_in(app, user, count):
    """`count` browsers signed in as `user`; returns them and their ids."""
    browsers = [browser(app, 'Browser %d' % n) for n in range(count)]
    ids = [str(b.get('/login?' + user).json['id']) for b in browsers]
    return browsers, ids


def pool(server):
    return tcjson.get_pool(server.url)


def raw(server, key):
    try:
        return pool(server).request('get', key)
    except Exception:
        return None


def index_lines(server, user='alice'):
    return [json.loads(line) for line in (raw(server, 'beaker:user:' + user) or '').splitlines()]


def index_ids(server, user='alice'):
    return [line['id'] for line in index_lines(server, user) if 'id' in line]


def revoked_lineages(server, user='alice'):
    return sorted(set(lineage for line in index_lines(server, user)
                      for lineage in line.get('revoked', {})))


def record_key(session_id):
    return str('beaker:%s:session' % session_id)


def tyrant_session(server, session_id, **options):
    """What one request sees of a session (Beaker's API, no middleware)."""
    tcjson.register()
    params = dict(type='ext:tcjson', url=server.url, timeout=600)
    params.update(options)
    return user_sessions.UserSession({'cookie': 'beaker.session.id=%s' % session_id}, **params)


# ---- the index

def test_the_index_is_json_lines_under_the_escaped_user_id(tyrant):
    app = user_app(tyrant.url)
    session_id = browser(app, 'Firefox').get('/login?z%C3%B6e:1%202').json['id']
    text = raw(tyrant, 'beaker:user:z%C3%B6e%3A1%202')
    entry = json.loads(text)
    assert text.endswith('\n') and text.count('\n') == 1
    assert entry['id'] == session_id and entry['agent'] == 'Firefox'
    assert abs(entry['at'] - time.time()) < 5
    record = json.loads(raw(tyrant, record_key(session_id)))
    assert record['user'] == u'z\xf6e:1 2'
    assert record['_sign_in'] == {'line': entry['line'], 'detail': {'agent': 'Firefox'}}


@pytest.mark.parametrize('user_id, escaped', [
    ('alice', 'alice'), (u'Zo\xeb Smith', 'Zo%C3%AB%20Smith'), ('a:b%c', 'a%3Ab%25c'),
    ('line\nbreak\x00', 'line%0Abreak%00'), (42, '42'), ('-._~', '-._~')])
def test_user_ids_are_percent_encoded_in_keys(user_id, escaped):
    assert user_sessions.escape_user_id(user_id) == escaped


@pytest.mark.parametrize('user_id', ['', None, 'x' * 257, True])
def test_an_empty_or_overlong_user_id_is_refused_before_anything_changes(tyrant, user_id):
    stored = tyrant_session(tyrant, None)
    stored.save()
    session = tyrant_session(tyrant, stored.id)
    with pytest.raises(ValueError):
        user_sessions.sign_in(session, user_id)
    assert session.id == stored.id and 'user' not in session
    assert pool(tyrant).request('fwmkeys', 'beaker:', 10) == [record_key(stored.id)]


def test_details_are_short_printable_strings():
    assert user_sessions.clean_detail({'agent': 'x' * 1000, 'ip': None}) == {'agent': 'x' * 200}
    assert user_sessions.clean_detail({'agent': 'a\x1b[31mb\x07c\r\nd'}) == {'agent': 'a[31mbcd'}
    for detail in ({'id': 'forged'}, {'line': 'forged'}, {'agent': {'nested': 1}},
                   dict(('k%d' % n, 'v') for n in range(9))):
        with pytest.raises(tcjson.UnstorableValue):
            user_sessions.clean_detail(detail)
    assert user_sessions.clean_detail({'agent': {'nested': 1}, 'ok': 'y'}, strict=False) \
        == {'ok': 'y'}


def test_sixteen_concurrent_sign_ins_of_one_user_lose_no_entry(tyrant):
    start, ids, errors = threading.Event(), [], []

    def sign_in():
        try:
            session = tyrant_session(tyrant, None)
            start.wait()
            user_sessions.sign_in(session, 'alice', {'agent': 'thread'})
            session.save()
            ids.append(session.id)
        except Exception as exc:                       # reported below
            errors.append(exc)
    threads = [threading.Thread(target=sign_in) for _ in range(16)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(set(ids)) == 16
    assert sorted(index_ids(tyrant)) == sorted(ids)
    listed = UserSessions.from_config(tyrant.url).sessions('alice')
    assert sorted(info.id for info in listed) == sorted(ids)


def test_sign_in_costs_the_index_call_and_one_check(tyrant, monkeypatch):
    app = user_app(tyrant.url)
    visitor = browser(app)
    visitor.get('/visit')                               # a stored, anonymous session
    trips = []
    tyrant_pool = pool(tyrant)
    tyrant_pool.pipeline(('ext', 'probe', '', '', 0))
    request, pipeline = tyrant_pool.request, tyrant_pool.pipeline
    monkeypatch.setattr(tyrant_pool, 'request', lambda name, *a: trips.append([name]) or
                        request(name, *a))
    monkeypatch.setattr(tyrant_pool, 'pipeline', lambda *cmds: trips.append(
        [c[1] if c[0] == 'ext' else c[0] for c in cmds]) or pipeline(*cmds))
    visitor.get('/login?alice')
    # load; regenerate_id deletes the old record; the index; when the
    # response starts, the record under the new id, then its check.
    assert trips == [['get'], ['delete'], ['index_add'], ['put'], ['index_check']]


# ---- listing

def test_listing_shows_each_session_with_its_times_and_marks_this_one(tyrant):
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 3)
    browsers[2].get('/visit')
    listed = browsers[0].get('/sessions').json['sessions']
    assert [info['id'] for info in listed] == ids            # oldest sign-in first
    assert [info['current'] for info in listed] == [True, False, False]
    assert [info['detail']['agent'] for info in listed] == ['Browser 0', 'Browser 1',
                                                          'Browser 2']
    for info in listed:
        assert info['created'] <= info['accessed'] < info['expires']
        assert info['signed_in'] == pytest.approx(info['created'], abs=2)
        assert len(info['handle']) == 16 and info['handle'] not in info['id']


def test_listing_drops_entries_of_sessions_that_are_gone(tyrant):
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 4)
    pool(tyrant).request('out', record_key(ids[1]))           # purged, say
    other = tyrant_session(tyrant, ids[2])                    # changed hands: not alice's
    other['user'] = 'mallory'
    other.save()
    store = UserSessions.from_config(tyrant.url)
    # Just signed in, so the entry may be waiting for its record: kept.
    assert [info.id for info in store.sessions('alice')] == [ids[0], ids[3]]
    assert index_ids(tyrant) == [ids[0], ids[1], ids[3]]
    listed = store.sessions('alice', now=time.time() + LATER)
    assert [info.id for info in listed] == [ids[0], ids[3]]
    assert index_ids(tyrant) == [ids[0], ids[3]]
    assert raw(tyrant, record_key(ids[2])) is not None       # mallory's stays


def test_an_expired_session_is_not_listed(tyrant):
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 2)
    store = UserSessions.from_config(tyrant.url)
    assert store.sessions('alice', now=time.time() + 601) == []
    assert raw(tyrant, 'beaker:user:alice') is None            # left empty: deleted


def test_lines_that_are_not_ours_are_kept_and_ignored(tyrant):
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 1)
    pool(tyrant).request('putcat', 'beaker:user:alice',
                         'not json\n{"id": "../x:y", "at": 1}\n')
    pool(tyrant).request('out', record_key(ids[0]))
    assert UserSessions.from_config(tyrant.url).sessions('alice', now=time.time() + LATER) == []
    assert raw(tyrant, 'beaker:user:alice') == 'not json\n{"id": "../x:y", "at": 1}\n'


# ---- revoking

def test_revoke_all_removes_every_record_and_the_cookies_come_back_as_new_sessions(tyrant):
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 3)
    bob, (bob_id,) = signed_in(app, 'bob', 1)
    removed = UserSessions.from_config(tyrant.url).revoke('alice')
    assert sorted(info.id for info in removed) == sorted(ids)
    for session_id in ids:
        assert raw(tyrant, record_key(session_id)) is None
    assert index_ids(tyrant) == []
    assert len(revoked_lineages(tyrant)) == 3           # marked, for REVOKED_SECONDS
    for revoked, old_id in zip(browsers, ids):
        page = revoked.get('/visit').json
        assert page['id'] != old_id and page['user'] is None
    assert bob[0].get('/visit').json == {'id': bob_id, 'user': 'bob', 'sessions': None}


def test_sign_out_everywhere_else_keeps_this_one(tyrant):
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 3)
    browsers[0].get('/signout-others')
    assert browsers[0].get('/visit').json['id'] == ids[0]
    for revoked, old_id in zip(browsers[1:], ids[1:]):
        page = revoked.get('/visit').json
        assert page['id'] != old_id and page['user'] is None
    assert index_ids(tyrant) == [ids[0]]
    assert [info['current'] for info in browsers[0].get('/sessions').json['sessions']] == [True]


def test_sign_out_everywhere_includes_this_one(tyrant):
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 2)
    browsers[0].get('/signout-everywhere')
    for revoked, old_id in zip(browsers, ids):
        assert revoked.get('/visit').json['user'] is None
        assert raw(tyrant, record_key(old_id)) is None


def test_sign_out_one_session_by_its_handle_and_only_the_users_own(tyrant):
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 3)
    (bob,), (bob_id,) = signed_in(app, 'bob', 1)
    handles = [info['handle'] for info in browsers[0].get('/sessions').json['sessions']]
    bob.get('/signout?' + handles[1])                          # not bob's: nothing happens
    assert raw(tyrant, record_key(ids[1])) is not None
    browsers[0].get('/signout?' + handles[1])
    assert raw(tyrant, record_key(ids[1])) is None
    assert browsers[1].get('/visit').json['user'] is None
    assert [b.get('/visit').json['id'] for b in (browsers[0], browsers[2])] == [ids[0], ids[2]]
    assert index_ids(tyrant) == [ids[0], ids[2]]


@pytest.mark.parametrize('refresh_only', [True, False])
def test_a_session_signed_out_everywhere_is_not_resurrected_by_a_request_in_flight(
        tyrant, refresh_only):
    """Two requests of the session loaded it before the revocation and save
    after it: the merge, inside Tyrant, finds the record gone and writes
    nothing (TyrantSession._merge)."""
    app = user_app(tyrant.url)
    (alice,), (session_id,) = signed_in(app, 'alice', 1)
    in_flight = tyrant_session(tyrant, session_id, refresh_interval=0)
    assert in_flight['user'] == 'alice'
    UserSessions.from_config(tyrant.url).revoke('alice')
    if refresh_only:
        in_flight.save(accessed_only=True)
    else:
        in_flight['cart'] = ['book']
        in_flight.save()
    assert raw(tyrant, record_key(session_id)) is None
    assert alice.get('/visit').json['user'] is None


# ---- signing out cannot be escaped

def test_regenerating_the_id_while_signed_out_everywhere_else_never_survives(tyrant):
    """A stolen cookie that keeps changing its id (Beaker's own
    regenerate_id(), the sample's "New session id") while its owner signs
    out everywhere else: after the sign-out, no id of the thief's lineage
    is signed in, whatever the interleaving."""
    app = user_app(tyrant.url)
    for attempt in range(5):
        (owner, thief), (owner_id, thief_id) = signed_in(app, 'alice', 2)
        current, stop, errors = [thief_id], threading.Event(), []

        def regenerate_in_a_loop():
            while not stop.is_set():
                try:
                    session = tyrant_session(tyrant, current[-1])
                    session.regenerate_id()
                    session.save()
                    current.append(session.id)
                except Exception as exc:                # counted, then asserted
                    errors.append(repr(exc))
        loops = [threading.Thread(target=regenerate_in_a_loop) for _ in range(3)]
        for loop in loops:
            loop.start()
        time.sleep(0.05)
        owner.get('/signout-others')
        time.sleep(0.05)
        stop.set()
        for loop in loops:
            loop.join(10)
        assert errors == []
        survivors = [session_id for session_id in set(current)
                     if (json.loads(raw(tyrant, record_key(session_id)) or '{}')
                         .get('user') == 'alice')]
        assert survivors == [], attempt
        assert owner.get('/visit').json['user'] == 'alice'
        UserSessions.from_config(tyrant.url).revoke('alice')


def test_a_new_id_listed_too_late_for_a_sign_out_deletes_itself(tyrant):
    """The sign-out marked the lineage and read the index before the new
    id's record existed: the record, once stored, checks the marks and
    deletes itself."""
    app = user_app(tyrant.url)
    (alice,), (session_id,) = signed_in(app, 'alice', 1)
    session = tyrant_session(tyrant, session_id)
    session.regenerate_id()                       # listed; its record comes at save()
    UserSessions.from_config(tyrant.url).revoke('alice')
    session.save()
    assert raw(tyrant, record_key(session.id)) is None
    assert alice.get('/visit').json['user'] is None


def test_a_new_id_of_a_signed_out_lineage_is_refused_by_the_index(tyrant):
    app = user_app(tyrant.url)
    (alice,), (session_id,) = signed_in(app, 'alice', 1)
    session = tyrant_session(tyrant, session_id)          # loaded before the sign-out
    store = UserSessions.from_config(tyrant.url)
    lineage = store.sessions('alice')[0].line
    store.index('alice').revoke([lineage])                # marked; record not yet deleted
    session.regenerate_id()                               # the old record still exists...
    assert 'user' not in session and session.was_invalidated   # ...but the lineage is out
    session.save(accessed_only=True)
    assert session.id not in index_ids(tyrant)


def test_a_session_key_holding_junk_sign_in_detail_regenerates_signed_out(tyrant):
    """What a visitor may store under a key must never turn "New session
    id" into an error that loses the session (finding: a value under the
    sign-in's key)."""
    app = user_app(tyrant.url)
    (alice,), (session_id,) = signed_in(app, 'alice', 1)
    session = tyrant_session(tyrant, session_id)
    session['_sign_in'] = 'junk'
    session['cart'] = ['book']
    session.regenerate_id()
    session.save()
    record = json.loads(raw(tyrant, record_key(session.id)))
    assert record['cart'] == ['book'] and 'user' not in record and '_sign_in' not in record


def test_past_the_bound_the_oldest_sessions_are_signed_out(tyrant, monkeypatch):
    monkeypatch.setattr(user_sessions, 'MAX_SESSIONS', 3)
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 5)
    assert index_ids(tyrant) == ids[2:]
    for old, old_id in zip(browsers[:2], ids[:2]):
        assert raw(tyrant, record_key(old_id)) is None
        assert old.get('/visit').json['user'] is None
    assert [b.get('/visit').json['user'] for b in browsers[2:]] == ['alice'] * 3


# ---- sign-ins, listings and sign-outs at the same time

def sign_in_thread(server, ids):
    def run():
        session = tyrant_session(server, None)
        user_sessions.sign_in(session, 'alice')
        session.save()
        ids.append(session.id)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sign_ins_and_listings_at_once_lose_no_live_session(tyrant):
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 3)
    store, stop, new_ids = UserSessions.from_config(tyrant.url), threading.Event(), []
    gone = ['%032x' % n for n in range(3)]                     # signed in long ago
    for session_id in gone:
        store.index('alice').add(session_id, 'L' + session_id, {}, time.time() - LATER)

    def list_until_stopped():
        while not stop.is_set():
            store.sessions('alice')
    listers = [threading.Thread(target=list_until_stopped) for _ in range(2)]
    for thread in listers:
        thread.start()
    try:
        for _ in range(4):
            for thread in [sign_in_thread(tyrant, new_ids) for _ in range(5)]:
                thread.join(10)
    finally:
        stop.set()
        for thread in listers:
            thread.join(10)
    assert len(new_ids) == 20
    assert sorted(index_ids(tyrant)) == sorted(ids + new_ids)


# ---- purge

def test_purge_prunes_indexes_and_deletes_the_empty_ones(tyrant):
    app = user_app(tyrant.url)
    bob, bob_ids = signed_in(app, 'bob', 2)
    carol, carol_ids = signed_in(app, 'carol', 1)
    pool(tyrant).request('out', record_key(bob_ids[0]))
    pool(tyrant).request('out', record_key(carol_ids[0]))
    pool(tyrant).request('put', 'beaker:user:dave', 'a line of some other program\n')
    purge.purge_expired(tyrant.url, 'beaker:', batch_size=2, now=time.time() + LATER)
    assert index_ids(tyrant, 'bob') == [bob_ids[1]]
    assert raw(tyrant, 'beaker:user:carol') is None
    assert raw(tyrant, 'beaker:user:dave') == 'a line of some other program\n'
    assert bob[1].get('/visit').json['user'] == 'bob'


def test_purge_keeps_entries_waiting_for_their_record(tyrant):
    store = UserSessions.from_config(tyrant.url)
    store.index('alice').add('c' * 32, 'L1', {}, time.time())  # its response not started yet
    purge.purge_expired(tyrant.url, 'beaker:')
    assert index_ids(tyrant) == ['c' * 32]


def test_purge_forgets_old_sign_out_marks_and_then_the_index(tyrant, monkeypatch):
    app = user_app(tyrant.url)
    signed_in(app, 'alice', 2)
    UserSessions.from_config(tyrant.url).revoke('alice')
    assert len(revoked_lineages(tyrant)) == 2
    purge.purge_expired(tyrant.url, 'beaker:', now=time.time() + LATER)
    assert len(revoked_lineages(tyrant)) == 2                    # still within a day
    # Their age is judged by the server's clock: make a day pass at once.
    monkeypatch.setattr(user_sessions, 'REVOKED_SECONDS', 0.0)
    time.sleep(0.01)
    purge.purge_expired(tyrant.url, 'beaker:')
    assert raw(tyrant, 'beaker:user:alice') is None


# ---- several servers

def test_revoking_reaches_sessions_on_every_shard(tyrant_factory):
    servers = [tyrant_factory(), tyrant_factory()]
    url = ';'.join(server.url for server in servers)
    app = user_app(url)
    browsers, ids = [], []
    while len(ids) < 40 and not all(pool(s).request('rnum') > 1 for s in servers):
        more, more_ids = signed_in(app, 'alice', 2)
        browsers += more
        ids += more_ids
    assert all(pool(s).request('rnum') > 1 for s in servers)   # records on both
    index_server = tcjson.get_servers(url).shard_index('beaker:user:alice')
    assert raw(servers[index_server], 'beaker:user:alice').count('\n') == len(ids)
    removed = UserSessions.from_config(url).revoke('alice')
    assert sorted(info.id for info in removed) == sorted(ids)
    # Left, where the index was: the index, holding only the sign-out's marks.
    assert [pool(s).request('rnum') for s in servers] == [int(n == index_server)
                                                           for n in range(2)]
    assert index_ids(servers[index_server]) == []
    for revoked in browsers:
        assert revoked.get('/visit').json['user'] is None


def test_revoking_after_a_shard_was_added_reaches_the_sessions_it_moved(tyrant_factory):
    """Adding a shard moves the user's index and some sessions to it (their
    keys now hash there); the old copies stay on the old shard.  A sign-out
    reads and deletes on every shard, so nothing of the user's survives,
    not even after going back to the old url."""
    old, new = tyrant_factory(), tyrant_factory()
    two = '%s;%s' % (old.url, new.url)
    moved = [name for name in ('user%d' % n for n in range(200))
             if tcjson.get_servers(two).shard_index('beaker:user:' + name) == 1]
    user = moved[0]                                   # an index the new shard now owns
    browsers, ids = signed_in(user_app(old.url), user, 4)
    removed = UserSessions.from_config(two).revoke(user)
    assert sorted(info.id for info in removed) == sorted(ids)
    back = user_app(old.url)                          # the url rolled back
    for revoked in browsers:
        revoked.app = back
        assert revoked.get('/visit').json['user'] is None
    assert [raw(old, record_key(session_id)) for session_id in ids] == [None] * 4


def test_listing_and_revoking_go_on_when_a_member_of_a_pair_is_down(tmpdir):
    """Each key is written on its preferred member of the pair; with member
    0 stopped, everything is read, deleted and rewritten on member 1."""
    from pair_support import DualMaster, raw_get, wait_for_value
    with DualMaster(tmpdir) as pair:
        pair.wait_replicating()
        app = user_app(pair.url)
        browsers, ids = signed_in(app, 'alice', 6)
        first, second = [member.port for member in pair.members]
        for key in [record_key(session_id) for session_id in ids] + ['beaker:user:alice']:
            assert wait_for_value(second, key, raw_get(first, key) or raw_get(second, key), 5)
        pair.members[0].stop()
        store = UserSessions.from_config(pair.url)
        assert sorted(info.id for info in store.sessions('alice')) == sorted(ids)
        assert len(store.revoke('alice')) == 6
        assert [raw_get(second, record_key(session_id)) for session_id in ids] == [None] * 6
        for revoked in browsers:
            assert revoked.get('/visit').json['user'] is None


def test_a_new_id_for_a_signed_in_session_is_added_to_the_index(tyrant):
    app = user_app(tyrant.url)
    (alice,), (old_id,) = signed_in(app, 'alice', 1)
    session = tyrant_session(tyrant, old_id)
    session.regenerate_id()                          # Beaker's own call
    session.save()
    store = UserSessions.from_config(tyrant.url)
    listed = store.sessions('alice', now=time.time() + LATER)
    # The new id is listed with what its sign-in recorded.
    assert [(info.id, info.detail) for info in listed] == [(session.id,
                                                             {'agent': 'Browser 0'})]
    assert len(store.revoke('alice')) == 1
    assert raw(tyrant, record_key(session.id)) is None


def test_signing_in_as_another_user_leaves_the_first_users_index_alone(tyrant):
    app = user_app(tyrant.url)
    (browser_,), (alice_id,) = signed_in(app, 'alice', 1)
    bob_id = str(browser_.get('/login?bob').json['id'])
    store = UserSessions.from_config(tyrant.url)
    later = time.time() + LATER
    assert [info.id for info in store.sessions('bob', now=later)] == [bob_id]
    assert store.sessions('alice', now=later) == []
    assert raw(tyrant, record_key(alice_id)) is None


def test_an_index_grown_huge_is_compacted_in_tyrant_before_anything_reads_it(tyrant):
    """Another program (or an old bug) filled an index with 64 MB of lines:
    listing and purging never load it whole, and it shrinks to its newest
    sessions."""
    app = user_app(tyrant.url)
    browsers, ids = signed_in(app, 'alice', 2)
    junk = ('{"not": "an entry of ours"}\n' * 1024) * 2400
    pool(tyrant).request('putcat', 'beaker:user:alice', junk)
    assert pool(tyrant).request('vsiz', 'beaker:user:alice') > 64 * 1024 * 1024
    listed = UserSessions.from_config(tyrant.url).sessions('alice')
    assert sorted(info.id for info in listed) == sorted(ids)
    assert pool(tyrant).request('vsiz', 'beaker:user:alice') < 1024
    assert browsers[0].get('/visit').json['user'] == 'alice'
