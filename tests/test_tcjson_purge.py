"""purge.py: only what has run out, only under the prefix, each session
judged under its record lock in Tyrant."""
import time

import pytest
import simplejson as json

from pylons_tcjson_template import purge, records, tcjson
from pylons_tcjson_template.tyrant import is_no


def put(server, key, record):
    tcjson.get_pool(server.url).request('put', key, json.dumps(record))


def stored_keys(server, prefix=''):
    return sorted(tcjson.get_pool(server.url).request('fwmkeys', prefix, 100000))


def test_purge_deletes_only_expired_records_under_its_prefix(tyrant):
    now = time.time()
    put(tyrant, 'app:old:session', {'_expires': now - 1, 'n': 1})
    put(tyrant, 'app:fresh:session', {'_expires': now + 600, 'n': 2})
    put(tyrant, 'app:cache:stale', [now - 9999, 60, 'a cache value Beaker calls stale'])
    put(tyrant, 'app:cache:forever', [now - 9999, None, 'no expiretime'])
    put(tyrant, 'app:foreign:session', {'_accessed_time': now - 9999})  # no _expires
    put(tyrant, 'other:old:session', {'_expires': now - 1})
    totals = purge.purge_expired(tyrant.url, 'app:')
    assert totals == {'scanned': 5, 'deleted': 2, 'unreadable': 0, 'batches': 1}
    assert stored_keys(tyrant) == ['app:cache:forever', 'app:foreign:session',
                                   'app:fresh:session', 'other:old:session']


def test_max_age_also_purges_records_without_expiry_by_accessed_time(tyrant):
    now = time.time()
    put(tyrant, 'app:idle:session', {'_accessed_time': now - 7200})
    put(tyrant, 'app:busy:session', {'_accessed_time': now - 60})
    put(tyrant, 'app:text:k', 'not an object')
    assert purge.purge_expired(tyrant.url, 'app:', max_age=3600)['deleted'] == 1
    assert stored_keys(tyrant) == ['app:busy:session', 'app:text:k']


def test_purge_walks_many_records_in_bounded_batches_with_progress(tyrant, monkeypatch):
    now, pool = time.time(), tcjson.get_pool(tyrant.url)
    for i in range(0, 2000, 250):
        pool.request('misc', 'putlist', 0, sum(
            [['s:%032x:session' % (n * 7919), json.dumps({'_expires': now + (n % 2) * 999})]
             for n in range(i, i + 250)], []))
    largest = [0]
    request, pipeline = pool.request, pool.pipeline

    def watching(command, *args):
        result = request(command, *args)
        if command == 'next_keys':
            largest[0] = max(largest[0], len(result))
        return result

    def watching_pipeline(*commands):
        largest[0] = max([largest[0]] + [len(c[1]) for c in commands if c[0] == 'mget'])
        return pipeline(*commands)
    monkeypatch.setattr(pool, 'request', watching)
    monkeypatch.setattr(pool, 'pipeline', watching_pipeline)
    reports = []
    totals = purge.purge_expired(tyrant.url, 's:', batch_size=100, progress=reports.append)
    assert totals['scanned'] == 2000 and totals['deleted'] == 1000
    assert largest[0] <= 100                       # never more than one batch in memory
    # 20 batches, 21 when the purge's own marker falls into one
    assert len(reports) == totals['batches'] and 20 <= totals['batches'] <= 21
    assert [r['scanned'] for r in reports] == sorted(r['scanned'] for r in reports)
    assert len(stored_keys(tyrant, 's:')) == 1000


def test_a_record_refreshed_meanwhile_is_not_deleted(tyrant, monkeypatch):
    """The test is made inside Tyrant, under the record's lock, at the
    moment of the delete: a save that came first made it unexpired."""
    now, pool = time.time(), tcjson.get_pool(tyrant.url)
    put(tyrant, 'app:user:session', {'_expires': now - 1})
    pipeline = pool.pipeline

    def saved_just_before(*commands):
        if any(c[0] == 'ext' and c[1] == 'delete' for c in commands):
            put(tyrant, 'app:user:session', {'_expires': now + 600})
        return pipeline(*commands)
    monkeypatch.setattr(pool, 'pipeline', saved_just_before)
    assert purge.purge_expired(tyrant.url, 'app:')['deleted'] == 0
    assert stored_keys(tyrant) == ['app:user:session']


def test_a_purge_racing_saves_never_brings_an_expired_session_back(tyrant):
    """Requests that loaded a session just before it expired save it while
    purge deletes it: each save either came first (the session stays,
    refreshed) or finds nothing and writes nothing -- never half of each."""
    tcjson.register()
    options = dict(type='ext:tcjson', url=tyrant.url, prefix='web:', timeout=60,
                   refresh_interval=0)
    ids = []
    for _ in range(200):
        session = tcjson.TyrantSession({}, **options)
        session['n'] = 1
        session.save()
        ids.append(session.id)
    loaded = [tcjson.TyrantSession({'cookie': 'beaker.session.id=%s' % sid}, **options)
              for sid in ids]
    for session in loaded:
        session['n'] = 2
    import threading
    purging = threading.Thread(target=lambda: purge.purge_expired(
        tyrant.url, 'web:', now=time.time() + 61, batch_size=10))
    purging.start()
    for session in loaded:
        session.save()
    purging.join()
    for sid in ids:
        text = tcjson.get_pool(tyrant.url).pipeline(('get', 'web:%s:session' % sid))[0]
        if not is_no(text):
            record = json.loads(text)
            assert record['n'] == 2 and record['_expires'] > time.time() + 50


def test_sessions_written_by_tyrant_session_expire_and_are_purged(tyrant):
    tcjson.register()
    session = tcjson.TyrantSession({}, type='ext:tcjson', url=tyrant.url, prefix='web:',
                                   timeout=60)
    session['user'] = 'bob'
    session.save()
    assert purge.purge_expired(tyrant.url, 'web:', now=time.time() + 59)['deleted'] == 0
    assert purge.purge_expired(tyrant.url, 'web:', now=time.time() + 61)['deleted'] == 1
    assert stored_keys(tyrant) == []


def test_no_record_stops_a_purge(tyrant):
    """Hostile records under the prefix are kept, counted, and the purge
    goes on."""
    now = time.time()
    junk = ['[' * 100000, '{"_expires": 1e999}', '\xff\xfe', '{"_expires": "soon"}',
            '{' + ','.join('"k%d": 1' % n for n in range(30000)) + ', "_expires": 1}']
    for n, record in enumerate(junk):
        tcjson.get_pool(tyrant.url).request('put', 'app:junk%d:session' % n, record)
    put(tyrant, 'app:old:session', {'_expires': now - 1})
    totals = purge.purge_expired(tyrant.url, 'app:', batch_size=2)
    assert totals['deleted'] == 1
    # Unreadable to tcjson.lua: the three that are no JSON object or too
    # big; "soon" is read, is not a time, and is simply kept.
    assert totals['unreadable'] == 3
    assert len(stored_keys(tyrant, 'app:junk')) == len(junk)


def test_unreadable_records_go_once_old_enough_when_asked(tyrant):
    now = time.time()
    pool = tcjson.get_pool(tyrant.url)
    pool.request('put', 'app:old:session', '{"_accessed_time": %f, "x": [[[' % (now - 7200))
    pool.request('put', 'app:new:session', '{"_accessed_time": %f, "x": [[[' % (now - 60))
    pool.request('put', 'app:timeless:session', '[1, 2, 3]')
    assert purge.purge_expired(tyrant.url, 'app:')['deleted'] == 0    # kept unless asked
    totals = purge.purge_expired(tyrant.url, 'app:', unreadable_age=3600)
    assert totals['deleted'] == 2 and totals['unreadable'] == 3
    assert stored_keys(tyrant) == ['app:new:session']


def test_purge_reads_big_records_in_bounded_replies(tyrant, monkeypatch):
    now, pool = time.time(), tcjson.get_pool(tyrant.url)
    monkeypatch.setattr(records, 'READ_BYTES', 3 * 1024 * 1024)
    big = json.dumps([now - 9999, 60, 'x' * (1024 * 1024)])       # stale cache values
    for n in range(8):
        pool.request('put', 'app:cache:%d' % n, big)
    pipeline, replies = pool.pipeline, []

    def watching(*commands):
        result = pipeline(*commands)
        for command, answer in zip(commands, result):
            if command[0] == 'mget':
                replies.append(sum(len(k) + len(v) for k, v in answer.items()))
        return result
    monkeypatch.setattr(pool, 'pipeline', watching)
    assert purge.purge_expired(tyrant.url, 'app:', batch_size=500)['deleted'] == 8
    assert replies and max(replies) <= 3 * 1024 * 1024


def test_a_second_purge_of_one_server_is_refused_while_the_first_runs(tyrant):
    now = time.time()
    for n in range(30):
        put(tyrant, 'app:%02d:session' % n, {'_expires': now - 1})
    refused = []

    def second_purge(totals):
        if not refused:
            with pytest.raises(purge.PurgeBusy) as info:
                purge.purge_expired(tyrant.url, 'other:')
            refused.append(str(info.value))
    assert purge.purge_expired(tyrant.url, 'app:', batch_size=10,
                               progress=second_purge)['deleted'] == 30
    assert 'another purge is running' in refused[0]
    assert stored_keys(tyrant, 'app:') == []
    assert purge.purge_expired(tyrant.url, 'app:')['deleted'] == 0   # and can run again
