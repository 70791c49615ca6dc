"""tcjson as a Beaker backend: key schema, namespaces, cache, types, locks.

Every test talks to a live Tyrant server (fixtures in conftest.py).
"""
import datetime
import threading
import time

import pytest
import simplejson as json
from beaker.cache import CacheManager

from pylons_tcjson_template import tcjson


def manager(server, namespace='ns', **options):
    return tcjson.TyrantNamespaceManager(namespace, url=server.url, **options)


def raw_get(server, key):
    return tcjson.get_pool(server.url).request('get', key)


def raw_put(server, key, value):
    tcjson.get_pool(server.url).request('put', key, value)


# ---- registration and configuration

def test_register_makes_ext_tcjson_known_to_beaker_and_is_idempotent():
    from beaker.cache import clsmap
    assert tcjson.register() is tcjson.TyrantNamespaceManager
    assert tcjson.register() is tcjson.TyrantNamespaceManager
    assert clsmap['ext:tcjson'] is tcjson.TyrantNamespaceManager
    assert clsmap['memory'] is not None          # the registry still works


@pytest.mark.parametrize('url', ['', None, '127.0.0.1', '127.0.0.1:', 'host:port',
                                 'localhost:0', 'localhost:70000'])
def test_malformed_url_is_an_error_when_the_manager_is_constructed(url):
    with pytest.raises(tcjson.ConfigError) as info:
        tcjson.TyrantNamespaceManager('ns', url=url)
    assert 'host:port' in str(info.value)


@pytest.mark.parametrize('option,value', [
    ('io_timeout', '-1'), ('io_timeout', '0'), ('io_timeout', 'nan'), ('io_timeout', 'inf'),
    ('connect_timeout', 'soon'), ('pool_size', '0'), ('pool_size', '2.5')])
def test_a_bad_pool_option_is_an_error_when_the_manager_is_constructed(option, value):
    with pytest.raises(tcjson.ConfigError) as info:
        tcjson.TyrantNamespaceManager('ns', url='127.0.0.1:1978', **{option: value})
    assert option in str(info.value) and repr(value) in str(info.value)


def test_options_from_an_ini_file_are_strings_and_are_converted(tyrant_factory):
    server = tyrant_factory()
    nsm = manager(server, connect_timeout='0.5', io_timeout='1.5', pool_size='3',
                  prefix='app1:', timeout='100', data_dir=None)
    assert (nsm.pool.connect_timeout, nsm.pool.io_timeout, nsm.pool.pool_size) == (0.5, 1.5, 3)
    assert nsm.io_timeout == 1.5 and nsm.prefix == 'app1:'


def test_constructing_a_manager_touches_no_network():
    nsm = tcjson.TyrantNamespaceManager('ns', url='127.0.0.1:9')   # nothing listens
    nsm.acquire_read_lock(), nsm.release_read_lock()
    assert nsm.acquire_write_lock() is True
    nsm.release_write_lock()


# ---- key schema and namespace operations

def test_keys_are_prefix_namespace_colon_key(tyrant):
    nsm = manager(tyrant, 'users', prefix='myapp:')
    nsm['alice'] = {'age': 30}
    nsm['bob'] = {'age': 40}
    assert raw_get(tyrant, 'myapp:users:alice') == '{"age":30}'
    assert sorted(nsm.keys()) == ['alice', 'bob']
    assert nsm['bob'] == {'age': 40}


def test_default_prefix_is_beaker(tyrant):
    manager(tyrant, 'ns')['k'] = 1
    assert raw_get(tyrant, 'beaker:ns:k') == '1'


def test_contains_delitem_and_keys_see_one_namespace_only(tyrant):
    one, two = manager(tyrant, 'one'), manager(tyrant, 'two')
    one['a'] = one['b'] = 1
    two['a'] = 2
    assert 'a' in one and 'b' in one and 'b' not in two
    del one['a']
    assert 'a' not in one and two['a'] == 2
    with pytest.raises(KeyError):
        del one['a']
    with pytest.raises(KeyError):
        one['missing']
    assert one.keys() == ['b'] and two.keys() == ['a']


def test_do_remove_removes_only_its_namespace(tyrant):
    doomed, kept = manager(tyrant, 'doomed'), manager(tyrant, 'kept')
    for i in range(25):
        doomed['k%d' % i] = i
    kept['k'] = 'stays'
    manager(tyrant, 'doomed', prefix='other:')['k'] = 'other prefix stays'
    doomed.do_remove(batch_size=10)
    assert doomed.keys() == []
    assert kept['k'] == 'stays'
    assert manager(tyrant, 'doomed', prefix='other:')['k'] == 'other prefix stays'


def test_unicode_keys_and_values_are_utf8(tyrant):
    nsm = manager(tyrant, u'caf\xe9')
    nsm[u'cl\xe9'] = u'\u2603'
    assert raw_get(tyrant, 'beaker:caf\xc3\xa9:cl\xc3\xa9') == '"\xe2\x98\x83"'
    assert nsm[u'cl\xe9'] == u'\u2603'


# ---- type rules

@pytest.mark.parametrize('value, kind', [
    (datetime.datetime(2009, 1, 1), 'datetime.datetime'),
    (set([1]), 'set'),
    ('\xff\xfe', 'not UTF-8'),
    (object(), 'object'),
    ({'nested': [1, datetime.date(2009, 1, 1)]}, 'datetime.date'),
    (float('nan'), 'float'),
])
def test_values_json_cannot_hold_are_refused_naming_key_and_type(tyrant, value, kind):
    nsm = manager(tyrant)
    nsm['k'] = 'old'
    with pytest.raises(tcjson.UnstorableValue) as info:
        nsm['k'] = value
    assert "'k'" in str(info.value) and kind in str(info.value)
    assert nsm['k'] == 'old'                      # nothing was written


def test_json_types_round_trip_tuples_as_lists_str_as_unicode(tyrant):
    nsm = manager(tyrant)
    value = {'n': None, 'b': True, 'i': 2 ** 40, 'f': 0.5, 's': 'text',
             'u': u'\xe9', 't': (1, 2), 'l': [{'x': []}]}
    nsm['k'] = value
    back = nsm['k']
    assert back['t'] == [1, 2] and back['s'] == u'text' and back['i'] == 2 ** 40
    assert back == dict(value, t=[1, 2])


# ---- as a Beaker cache

def test_cache_region_keeps_three_keys_in_one_namespace(tyrant):
    tcjson.register()
    cache = CacheManager(cache_regions={'short': {
        'type': 'ext:tcjson', 'url': tyrant.url, 'expire': 60, 'prefix': 'cache:'}})
    calls = []

    @cache.region('short', 'squares')
    def square(n):
        calls.append(n)
        return {'n': n, 'square': n * n}

    assert [square(n)['square'] for n in (1, 2, 3, 1, 2, 3)] == [1, 4, 9, 1, 4, 9]
    assert calls == [1, 2, 3]                     # second round came from Tyrant
    namespace_keys = tcjson.get_pool(tyrant.url).request('fwmkeys', 'cache:', 100)
    assert len(namespace_keys) == 3
    stored = json.loads(raw_get(tyrant, namespace_keys[0]))
    assert isinstance(stored, list) and len(stored) == 3 and stored[1] == 60   # [t, exp, v]
    cache.region_invalidate(square, 'short', 'squares', 2)
    assert square(2)['square'] == 4 and calls == [1, 2, 3, 2]


def test_cache_get_with_createfunc_and_expiry(tyrant):
    tcjson.register()
    cache = CacheManager().get_cache('report', type='ext:tcjson', url=tyrant.url, expire=1)
    assert cache.get('a', createfunc=lambda: 'first') == 'first'
    assert cache.get('a', createfunc=lambda: 'second') == 'first'
    time.sleep(1.1)
    assert cache.get('a', createfunc=lambda: 'third') == 'third'
    cache.clear()
    assert 'a' not in cache


# ---- cache values are only cache values

def test_a_cache_key_named_session_is_a_plain_cache_value(tyrant):
    """Session decoding belongs to TyrantSession: a cache key that happens
    to be called 'session' is JSON like any other cache value."""
    nsm = manager(tyrant, 'report')
    nsm['session'] = [1700000000.0, None, {'rows': 3}]
    assert nsm['session'] == [1700000000.0, None, {'rows': 3}]
    raw_put(tyrant, 'beaker:report:session', '{"_accessed_time": "yesterday"}')
    assert nsm['session'] == {'_accessed_time': 'yesterday'}


def test_an_unparsable_cache_value_is_a_miss_that_beaker_recomputes(tyrant):
    nsm = manager(tyrant, 'report')
    for junk in ['not json', '[' * 100000, '1e999', '\xff']:
        raw_put(tyrant, 'beaker:report:v', junk)
        with pytest.raises(KeyError):
            nsm['v']


def test_beakers_own_session_class_is_refused_with_a_clear_error(tyrant):
    """Beaker's Session would decode the JSON record as its base64 pickle
    and, failing, start a new session on every request: refused."""
    from beaker.session import Session
    tcjson.register()
    with pytest.raises(tcjson.ConfigError) as info:
        Session({}, id='0' * 32, type='ext:tcjson', url=tyrant.url, use_cookies=False)
    assert 'session_class=tcjson.TyrantSession' in str(info.value)


# ---- the creation lock

def test_the_creation_lock_is_a_file_lock_and_nothing_in_tyrant(tyrant, tmpdir):
    """As Beaker's memcached backend has it: one process computes a cache
    value while the others on the host wait; no lock ever lives in Tyrant."""
    lock = manager(tyrant, lock_dir=str(tmpdir)).get_creation_lock('report')
    assert lock.acquire(wait=False)
    seen = []
    other = threading.Thread(target=lambda: seen.append(
        manager(tyrant, lock_dir=str(tmpdir)).get_creation_lock('report').acquire(wait=False)))
    other.start()
    other.join()
    lock.release()
    assert seen == [False]
    assert tcjson.get_pool(tyrant.url).request('fwmkeys', '', 1000) == []


def test_a_reply_costs_one_read_from_the_socket(tyrant):
    """pytyrant reads a reply in pieces (status, length, value); the
    connection reads it whole, once, and hands out the pieces."""
    nsm = manager(tyrant, 'reads')
    nsm['k'] = {'value': 'x' * 1000}
    conn = nsm.pool._idle[0]
    reads = []
    real_recv = conn.sock.recv
    conn.sock.recv = lambda size: reads.append(size) or real_recv(size)
    assert nsm['k'] == {'value': 'x' * 1000}
    assert len(reads) == 1
    nsm['k'] = {'value': 'y'}
    assert len(reads) == 2
    assert nsm.pool._idle == [conn] and conn.idle_ok()     # nothing left over
