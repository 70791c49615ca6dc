"""The bench's counting tools, against a live server: bench/peers.py's
RoundTripCounter (round trips seen from the client, pipelined commands and
servers asked at once sharing one) and bench/inproc.py's request mixes."""
import os
import sys

import pytest

from pylons_tcjson_template.tyrant import TyrantPool, parallel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'bench'))

import inproc  # noqa: E402
import peers  # noqa: E402


@pytest.fixture
def pool(tyrant):
    """A pool of its own (no connection open yet) to the test's server."""
    pool = TyrantPool(tyrant.url)
    yield pool
    pool.close()


def test_each_request_is_a_round_trip_and_the_connect_counts_apart(pool):
    with peers.RoundTripCounter() as traffic:
        pool.request('put', 'rt:a', 'one')       # a new connection: probed first
        pool.request('get', 'rt:a')
    assert (traffic.waits, traffic.connects, traffic.round_trips) == (3, 1, 4)


def test_pipelined_commands_share_one_round_trip(pool):
    pool.request('put', 'rt:b', 'two')                       # connected before counting
    with peers.RoundTripCounter() as traffic:
        assert pool.pipeline(('putkeep', 'rt:lock', 'x'), ('get', 'rt:b'),
                             ('out', 'rt:lock')) == [None, 'two', None]
    assert (traffic.waits, traffic.connects) == (1, 0)
    # A large reply comes in several receives: still one round trip.
    big = 'v' * 300000
    pool.request('put', 'rt:big', big)
    with peers.RoundTripCounter() as traffic:
        assert pool.request('get', 'rt:big') == big
    assert traffic.waits == 1


def test_servers_asked_at_once_share_one_round_trip(pool, tyrant):
    other = TyrantPool(tyrant.url)
    try:
        pool.request('put', 'rt:d', 'four')
        other.request('get', 'rt:d')                         # both connected
        with peers.RoundTripCounter() as traffic:
            answers = parallel([(pool, [('get', 'rt:d')]), (other, [('get', 'rt:d')])])
        assert answers == [['four'], ['four']]
        assert (traffic.waits, traffic.connects) == (1, 0)
        with peers.RoundTripCounter() as traffic:
            pool.request('get', 'rt:d')
            other.request('get', 'rt:d')
        assert traffic.waits == 2                            # one after the other
    finally:
        other.close()


def test_the_counter_stops_counting_when_left(pool):
    pool.probe()                                             # connected before counting
    with peers.RoundTripCounter() as traffic:
        pool.request('put', 'rt:c', 'three')
    pool.request('get', 'rt:c')
    assert traffic.waits == 1
    assert sys.getprofile() is None


def test_a_mix_is_nine_reads_then_a_write_and_costs_are_per_block():
    paths = inproc.request_paths('mix', 15)                 # rounded up to whole blocks
    assert paths == (['/read'] * 9 + ['/write']) * 2
    assert inproc.request_paths('read', 3) == ['/read'] * 3
    samples = [1.0] * 9 + [11.0] + [2.0] * 9 + [12.0]
    assert inproc.per_request_costs('mix', samples) == [2.0, 3.0]
    assert inproc.per_request_costs('write', [5.0, 4.0]) == [5.0, 4.0]
