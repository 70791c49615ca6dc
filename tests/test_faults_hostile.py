"""Hostile input against the served application, over real HTTP: forged,
oversized and malformed cookies, validly signed odd session ids, junk
records written into Tyrant by another program; and odd cache keys through
the backend itself.

After every case the `paster serve` process must still be alive and a
bystander's session (made before the case) must still count on.
(A Tyrant that answers garbage is tests/test_tcjson_hostile_server.py.)
"""
import base64
import json
import os
import pickle
import random
import zlib

import pytest
from beaker.cache import CacheManager

from pylons_tcjson_template import tcjson
from test_faults_support import (SessionClient, make_project, raw_get, raw_http,
                                 raw_keys, raw_put, run_stack, sign_cookie_value)


@pytest.fixture(scope='module')
def project(tmpdir_factory):
    return make_project(tmpdir_factory.mktemp('hostile'), 'HostileApp')


@pytest.fixture(scope='module')
def stack(project, tmpdir_factory):
    for stack in run_stack(project, tmpdir_factory.mktemp('hostile-stack')):
        yield stack


@pytest.fixture
def bystander(project, stack):
    """Another user's session, checked after the test: process alive, the
    counter still goes on from where it was."""
    client = SessionClient(project.http_port, project.cookie_name)
    before = client.check_alive().visits
    yield client
    assert stack.app_alive(), stack.log()[-3000:]
    assert client.check_alive().visits == before + 2


def cookie_request(project, cookie_header, path='/session'):
    """A GET whose Cookie header is exactly `cookie_header` (bytes)."""
    return raw_http(project.http_port,
                    'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nCookie: %s\r\n\r\n'
                    % (path, cookie_header))


def is_fresh(project, response):
    """A brand-new session: first visit, a new signed cookie."""
    assert response.status == 200, (response.status, response.error, response.body[:300])
    assert response.visits == 1
    cookie = [c for c in response.cookies if c.startswith(project.cookie_name + '=')]
    assert cookie, response.cookies
    return True


def all_records(project):
    return dict((key, raw_get(project.tyrant_port, key))
                for key in raw_keys(project.tyrant_port, ''))


def test_forged_signature_gets_a_fresh_session(project, bystander):
    victim_id = bystander.cookie[40:]
    forged = '0' * 40 + victim_id                       # right id, wrong signature
    response = cookie_request(project, '%s=%s' % (project.cookie_name, forged))
    assert is_fresh(project, response)
    assert response.value('session-id') != victim_id


@pytest.mark.parametrize('size', [8 * 1024, 60 * 1024])
def test_oversized_cookie(project, bystander, size):
    response = cookie_request(project, '%s=%s' % (project.cookie_name, 'a' * size))
    # A fresh session, or the HTTP server refusing the header: no crash.
    assert response.status in (200, 400, 431), (response.status, response.error)
    if response.status == 200:
        assert is_fresh(project, response)


def garbage(seed, length=300):
    """Random bytes, minus CR and LF (they would end the header itself)."""
    rng = random.Random(seed)
    return ''.join(chr(rng.choice([b for b in range(256) if b not in (10, 13)]))
                   for _ in range(length))


MALFORMED = {
    'unbalanced quote': '{name}="abc',
    'quote inside': '{name}=ab"c"d',
    'control characters': '{name}=ab\x01\x02\x7fcd; x=\x00',
    'only separators': ';;;=;=;,,',
    'no value': '{name}',
    'empty value': '{name}=',
    'duplicate names': '{name}=one; {name}=two',
    'random bytes 1': garbage(1),
    'random bytes 2': garbage(2),
    'random bytes with name': '{name}=' + garbage(3),
    'many cookies': '; '.join('c%d=v%d' % (n, n) for n in range(2000)),
    'non-ASCII': '{name}=\xc3\xa9\xff\xfe',
}


@pytest.mark.parametrize('case', sorted(MALFORMED))
def test_malformed_cookie_header_gets_a_fresh_session(project, bystander, case):
    header = MALFORMED[case].replace('{name}', project.cookie_name)
    response = cookie_request(project, header)
    assert is_fresh(project, response)


@pytest.mark.parametrize('session_id', ['../../x', 'a:b', 'z' * 300,
                                        'bystander:session'])
def test_signed_odd_session_id_touches_no_other_record(project, bystander, session_id):
    """A correctly signed cookie (the secret leaked, or Beaker's own id
    format changed) with an id that is not hex and has no record: it is
    never adopted (an id with no record gets a fresh one, so nobody can
    choose a victim's id), and no other record changes."""
    before = all_records(project)
    header = '%s=%s' % (project.cookie_name, sign_cookie_value(project.secret, session_id))
    first = cookie_request(project, header)
    assert is_fresh(project, first)
    fresh_id = first.value('session-id')
    assert fresh_id != session_id and len(fresh_id) == 32
    key = first.value('record-key')
    assert key == '%s%s:session' % (project.prefix, fresh_id)
    after = all_records(project)
    assert json.loads(after[key])['visits'] == 1
    changed = set(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == set([key])


JUNK = {
    'not JSON': 'this is {not json',
    'JSON array': '[1, 2, 3]',
    'JSON string': '"visits"',
    'JSON null': 'null',
    'empty': '',
    '10 MB object': '{"visits": 1, "pad": "%s"}' % ('x' * (10 * 1024 * 1024)),
    '10 MB junk': '\x00\x01junk' * (1024 * 1024 + 1),
    'invalid UTF-8': '{"visits": 1, "name": "\xff\xfe\xc3"}',
    'truncated': '{"visits": 3, "_creation_time": 1',
    # Issue 10: records that are valid JSON, or look like our own envelope,
    # but would cost the server dearly or mislead Beaker.
    'compressed bomb in the envelope': json.dumps({'tcjson': 'beaker-opaque', 'data':
        base64.b64encode(zlib.compress('{"pad": "%s"}' % ('x' * (64 * 1024 * 1024)), 9))}),
    'nested 100,000 deep': '{"visits": %s%s}' % ('[' * 100000, ']' * 100000),
    'nested 40 deep': '{"visits": %s%s}' % ('[' * 40, ']' * 40),
    'float out of range': '{"visits": 1, "x": 1e999}',
    'access time as text': '{"visits": 1, "_accessed_time": "yesterday"}',
    'creation time as a list': '{"visits": 1, "_creation_time": [1]}',
    'expiry as text': '{"visits": 1, "_expires": "never"}',
    '80,000 keys': '{%s}' % ','.join('"k%d": 1' % n for n in range(80000)),
    'unknown tcjson marker': '{"tcjson": "something-else", "visits": 1}',
}

PWNED = '/tmp/tcjson-pickle-ran-%d' % os.getpid()


class _RunsCode(object):
    def __reduce__(self):
        return (os.system, ('touch %s' % PWNED,))


JUNK['pickle in the envelope'] = json.dumps({'tcjson': 'beaker-opaque', 'data':
                                             base64.b64encode(pickle.dumps(_RunsCode(), 2))})


@pytest.mark.parametrize('case', sorted(JUNK))
def test_junk_record_gives_400_and_a_fresh_cookie(project, bystander, case):
    victim = SessionClient(project.http_port, project.cookie_name)
    key = victim.check_alive().value('record-key')
    junk = JUNK[case]
    raw_put(project.tyrant_port, key, junk)

    response = victim.get()
    assert response.status == 400, (response.status, response.error, response.body[:300])
    expired = [c for c in response.cookies if c.startswith(project.cookie_name + '=;')]
    assert expired and 'max-age=0' in expired[0].lower(), response.cookies
    assert victim.cookie is None                 # the client dropped it
    assert raw_get(project.tyrant_port, key) == junk       # left as it was

    fresh = victim.get()
    assert is_fresh(project, fresh)
    assert fresh.value('record-key') != key
    assert raw_get(project.tyrant_port, key) == junk
    assert not os.path.exists(PWNED)                      # no pickle was ever loaded


ODD_KEYS = ['plain', 'nul\x00byte', 'co:lon', 'a:b:c', 'with space', ' ',
            'new\nline', 'cr\rlf\n', '\xff\xfe not utf-8', '\xc3\xa9', u'\xe9',
            'tab\there', '', 'x' * 1000]


def test_odd_cache_keys_through_the_backend(tyrant):
    """Beaker cache keys are arbitrary bytes: each is stored, read back,
    and kept apart from the others.  (Beaker turns a unicode key into
    ASCII with backslash escapes before the backend sees it, so u'\\xe9'
    and its UTF-8 bytes are two keys.)"""
    tcjson.register()
    manager = CacheManager(type='ext:tcjson', url=tyrant.url, prefix='oddkeys:')
    cache = manager.get_cache('odd')
    for index, key in enumerate(ODD_KEYS):
        cache.put(key, {'index': index})
    for index, key in enumerate(ODD_KEYS):
        assert cache.get(key) == {'index': index}, repr(key)
        assert cache.has_key(key)
    stored = raw_keys(tyrant.port, 'oddkeys:')
    assert len(stored) == len(ODD_KEYS), stored
    assert all(key.startswith('oddkeys:odd:') for key in stored)
    other = manager.get_cache('odd2')
    for key in ODD_KEYS:
        assert not other.has_key(key), repr(key)
    cache.remove_value('co:lon')
    assert not cache.has_key('co:lon') and cache.get('a:b:c') == {'index': 3}
