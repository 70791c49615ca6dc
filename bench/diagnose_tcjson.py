# -*- coding: utf-8 -*-
"""Where a tcjson.TyrantSession request's time goes, step by step.

    .venv/bin/python bench/diagnose_tcjson.py [COUNT]

For the bench's small and large sessions, on each Tyrant server given
(tcjson-tyrant; ttserver too where TCJSON_TTSERVER names one), each step
of a request alone (median of COUNT runs):

* the load: the get round trip, the parse and checks of the record
  (and, to split them, simplejson's parse alone and the shape check
  alone), the whole load as Beaker does it;
* the save: the comparison with the record as loaded (which parses it
  again), the encoding of the changed keys into the merge request, the
  merge call (one ext round trip), the whole save;
* the server: the ext merge and a get replayed on a bare socket, and the
  server's own CPU time per merge and per get (stat ru_user + ru_sys): what
  tcjson.lua's merge costs inside the server next to a bare get;
* whole read and write requests, and for reference a plain put (what a
  save without the merge would send);
* where lua5.1 is on PATH, tcjson.lua's merge of the bench's write under
  the Lua ttserver links, outside any server (bench/merge_cost.lua): the
  whole call, the scan of the stored record's members, the request's
  parse.
"""
from __future__ import print_function

import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import simplejson  # noqa: E402

import inproc  # noqa: E402
import peers  # noqa: E402
from pylons_tcjson_template import records, tcjson, tyrant, user_sessions  # noqa: E402


def session_options(url):
    """The session's options as SessionMiddleware would pass them."""
    return {'type': 'ext:tcjson', 'url': url, 'prefix': 'diag:', 'timeout': 3600,
            'use_cookies': False}


def stored_session(url, size):
    """A session of `size` saved once (one put); returns its id."""
    session = user_sessions.UserSession({}, **session_options(url))
    session.update(inproc.PAYLOADS[size]())
    session.save()
    return session.id


def load(url, session_id):
    """What a request's first touch of the session does: Beaker's
    Session.__init__ with the id from the cookie, which loads."""
    return user_sessions.UserSession({}, id=session_id, **session_options(url))


def server_cpu_us(peer, call, count):
    """The server's own CPU microseconds per call of `call` (its stat
    ru_user + ru_sys over `count` calls)."""
    before = peer.cpu()
    for _ in range(count):
        call()
    return (peer.cpu() - before) / count * 1e6


def changed_keys(session):
    """What TyrantSession's save sends for the bench's write: the changed
    key and the time fields, each as JSON text."""
    changed, removed = session._changes()
    sent = dict((key, records.dumps(value, key)) for key, value in changed.items())
    for name, value in session._times(session.last_accessed or 0).items():
        sent[name] = records.dumps(value)
    return sent, removed


def bare_requests(peer, size):
    """(a bare socket, the get and the merge of a write as TyrantSession
    sends them) on a record of its own, which the merge sets to what it
    holds: its size, and so the get's reply, stays the same."""
    bare = inproc.BareSocket(peer, inproc.tyrant_get, inproc.tyrant_put)
    key, now = 'diag:bare-%s:session' % size, time.time()
    record = inproc.stored_record(size, now)
    bare.put(key, record)
    merge = inproc.write_merge_request(inproc.PAYLOADS[size]()['count'], now)
    return (bare, inproc.tyrant_get(key, record),
            inproc.tyrant_ext('merge', key, merge, 'ok'))


def steps(size, peer, count):
    """([(step, median µs)], record bytes) for one session size."""
    pool = tcjson.get_pool(peer.url)
    session_id = stored_session(peer.url, size)
    session = load(peer.url, session_id)
    record_key = session.namespace.record_key('session')
    record = pool.request('get', record_key)
    manager_record = session.namespace.record()

    def change():
        session['count'] += 1
        session._snapshot = None            # as in a request: compared with the load

    change()
    sent, removed = changed_keys(session)

    def encode():
        texts = dict((key, records.dumps(value, key)) for key, value in sent.items())
        return records.merge_request(texts, removed, records.MAX_SESSION_SIZE)

    def read_request():
        load(peer.url, session_id).save(accessed_only=True)

    def write_request():
        writer = load(peer.url, session_id)
        writer['count'] += 1
        writer.save()

    bare, bare_get, bare_merge = bare_requests(peer, size)
    rows = [
        ('load: get round trip (pool)', lambda: pool.pipeline(('get', record_key)), {}),
        ('load: parse_session_record (parse and check the record)',
         lambda: records.parse_session_record(record, records.MAX_SESSION_SIZE), {}),
        ('info: simplejson.loads of the record alone (no number hooks, no shape check)',
         lambda: simplejson.loads(record), {}),
        ('info: the shape check alone (records._check_shape: depth, value count, from '
         'the text)', lambda: records._check_shape(record), {}),
        ('load: the session with the id, in all (Beaker Session.__init__, one get, '
         'one parse)', lambda: load(peer.url, session_id), {}),
        ('save: _changes (the comparison with the record as loaded: parse it again, '
         'compare key by key)', session._changes, {'before': change}),
        ('save: encoding of the changed keys and the merge request', encode, {}),
        ('save: the merge call (ext merge round trip, pool)',
         lambda: manager_record.merge(sent, removed), {}),
        ('save: session.save() in all (comparison, encoding, merge)', session.save,
         {'before': change}),
        ('server: ext merge on a bare socket (round trip)', lambda: bare.exchange(*bare_merge),
         {}),
        ('server: get on a bare socket (round trip)', lambda: bare.exchange(*bare_get), {}),
        ('reference: one put round trip (pool), what a save without the merge sends',
         lambda: pool.request('put', record_key, record), {}),
        ('read request: load + save(accessed_only=True), no refresh due',
         read_request, {}),
        ('write request: load + change + save()', write_request, {}),
    ]
    out = []
    try:
        for name, call, around in rows:
            if around.get('before'):
                around['before']()
            call()
            out.append((name, inproc.median_us(call, count, **around)))
        cpu_count = max(count, 200)
        out.append(('server CPU: per ext merge (stat ru_user + ru_sys)',
                    server_cpu_us(peer, lambda: bare.exchange(*bare_merge), cpu_count)))
        out.append(('server CPU: per get (stat ru_user + ru_sys)',
                    server_cpu_us(peer, lambda: bare.exchange(*bare_get), cpu_count)))
    finally:
        bare.close()
    return out, len(record)


def run(tyrants, count):
    """[(server kind, size, record bytes, [(step, median µs)])] against the
    running Tyrant peers `tyrants`."""
    tcjson.register()
    out = []
    for peer in tyrants:
        for size in ('small', 'large'):
            rows, record_len = steps(size, peer, count)
            out.append((peer.kind, size, record_len, rows))
    return out


MERGE_COST = os.path.join(HERE, 'merge_cost.lua')


def lua_merge_cost(calls=200):
    """[(size, record bytes, [(part, µs per call)])] of tcjson.lua's merge
    under lua5.1 (bench/merge_cost.lua), or None without lua5.1."""
    lua = peers.which('lua5.1')
    if lua is None:
        return None
    work = tempfile.mkdtemp(prefix='bench-merge-')
    try:
        now = time.time()
        request = os.path.join(work, 'request.json')
        with open(request, 'wb') as out:
            out.write(inproc.write_merge_request(0, now))
        found = []
        for size in ('small', 'large'):
            record = os.path.join(work, '%s.json' % size)
            with open(record, 'wb') as out:
                out.write(inproc.stored_record(size, now))
            text = subprocess.check_output([lua, MERGE_COST, tyrant.EXT_SCRIPT, record,
                                            request, str(calls)])
            parts = [line.split(':') for line in text.splitlines()[1:]]
            found.append((size, os.path.getsize(record),
                          [(name.strip(), float(us.split()[0])) for name, us in parts]))
        return found
    finally:
        shutil.rmtree(work, ignore_errors=True)


def step(diagnosis, server, size, prefix):
    """The median µs of the first step starting with `prefix`, or None."""
    for kind, row_size, _, rows in diagnosis or []:
        if (kind, row_size) == (server, size):
            for name, us in rows:
                if name.startswith(prefix):
                    return us
    return None


def merge_inside_us(diagnosis, server, size):
    """What the merge costs inside the server beyond a get: the bare-socket
    ext merge minus the bare-socket get, or None."""
    merge = step(diagnosis, server, size, 'server: ext merge on a bare socket')
    get = step(diagnosis, server, size, 'server: get on a bare socket')
    return None if None in (merge, get) else merge - get


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    tyrants = [peers.Tyrant().start()]
    real = peers.Tyrant(real=True)
    if real.available():
        tyrants.append(real.start())
    try:
        for kind, size, record_len, rows in run(tyrants, count):
            print('\n%s, %s session: %d bytes JSON' % (kind, size, record_len))
            print('| step | median µs |\n|---|---:|')
            for name, value in rows:
                print('| %s | %.1f |' % (name, value))
        for size, record_len, rows in lua_merge_cost() or []:
            print('\ntcjson.lua under lua5.1, %s session: %d bytes JSON' % (size, record_len))
            for name, value in rows:
                print('| %s | %.1f |' % (name, value))
    finally:
        for tyrant in tyrants:
            tyrant.stop()


if __name__ == '__main__':
    main()
