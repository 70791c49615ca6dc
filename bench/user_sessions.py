#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""What sessions per user cost (lib/user_sessions.py): sign-in, listing and
revoking for a user with 5, 25 and 50 (MAX_SESSIONS) sessions.

    .venv/bin/python bench/user_sessions.py               # 5, 25, 50, 10000
    .venv/bin/python bench/user_sessions.py --sessions 1,25 --repeat 50
    .venv/bin/python bench/user_sessions.py --out bench/RESULTS-user-sessions.md

For each size and each server kind (tcjson-tyrant; ttserver too where
$TCJSON_TTSERVER names one or one is on PATH) a fresh in-memory server
running tcjson.lua gets the user's session records and index, written in
bulk in exactly the format user_sessions and TyrantSession write.  Then,
in this process:

* listing: ``UserSessions.sessions(user)``; past MAX_SESSIONS (an index
  another program wrote: sign-in keeps at most that many), the first
  listing, which compacts an index over INDEX_READ_BYTES in Tyrant
  (index_trim: the newest MAX_SESSIONS stay) before reading it;
* sign-in: ``user_sessions.sign_in`` of a stored anonymous session (the
  session loaded first, not counted): ``regenerate_id()`` ends the old
  record (tcjson.lua's delete), the index gets the new entry (index_add),
  the new record is put and checked against the index's marks
  (index_check); then the save SessionMiddleware makes when the response
  starts (nothing left to send).  Each run is taken back, untimed; at
  MAX_SESSIONS one sign-in, which signs the oldest session out;
* a listing that prunes: after the records of a tenth of the original
  sessions were deleted (their entries are dropped: index_drop);
* revoke others: every session but one signed out (index_revoke, the
  records read and deleted in pipelines of records.PIPELINE, index_drop).

Round trips are counted by this process (bench/peers.py's
RoundTripCounter), commands by the server (stat cnt_*), in a pass of their
own; times are the median of --repeat runs, or for an operation that
changes the store (the "runs 1" rows) one run on a twin user filled alike,
wall clock, loopback.
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

import peers  # noqa: E402
from inproc import median_us  # noqa: E402
from pylons_tcjson_template import records, tcjson, user_sessions  # noqa: E402
from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, find_ttserver  # noqa
from pylons_tcjson_template.tyrant import get_pool  # noqa: E402

USER = 'ada'
TWIN = 'ada-twin'           # filled as USER: counted where USER is timed (once())
AGENT = ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
         'Chrome/120.0 Safari/537.36')
PUT_CHUNK = 1000            # records per bulk put


def fill(pool, store, count, user):
    """`count` signed-in sessions of `user` and their index, written in
    bulk: [(session id, lineage)]."""
    now = time.time()
    signed = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(count)]
    for start in range(0, count, PUT_CHUNK):
        pairs = []
        for session_id, line in signed[start:start + PUT_CHUNK]:
            pairs += [store.record_key(session_id), records.dumps({
                user_sessions.USER_KEY: user,
                user_sessions.SIGN_IN_KEY: {'line': line, 'detail': {'agent': AGENT}},
                '_creation_time': now, '_accessed_time': now, '_expires': now + 3600},
                'session')]
        pool.request('misc', 'putlist', 0, pairs)
    index = ''.join(records.dumps({'id': session_id, 'line': line, 'at': round(now, 3),
                                   'agent': AGENT}) + '\n' for session_id, line in signed)
    pool.request('put', store.index(user).key, index)
    return signed


def new_session(url, session_id=None):
    options = {'type': 'ext:tcjson', 'url': url, 'timeout': 3600, 'use_cookies': False}
    if session_id:
        options['id'] = session_id
    return user_sessions.UserSession({}, **options)


def stored_anonymous_session(url):
    session = new_session(url)
    session['visits'] = 1
    session.save()
    return new_session(url, session.id)


def sign_in(session, user):
    user_sessions.sign_in(session, user, {'agent': AGENT})
    session.save(accessed_only=True)              # what the response start does


def counted(server, call):
    """(round trips, commands, result) of one call."""
    peer = peers.Tyrant()
    peer.host, peer.port = server.host, server.port
    before = peer.counter()
    with peers.RoundTripCounter() as trips:
        result = call()
    return trips.round_trips, peer.counter() - before - 1, result


def once(server, call):
    """(round trips, commands, result, µs) of an operation that changes the
    store: call(TWIN) counted, then call(USER) timed alone (the counter's
    hook would slow it), on twin users filled alike."""
    trips, commands, _ = counted(server, lambda: call(TWIN))
    started = time.time()
    result = call(USER)
    return trips, commands, result, (time.time() - started) * 1e6


def restore(store, session, user):
    """Take back a sign-in (its index entry and record), untimed: every
    timed sign-in then meets the same index."""
    session_id = str(session.id)
    store.index(user).drop([session_id])
    store.delete_sessions([session_id])


def measure(size, repeat, ttserver):
    """Rows (operation, round trips, commands, median µs, runs) for a user
    with `size` sessions.  The pruning and revoking rows change the store,
    so they run once (see once())."""
    with TyrantProcess('*', ttserver=ttserver or False) as server:
        url = server.url
        store = user_sessions.UserSessions.from_config(url)
        signed = dict((user, fill(get_pool(url), store, size, user)) for user in (USER, TWIN))
        store.index(USER).is_revoked('x')      # the pool's connection, probed
        if size > user_sessions.MAX_SESSIONS:
            # The first listing compacts the index (index_trim): once.
            trips, commands, listed, micros = once(server, store.sessions)
            return server.kind, [(
                'listing of an index of %d entries written by another program (%d listed)'
                % (size, len(listed)), trips, commands, micros, 1)]
        trips, commands, listed = counted(server, lambda: store.sessions(USER))
        assert len(listed) == size, (len(listed), size)
        rows = [('listing', trips, commands,
                 median_us(lambda: store.sessions(USER), repeat), repeat),
                sign_in_row(server, store, size, repeat)]

        listed = set(info.id for user in (USER, TWIN) for info in store.sessions(user))
        gone = [session_id for user in (USER, TWIN) for session_id, _ in signed[user][::10]
                if session_id in listed]
        get_pool(url).request('misc', 'outlist', 0, [store.record_key(i) for i in gone])
        trips, commands, after, micros = once(server, lambda user: store.sessions(
            user, now=time.time() + user_sessions.SIGN_IN_GRACE))
        rows.append(('listing of %d that drops %d gone entries'
                     % (len(after) + len(gone) // 2, len(gone) // 2),
                     trips, commands, micros, 1))

        kept = {}
        for user in (USER, TWIN):
            kept[user] = stored_anonymous_session(url)
            sign_in(kept[user], user)
        trips, commands, removed, micros = once(server, lambda user: store.revoke(
            user, all_but=kept[user][user_sessions.SIGN_IN_KEY]['line']))
        assert [info.id for info in store.sessions(USER)] == [kept[USER].id]
        rows.append(('revoke all but one (%d signed out)' % len(removed), trips, commands,
                     micros, 1))
        return server.kind, rows


def sign_in_row(server, store, size, repeat):
    """The sign-in row: below the bound, timed `repeat` times, each taken
    back after; at it, once (the oldest session is signed out, and stays
    out)."""
    url = server.url
    if size >= user_sessions.MAX_SESSIONS:
        sessions = dict((user, stored_anonymous_session(url)) for user in (USER, TWIN))
        trips, commands, _, micros = once(server, lambda user: sign_in(sessions[user], user))
        return ('sign-in past the bound of %d sessions (the oldest signed out)'
                % user_sessions.MAX_SESSIONS, trips, commands, micros, 1)
    session = stored_anonymous_session(url)
    trips, commands, _ = counted(server, lambda: sign_in(session, USER))
    restore(store, session, USER)
    prepared = []
    return ('sign-in (regenerate_id, index entry, new record and its check)', trips,
            commands, median_us(lambda: sign_in(prepared[-1], USER), repeat,
                                before=lambda: prepared.append(stored_anonymous_session(url)),
                                after=lambda: restore(store, prepared.pop(), USER)), repeat)


def report(args, argv):
    """The Markdown of a run, as a list of lines."""
    sizes = sorted(int(n) for n in args.sessions.split(','))
    kinds = [None] + ([find_ttserver()] if find_ttserver() else [])
    lines = ['# Sessions per user: what sign-in, listing and revoking cost', '',
             '`%s` on %s, Python %s, %s; one process, loopback; load average at the start '
             '%s.' % (' '.join(['bench/user_sessions.py'] + argv), platform.node() or
                      'this host', platform.python_version(),
                      time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                      '%.2f, %.2f, %.2f' % os.getloadavg()), '',
             '| server | sessions of the user | operation | round trips | commands '
             '| median time | runs |', '|---|---:|---|---:|---:|---:|---:|']
    for ttserver in kinds:
        for size in sizes:
            kind, rows = measure(size, args.repeat, ttserver)
            for name, trips, commands, micros, runs in rows:
                lines.append('| %s | %d | %s | %d | %d | %.2f ms | %d |' % (
                    kind, size, name, trips, commands, micros / 1000, runs))
            print('\n'.join(lines[-len(rows):]), file=sys.stderr)     # progress
    lines += ['', 'Load average (1, 5, 15 min) at the end: %.2f, %.2f, %.2f.'
              % os.getloadavg()]
    return lines


def write_tables(path, lines):
    """Put the tables at the top of `path`, keeping what follows its first
    "## " heading (the reading of the numbers, written by hand)."""
    kept = ''
    if os.path.exists(path):
        text = open(path).read()
        start = text.find('\n## ')
        kept = text[start:] if start >= 0 else ''
    with open(path, 'w') as out:
        out.write('\n'.join(lines) + '\n' + kept)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sessions', default='5,25,%d,10000' % user_sessions.MAX_SESSIONS,
                        help='comma-separated numbers of sessions of the user (over '
                        'MAX_SESSIONS: only the listing, of an index another program wrote)')
    parser.add_argument('--repeat', type=int, default=100, help='runs per timed case')
    parser.add_argument('--out', help='Markdown file whose tables to replace')
    args = parser.parse_args(argv)
    tcjson.register()
    lines = report(args, argv)
    print('\n'.join(lines))
    if args.out:
        write_tables(args.out, lines)


if __name__ == '__main__':
    main()
