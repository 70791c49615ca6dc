"""purge_expired and the purge command: only expired records, only under the prefix."""
import time

import pytest
import simplejson as json

from pylons_tcjson_template import tcjson


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
    put(tyrant, 'app:lock:ns:k', {'tcjson': 'lock', '_expires': now - 1})
    put(tyrant, 'other:old:session', {'_expires': now - 1})
    totals = tcjson.purge_expired(tyrant.url, 'app:')
    assert totals == {'scanned': 6, 'deleted': 3, 'batches': 1}
    assert stored_keys(tyrant) == ['app:cache:forever', 'app:foreign:session',
                                   'app:fresh:session', 'other:old:session']


def test_max_age_also_purges_records_without_expiry_by_accessed_time(tyrant):
    now = time.time()
    put(tyrant, 'app:idle:session', {'_accessed_time': now - 7200})
    put(tyrant, 'app:busy:session', {'_accessed_time': now - 60})
    put(tyrant, 'app:text:k', 'not an object')
    assert tcjson.purge_expired(tyrant.url, 'app:', max_age=3600)['deleted'] == 1
    assert stored_keys(tyrant) == ['app:busy:session', 'app:text:k']


def test_purge_walks_many_records_in_bounded_batches_with_progress(tyrant, monkeypatch):
    now, pool = time.time(), tcjson.get_pool(tyrant.url)
    for i in range(0, 2000, 250):
        pool.request('misc', 'putlist', 0, sum(
            [['s:%032x:session' % (n * 7919), json.dumps({'_expires': now + (n % 2) * 999})]
             for n in range(i, i + 250)], []))
    largest = [0]
    request = pool.request

    def watching(command, *args):
        result = request(command, *args)
        if command in ('next_keys', 'mget'):
            largest[0] = max(largest[0], len(result))
        return result
    monkeypatch.setattr(pool, 'request', watching)
    reports = []
    totals = tcjson.purge_expired(tyrant.url, 's:', batch_size=100, progress=reports.append)
    assert totals['scanned'] == 2000 and totals['deleted'] == 1000
    assert largest[0] <= 100                       # never more than one batch in memory
    assert len(reports) == totals['batches'] == 20
    assert [r['scanned'] for r in reports] == sorted(r['scanned'] for r in reports)
    assert len(stored_keys(tyrant, 's:')) == 1000


def test_a_record_refreshed_meanwhile_is_not_deleted(tyrant, monkeypatch):
    now, pool = time.time(), tcjson.get_pool(tyrant.url)
    put(tyrant, 'app:user:session', {'_expires': now - 1})
    request, mgets = pool.request, []

    def saved_between_reads(command, *args):
        if command == 'mget':
            mgets.append(1)
            if len(mgets) == 2:                    # the app saves before the re-read
                put(tyrant, 'app:user:session', {'_expires': now + 600})
        return request(command, *args)
    monkeypatch.setattr(pool, 'request', saved_between_reads)
    assert tcjson.purge_expired(tyrant.url, 'app:')['deleted'] == 0
    assert stored_keys(tyrant) == ['app:user:session']


def test_sessions_written_by_tyrant_session_expire_and_are_purged(tyrant):
    tcjson.register()
    session = tcjson.TyrantSession({}, type='ext:tcjson', url=tyrant.url, prefix='web:',
                                   timeout=60)
    session['user'] = 'bob'
    session.save()
    assert tcjson.purge_expired(tyrant.url, 'web:', now=time.time() + 59)['deleted'] == 0
    assert tcjson.purge_expired(tyrant.url, 'web:', now=time.time() + 61)['deleted'] == 1
    assert stored_keys(tyrant) == []


def test_no_record_stops_a_purge(tyrant):
    """Hostile records under the prefix are kept and the purge goes on."""
    now = time.time()
    junk = ['[' * 100000, '{"_expires": 1e999}', '\xff\xfe', '{"_expires": "soon"}',
            '{' + ','.join('"k%d": 1' % n for n in range(30000)) + ', "_expires": 1}']
    for n, record in enumerate(junk):
        tcjson.get_pool(tyrant.url).request('put', 'app:junk%d:session' % n, record)
    put(tyrant, 'app:old:session', {'_expires': now - 1})
    assert tcjson.purge_expired(tyrant.url, 'app:', batch_size=2)['deleted'] == 1
    assert len(stored_keys(tyrant, 'app:junk')) == len(junk)


def test_purge_reads_big_records_in_bounded_replies(tyrant, monkeypatch):
    now, pool = time.time(), tcjson.get_pool(tyrant.url)
    monkeypatch.setattr(tcjson, 'PURGE_READ_BYTES', 3 * 1024 * 1024)
    big = json.dumps({'_expires': now - 1, 'blob': 'x' * (1024 * 1024)})
    for n in range(8):
        pool.request('put', 'app:%d:session' % n, big)
    pool.request('put', 'app:huge:session', json.dumps({'_expires': 1, 'b': 'y' * 4000000}))
    request, replies = pool.request, []

    def watching(command, *args):
        result = request(command, *args)
        if command == 'mget':
            replies.append(sum(len(k) + len(v) for k, v in result))
        return result
    monkeypatch.setattr(pool, 'request', watching)
    assert tcjson.purge_expired(tyrant.url, 'app:', max_record=2 * 1024 * 1024,
                                batch_size=500)['deleted'] == 8
    assert max(replies) <= 3 * 1024 * 1024
    assert stored_keys(tyrant, 'app:') == ['app:huge:session']    # over max_record: kept


def test_a_second_purge_of_one_server_is_refused_while_the_first_runs(tyrant):
    now = time.time()
    for n in range(30):
        put(tyrant, 'app:%02d:session' % n, {'_expires': now - 1})
    refused = []

    def second_purge(totals):
        if not refused:
            with pytest.raises(tcjson.PurgeBusy) as info:
                tcjson.purge_expired(tyrant.url, 'other:')
            refused.append(str(info.value))
    assert tcjson.purge_expired(tyrant.url, 'app:', batch_size=10,
                                progress=second_purge)['deleted'] == 30
    assert 'another purge is running' in refused[0]
    assert stored_keys(tyrant) == []                    # the lock is gone too
    assert tcjson.purge_expired(tyrant.url, 'app:')['deleted'] == 0   # and can be taken


def test_purge_command_reads_url_and_prefix_from_the_ini_file(tyrant, tmpdir, capsys):
    ini = tmpdir.join('development.ini')
    ini.write('[DEFAULT]\ndebug = true\n\n[app:main]\nuse = egg:MyApp\n'
              'cache_dir = %%(here)s/data\nbeaker.session.type = ext:tcjson\n'
              'beaker.session.url = %s\nbeaker.session.prefix = myapp:\n' % tyrant.url)
    put(tyrant, 'myapp:x:session', {'_expires': 1})
    put(tyrant, 'beaker:x:session', {'_expires': 1})
    assert tcjson.purge_command(['purge', str(ini), '--batch-size', '10']) == 0
    output = capsys.readouterr().out
    assert 'batch 1: scanned 1, deleted 1' in output
    assert "done: 1 of 1 records under 'myapp:' deleted" in output
    assert stored_keys(tyrant) == ['beaker:x:session']


def test_purge_command_reports_an_unreachable_server(tmpdir, capsys):
    ini = tmpdir.join('production.ini')
    ini.write('[app:main]\nbeaker.session.url = 127.0.0.1:9\n')
    assert tcjson.purge_command([str(ini)]) == 1
    assert 'Tokyo Tyrant at 127.0.0.1:9 is unavailable' in capsys.readouterr().err


def test_the_module_runs_as_a_script(tyrant, tmpdir):
    import subprocess
    import sys
    ini = tmpdir.join('development.ini')
    ini.write('[app:main]\nbeaker.session.url = %s\n' % tyrant.url)
    put(tyrant, 'beaker:x:session', {'_expires': 1})
    output = subprocess.check_output([sys.executable, '-m', 'pylons_tcjson_template.tcjson',
                                      'purge', str(ini)])
    assert "done: 1 of 1 records under 'beaker:' deleted" in output
