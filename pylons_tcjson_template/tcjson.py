"""Beaker sessions and caches in Tokyo Tyrant, stored as plain JSON.

Any Tyrant client plus any JSON parser (Java, Perl, Ruby, Node...) can read
a session this module wrote.  It imports the stdlib, beaker, pytyrant,
simplejson and its siblings ``tyrant.py`` and ``servers.py`` (the servers)
and ``records.py`` (what a record may hold, and the three commands that
read and change one); every Tyrant server runs ``tcjson.lua`` beside
them, the server half (``ttserver -ext lib/tcjson.lua``).

Setup (config/environment.py and config/middleware.py)::

    from myapp.lib import tcjson
    tcjson.register()                     # makes type = ext:tcjson known
    app = SessionMiddleware(app, config, session_class=tcjson.TyrantSession)
    tcjson.check_session_options(app.options)     # bad options: fail now

``TyrantSession`` is Beaker's Session with Beaker's documented API made
safe and cheap over Tyrant (see its docstring): ``save()``,
``invalidate()``, ``regenerate_id()``, ``delete()`` and ``timeout`` do what
Beaker documents; a request that only reads the session costs one command,
one that changes it two (the read, and one merge inside Tyrant); and
concurrent requests of one session keep each other's changes (for one key,
the last writer wins).  An outage is ``TyrantUnavailable`` (a 503 page in
the generated app), never a silent logout.

INI options (``beaker.session.*`` or ``beaker.cache.*``; strings are
converted, bad values are a ConfigError at startup)::

    type             = ext:tcjson
    url              = 127.0.0.1:1978  the server(s), see servers.py
    prefix           = beaker:         start of every key this backend writes
    timeout          = (none)          Beaker's: seconds a session may be idle
    refresh_interval = min(60, timeout/10)  seconds; see "Expiry" below
    connect_timeout  = 1.0             seconds to open a connection
    io_timeout       = 2.0             seconds to wait for any answer
    pool_size        = 10              connections per server per process
    max_session_size = 1048576         bytes of JSON a session record may
                                       have, checked on save and on load
    invalidate_corrupt = false         Beaker's: true starts a new session
                                       (logged) for an unreadable record
    encrypt_key, validate_key          Beaker's; need an AES library:
    crypto_type      = cryptography    (the package), refused without one
    lock_dir         = (none)          caches only: Beaker's file locks

Key schema: ``<prefix><namespace>:<key>``.  A session is namespace = its
id, key = ``session``: ``beaker:0f3c...9a:session``.  On a dual-master pair
each member writes its own copy, ``...:session@<its -sid>``, and an ended
session leaves ``...:session@ended`` (records.py).  Cache namespaces are
Beaker's; ``keys()``, ``in``, ``del`` and ``remove()`` act on one namespace
(fwmkeys of ``<prefix><namespace>:``).

Session record: the session dict as one JSON object.  Beaker's
``_creation_time`` and ``_accessed_time`` (Unix times) are in it, and
``_expires`` (``_accessed_time`` + timeout) when a timeout is set::

    {"_accessed_time": 1700000000.1, "_creation_time": 1699990000.5,
     "counter": 3, "_expires": 1700003600.1}

With ``encrypt_key`` the record is ``{"tcjson": "beaker-opaque", "data":
"<Beaker's encrypted string>", "_accessed_time": ..., "_expires": ...}``,
and concurrent changes no longer merge key by key: the last save wins.
Keys ``_expires``, ``_v`` and ``tcjson`` are reserved.  ``_domain`` and
``_path`` are not stored: the cookie's domain and path come from the
configuration only, never from a record (other programs can write one).

Expiry.  Beaker refuses a session whose stored ``_accessed_time`` is more
than ``timeout`` seconds old.  Writing the access time on every request
would cost a write per page view, so TyrantSession rewrites it (with
``_expires``) only when the stored one is ``refresh_interval`` or more
seconds old.  So a session expires after between ``timeout -
refresh_interval`` and ``timeout`` seconds without a request, and
``purge.py`` deletes exactly the records whose ``_expires`` has passed,
i.e. those Beaker would refuse.  ``refresh_interval = 0`` writes the access
time on every request, as Beaker does.

Outages.  A server that refuses or closes the connection raises
``TyrantUnavailable`` at once; one that does not answer raises it after
``io_timeout``, and is then skipped (requests fail at once) until it
answers again.  A timeout is an unknown outcome, not a failure: a write
sent to a server that was stopped may still be applied when it resumes.
Every write this module makes can be applied twice with the same result
(a merge sets values, it does not add to them).  Every connection asks
the server, before its first command, whether it runs lib/tcjson.lua: a
server without it raises ``ExtensionMissing`` (a TyrantUnavailable that
names the -ext flag) for every request, so nothing is ever read from or
written to it without the record lock.

Reading a record is reading untrusted input.  A session record over
max_session_size, not a JSON object, nested deeper than MAX_DEPTH, holding
more than MAX_VALUES values, with a number JSON cannot hold in a float, or
with a Beaker time field that is not a number raises ``UnreadableRecord``
on load and is left as it is; the generated application answers with a
400 page and a fresh cookie (or, with invalidate_corrupt, a new session).

Type rules: None, bool, int, long, finite float, unicode, UTF-8 str, list,
tuple and dict with string keys, nested.  Values come back as simplejson
gives them: ASCII strings as str, the others as unicode, tuples as lists
(Beaker's cache tuples and WebHelpers flash messages work unchanged).
Anything else (datetime, set, Decimal, non-UTF-8 bytes, objects) raises
``UnstorableValue`` naming the key and type, before anything is sent: the
stored record stays as it was.

Cache values are JSON too: ``[storedtime, expiretime, value]``.  Beaker
checks expiry itself; values whose keys are never asked for again stay
until purge.py deletes them.
"""
from __future__ import absolute_import

import logging
import time

import pytyrant
from beaker import cache as beaker_cache
from beaker.container import NamespaceManager
from beaker.session import Session
from beaker.synchronization import file_synchronizer
from paste.deploy.converters import asbool

# Errors and parsers the application and its tests import from here.
from .records import (MAX_DEPTH, MAX_SESSION_SIZE, MAX_VALUES,  # noqa: F401
                      TIME_FIELDS, Record, UnreadableRecord, UnstorableValue, dumps,
                      parse_json, parse_session_record, reparse, same_json)
from .servers import get_servers
from .tyrant import (ConfigError, ExtensionMissing, ExtRefused, TcjsonError,  # noqa: F401
                     TyrantUnavailable, _bytes, get_pool, parse_url, pool_option)

DEFAULT_PREFIX = 'beaker:'
OPAQUE = 'beaker-opaque'
COOKIE_FIELDS = ('_domain', '_path')     # Beaker's; configuration, never stored
# Written by this module into session records; a session may not use them.
RESERVED_KEYS = ('_expires', '_v', 'tcjson')
_NOT_IN_BODY = COOKIE_FIELDS + ('_accessed_time', '_expires')
_ALL = 0x7fffffff                # "no limit" for fwmkeys

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ options

def refresh_seconds(value, timeout):
    """Seconds between writes of an unchanged session's access time.

    Default: a tenth of the timeout, at most a minute (60 s without a
    timeout).  It must stay below the timeout, or an active session could
    expire between two refreshes."""
    timeout = float(timeout) if timeout else None
    if value is None or value == '':
        return min(60.0, timeout / 10.0) if timeout else 60.0
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 <= seconds < (timeout or 1e9):                 # also refuses nan
        raise ConfigError('tcjson: refresh_interval must be a number of seconds from 0 '
                          'to less than the timeout (%s), got %r' % (timeout, value))
    return seconds


def check_session_options(options):
    """Raise ConfigError for session options an application must not run
    with.  Call it once at startup with SessionMiddleware's ``options``.

    Beyond what every session checks (_check_options), a secret is
    required: without one Beaker's cookie is the bare session id, and a
    session id seen anywhere (a log, a page) would be a usable cookie."""
    if not options.get('secret'):
        raise ConfigError('tcjson: set beaker.session.secret (a long random string): '
                          'without it the session cookie is not signed')
    _check_options(options)


def _check_options(options):
    """ConfigError for options TyrantSession cannot honour; every session
    checks them again (microseconds), so no mistake is silently ignored."""
    kind = options.get('type')
    namespace_class = options.get('namespace_class')
    if kind != 'ext:tcjson' and not (namespace_class and issubclass(
            namespace_class, TyrantNamespaceManager)):
        raise ConfigError('tcjson: TyrantSession needs beaker.session.type = ext:tcjson, '
                          'got %r' % (kind,))
    serializer = options.get('data_serializer')
    if serializer is not None and not isinstance(serializer, JSONSerializer):
        # Beaker's pickle would run code from a record on load; its 'json'
        # compresses, so other programs could not read the record.
        raise ConfigError('tcjson: sessions are stored as plain JSON; remove '
                          'beaker.session.data_serializer (got %r)' % (serializer,))
    if options.get('encrypt_key'):
        from beaker.crypto import get_crypto_module
        crypto = get_crypto_module(options.get('crypto_type') or 'default')
        if not getattr(crypto, 'has_aes', False):
            raise ConfigError('tcjson: beaker.session.encrypt_key is set but crypto_type %r '
                              'has no AES, so Beaker would store the session unencrypted; '
                              'set beaker.session.crypto_type = cryptography (pip install '
                              'cryptography)' % (options.get('crypto_type') or 'default'))
        if not options.get('validate_key'):
            raise ConfigError('tcjson: beaker.session.encrypt_key needs '
                              'beaker.session.validate_key as well')
    refresh_seconds(options.get('refresh_interval'), options.get('timeout'))


class JSONSerializer(object):
    """Session dict <-> JSON text, for Beaker's encryption (TyrantSession
    hands it the session when encrypt_key is set; without one the record
    is the JSON object itself)."""

    def dumps(self, data):
        return dumps(data, 'session')

    def loads(self, data):
        return parse_session_record(data)


_SERIALIZER = JSONSerializer()


# ------------------------------------------------------------- the backend

class TyrantNamespaceManager(NamespaceManager):
    """Beaker NamespaceManager over Tokyo Tyrant: cache values, and the
    session record TyrantSession reads and changes (``record()``).

    Constructed per request by Beaker, so construction only validates
    options and looks up the shared servers; it never touches the network.
    """

    def __init__(self, namespace, url=None, prefix=DEFAULT_PREFIX,
                 connect_timeout=None, io_timeout=None, pool_size=None,
                 lock_dir=None, max_session_size=None, digest_filenames=None,
                 **ignored):                     # timeout, data_dir etc. from Beaker
        if digest_filenames is not None:
            # Only Beaker's own Session class passes this: it would hand
            # the record to its pickle/base64 decoding and, failing, start
            # a new session on every request.
            raise ConfigError('tcjson: sessions of type ext:tcjson need SessionMiddleware('
                              '..., session_class=tcjson.TyrantSession)')
        NamespaceManager.__init__(self, namespace)
        # Every record of a namespace lives on the server its name routes to.
        self.servers = get_servers(url, connect_timeout, io_timeout, pool_size)
        self.pool = self.servers.for_key(_bytes(namespace))
        self.io_timeout = pool_option('io_timeout', io_timeout, float)
        self.prefix = _bytes(prefix if prefix is not None else DEFAULT_PREFIX)
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

    def record(self, key='session'):
        """The session record (records.Record) of this namespace."""
        return Record(self.pool, self.record_key(key), self.max_session_size)

    def unreadable(self, reason):
        """UnreadableRecord for this namespace's session, its id shortened."""
        shown = '%s%s...:session' % (self.prefix, _bytes(self.namespace)[:8])
        return UnreadableRecord(self.record_key('session'), reason, shown)

    # Namespace-wide locks cost no round trip: Tyrant writes are atomic per
    # record.  Only with lock_dir do they become file locks (one host), and
    # a cache value's creation lock is a file lock, as Beaker's memcached
    # backend has it: no lock ever lives in Tyrant.
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
        return file_synchronizer(identifier='tcjson/%s%s' % (self.key_prefix, _bytes(key)),
                                 lock_dir=self.lock_dir)

    # -- cache values
    def __getitem__(self, key):
        try:
            return parse_json(self.pool.request('get', self.record_key(key)))
        except (ValueError, pytyrant.TyrantError):
            # A cache value is disposable: a miss makes Beaker recompute it.
            raise KeyError(key)

    def set_value(self, key, value, expiretime=None):
        # expiretime is unused: Beaker keeps it inside cache values.
        self.pool.request('put', self.record_key(key), dumps(value, key))

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
            self.pool.pipeline(*[('out', key) for key in keys])


# ------------------------------------------------------------ the session

class TyrantSession(Session):
    """Beaker's Session, with Beaker's documented API made true over Tyrant.

    Pass it as ``SessionMiddleware(app, config, session_class=TyrantSession)``.
    What a request costs, in round trips to Tyrant:

    * a request that never touches ``session``: none (Beaker is lazy);
    * a request that reads it: one ``get``.  Nothing is written back unless
      the stored access time is ``refresh_interval`` or more seconds old;
      a new session that is never saved is never written;
    * ``session.save()`` of a new session (or just after
      ``regenerate_id()``): one ``put``;
    * ``session.save()`` of a stored session: one ``merge`` (lib/tcjson.lua)
      after the load.  It sends only the keys this request set or deleted,
      found by comparing with the record as it was loaded (so in-place
      changes such as ``session['cart'].append(x)`` count), and Tyrant
      applies them to the record as it is *now*, under the record's lock:
      concurrent requests that change different keys all keep their
      changes; for one key the last writer wins.  An access-time refresh
      sends only the time fields.  A save that changed nothing sends
      nothing.

    ``invalidate()`` deletes the record now and starts an empty session
    under a new id; ``regenerate_id()`` deletes the record under the old
    id now and writes the data under the new id when the response starts
    (if the old record was already gone -- signed out elsewhere, revoked --
    the data does not move: an empty session starts); ``delete()`` deletes
    the record now and expires the cookie, and nothing later in the
    request writes it back.  A merge that finds the record gone writes
    nothing, whatever came first: a slower request of the same session,
    still running, cannot bring a logged-out session back.

    Subclasses (lib/user_sessions.py) extend ``regenerate_id()`` and
    ``created()``, which runs after a record was stored under a new id.
    """

    def __init__(self, request, refresh_interval=None, session_class=None,
                 invalidate_corrupt=False, **options):
        _check_options(dict(options, refresh_interval=refresh_interval))
        options['data_serializer'] = _SERIALIZER
        self.refresh_interval = refresh_seconds(refresh_interval, options.get('timeout'))
        # Beaker's own invalidate_corrupt would also turn an outage into a
        # new session; here only an unreadable record does (load()).
        self.corrupt_starts_new = asbool(invalidate_corrupt)
        self._loaded_raw = None      # the record as this request found it (None: none)
        self._versions = None        # on a pair: the version of each name as read
        self._snapshot = None        # what the record held as this request last knew it
        self._ended = False          # deleted, or found ended by a merge: save nothing
        Session.__init__(self, request, invalidate_corrupt=False, **options)

    def _manager(self):
        return self.namespace_class(self.id, **self.namespace_args)

    # -- loading
    def load(self):
        """Read the record: the one command a reading request costs."""
        self.namespace = self._manager()
        if self.use_cookies:
            self.request['set_cookie'] = True
        now = time.time()
        try:
            raw, versions = self._read()
            record = None if raw is None else self._decode(raw)
        except UnreadableRecord as exc:
            if not self.corrupt_starts_new:
                raise
            log.warning('%s; a new session starts (invalidate_corrupt = true), the '
                        'record stays as it is', exc)
            record = None
        self.clear()                                # keeps the configured domain/path
        if record is None or self._timed_out(record, now):
            # Gone (logged out, purged) or idle too long: a new session
            # under a new id, never the id the browser offered.
            self._start_new(now)
            return
        self._loaded_raw, self._versions = raw, versions
        self.last_accessed = record.get('_accessed_time')
        for name in COOKIE_FIELDS + ('_expires',):
            record.pop(name, None)
        record.setdefault('_creation_time', now)
        record['_accessed_time'] = now
        self.update(record)
        self.accessed_dict = dict(self)

    def _read(self):
        try:
            return self.namespace.record().load()
        except ValueError as exc:                   # a pair slot that is no session
            raise self.namespace.unreadable(str(exc))

    def _timed_out(self, record, now):
        if '_expires' in record and record['_expires'] < now:
            return True
        accessed = record.get('_accessed_time')
        return bool(self.timeout) and accessed is not None and now - accessed > self.timeout

    def _start_new(self, now):
        self._create_id()                           # is_new; the cookie on first save
        self['_creation_time'] = self['_accessed_time'] = now
        self.accessed_dict = dict(self)
        self._loaded_raw = self._versions = self._snapshot = None
        self.namespace = self._manager()

    def _decode(self, raw):
        """Stored bytes -> session dict; UnreadableRecord if they are none."""
        try:
            record = parse_session_record(raw, self.namespace.max_session_size)
            if 'tcjson' in record:
                record = self._open_envelope(record)
        except ValueError as exc:
            raise self.namespace.unreadable(str(exc))
        return record

    def _open_envelope(self, envelope):
        if envelope['tcjson'] != OPAQUE:
            raise ValueError('the key "tcjson" is reserved')
        if not self.encrypt_key:
            raise ValueError('encrypted, and beaker.session.encrypt_key is not set')
        data = envelope.get('data')
        if not isinstance(data, basestring):
            raise ValueError('the encrypted data is not a string')
        try:
            record = self._decrypt_data(_bytes(data))
        except (TypeError, ValueError):             # bad base64, or not our key
            raise ValueError('cannot be decrypted with this encrypt_key')
        for name in TIME_FIELDS:
            if name in envelope:
                record[name] = envelope[name]
        return record

    # -- writing
    def _times(self, now):
        times = {'_accessed_time': now}
        if self.timeout:
            times['_expires'] = round(now + self.timeout, 3)
        return times

    def _body(self, data):
        """The keys of `data` a record stores besides the access time and
        expiry (UnstorableValue for a reserved one, before anything is
        sent)."""
        body = dict((k, v) for k, v in data.iteritems() if k not in _NOT_IN_BODY)
        for key in RESERVED_KEYS:
            if key in body:
                raise UnstorableValue('cannot store session key %r: reserved by tcjson '
                                      '(see lib/tcjson.py, "Key schema")' % key)
        return body

    def _check_size(self, text):
        if len(text) > self.namespace.max_session_size:
            raise UnstorableValue('cannot store the session: %d bytes of JSON, over '
                                  'max_session_size=%d' % (len(text),
                                                           self.namespace.max_session_size))

    def save(self, accessed_only=False):
        """Beaker's save(): called when the response starts (by
        SessionMiddleware), with accessed_only=True if the request did not
        call session.save()."""
        if self._ended or (accessed_only and (self.is_new or not self.save_atime)):
            return
        if getattr(self, 'namespace', None) is None or self.namespace.namespace != self.id:
            self.namespace = self._manager()          # a new session has none yet
        now = time.time()
        if self._loaded_raw is None:
            self._create(self.accessed_dict if accessed_only else self, now)
        else:
            changed, removed = ({}, []) if accessed_only else self._changes()
            if changed or removed or self._refresh_due(now):
                self._merge(changed, removed, now)
        self.last_accessed = now
        if self.use_cookies and self.is_new:
            self.request['set_cookie'] = True

    def _refresh_due(self, now):
        return self.last_accessed is None or now - self.last_accessed >= self.refresh_interval

    def _create(self, data, now):
        """Nothing stored under this id: a new session, or a new id from
        regenerate_id().  Nobody else knows the id yet."""
        record = self._body(data)
        record.setdefault('_creation_time', now)
        if self.encrypt_key:
            record = dict(tcjson=OPAQUE, data=self._encrypt_data(record))
        record.update(self._times(now))
        text = dumps(record, 'session')
        self._check_size(text)
        if self.namespace.record().create(record, text) != 'ok':
            self._ended = True                     # a pair's tombstone: the id ended
            return
        self._loaded_raw, self._versions, self._snapshot = text, {}, None
        self.created()

    def created(self):
        """Runs after a record was stored under a new id (a hook for
        subclasses; lib/user_sessions.py checks sign-ins here)."""

    def _changes(self):
        """({key: value} set since the record was loaded or last saved, keys
        deleted since).  Time and cookie fields are not the request's."""
        if self._snapshot is None:
            # A fresh copy of what was read: checked at load already, so
            # only parsed (and, if encrypted, opened) again.
            snapshot = reparse(self._loaded_raw)
            if 'tcjson' in snapshot:
                snapshot = self._open_envelope(snapshot)
            self._snapshot = snapshot
        skip = TIME_FIELDS + COOKIE_FIELDS
        changed = {}
        for key, value in self.iteritems():
            if key in skip:
                continue
            old = self._snapshot.get(key, changed)      # (changed: a "missing" marker)
            if old is changed or not same_json(old, value):
                changed[key] = value
        removed = [key for key in self._snapshot if key not in self and key not in skip]
        return changed, removed

    def _merge(self, changed, removed, now):
        """Send this request's changes (and the time fields) to be applied
        to the record as it is now: one round trip."""
        self._body(changed)
        texts = dict((key, dumps(value, key)) for key, value in changed.iteritems())
        sent, gone = dict(texts), list(removed)
        if self.encrypt_key:
            sent = {'data': dumps(self._encrypt_data(self._body(self)))} if texts or gone else {}
            gone = []
        for name, value in self._times(now).iteritems():
            sent[name] = dumps(value)
        if not self.timeout:
            gone.append('_expires')
        answer = self.namespace.record().merge(sent, gone, self._versions)
        if answer in ('missing', 'ended'):
            # Deleted (logout, invalidate, regenerate_id, revoke, purge)
            # since this request loaded it: it stays deleted.
            self._ended = True
            return
        if answer == 'too large':
            raise UnstorableValue('cannot store the session: with these changes it would '
                                  'be over max_session_size=%d bytes'
                                  % self.namespace.max_session_size)
        for key, text in texts.iteritems():             # what a second save compares with
            self._snapshot[key] = reparse(text)
        for key in removed:
            self._snapshot.pop(key, None)

    # -- ending a session or its id
    def _end_stored(self):
        """Delete the record this request loaded; whether it was still there."""
        if self._loaded_raw is None:
            return False
        expires = time.time() + self.timeout if self.timeout else None
        existed = self.namespace.record().delete(expires)
        self._loaded_raw = self._versions = self._snapshot = None
        return existed

    def delete(self):
        """Delete the record now and expire the cookie; later saves in this
        request do nothing."""
        self._end_stored()
        Session.delete(self)
        self._ended = True

    def invalidate(self):
        """Delete the record now; go on with an empty session under a new id."""
        self._end_stored()
        self.clear()
        self.was_invalidated = True
        self._start_new(time.time())

    def regenerate_id(self):
        """Delete the record under the old id now; the data is written under
        the new id when the response starts.  If the record was already
        gone, the data does not move: an empty session starts instead."""
        if self._loaded_raw is not None and not self._end_stored():
            self.clear()
            self.was_invalidated = True
            self._start_new(time.time())
            return
        Session.regenerate_id(self)
        self.namespace = self._manager()
        self._loaded_raw = self._versions = self._snapshot = None


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

def real_session(session):
    """The Session behind Beaker's lazy SessionObject (or Pylons' proxy)."""
    return session if isinstance(session, Session) else session._session()


def session_manager(session):
    """The TyrantNamespaceManager of a TyrantSession (or of Beaker's or
    Pylons' lazy proxy of one)."""
    session = real_session(session)
    if not isinstance(session, TyrantSession):
        raise TypeError('session is not a tcjson.TyrantSession (session_class)')
    if getattr(session, 'namespace', None) is None or session.namespace.namespace != session.id:
        session.namespace = session._manager()
    return session.namespace


def session_record_key(session):
    """The Tyrant key holding this session's record (on a pair, the key its
    slots are named after)."""
    return session_manager(session).record_key('session')


def raw_record(session):
    """The session's record as stored (on a pair, as its slots merge), or None."""
    return session_manager(session).record().load()[0]
