"""Several Tyrant servers in one url: parsing, sharding, routing, purge.

The url syntax is Beaker's: ``;`` separates shards, ``|`` joins the two
masters of a dual-master pair.  Failover inside a pair is in
test_tyrant_failover.py; here the servers stay up (live servers where a
test needs them: plain shards, and two shards of replicating pairs).
"""
import time
import uuid

import pytest
import simplejson as json
from paste.script.command import BadCommand

from pair_support import DualMaster
from pylons_tcjson_template import purge, tcjson, tyrant
from pylons_tcjson_template.servers import _build_servers, get_servers
from pylons_tcjson_template.template import split_url
from test_faults_support import raw_keys

PAIR = '10.0.0.1:1978|10.0.0.2:1978'


def session_ids(count):
    """Session ids as Beaker makes them (uuid4 hex)."""
    return [uuid.UUID(int=index * 7919 + 1, version=4).hex for index in range(count)]


# ---- the url

@pytest.mark.parametrize('url,shards', [
    ('127.0.0.1:1978', [('127.0.0.1:1978',)]),
    (' Tyrant-1.example.com:01978 ', [('tyrant-1.example.com:1978',)]),
    ('a1:1978|a2:1978;b1:1978|b2:1978', [('a1:1978', 'a2:1978'), ('b1:1978', 'b2:1978')]),
    ('a1:1978 | a2:1979 ; b:1978', [('a1:1978', 'a2:1979'), ('b:1978',)]),
])
def test_a_url_names_shards_of_one_server_or_a_pair(url, shards):
    assert tyrant.parse_servers(url) == shards
    assert tyrant.parse_servers(tyrant.canonical_url(shards)) == shards


@pytest.mark.parametrize('url,problem', [
    ('', 'no server given'),
    ('a:1978;', 'shard 2 is empty'),
    (';a:1978', 'shard 1 is empty'),
    ('a:1978|', 'empty member'),
    ('a:1|b:2|c:3', 'shard 1 names 3 servers; a pair has two'),
    ('a:1978|a:1978', 'server a:1978 is named twice'),
    ('a:1978|b:1978;c:1978|A:1978', 'server a:1978 is named twice'),
    ('a', "server 'a' has no port"),
    ('a:0', "port '0' is not a number from 1 to 65535"),
    ('a:65536', "port '65536' is not a number"),
    ('a:http', "port 'http' is not a number"),
    ('under_score:1978', 'is not a host name or address'),
    ('-a:1978', 'is not a host name or address'),
    ('256.0.0.1:1978', 'an IPv4 address has four numbers from 0 to 255'),
    ('10.1:1978', 'an IPv4 address has four numbers'),
    ('[::1]:1978', 'IPv6 address: Tokyo Tyrant 1.1.41 serves and replicates over IPv4 only'),
    ('::1:1978', 'IPv6 address'),
    ('tyrant://a:1978', 'without a scheme'),
])
def test_a_bad_url_is_refused_at_startup_saying_what_is_wrong(url, problem):
    with pytest.raises(tyrant.ConfigError) as info:
        get_servers(url)
    assert problem in str(info.value) and 'host:port' in str(info.value)
    with pytest.raises(tcjson.ConfigError) as info:
        tcjson.TyrantNamespaceManager('ns', url=url)
    assert problem in str(info.value)


@pytest.mark.parametrize('url', ['a:1978|b:1978', '[::1]:1978', 'tyrant://a:1978', 'a:1;;b:2'])
def test_the_template_accepts_exactly_what_the_backend_accepts(url):
    try:
        tyrant.parse_servers(url)
    except tyrant.ConfigError as exc:
        with pytest.raises(BadCommand) as info:
            split_url(url)
        assert str(info.value) == str(exc).replace('tcjson: url', 'tyrant_url', 1)
    else:
        assert split_url(' %s ' % url) == tyrant.canonical_url(tyrant.parse_servers(url))


def test_a_single_server_url_adds_nothing_to_a_request(tyrant_factory):
    server = tyrant_factory()
    servers = get_servers(server.url)
    pool = tyrant.get_pool(server.url)
    assert servers.for_key('any session id') is pool and servers.shards() == [pool]
    nsm = tcjson.TyrantNamespaceManager('sid', url=server.url)
    assert nsm.pool is pool


def test_a_several_server_url_is_cached_per_process_and_touches_no_network():
    url = '127.0.0.1:9|127.0.0.1:10;127.0.0.1:11'       # nothing listens there
    first = get_servers(url, connect_timeout='0.5')
    assert get_servers(' %s ' % url) is first
    assert first.url == '127.0.0.1:10|127.0.0.1:9;127.0.0.1:11'     # a pair's name: sorted
    assert len(first.shards()) == 2
    route = first.for_key('session id')
    assert route.url in ('127.0.0.1:10|127.0.0.1:9', '127.0.0.1:11')


# ---- sharding

def build(url):
    """A ServerSet of its own, as another process would build it."""
    return _build_servers(url, tyrant.pool_options(None, None, None))


def test_keys_spread_evenly_over_shards_and_every_client_agrees():
    url = 'a:1|a:2;b:1|b:2;c:1'
    ids = session_ids(10000)
    one, other = build(url), build(url)
    shards = [one.shard_index(key) for key in ids]
    assert shards == [other.shard_index(key) for key in ids]
    counts = [shards.count(index) for index in range(3)]
    assert all(2800 < count < 3900 for count in counts), counts


def test_adding_a_shard_moves_about_a_third_of_the_keys_and_only_to_it():
    ids = session_ids(10000)
    two, three = build('a:1|a:2;b:1|b:2'), build('a:1|a:2;b:1|b:2;c:1|c:2')
    moved = [key for key in ids if two.shard_index(key) != three.shard_index(key)]
    share = len(moved) / float(len(ids))
    print('2 -> 3 shards: %.1f %% of 10000 session ids moved (ideal 33.3 %%)' % (100 * share))
    assert 0.28 < share < 0.39, share
    assert all(three.shard_index(key) == 2 for key in moved)


def test_inside_a_pair_each_key_prefers_one_member_and_load_is_spread():
    pair = build(PAIR).shards()[0]
    preferred = [pair.preferred(key) for key in session_ids(4000)]
    assert 1800 < preferred.count(0) < 2200
    again = build(PAIR).shards()[0]
    assert preferred == [again.preferred(key) for key in session_ids(4000)]


# ---- live servers: two shards

def store_half_expired_sessions(url, count):
    """`count` session records under 'app:' through the backend's own
    routing, every other one expired; returns their ids."""
    ids, now = session_ids(count), time.time()
    for index, sid in enumerate(ids):
        nsm = tcjson.TyrantNamespaceManager(sid, url=url, prefix='app:')
        record = {'_accessed_time': now, '_expires': now - 10 if index % 2 else now + 3600}
        assert nsm.record().create(record, json.dumps(record)) == 'ok'
    return ids


def test_sessions_land_on_their_shard_and_each_shard_is_purged_once(tyrant_factory):
    first, second = tyrant_factory(), tyrant_factory()
    url = '%s;%s' % (first.url, second.url)
    servers = get_servers(url)
    ids = store_half_expired_sessions(url, 200)
    expected = [[sid for sid in ids if servers.shard_index(sid) == shard] for shard in (0, 1)]
    for server, own in zip((first, second), expected):
        keys = tyrant.get_pool(server.url).request('fwmkeys', 'app:', 1000)
        assert sorted(keys) == sorted('app:%s:session' % sid for sid in own)
        assert 60 < len(own) < 140
    batches = []
    totals = purge.purge_expired(url, 'app:', batch_size=1000, progress=batches.append)
    assert totals['scanned'] == 200 and totals['deleted'] == 100
    assert totals['batches'] == 2                     # one per shard: each visited once
    left = sum(len(tyrant.get_pool(server.url).request('fwmkeys', 'app:', 1000))
               for server in (first, second))
    assert left == 100


def test_a_shard_added_later_serves_the_keys_that_move_to_it(tyrant_factory):
    first, second, third = tyrant_factory(), tyrant_factory(), tyrant_factory()
    before = '%s;%s' % (first.url, second.url)
    after = '%s;%s' % (before, third.url)
    ids = session_ids(300)
    for sid in ids:
        get_servers(before).for_key(sid).request('put', 'k:' + sid, sid)
    new = get_servers(after)
    found = []
    for sid in ids:
        try:
            found.append(new.for_key(sid).request('get', 'k:' + sid) == sid)
        except tcjson.pytyrant.TyrantError:
            found.append(False)
    # Exactly the keys that moved to the new (empty) shard are not found there.
    assert [not ok for ok in found] == [new.shard_index(sid) == 2 for sid in ids]
    assert 70 < found.count(False) < 130


# ---- live servers: two shards, each a dual-master pair

@pytest.fixture
def two_pairs(tmpdir):
    pairs = [DualMaster(tmpdir.join('shard1'), first_sid=1),
             DualMaster(tmpdir.join('shard2'), first_sid=3)]
    try:
        for pair in pairs:
            pair.start()
        for pair in pairs:
            pair.wait_replicating()
        yield pairs
    finally:
        for pair in pairs:
            pair.stop()


def test_two_pairs_hold_each_session_on_both_members_of_its_shard_and_purge_each_once(
        two_pairs):
    url = ';'.join(pair.url for pair in two_pairs)
    servers = get_servers(url)
    ids = store_half_expired_sessions(url, 100)

    def slot(sid):
        """The key of the copy the session's preferred member wrote."""
        pair = servers.shards()[servers.shard_index(sid)]
        return 'app:%s:session@%d' % (sid, pair.members[pair.preferred(sid)].identity['sid'])
    for shard, pair in enumerate(two_pairs):
        own = set(slot(sid) for sid in ids if servers.shard_index(sid) == shard)
        assert 25 < len(own) < 75
        for member in pair.members:
            assert wait_until_keys(member.port, own)     # replicated to both members
    totals = purge.purge_expired(url, 'app:', batch_size=1000)
    assert (totals['scanned'], totals['deleted'], totals['batches']) == (100, 50, 2)
    kept = [sid for index, sid in enumerate(ids) if not index % 2]
    for shard, pair in enumerate(two_pairs):
        own = set(slot(sid) for sid in kept if servers.shard_index(sid) == shard)
        for member in pair.members:
            assert wait_until_keys(member.port, own)     # the deletes replicated too


def wait_until_keys(port, keys, timeout=5.0):
    """Whether the server at `port` holds exactly `keys` under 'app:'."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if set(raw_keys(port, 'app:')) == keys:
            return True
        time.sleep(0.02)
    return False
