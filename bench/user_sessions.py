#!/usr/bin/env python
"""What sessions per user cost (user_sessions.py): sign-in and listing for
a user with 1, 100 and 10,000 sessions.

    .venv/bin/python bench/user_sessions.py               # 1, 100, 10000
    .venv/bin/python bench/user_sessions.py --sessions 1,100 --repeat 50

For each size a fresh in-memory Tyrant server (ttserver where one is on
PATH or named by $TCJSON_TTSERVER, else tcjson-tyrant) gets the user's
session records and index, written in bulk in exactly the format
user_sessions and TyrantSession write.  Then, in this process:

* listing: ``UserSessions.sessions(user)`` of the user's sessions;
* sign-in: ``user_sessions.sign_in`` of a stored anonymous session (its
  ``regenerate_id()`` deletes the old record: two round trips) plus the
  save of the new record that SessionMiddleware does when the response
  starts; the index append is the one round trip in between.  Loading the
  anonymous session is not counted.  Each run adds a session, so the user
  has --repeat + 1 more sessions afterwards;
* listing that prunes: listing after the records of a tenth of the
  original sessions were deleted (their entries are dropped under the
  index lock: the records' sizes of the missing ones, and two more round
  trips);
* revoke others: every session but one deleted under its lock
  (PIPELINE_SESSIONS locks, then as many deletes, per round trip).

Round trips are counted at the pool (one per request() or pipeline());
times are the median of --repeat runs (fewer for the slow cases, said in
the output), wall clock, loopback.  Markdown goes to stdout.
"""
from __future__ import division, print_function

import argparse
import os
import platform
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from pylons_tcjson_template import tcjson, user_sessions  # noqa: E402
from pylons_tcjson_template.devtyrant.launcher import TyrantProcess  # noqa: E402
from inproc import median_us  # noqa: E402

USER = 'ada'
AGENT = ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
         'Chrome/120.0 Safari/537.36')
PUT_CHUNK = 1000            # records per bulk put


class Counter(object):
    """Counts the round trips a pool makes (one per request or pipeline)."""

    def __init__(self, pool):
        self.pool, self.count = pool, 0
        self._request, self._pipeline = pool.request, pool.pipeline
        pool.request, pool.pipeline = self.request, self.pipeline

    def request(self, *args):
        self.count += 1
        return self._request(*args)

    def pipeline(self, *commands):
        self.count += 1
        return self._pipeline(*commands)

    def trips(self, call):
        before = self.count
        call()
        return self.count - before


def new_session(url, session_id=None):
    request = {'cookie': 'beaker.session.id=%s' % session_id} if session_id else {}
    return tcjson.TyrantSession(request, type='ext:tcjson', url=url, timeout=3600)


def fill(pool, store, count):
    """`count` signed-in sessions of USER and their index, written in bulk."""
    now = time.time()
    ids = [uuid.uuid4().hex for _ in range(count)]
    for start in range(0, count, PUT_CHUNK):
        pairs = []
        for session_id in ids[start:start + PUT_CHUNK]:
            pairs += [store.record_key(session_id), tcjson._dumps({
                'user': USER, '_creation_time': now, '_accessed_time': now,
                '_expires': now + 3600, '_authentication_token': uuid.uuid4().hex})]
        pool.request('misc', 'putlist', 0, pairs)
    index = ''.join(user_sessions._entry_line(session_id, now, {'agent': AGENT})
                    for session_id in ids)
    pool.request('put', store.index(USER).key, index)
    return ids


def stored_anonymous_session(url):
    session = new_session(url)
    session['visits'] = 1
    session.save()
    return new_session(url, session.id)


def sign_in(session):
    user_sessions.sign_in(session, USER, {'agent': AGENT})
    session.save()                                # what the response start does


def measure(size, repeat):
    """Rows (operation, round trips, median microseconds, runs) for a user
    with `size` sessions.  The pruning and revoking rows change the store,
    so they run once."""
    with TyrantProcess('*') as server:
        tcjson.register()
        pool = tcjson.get_pool(server.url)
        counter = Counter(pool)
        store = user_sessions.UserSessions.from_config(server.url)
        ids = fill(pool, store, size)
        runs = max(3, repeat // 20) if size >= 10000 else repeat

        def once(call):
            before, started = counter.count, time.time()
            result = call()
            return counter.count - before, (time.time() - started) * 1e6, result

        rows = []
        trips, _, listed = once(lambda: store.sessions(USER))
        assert len(listed) == size
        rows.append(('listing', trips, median_us(lambda: store.sessions(USER), runs), runs))

        session = stored_anonymous_session(server.url)
        trips = once(lambda: sign_in(session))[0]
        prepared = []
        rows.append(('sign-in (regenerate_id, index append, new record)', trips,
                     median_us(lambda: sign_in(prepared.pop()), repeat, before=lambda:
                               prepared.append(stored_anonymous_session(server.url))),
                     repeat))
        signed_in = size + 1 + repeat
        assert store.index(USER).read().count('\n') == signed_in

        gone = ids[::10]
        pool.request('misc', 'outlist', 0, [store.record_key(i) for i in gone])
        trips, micros, listed = once(lambda: store.sessions(USER, now=time.time() + 120))
        assert len(listed) == signed_in - len(gone)
        rows.append(('listing of %d that drops %d gone entries' % (signed_in, len(gone)),
                     trips, micros, 1))

        keep = session.id                          # signed in above, still live
        trips, micros, removed = once(lambda: store.revoke(USER, lambda i: i.id != keep))
        assert [info.id for info in store.sessions(USER)] == [keep]
        rows.append(('revoke all %d but one' % (len(removed) + 1), trips, micros, 1))
        return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sessions', default='1,100,10000',
                        help='comma-separated numbers of sessions of the user')
    parser.add_argument('--repeat', type=int, default=100,
                        help='runs per timed case (a twentieth, at least 3, for 10,000)')
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sessions.split(',')]
    load_at_start = '%.2f, %.2f, %.2f' % os.getloadavg()
    print('# Sessions per user: what sign-in and listing cost\n')
    print('`%s` on %s, Python %s, %s; one process, loopback.\n' % (
        ' '.join(['bench/user_sessions.py'] + (argv if argv is not None else sys.argv[1:])),
        platform.node() or 'this host', platform.python_version(), server_kind()))
    print('| sessions of the user | operation | round trips | median time | runs |')
    print('|---:|---|---:|---:|---:|')
    for size in sizes:
        for name, trips, micros, runs in measure(size, args.repeat):
            print('| %d | %s | %d | %.2f ms | %d |' % (size, name, trips, micros / 1000,
                                                        runs))
        sys.stdout.flush()
    print('\nLoad average (1, 5, 15 min) at the start: %s; at the end: %s.'
          % (load_at_start, '%.2f, %.2f, %.2f' % os.getloadavg()))


def server_kind():
    with TyrantProcess('*') as server:
        return server.kind


if __name__ == '__main__':
    main()
