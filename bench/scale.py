"""Part 3: purge of expired sessions among many records, time and memory.

A tcjson-tyrant on a fresh .tch file is filled with N session records in
the format tcjson.py documents (key ``<prefix><id>:session``, value a JSON
object with ``_expires``), a fraction of them already expired.  Loading uses
pipelined ``misc putlist`` batches over a raw socket.  Then
``purge.purge_expired`` runs in a child process (bench/purge_child.py) that
reports its wall time and peak memory, and the remaining record count is
checked against the number of live records written.  The server runs
tcjson.lua (-ext), whose ``delete`` judges each record under its lock.
"""
from __future__ import print_function

import inspect
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess
from pylons_tcjson_template.devtyrant.protocol import recv_exactly

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = 'scale:'
_RECORD = ('{"_accessed_time":%.3f,"_creation_time":%.3f,"user_id":%d,'
           '"count":%d,"_expires":%.3f}')


def _u32(n):
    return struct.pack('>I', n)


def putlist_request(pairs):
    """The bytes of one misc putlist request (ttserver 1.1.41 layout)."""
    parts = [struct.pack('>BBIII', 0xC8, 0x90, len(b'putlist'), 0,
                         2 * len(pairs)), b'putlist']
    for key, value in pairs:
        parts.append(_u32(len(key)))
        parts.append(key)
        parts.append(_u32(len(value)))
        parts.append(value)
    return b''.join(parts)


def _read_misc_answer(sock):
    head = recv_exactly(sock, 5)
    if head[:1] != b'\x00':
        raise RuntimeError('putlist failed (status %r)' % head[:1])
    for _ in range(struct.unpack('>I', head[1:])[0]):
        recv_exactly(sock, struct.unpack('>I', recv_exactly(sock, 4))[0])


def records(count, expired_fraction, seed=1):
    """Yield (key, value, expired) for `count` session records."""
    rng = random.Random(seed)
    now = time.time()
    for i in range(count):
        expired = rng.random() < expired_fraction
        accessed = now - (rng.uniform(7200, 86400) if expired
                          else rng.uniform(0, 1800))
        expires = accessed + 3600 + 120
        key = '%s%032x:session' % (PREFIX, rng.getrandbits(128))
        value = _RECORD % (accessed, accessed - 60, i, i % 50, expires)
        yield key.encode('ascii'), value.encode('ascii'), expires < now


def load(host, port, count, expired_fraction, batch=5000, window=3):
    """Write the records with pipelined putlist batches; return #expired."""
    sock = socket.create_connection((host, port), 30)
    sock.settimeout(300)
    expired_total, pending, pairs = 0, 0, []
    try:
        for key, value, expired in records(count, expired_fraction):
            expired_total += expired
            pairs.append((key, value))
            if len(pairs) == batch:
                sock.sendall(putlist_request(pairs))
                pairs, pending = [], pending + 1
                if pending >= window:
                    _read_misc_answer(sock)
                    pending -= 1
        if pairs:
            sock.sendall(putlist_request(pairs))
            pending += 1
        while pending:
            _read_misc_answer(sock)
            pending -= 1
    finally:
        sock.close()
    return expired_total


def rnum(host, port):
    sock = socket.create_connection((host, port), 30)
    try:
        sock.sendall(b'\xc8\x80')
        data = recv_exactly(sock, 9)
        return struct.unpack('>Q', data[1:])[0]
    finally:
        sock.close()


def purge_available():
    try:
        from pylons_tcjson_template import purge
    except ImportError as exc:
        return None, 'purge.py not importable: %s' % exc
    return purge.purge_expired, None


def purge_in_child(url, prefix, kwargs=None, timeout=900):
    argv = [sys.executable, os.path.join(HERE, 'purge_child.py'), url, prefix]
    if kwargs:
        argv.append(json.dumps(kwargs))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError('purge child failed (%d): %s'
                           % (proc.returncode, err.decode('utf-8', 'replace')[-1500:]))
    return json.loads(out.decode('utf-8').strip().splitlines()[-1])


def run_one(count, expired_fraction, progress, ttserver=None):
    """One row: `count` records on tcjson-tyrant, or on `ttserver` (a path)."""
    workdir = tempfile.mkdtemp(prefix='sessbench-scale-')
    server = TyrantProcess(os.path.join(workdir, 'sessions.tch'), ttserver=ttserver or '')
    server.start()
    try:
        t0 = time.time()
        expired = load(server.host, server.port, count, expired_fraction)
        load_s = time.time() - t0
        before = rnum(server.host, server.port)
        progress('  scale: %d records loaded in %.1f s (%d expired)'
                 % (before, load_s, expired))
        stats = purge_in_child(server.url, PREFIX)
        after = rnum(server.host, server.port)
        row = {
            'server': server.kind, 'records': count, 'expired': expired, 'load_s': load_s,
            'purge_s': stats['seconds'], 'result': stats['result'],
            'remaining': after, 'expected_remaining': before - expired,
            'start_rss_kb': stats['start_rss_kb'],
            'vmhwm_kb': stats['vmhwm_kb'],
            'ru_maxrss_kb': stats['ru_maxrss_kb'],
            'db_bytes': os.path.getsize(os.path.join(workdir, 'sessions.tch')),
        }
        row['correct'] = after == before - expired
        progress('  scale: purge of %d records on %s: %.1f s, peak %d KB (start %s KB),'
                 ' %d left (expected %d)'
                 % (count, server.kind, row['purge_s'], row['vmhwm_kb'] or row['ru_maxrss_kb'],
                    row['start_rss_kb'], after, before - expired))
        return row
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run(counts, expired_fraction, progress, ttserver=None):
    """Rows of `counts` records on tcjson-tyrant, then (for the purge's
    time on the real server) on `ttserver` when given."""
    purge, reason = purge_available()
    if purge is None:
        progress('  scale: not measured: ' + reason)
        return {'rows': [], 'notes': ['scale: NOT MEASURED: ' + reason]}
    notes = []
    try:
        notes.append('purge_expired%s' % inspect.formatargspec(
            *inspect.getargspec(purge)))
    except TypeError:
        pass
    rows = []
    for server in [None] + ([ttserver] if ttserver else []):
        for count in counts:
            try:
                rows.append(run_one(count, expired_fraction, progress, server))
            except Exception as exc:
                notes.append('scale %d: FAILED: %s' % (count, exc))
                progress('  scale %d failed: %s' % (count, exc))
    return {'rows': rows, 'notes': notes}
