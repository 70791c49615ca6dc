"""Record tests/data/tyrant-1.1.41-ext.txt from a real ttserver built with Lua.

    TCJSON_TTSERVER=/path/to/ttserver .venv/bin/python tests/record_ext_transcript.py

Runs every step below against that ttserver and writes what it answered
(see tests/ext_transcript.py for the file's format).  The replay in
tests/test_devtyrant_ext_transcript.py checks tcjson-tyrant against it.
"""
from __future__ import print_function

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pylons_tcjson_template.devtyrant.protocol import request_bytes  # noqa: E402

from ext_transcript import (ROOT, TRANSCRIPT, Section, Step, format_step, run_step,  # noqa: E402
                            script_sha1, start_server)

HEADER = """\
# Tokyo Tyrant 1.1.41 built with Lua 5.1: the ext command (c8 68) and the Lua
# environment, as a real ttserver answered.  Written by
# tests/record_ext_transcript.py; the format is described in tests/ext_transcript.py.
# ext's request: c8 68, name size, options (1 = record lock, 2 = global lock),
# key size, value size (4 bytes each, big endian), name, key, value.  Answer:
# 00, 4-byte size, the value the function returned; 01 for any failure.
"""


def ext(name, key=b'', value=b'', opts=0):
    return request_bytes('ext', len(name), opts, len(key), len(value), name, key, value)


def call(name, key=b'', value=b'', opts=0, label=None, clock=False):
    text = label or 'ext %s %s %s' % (name, key or '""', value or '""')
    if opts:
        text += ' (opts %d)' % opts
    return Step('exchange', text, ext(name, key, value, opts), clock=clock)


def plain(label, *fields, **kwargs):
    return Step('exchange', label, request_bytes(*fields), clock=kwargs.get('clock', False))


def get(key, clock=False):
    return plain('get %s' % key, 'get', len(key), key, clock=clock)


def put(key, value):
    return plain('put %s' % key, 'put', len(key), len(value), key, value)


def _probe_steps():
    returns = ['echo', 'ret_nil', 'ret_nothing', 'ret_false', 'ret_true', 'ret_int',
               'ret_float', 'ret_big', 'ret_tiny', 'ret_nan', 'ret_inf', 'ret_table',
               'ret_table_empty', 'ret_table_true', 'ret_table_false', 'ret_table_number',
               'ret_table_table', 'ret_table_hash', 'ret_function', 'ret_two', 'ret_empty',
               'ret_binary', 'fail', 'fail_table', 'error_message']
    steps = [get(b'hook')]
    steps += [call(name, b'k1', b'v1') for name in returns]
    steps += [
        call(b'not_a_function'), call(b'_begin'), call(b'_put', b'k', b'v'),
        call(b'no_such_function'), call(b''), call(b'string', b'x'),
        call(b'tostring', b'k1', b'v1'), call(b'type', b'k1'),
        call(b'echo\0ignored', b'k1', b'v1', label='ext "echo\\0ignored" k1 v1'),
        call(b'x' * 1023, b'k', b'v', label='ext (a 1023-byte name) k v'),
        call(b'echo', b'k' * 70000, b'v', label='ext echo (a 70000-byte key) v'),
        call(b'echo', b'k1', b'v1', opts=1), call(b'echo', b'k1', b'v1', opts=2),
        call(b'echo', b'k1', b'v1', opts=3),
        call(b'put', b'a', b'1'), call(b'putkeep', b'a', b'2'), call(b'putkeep', b'b', b'2'),
        call(b'putcat', b'a', b'+'), call(b'get', b'a'), call(b'get', b'nope'),
        call(b'vsiz', b'a'), call(b'vsiz', b'nope'), call(b'out', b'b'), call(b'out', b'b'),
        call(b'addint', b'n', b'5'), call(b'addint', b'n', b'-7'), call(b'addint', b'a', b'1'),
        call(b'adddouble', b'd', b'1.25'), call(b'adddouble', b'd', b'0.1'),
        call(b'adddouble', b'a', b'1'), call(b'numbers', b'num'),
        call(b'count'), call(b'keys', b'', b'-1'), call(b'keys', b'k', b'1'),
        call(b'iterate'),
        call(b'misc', b'putlist', b'm1,x,m2,y'), call(b'misc', b'getlist', b'm1,nope,m2'),
        call(b'misc', b'$outlist', b'm1'), call(b'misc', b'nosuch', b'x'),
        call(b'misc_spread'), get(b's1'), get(b's2'),
        call(b'stash', b's', b'v'), call(b'locks', b'L'), call(b'variables'),
        call(b'bad_args'),
        get(b'a'), get(b'n'), get(b'd'), get(b'num'),
        plain('rnum', 'rnum'),
        Step('restart'),
        get(b'hook'),
        call(b'echo', b'k1', b'v1'),
        Step('stop'),
        Step('ulog'),
    ]
    return steps


def _tcjson_steps():
    record = b'{"a":1,"b":"two","n":9007199254740993,"f":1.0}'
    return [
        call(b'probe', opts=1),
        put(b's:1:session', record),
        call(b'merge', b's:1:session', b'{"set":{"b":"zwei","c":[1,2]}}', opts=1),
        get(b's:1:session'),
        call(b'merge', b's:1:session', b'{"unset":["a"],"set":{"\\u0062":3}}', opts=1),
        get(b's:1:session'),
        call(b'merge', b's:1:session', b'{"set":{"d":"%s"},"limit":60}' % (b'x' * 40), opts=1),
        call(b'merge', b's:2:session', b'{"set":{"a":1}}', opts=1),
        call(b'merge', b's:1:session', b'{"set":', opts=1),
        call(b'merge', b's:1:session', b'{"bogus":1}', opts=1),
        put(b's:3:session', b'not json'),
        call(b'merge', b's:3:session', b'{"set":{"a":1}}', opts=1),
        put(b's:4:session', b'{"_expires":100.5,"x":1}'),
        call(b'delete', b's:4:session', b'{"before":100}', opts=1),
        call(b'delete', b's:4:session', b'{"before":200}', opts=1),
        call(b'delete', b's:4:session', b'{}', opts=1),
        call(b'delete', b's:1:session', b'{}', opts=1),
        get(b's:1:session'),
        put(b'u:1', b'{"gen":5}\n{"id":"aa","t":1}\n{"id":"bb","t":2}\n'),
        call(b'index_add', b'u:1', b'{"entry":{"id":"cc","t":3},"max":2}', opts=1),
        get(b'u:1'),
        call(b'index_add', b'u:1', b'{"entry":{"id":"bad id"}}', opts=1),
        call(b'index_drop', b'u:1', b'{"ids":["bb","zz"]}', opts=1),
        get(b'u:1'),
        call(b'index_drop', b'u:9', b'{"ids":["bb"]}', opts=1),
        call(b'index_revoke', b'u:9', b'{}', opts=1),
        call(b'_begin', opts=1), call(b'fail', opts=1),
        Step('ulog'),
    ] + _tcjson_pair_steps()


def _tcjson_pair_steps():
    """A dual-master pair's calls (this server's -sid is 1, its partner's 2):
    versions and generations are the server's clock in microseconds."""
    pair = lambda name, key, value: call(name, key, value, opts=1, clock=True)  # noqa: E731
    return [
        pair(b'merge', b'p:1', b'{"set":{"a":1,"b":"x"},"pair":2,"create":true}'),
        pair(b'merge', b'p:1', b'{"set":{"a":2},"unset":["b"],"pair":2,"ver":{"a":5}}'),
        get(b'p:1@1', clock=True),
        pair(b'merge', b'p:2', b'{"set":{"a":1},"pair":2}'),
        pair(b'merge', b'p:1', b'{"set":{"_v":1},"pair":2}'),
        pair(b'delete', b'p:1', b'{"pair":2,"expires":1234.5}'),
        pair(b'merge', b'p:1', b'{"set":{"a":3},"pair":2,"create":true}'),
        get(b'p:1@1'), get(b'p:1@ended'),
        pair(b'index_add', b'pu:1', b'{"entry":{"id":"aa"},"pair":2}'),
        pair(b'index_add', b'pu:1', b'{"entry":{"id":"bb"},"pair":2,"max":1}'),
        pair(b'index_revoke', b'pu:1', b'{"pair":2}'),
        pair(b'index_drop', b'pu:1', b'{"ids":["bb"],"pair":2}'),
        get(b'pu:1@1', clock=True),
    ]


def _limit_steps():
    opened = lambda label, *parts: Step('open', label, b''.join(parts))  # noqa: E731
    rnum = request_bytes('rnum')
    return [
        put(b'k1', b'v1'),
        opened('mget with a key over 256 MB, then rnum',
               request_bytes('mget', 3, 2, b'k1', (256 << 20) + 1), rnum),
        opened('mget with a key of 2 GB (negative), then rnum',
               request_bytes('mget', 3, 2, b'k1', 0x80000000), rnum),
        opened('mget with a key of 256 MB (waits for it)',
               request_bytes('mget', 3, 2, b'k1', 256 << 20)),
        opened('misc getlist with an argument over 256 MB, then rnum',
               request_bytes('misc', 7, 0, 3, b'getlist', 2, b'k1', 0x7fffffff), rnum),
        opened('mget of 1<<20 + 1 keys, then rnum', request_bytes('mget', (1 << 20) + 1), rnum),
        opened('mget of 1<<20 + 1 keys, nothing after', request_bytes('mget', (1 << 20) + 1)),
        opened('mget of 1<<20 keys (waits for them)', request_bytes('mget', 1 << 20)),
        opened('mget of 2G keys (negative)', request_bytes('mget', 0x80000000)),
        opened('misc of 1<<20 + 1 arguments', request_bytes('misc', 7, 0, (1 << 20) + 1)),
        opened('misc with a 1024-byte name', request_bytes('misc', 1024, 0, 0)),
        Step('exchange', 'misc with a 1023-byte name',
             request_bytes('misc', 1023, 0, 0, b'x' * 1023)),
        Step('exchange', 'misc "getlist\\0x" k1',
             request_bytes('misc', 9, 0, 1, b'getlist\0x', 2, b'k1')),
        opened('ext with a 1024-byte name', request_bytes('ext', 1024, 0, 0, 0)),
        opened('ext with a key over 256 MB', request_bytes('ext', 4, 0, (256 << 20) + 1, 0)),
        opened('put with a key over 256 MB', request_bytes('put', (256 << 20) + 1, 1)),
        opened('put with a value over 256 MB, then rnum',
               request_bytes('put', 1, (256 << 20) + 1), rnum),
        opened('get with a key over 256 MB', request_bytes('get', (256 << 20) + 1)),
        opened('putshl with a negative width', request_bytes('putshl', 1, 1, 0xffffffff)),
        opened('adddouble with a key over 256 MB',
               request_bytes('adddouble', (256 << 20) + 1, 0, 0, 0, 0)),
        opened('setmst with a negative port', request_bytes('setmst', 0, 0x80000000, 0, 0, 0)),
        opened('unknown command, then rnum', b'\xc8\xee', rnum),
        opened('unknown command, nothing after', b'\xc8\xee'),
    ]


def sections():
    probe = os.path.join('tests', 'data', 'ext-probe.lua')
    return [
        Section('probe', 'tests/data/ext-probe.lua on a .tch file with an update log',
                {'ext': probe, 'sid': '7', 'ulog': 'yes', 'db': 'casket.tch'}, _probe_steps()),
        Section('tcjson', 'pylons_tcjson_template/tcjson.lua on sample records',
                {'ext': os.path.join('pylons_tcjson_template', 'tcjson.lua'), 'sid': '1',
                 'ulog': 'yes', 'db': '*'}, _tcjson_steps()),
        Section('syntax-error', 'a script with a syntax error: only Lua\'s own functions',
                {'ext': os.path.join('tests', 'data', 'ext-syntax-error.lua')},
                [call(b'defined_first', b'k'), call(b'tostring', b'k'), Step('stop')]),
        Section('runtime-error', 'a script that raises an error halfway: what ran before stays',
                {'ext': os.path.join('tests', 'data', 'ext-runtime-error.lua')},
                [call(b'before', b'k'), call(b'after', b'k'), call(b'tostring', b'k'),
                 Step('stop')]),
        Section('missing-file', 'a script that is not there: every call fails, exit status 1',
                {'ext': '/nonexistent/tcjson-tyrant-test.lua'},
                [call(b'tostring', b'k'), call(b'echo', b'k'), Step('stop')]),
        Section('no-ext', 'no -ext: every call fails', {'ext': 'none'},
                [call(b'tostring', b'k'), Step('stop')]),
        Section('limits', "ttserver's limits on a request's sizes and counts", {'ext': 'none'},
                _limit_steps()),
    ]


def record(ttserver, path=TRANSCRIPT):
    lines = [HEADER]
    for section in sections():
        tmpdir = tempfile.mkdtemp(prefix='tyrant-ext-')
        try:
            lines.append('[%s] %s' % (section.name, section.title))
            if script_sha1(section.server):
                section.server['sha1'] = script_sha1(section.server)
            lines.append('server  ' + ' '.join('%s=%s' % item for item in
                                               sorted(section.server.items())))
            process = start_server(section.server, tmpdir, ttserver)
            try:
                for step in section.steps:
                    got = run_step(step, process, tmpdir)
                    if step.kind != 'restart' or got is not None:
                        lines.extend(format_step(step, got))
                    else:
                        lines.append('restart')
            finally:
                process.stop()
            lines.append('')
        finally:
            shutil.rmtree(tmpdir)
    with open(path, 'w') as transcript:
        transcript.write('\n'.join(lines))
    print('wrote %s' % os.path.relpath(path, ROOT))


def main():
    ttserver = os.environ.get('TCJSON_TTSERVER', '').strip()
    if not ttserver or ttserver == 'builtin':
        sys.exit('record_ext_transcript: set TCJSON_TTSERVER to a ttserver built with Lua')
    record(ttserver)


if __name__ == '__main__':
    main()
