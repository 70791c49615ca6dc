# -*- coding: utf-8 -*-
"""Where a tcjson.TyrantSession request's time goes, step by step (client side).

    .venv/bin/python bench/diagnose_tcjson.py [COUNT]

Times, for the bench's small and large sessions, each step of the load
path (the get, the parse) and of the save path of a write request (the
comparison with the record as loaded, the lock taken with a re-read of the
record, the encoding, the write sent with the unlock), each in isolation
(median of COUNT runs), then whole read and write requests, and for
reference a plain put (what a save without the merge would send) and a
bare-socket get.  Starts its own tcjson-tyrant.
"""
from __future__ import print_function

import os
import socket
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import simplejson  # noqa: E402

import inproc  # noqa: E402
import peers  # noqa: E402
from pylons_tcjson_template import tcjson  # noqa: E402
from pylons_tcjson_template.devtyrant.protocol import recv_exactly  # noqa: E402


def session_options(url):
    """TyrantSession's options as SessionMiddleware would pass them."""
    return {'type': 'ext:tcjson', 'url': url, 'prefix': 'diag:', 'timeout': 3600,
            'use_cookies': False}


def stored_session(url, size):
    """A session of `size` saved once (one put); returns its id."""
    session = tcjson.TyrantSession({}, **session_options(url))
    session.update(inproc.PAYLOADS[size]())
    session.save()
    return session.id


def load(url, session_id):
    """What a request's first touch of the session does: Beaker's
    Session.__init__ with the id from the cookie, which loads."""
    return tcjson.TyrantSession({}, id=session_id, **session_options(url))


class BareGet(object):
    """A get on a plain socket: the loopback round trip, no client library."""

    def __init__(self, pool, key, reply_size):
        self.sock = socket.create_connection((pool.host, pool.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = struct.pack('>BBI', 0xC8, 0x30, len(key)) + key
        self.reply_size = reply_size

    def __call__(self):
        self.sock.sendall(self.request)
        recv_exactly(self.sock, self.reply_size)

    def close(self):
        self.sock.close()


def steps(size, pool, count):
    """[(step, median µs)] for one session size, and the record's size."""
    session_id = stored_session(pool.url, size)
    session = load(pool.url, session_id)
    manager = session.namespace
    record_key, lock_key = manager.record_key('session'), manager.lock_key('session')
    record = pool.request('get', record_key)
    lock_value = tcjson._lock_value(0, 'diagnose')
    take_lock = lambda: pool.request('putkeep', lock_key, lock_value)
    drop_lock = lambda: pool.request('out', lock_key)

    def change():
        session['count'] += 1

    def read_request():
        load(pool.url, session_id).save(accessed_only=True)

    def write_request():
        writer = load(pool.url, session_id)
        writer['count'] += 1
        writer.save()

    bare_get = BareGet(pool, record_key, 5 + len(record))
    rows = [
        ('load: get round trip (pool)', lambda: pool.request('get', record_key), {}),
        ('load: parse_session_record (parse and check the record)',
         lambda: tcjson.parse_session_record(record, tcjson.MAX_SESSION_SIZE), {}),
        ('info: simplejson.loads of the record alone (no number hooks, no shape check)',
         lambda: simplejson.loads(record), {}),
        ('info: the shape check alone (tcjson._check_shape: depth, value count, from '
         'the text)', lambda: tcjson._check_shape(record), {}),
        ('load: TyrantSession with the id, in all (Beaker Session.__init__, one get, '
         'one parse)', lambda: load(pool.url, session_id), {}),
        ('save: _changes (parse the record as loaded again, compare key by key)',
         session._changes, {'before': change}),
        ('save: putkeep lock + get, pipelined (round trip 2)',
         lambda: pool.pipeline(('putkeep', lock_key, lock_value), ('get', record_key)),
         {'after': drop_lock}),
        ('save: _encode of the merged record', lambda: session._encode(dict(session)), {}),
        ('save: put + out, pipelined (round trip 3)',
         lambda: pool.pipeline(('put', record_key, record), ('out', lock_key)),
         {'before': take_lock}),
        ('save: session.save() in all (round trips 2 and 3, merge)', session.save,
         {'before': change}),
        ('reference: one put round trip (pool), what a save without lock and re-read '
         'sends', lambda: pool.request('put', record_key, record), {}),
        ('reference: bare-socket get round trip (no client library)', bare_get, {}),
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
            if around.get('after'):
                around['after']()
            out.append((name, inproc.median_us(call, count, **around)))
    finally:
        bare_get.close()
    return len(record), out


def run(tyrant, count):
    """[(size, record bytes, [(step, median us)])] against a running peer."""
    tcjson.register()
    pool = tcjson.get_pool(tyrant.url)
    out = []
    for size in ('small', 'large'):
        record_len, rows = steps(size, pool, count)
        out.append((size, record_len, rows))
    return out


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    tyrant = peers.Tyrant().start()
    try:
        for size, record_len, rows in run(tyrant, count):
            print('\n%s session: %d bytes JSON' % (size, record_len))
            print('| step | median µs |\n|---|---:|')
            for name, value in rows:
                print('| %s | %.1f |' % (name, value))
    finally:
        tyrant.stop()


if __name__ == '__main__':
    main()
