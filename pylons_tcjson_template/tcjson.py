"""Beaker sessions and caches in Tokyo Tyrant, stored as plain JSON.

Any Tyrant client plus any JSON parser (Java, Perl, Ruby, Node...) can read
a session this module wrote.  Imports only the stdlib, beaker, pytyrant and
simplejson, so it can be copied into a project as ``<package>/lib/tcjson.py``.

Setup (config/environment.py and config/middleware.py)::

    from myapp.lib import tcjson
    tcjson.register()                     # makes type = ext:tcjson known
    app = SessionMiddleware(app, config, invalidate_corrupt=False,
                            data_serializer=tcjson.JSONSerializer())

``register()`` puts the class into Beaker's backend registry (idempotent).
``SessionMiddleware(..., namespace_class=tcjson.TyrantNamespaceManager)``
also works without registering.  INI options (``beaker.session.*`` or
``beaker.cache.*``; strings are converted)::

    type            = ext:tcjson
    url             = 127.0.0.1:1978  host:port (required; checked at startup)
    prefix          = beaker:         start of every key this backend writes
    connect_timeout = 1.0             seconds to open a connection
    io_timeout      = 2.0             seconds to wait for any answer
    pool_size       = 10              connections per URL per process (the
                                      first manager made for a URL sets them)
    lock_dir        = (none)          only if set: file locks around reads
                                      and writes, as Beaker's file backend
    max_session_size = 1048576        bytes of JSON a session record may
                                      have, checked on save and on load

Key schema: ``<prefix><namespace>:<key>``.  A session is namespace = its id,
key = ``session``: ``beaker:0f3c...9a:session``.  ``keys()``, ``in``,
``del`` and ``remove()`` act on one namespace (fwmkeys of
``<prefix><namespace>:``; a namespace named ``N:x`` shares that prefix, so
do not nest cache namespace names).  Creation locks live at
``<prefix>lock:<namespace>:<key>``.

Session record: the session dict as one JSON object, plus ``_expires``
(Unix time; ``_accessed_time`` + Beaker's timeout + 120 s), written only if
``beaker.session.timeout`` is set and removed again on load::

    {"_accessed_time": 1700000000.1, "_creation_time": 1699990000.5,
     "counter": 3, "_expires": 1700003720.1}

Beaker serializes and base64-encodes the session before a backend sees it;
with ``JSONSerializer`` this module decodes that and stores the object.  If
the payload is not JSON (``encrypt_key`` set, or Beaker's pickle) the record
is the envelope ``{"tcjson": "beaker-opaque", "data": "<Beaker's string>"}``.
Keys ``_expires`` and ``tcjson`` are therefore reserved in sessions.

A session record that is not a JSON object (another program wrote junk,
bad UTF-8, over max_session_size) raises ``UnreadableRecord`` on load and
is left as it is; the generated application answers it with an error page
and a fresh cookie.  Run Beaker with ``invalidate_corrupt=False``: its
default turns *any* load error, a Tyrant outage included, into a silent
logout with a new session id.

Type rules: None, bool, int, long, finite float, unicode, UTF-8 str, list,
tuple and dict with string keys, nested.  Values come back as JSON gives
them: str as unicode, tuples as lists (Beaker's cache tuples and WebHelpers
flash messages, which are (category, message) tuples, work unchanged).
Anything else (datetime, set, Decimal, non-UTF-8 bytes, objects) raises
``UnstorableValue`` naming the key and type, before anything is sent: the
stored record stays as it was.

Cache values are JSON too: ``[storedtime, expiretime, value]``; Beaker
checks expiry itself and overwrites stale values, so they do not pile up.

Tyrant never expires records.  ``purge_expired()`` (or ``python -m
myapp.lib.tcjson purge development.ini``) deletes session and lock records
whose ``_expires`` has passed, and with ``max_age`` also records without
``_expires`` whose ``_accessed_time`` is older than that.  Use
``destroy_session()`` for logout and ``regenerate_session_id()`` after
login: Beaker's own delete()/regenerate_id() leave the old record behind.
"""
from __future__ import absolute_import

import base64
import optparse
import os
import socket
import sys
import threading
import time
import uuid
import zlib

import pytyrant
import simplejson as json
from beaker import cache as beaker_cache
from beaker.container import NamespaceManager
from beaker.session import SessionObject
from beaker.synchronization import SynchronizerImpl, file_synchronizer

from .tyrant import (ConfigError, TcjsonError, TyrantUnavailable, _bytes,  # noqa: F401
                     get_pool, get_servers, parse_url)

DEFAULT_PREFIX = 'beaker:'
MAX_SESSION_SIZE = 1024 * 1024   # bytes of JSON per session record, both ways
LOCK_EXPIRES = 60.0          # seconds before another process may take a lock over
OPAQUE = 'beaker-opaque'
_ALL = 0x7fffffff            # "no limit" for fwmkeys


class UnstorableValue(TcjsonError, TypeError):
    """A value JSON cannot hold; nothing was written."""


class UnreadableRecord(TcjsonError, ValueError):
    """A session record that is not a JSON object (written by something
    else, truncated, too big).  Raised on load and left untouched in the
    store: the application answers with an error and a fresh cookie."""

    def __init__(self, record_key, reason, shown_key=None):
        # The message goes to logs, so it may shorten the key: a session
        # id in a log file is a session anyone with the log can take over.
        TcjsonError.__init__(self, 'session record %s is unreadable: %s'
                             % (shown_key or record_key, reason))
        self.record_key = record_key


# ---------------------------------------------------------------- JSON rules

def _where(path):
    return repr(path[0]) + ''.join('[%r]' % step for step in path[1:])


def check_json(value, path):
    """Raise UnstorableValue unless `value` keeps its meaning as JSON."""
    if value is None or isinstance(value, (bool, int, long, unicode)):
        return
    if isinstance(value, float):
        if value - value == 0:                       # false for nan and inf
            return
    elif isinstance(value, str):
        try:
            value.decode('utf-8')
            return
        except UnicodeDecodeError:
            raise UnstorableValue('cannot store %s: str that is not UTF-8 (%r); use '
                                  'unicode or base64' % (_where(path), value[:20]))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_json(item, path + [index])
        return
    elif isinstance(value, dict):
        for key, item in value.iteritems():
            if not isinstance(key, basestring):
                raise UnstorableValue('cannot store %s: dict key %r is %s, JSON keys '
                                      'are strings' % (_where(path), key, type(key).__name__))
            check_json(key, path + [key])
            check_json(item, path + [key])
        return
    kind = type(value)
    raise UnstorableValue(
        'cannot store %s: %s.%s is not a JSON type (None, bool, int, float, str, '
        'list, tuple, dict); store e.g. an ISO string or a number instead'
        % (_where(path), kind.__module__, kind.__name__))


# UTF-8 text, compact.  Decimal and namedtuple stay errors rather than
# silently coming back as float and object.
_ENCODER = json.JSONEncoder(separators=(',', ':'), allow_nan=False, ensure_ascii=False,
                            use_decimal=False, namedtuple_as_object=False)


def _dumps(value, name='value'):
    """JSON text of `value`; on failure find the culprit for the message.

    Checking every item up front (check_json) costs several times the
    encoding itself, so it runs only once the encoder has refused."""
    try:
        text = _ENCODER.encode(value)
        return text.encode('utf-8') if isinstance(text, unicode) else text
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(value, dict) and name == 'session':
            for key, item in value.iteritems():
                check_json(key, [key])
                check_json(item, [key])
        else:
            check_json(value, [name])
        raise UnstorableValue('cannot store %r: %s' % (name, exc))


# Written by this module into session records; a session may not use them.
RESERVED_KEYS = ('_expires', 'tcjson')


class _LastParse(threading.local):
    """The record a TyrantNamespaceManager just parsed, per thread.

    Loading a session, Beaker takes the record from the manager as base64
    and hands the decoded bytes to JSONSerializer.loads: without this memo
    the JSON would be parsed twice (the manager must parse it to check it
    is an object).  The memo is used once and only for the very same bytes,
    so it can only ever give back the parse of what was asked for.
    """
    raw = record = None

    def remember(self, raw, record):
        self.raw, self.record = raw, record

    def take(self, raw):
        memo_raw, record = self.raw, self.record
        self.raw = self.record = None
        return record if memo_raw is not None and memo_raw == raw else None


_last_parse = _LastParse()


class JSONSerializer(object):
    """Beaker ``data_serializer``: session dict <-> JSON text."""

    def dumps(self, data):
        for key in RESERVED_KEYS:
            if key in data:
                raise UnstorableValue('cannot store session key %r: reserved by tcjson '
                                      '(the record keeps its expiry there)' % key)
        return _dumps(data, 'session')

    def loads(self, data):
        value = _last_parse.take(data)
        if value is not None:                    # parsed and checked already
            value.pop('_expires', None)
            return value
        if data[:1] == '\x78':                   # Beaker's zlib'ed 'json' serializer
            try:
                data = zlib.decompress(data)
            except zlib.error:
                pass
        if isinstance(data, str):
            data = data.decode('utf-8-sig')      # tolerate a BOM from other writers
        value = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError('session record is JSON but not an object: %r' % data[:40])
        value.pop('_expires', None)              # the backend's, not the session's
        return value


# ------------------------------------------------------------- the backend

class TyrantNamespaceManager(NamespaceManager):
    """Beaker NamespaceManager (sessions and caches) over Tokyo Tyrant.

    Constructed per request by Beaker, so construction only validates
    options and looks up the shared pool; it never touches the network.
    """

    def __init__(self, namespace, url=None, prefix=DEFAULT_PREFIX, timeout=None,
                 connect_timeout=None, io_timeout=None, pool_size=None,
                 lock_dir=None, max_session_size=None,
                 **ignored):                          # data_dir etc. from Beaker
        NamespaceManager.__init__(self, namespace)
        # Every record of a namespace (a session: its record and its lock)
        # lives on the server its name routes to.
        self.servers = get_servers(url, connect_timeout, io_timeout, pool_size)
        self.pool = self.servers.for_key(_bytes(namespace))
        self.prefix = _bytes(prefix if prefix is not None else DEFAULT_PREFIX)
        self.timeout = float(timeout) if timeout else None
        try:
            self.max_session_size = int(max_session_size or MAX_SESSION_SIZE)
        except ValueError:
            raise ConfigError('tcjson: max_session_size must be a number of bytes, '
                              'got %r' % (max_session_size,))
        self.lock_dir = lock_dir
        self._file_lock = None
        self.key_prefix = self.prefix + _bytes(namespace) + ':'

    def record_key(self, key):
        return self.key_prefix + _bytes(key)

    # Namespace-wide locks cost no round trip: Tyrant writes are atomic per
    # record.  Only with lock_dir do they become file locks (one host).
    def _lock(self):
        if self._file_lock is None:
            self._file_lock = file_synchronizer(identifier='tcjson/' + self.key_prefix,
                                                lock_dir=self.lock_dir)
        return self._file_lock

    def acquire_read_lock(self):
        if self.lock_dir:
            self._lock().acquire_read_lock()

    def release_read_lock(self):
        if self.lock_dir:
            self._lock().release_read_lock()

    def acquire_write_lock(self, wait=True, replace=False):
        return self._lock().acquire_write_lock(wait) if self.lock_dir else True

    def release_write_lock(self):
        if self.lock_dir:
            self._lock().release_write_lock()

    def get_creation_lock(self, key):
        return TyrantLock(self.pool, '%slock:%s:%s' % (self.prefix, _bytes(self.namespace),
                                                        _bytes(key)))

    # -- records
    def raw(self, key):
        """The stored bytes of `key`, or None."""
        try:
            return self.pool.request('get', self.record_key(key))
        except pytyrant.TyrantError:
            return None

    def __getitem__(self, key):
        raw = self.raw(key)
        if raw is None:
            raise KeyError(key)
        if key == 'session':
            return self._decode_session(raw)
        try:
            return json.loads(raw)
        except ValueError:
            # A cache value is disposable: a miss makes Beaker recompute it.
            raise KeyError(key)

    def _decode_session(self, raw):
        """The stored record -> what Beaker's Session expects: the base64
        of its serializer's output (JSONSerializer drops ``_expires``).
        Anything but a JSON object raises UnreadableRecord and stays as
        it is in the store."""
        def unreadable(reason):
            shown = '%s%s...:session' % (self.prefix, _bytes(self.namespace)[:8])
            return UnreadableRecord(self.record_key('session'), reason, shown)
        if len(raw) > self.max_session_size:
            raise unreadable('%d bytes, over max_session_size=%d'
                             % (len(raw), self.max_session_size))
        try:
            record = json.loads(raw)
        except ValueError as exc:                  # also bad UTF-8
            raise unreadable('not JSON (%s)' % exc)
        if not isinstance(record, dict):
            raise unreadable('JSON %s, not an object' % type(record).__name__)
        if record.get('tcjson') == OPAQUE:
            return _bytes(record.get('data', ''))
        _last_parse.remember(raw, record)
        return base64.b64encode(raw)

    def _encode_session(self, payload):
        """Beaker's base64 string -> the record: a JSON object with
        ``_expires`` spliced in, or the opaque envelope."""
        try:
            text = base64.b64decode(payload)
        except TypeError:
            text = ''
        expires = ',"_expires":%.3f' % (time.time() + self.timeout) if self.timeout else ''
        if text[:1] == '{' and text[-1:] == '}':              # JSONSerializer's
            record = text[:-1] + expires + '}' if len(text) > 2 else '{%s}' % expires[1:]
        else:                                                 # encrypted or pickled
            record = '{"tcjson":"%s","data":%s%s}' % (OPAQUE, _dumps(payload), expires)
        if len(record) > self.max_session_size:
            raise UnstorableValue('cannot store the session: %d bytes of JSON, over '
                                  'max_session_size=%d' % (len(record), self.max_session_size))
        return record

    def set_value(self, key, value, expiretime=None):
        # expiretime is unused: Beaker keeps it inside cache values.
        if key == 'session' and isinstance(value, basestring):
            data = self._encode_session(_bytes(value))
        else:
            data = _dumps(value, key)
        self.pool.request('put', self.record_key(key), data)

    __setitem__ = set_value

    def __contains__(self, key):
        try:
            self.pool.request('vsiz', self.record_key(key))
            return True
        except pytyrant.TyrantError:
            return False

    def __delitem__(self, key):
        try:
            self.pool.request('out', self.record_key(key))
        except pytyrant.TyrantError:
            raise KeyError(key)

    def keys(self):
        start = len(self.key_prefix)
        return [k[start:] for k in self.pool.request('fwmkeys', self.key_prefix, _ALL)]

    def do_remove(self, batch_size=1000):
        """Delete this namespace's records, and nothing else."""
        while True:
            keys = self.pool.request('fwmkeys', self.key_prefix, batch_size)
            if not keys:
                return
            try:
                self.pool.request('misc', 'outlist', 0, keys)
            except pytyrant.TyrantError:      # some went meanwhile: one by one
                for key in keys:
                    try:
                        self.pool.request('out', key)
                    except pytyrant.TyrantError:
                        pass


# -------------------------------------------------------------------- locks

class TyrantLock(SynchronizerImpl):
    """A lock valid across hosts: a record put with putkeep (which fails if
    the record exists) holding the owner and an expiry, removed by out.

    An expired lock (its holder died) is taken over.  Residual race: two
    processes that read the same expired lock within one round trip of
    each other may both take it; it only costs a duplicate computation.
    Readers and writers are not told apart (one holder at a time).
    """

    def __init__(self, pool, record_key, expires=LOCK_EXPIRES, poll=0.05):
        SynchronizerImpl.__init__(self)
        self.pool, self.record_key = pool, record_key
        self.expires, self.poll = expires, poll
        self.token = uuid.uuid4().hex[:12]

    def owner(self):
        return '%s/%d/%d/%s' % (socket.gethostname(), os.getpid(),
                                threading.current_thread().ident, self.token)

    def _take(self):
        record = _dumps({'tcjson': 'lock', 'owner': self.owner(),
                         '_expires': time.time() + self.expires})
        try:
            self.pool.request('putkeep', self.record_key, record)
            return True
        except pytyrant.TyrantError:
            return False

    def do_acquire_write_lock(self, wait):
        while True:
            if self._take():
                return True
            try:
                held = json.loads(self.pool.request('get', self.record_key))
                stale = held.get('_expires', 0) < time.time()
            except (pytyrant.TyrantError, ValueError, AttributeError):
                stale = False        # released meanwhile (or not ours to judge)
            if stale:
                try:
                    self.pool.request('out', self.record_key)
                except pytyrant.TyrantError:
                    pass
                if self._take():
                    return True
            if not wait:
                return False
            time.sleep(self.poll)

    def do_release_write_lock(self):
        try:
            held = json.loads(self.pool.request('get', self.record_key))
        except pytyrant.TyrantError:
            return
        if held.get('owner') == self.owner():       # not if it expired and was taken
            try:
                self.pool.request('out', self.record_key)
            except pytyrant.TyrantError:
                pass

    do_acquire_read_lock = do_acquire_write_lock
    do_release_read_lock = do_release_write_lock


def register(name='ext:tcjson'):
    """Make ``type = ext:tcjson`` resolve to TyrantNamespaceManager.

    Beaker 1.13's ``clsmap`` is a lazy registry that rejects item
    assignment and, on its first unknown name, loads 'beaker.backends'
    entry points, failing on a name clash.  So force that loading first,
    then add the class to the loaded mapping; repeated calls are harmless.
    """
    clsmap = beaker_cache.clsmap
    try:
        clsmap[name]
    except KeyError:
        pass
    mapping = getattr(clsmap, '_clsmap', clsmap)          # a plain dict on old Beaker
    mapping[name] = TyrantNamespaceManager
    return TyrantNamespaceManager


# ---------------------------------------------------------- session helpers

def _manager(session):
    if isinstance(session, SessionObject):
        session = session._session()
    manager = getattr(session, 'namespace', None)
    if manager is None or manager.namespace != session.id:
        manager = session.namespace_class(session.id, **session.namespace_args)
    if not isinstance(manager, TyrantNamespaceManager):
        raise TypeError('session does not use tcjson (type = ext:tcjson)')
    return session, manager


def session_record_key(session):
    """The Tyrant key holding this session's record."""
    return _manager(session)[1].record_key('session')


def raw_record(session):
    """The stored bytes of this session's record (None if none)."""
    return _manager(session)[1].raw('session')


def _dead_save(accessed_only=False):
    return None


def destroy_session(session):
    """Logout: delete the record and expire the cookie.  The session
    object is dead afterwards: later saves in this request do nothing
    (Beaker's delete() alone would save the emptied session)."""
    session, manager = _manager(session)
    try:
        del manager['session']
    except KeyError:
        pass
    session.delete()
    session.save = _dead_save


def regenerate_session_id(session):
    """Give the session a new id (and cookie), write it under the new id,
    then delete the old record: defence against session fixation."""
    session, old = _manager(session)
    session.regenerate_id()
    session.save()
    try:
        del old['session']
    except KeyError:
        pass
    return session.id


# -------------------------------------------------------------------- purge

def _expired(raw, now, max_age):
    try:
        record = json.loads(raw)
    except ValueError:
        return False                               # not ours to judge
    if not isinstance(record, dict):
        return False                               # e.g. a cache value [t, exp, v]
    expires = record.get('_expires')
    if isinstance(expires, (int, long, float)):
        return expires < now
    accessed = record.get('_accessed_time')
    return bool(max_age) and isinstance(accessed, (int, long, float)) \
        and accessed + max_age < now


def _key_batches(pool, prefix, batch_size):
    """Yield the keys under `prefix` in lists of <= batch_size.

    A hash database's fwmkeys scans every record per call, so walking by
    prefixes costs O(records x calls); iterating costs one pass.  Tyrant's
    iterator is one per server (run one purge at a time) and survives
    deletes.  Memory stays O(batch_size) at any database size."""
    pool.request('iterinit')
    while True:
        keys = pool.request('next_keys', batch_size)
        batch = [key for key in keys if key.startswith(prefix)]
        if batch:
            yield batch
        if len(keys) < batch_size:
            return


def purge_expired(url, prefix=DEFAULT_PREFIX, batch_size=500, progress=None,
                  max_age=None, now=None, **pool_options):
    """Delete expired records under `prefix`, `batch_size` keys at a time;
    safe while the application serves.  Returns the totals
    ``{'scanned', 'deleted', 'batches'}``, also passed to `progress`
    after each batch.

    Every record of the server is visited once (one round trip per
    batch_size keys); only those under `prefix` are read.  A record is deleted only if a re-read just before the delete returns
    the bytes judged expired; a session saved in the one round trip
    between that re-read and the delete is lost (the user is logged out).
    Beaker never rewrites an expired session (it starts a new id), so only
    a request that loaded it just before expiry can hit that window.
    """
    pool = get_pool(url, **pool_options)
    now = time.time() if now is None else now
    max_age = float(max_age) if max_age else None
    totals = {'scanned': 0, 'deleted': 0, 'batches': 0}
    for keys in _key_batches(pool, _bytes(prefix), int(batch_size)):
        seen = pool.request('mget', keys)
        doomed = dict((k, v) for k, v in seen if _expired(v, now, max_age))
        if doomed:
            again = pool.request('mget', list(doomed))
            keys_out = [k for k, v in again if doomed[k] == v]
            if keys_out:
                try:
                    pool.request('misc', 'outlist', 0, keys_out)
                except pytyrant.TyrantError:
                    pass                           # some vanished meanwhile
            totals['deleted'] += len(keys_out)
        totals['scanned'] += len(seen)
        totals['batches'] += 1
        if progress is not None:
            progress(dict(totals))
    return totals


def _read_ini(path, section):
    import ConfigParser
    parser = ConfigParser.SafeConfigParser({'here': os.path.dirname(os.path.abspath(path)),
                                            '__file__': os.path.abspath(path)})
    if not parser.read(path):
        raise ConfigError('cannot read %s' % path)
    return dict(parser.items(section))


def purge_command(argv=None, out=None):
    """``purge [--max-age S] [--batch-size N] [--section S] CONFIG.ini``:
    purge_expired() with beaker.session.url/prefix from the INI file.
    Returns the exit status."""
    out = out or sys.stdout
    parser = optparse.OptionParser(usage='%prog purge [options] CONFIG.ini')
    parser.add_option('--max-age', type='float', help='also delete records without '
                      '_expires whose _accessed_time is older than this (seconds)')
    parser.add_option('--batch-size', type='int', default=500)
    parser.add_option('--section', default='app:main')
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ['purge']:
        args = args[1:]
    options, args = parser.parse_args(args)
    if len(args) != 1:
        parser.error('give one configuration file')
    try:
        conf = _read_ini(args[0], options.section)
        get = lambda name, default=None: conf.get('beaker.session.' + name,
                                                  conf.get('session.' + name, default))
        url, prefix = get('url'), get('prefix', DEFAULT_PREFIX)
        if not url:
            raise ConfigError('%s [%s] sets no beaker.session.url' % (args[0], options.section))

        def report(totals):
            out.write('batch %(batches)d: scanned %(scanned)d, deleted %(deleted)d\n' % totals)
        totals = purge_expired(url, prefix, options.batch_size, report, options.max_age,
                               connect_timeout=get('connect_timeout'),
                               io_timeout=get('io_timeout'))
    except TcjsonError as exc:
        sys.stderr.write('purge: %s\n' % exc)
        return 1
    out.write('done: %(deleted)d of %(scanned)d records under %(prefix)r deleted\n'
              % dict(totals, prefix=prefix))
    return 0


if __name__ == '__main__':
    sys.exit(purge_command())
