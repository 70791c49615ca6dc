# -*- coding: utf-8 -*-
"""Where ext:tcjson's per-request time goes, step by step (client side).

    .venv/bin/python bench/diagnose_tcjson.py

Times, for the bench's small and large sessions, each step one session
request makes through tcjson.py, in isolation (median of many runs):
JSON validation, every JSON encode/decode pass, base64, and a Tyrant round
trip through the pool versus a bare socket.  Starts its own tcjson-tyrant.
"""
from __future__ import print_function

import base64
import socket
import struct
import sys
import os

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import simplejson  # noqa: E402

import inproc  # noqa: E402
import peers  # noqa: E402
from pylons_tcjson_template import tcjson  # noqa: E402
from pylons_tcjson_template.devtyrant.protocol import recv_exactly  # noqa: E402


def session_dict(size):
    data = inproc.PAYLOADS[size]()
    data.update({'_creation_time': 1764000000.25, '_accessed_time': 1764000100.5})
    return data


def steps(size, pool, count):
    data = session_dict(size)
    serializer = tcjson.JSONSerializer()
    text = serializer.dumps(data)
    payload = base64.b64encode(text)                 # what Beaker hands over
    manager = tcjson.TyrantNamespaceManager('diag' + size, url=pool.url,
                                            prefix='diag:', timeout=3720)
    manager.set_value('session', payload)
    key = manager.record_key('session')
    stored = pool.request('get', key)
    rows = [
        ("save: JSONSerializer.dumps (Beaker calls it)",
         lambda: serializer.dumps(data)),
        ("save: Beaker's b64encode", lambda: base64.b64encode(text)),
        ('save: manager.set_value(session) in all (includes one put)',
         lambda: manager.set_value('session', payload)),
        ('save: put round trip alone (pool)',
         lambda: pool.request('put', key, stored)),
        ('load: manager[session] in all (includes one get)',
         lambda: manager['session']),
        ('load: get round trip alone (pool)', lambda: pool.request('get', key)),
        ('load: one simplejson.loads of the record',
         lambda: simplejson.loads(stored)),
        ("load: Beaker's b64decode", lambda: base64.b64decode(payload)),
        ('load: JSONSerializer.loads alone (parses; in a request it reuses '
         "the manager's parse)", lambda: serializer.loads(text)),
        ('load: all of it as Beaker does (manager[session], b64decode, '
         'JSONSerializer.loads)',
         lambda: serializer.loads(base64.b64decode(manager['session']))),
        ('info: simplejson.loads as is (py2: a Python bounded_int call per '
         'integer)', lambda: simplejson.loads(text)),
        ('info: simplejson.loads(parse_int=int)',
         lambda: simplejson.loads(text, parse_int=int)),
        ('info: check_json walk over the session (full type check)',
         lambda: [tcjson.check_json(v, [k]) for k, v in data.items()]),
    ]
    record = stored
    sock = socket.create_connection((pool.host, pool.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    get_request = struct.pack('>BBI', 0xC8, 0x30, len(key)) + key

    answer_size = 5 + len(record)             # status, length, value

    def bare_get():
        sock.sendall(get_request)
        recv_exactly(sock, answer_size)
    rows.append(('reference: bare-socket get round trip (no client library)',
                 bare_get))
    out = []
    for name, call in rows:
        call()
        out.append((name, inproc.median_us(call, count)))
    sock.close()
    return len(text), len(record), out


def run(tyrant, count):
    """[(size, json bytes, [(step, median us)])] against a running peer."""
    pool = tcjson.get_pool(tyrant.url)
    out = []
    for size in ('small', 'large'):
        text_len, _, rows = steps(size, pool, count)
        out.append((size, text_len, rows))
    return out


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    tyrant = peers.Tyrant().start()
    try:
        for size, text_len, rows in run(tyrant, count):
            print('\n%s session: %d bytes JSON' % (size, text_len))
            print('| step | median µs |\n|---|---:|')
            for name, value in rows:
                print('| %s | %.1f |' % (name, value))
    finally:
        tyrant.stop()


if __name__ == '__main__':
    main()
