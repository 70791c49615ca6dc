"""Beaker sessions and caches in Tokyo Tyrant, stored as plain JSON.

Any Tyrant client plus any JSON parser (Java, Perl, Ruby, Node...) can read
a session this module wrote.  Imports only the stdlib, beaker, pytyrant,
simplejson and its siblings ``tyrant.py`` (connections to the servers) and,
in purge only, ``user_sessions.py`` (sessions per user), so the three are
copied into a project as ``<package>/lib/``.

Setup (config/environment.py and config/middleware.py)::

    from myapp.lib import tcjson
    tcjson.register()                     # makes type = ext:tcjson known
    app = SessionMiddleware(app, config, session_class=tcjson.TyrantSession)
    tcjson.check_session_options(app.options)     # bad options: fail now

``TyrantSession`` is Beaker's Session with Beaker's documented API made
safe and cheap over Tyrant (see its docstring): ``save()``,
``invalidate()``, ``regenerate_id()``, ``delete()`` and ``timeout`` do what
Beaker documents, a request that only reads the session costs one
command, and concurrent requests of one session keep each other's changes
(for one key, the last writer wins).  It always stores JSON and never
turns a load error into a new session (Beaker's ``invalidate_corrupt``):
an outage is ``TyrantUnavailable`` (a 503 page in the generated app),
never a silent logout.

INI options (``beaker.session.*`` or ``beaker.cache.*``; strings are
converted, bad values are a ConfigError at startup)::

    type             = ext:tcjson
    url              = 127.0.0.1:1978  the server(s), see tyrant.py
    prefix           = beaker:         start of every key this backend writes
    timeout          = (none)          Beaker's: seconds a session may be idle
    refresh_interval = min(60, timeout/10)  seconds; see "Expiry" below
    connect_timeout  = 1.0             seconds to open a connection
    io_timeout       = 2.0             seconds to wait for any answer, or
                                       for a session's lock
    pool_size        = 10              connections per server per process
    max_session_size = 1048576         bytes of JSON a session record may
                                       have, checked on save and on load
    encrypt_key, validate_key          Beaker's; need an AES library:
    crypto_type      = cryptography    (the package), refused without one
    lock_dir         = (none)          caches only: file locks, as Beaker's
                                       file backend

Key schema: ``<prefix><namespace>:<key>``.  A session is namespace = its
id, key = ``session``: ``beaker:0f3c...9a:session``; its write lock is
``<prefix>lock:<id>:session``.  Cache namespaces are Beaker's; ``keys()``,
``in``, ``del`` and ``remove()`` act on one namespace (fwmkeys of
``<prefix><namespace>:``).

Session record: the session dict as one JSON object.  Beaker's
``_creation_time`` and ``_accessed_time`` (Unix times) are in it, and
``_expires`` (``_accessed_time`` + timeout) when a timeout is set::

    {"_accessed_time": 1700000000.1, "_creation_time": 1699990000.5,
     "counter": 3, "_expires": 1700003600.1}

With ``encrypt_key`` the record is ``{"tcjson": "beaker-opaque", "data":
"<Beaker's encrypted string>", "_accessed_time": ..., "_expires": ...}``.
Keys ``_expires`` and ``tcjson`` are reserved.  ``_domain`` and ``_path``
are not stored: the cookie's domain and path come from the configuration
only, never from a record (a record is input other programs can write).

Expiry.  Beaker refuses a session whose stored ``_accessed_time`` is more
than ``timeout`` seconds old.  Writing the access time on every request
would cost a write per page view, so TyrantSession rewrites it (with
``_expires``) only when the stored one is ``refresh_interval`` or more
seconds old.  So a session expires after between ``timeout -
refresh_interval`` and ``timeout`` seconds without a request, and
``purge_expired`` deletes exactly the records whose ``_expires`` has
passed, i.e. those Beaker would refuse.  Set ``refresh_interval = 0`` to
write the access time on every request, as Beaker does.

Outages.  A server that refuses or closes the connection raises
``TyrantUnavailable`` at once; one that does not answer raises it after
``io_timeout``.  A timeout is not a failure, only an unknown outcome: a
write sent to a server that was stopped (SIGSTOP, a full disk, a long
sync) may still be applied when it resumes, after the request was answered
503.  This module resends a command only where a second copy cannot change
the outcome (a put of the same whole record, a get, an out): never a
putcat or an addint, so no retry of ours applies one write twice.

Reading a record is reading untrusted input: other programs write there.
A session record over max_session_size, not a JSON object, nested deeper
than MAX_DEPTH, holding more than MAX_VALUES values, with a number JSON
cannot hold in a float, or with a Beaker time field that is not a number
raises ``UnreadableRecord`` on load and is left as it is; the generated
application answers it with a 400 page and a fresh cookie.

Type rules: None, bool, int, long, finite float, unicode, UTF-8 str, list,
tuple and dict with string keys, nested.  Values come back as simplejson
gives them: ASCII strings as str, the others as unicode, tuples as lists (Beaker's cache tuples and WebHelpers
flash messages, which are (category, message) tuples, work unchanged).
Anything else (datetime, set, Decimal, non-UTF-8 bytes, objects) raises
``UnstorableValue`` naming the key and type, before anything is sent: the
stored record stays as it was.

Cache values are JSON too: ``[storedtime, expiretime, value]``.  Beaker
checks expiry itself and overwrites a stale value when its key is asked
for again; values whose keys are never asked for again stay until
``purge_expired`` deletes them.

Tyrant never expires records.  ``purge_expired()`` (or ``python -m
myapp.lib.tcjson purge development.ini``) deletes the session records whose
``_expires`` has passed, stale locks and expired cache values, and with
``max_age`` also session records without ``_expires`` (no timeout set)
whose ``_accessed_time`` is older than that.
"""
from __future__ import absolute_import

import optparse
import os
import socket
import string
import sys
import time
import uuid

import pytyrant
import simplejson as json
from beaker import cache as beaker_cache
from beaker.container import NamespaceManager
from beaker.session import Session
from beaker.synchronization import SynchronizerImpl, file_synchronizer

# ConfigError, TyrantUnavailable, get_pool and parse_url are also this
# module's API: the application and its tests import them from here.
from .tyrant import (ConfigError, TcjsonError, TyrantUnavailable, _bytes,  # noqa: F401
                     get_pool, get_servers, parse_url, pool_option)

DEFAULT_PREFIX = 'beaker:'
MAX_SESSION_SIZE = 1024 * 1024   # bytes of JSON per session record, both ways
MAX_DEPTH = 32                   # nesting of arrays and objects in a record read
MAX_VALUES = 20000               # values, nested ones included, in a record read
CREATION_LOCK_SECONDS = 60.0     # a cache value's creation may legitimately take long
OPAQUE = 'beaker-opaque'
TIME_FIELDS = ('_accessed_time', '_creation_time', '_expires')
COOKIE_FIELDS = ('_domain', '_path')     # Beaker's; configuration, never stored
# Written by this module into session records; a session may not use them.
RESERVED_KEYS = ('_expires', 'tcjson')
_ALL = 0x7fffffff                # "no limit" for fwmkeys


class UnstorableValue(TcjsonError, TypeError):
    """A value JSON cannot hold; nothing was written."""


class UnreadableRecord(TcjsonError, ValueError):
    """A session record this module will not use (written by something
    else, truncated, too big, too deep).  Raised on load and left untouched
    in the store: the application answers with an error and a fresh cookie."""

    def __init__(self, record_key, reason, shown_key=None):
        # The message goes to logs, so it may shorten the key: a session
        # id in a log file is a session anyone with the log can take over.
        TcjsonError.__init__(self, 'session record %s is unreadable: %s'
                             % (shown_key or record_key, reason))
        self.record_key = record_key


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
    """Raise ConfigError for session options TyrantSession cannot honour.

    Call it once at startup with SessionMiddleware's ``options``;
    TyrantSession calls it again on every session (it costs microseconds),
    so a mistake is never silently ignored."""
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



# ----------------------------------------------------- reading what Tyrant holds

def _finite_float(text):
    number = float(text)
    if number - number != 0:                            # 1e999 parses as inf
        raise ValueError('the number %s is too large for a float' % text[:24])
    return number


# simplejson's C scanner refuses NaN and Infinity, and integers of more than
# a few thousand digits (whose conversion would hold the GIL for seconds).
# Only a float can still go wrong: 1e999 parses as inf.
_DECODER = json.JSONDecoder(parse_float=_finite_float)

# For _check_shape: every byte but brackets, commas and quotes; and the
# brackets made one kind, the commas dropped.
_NOT_STRUCTURE = ''.join(chr(byte) for byte in range(256) if chr(byte) not in '[]{},"')
_ONE_KIND = string.maketrans('{}', '[]')


def _check_shape(raw):
    """ValueError unless the JSON text `raw` nests at most MAX_DEPTH deep
    and holds at most MAX_VALUES values, found from its brackets and
    commas before anything is parsed, by string operations that run in C:
    parsing a hostile record is the cost this avoids, and walking a parsed
    one in Python cost more than parsing it."""
    # Escaped backslashes and quotes are string content; then keep only the
    # structure; two adjacent quotes enclose nothing; what is still between
    # quotes is inside strings.
    text = raw.replace('\\\\', '').replace('\\"', '').translate(None, _NOT_STRUCTURE)
    text = text.replace('""', '')
    if '"' in text:
        text = ''.join(text.split('"')[::2])
    brackets = text.translate(_ONE_KIND, ',')
    # A container of k values has k - 1 commas: values <= commas + containers + 1.
    if len(text) - len(brackets) + len(brackets) // 2 + 1 > MAX_VALUES:
        raise ValueError('more than %d values' % MAX_VALUES)
    depth = 0
    while brackets:                                     # one level gone per pass
        depth += 1
        if depth > MAX_DEPTH:
            raise ValueError('nested deeper than %d' % MAX_DEPTH)
        inner = brackets.replace('[]', '')
        if len(inner) == len(brackets):
            return                                      # unbalanced: the parser says why
        brackets = inner


def parse_json(raw, max_size=None):
    """JSON bytes read from Tyrant -> value.  ValueError says why they are
    refused: over `max_size` bytes, too deep, too many values, not UTF-8
    JSON, a float out of range."""
    if max_size is not None and len(raw) > max_size:
        raise ValueError('%d bytes, over max_session_size=%d' % (len(raw), max_size))
    _check_shape(raw)
    if raw[:3] == '\xef\xbb\xbf':              # a byte order mark from another writer
        raw = raw[3:]
    try:
        # Bytes, not text: simplejson parses them twice as fast, giving
        # ASCII strings as str and the others as unicode (bad UTF-8 is a
        # ValueError too).
        return _DECODER.decode(raw)
    except RuntimeError:                     # the C parser's recursion guard
        raise ValueError('nested too deeply')


def _is_time(value):
    return isinstance(value, (int, long, float)) and not isinstance(value, bool) \
        and 0 <= value < 1e11


def parse_session_record(raw, max_size=None):
    """A session record's bytes -> dict; ValueError if they are no session:
    not a JSON object, or a Beaker time field that is not a Unix time."""
    record = parse_json(raw, max_size)
    if not isinstance(record, dict):
        raise ValueError('JSON %s, not an object' % type(record).__name__)
    for name in TIME_FIELDS:
        if name in record and not _is_time(record[name]):
            raise ValueError('%s is %s, not a Unix time'
                             % (name, type(record[name]).__name__))
    return record


def _same_json(old, new):
    """Is `new` what `old` (parsed from JSON) was?  Strings compare as text;
    otherwise the types must agree too, since True == 1 == 1.0."""
    if isinstance(old, basestring) and isinstance(new, basestring):
        return old == new
    return type(old) is type(new) and old == new


class JSONSerializer(object):
    """Session dict <-> JSON text, for Beaker's encryption (TyrantSession
    hands it the session when encrypt_key is set; without one the record
    is the JSON object itself)."""

    def dumps(self, data):
        return _dumps(data, 'session')

    def loads(self, data):
        return parse_session_record(data)


_SERIALIZER = JSONSerializer()


# ------------------------------------------------------------- the backend

class TyrantNamespaceManager(NamespaceManager):
    """Beaker NamespaceManager over Tokyo Tyrant: cache values, and the raw
    records TyrantSession reads and writes.

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
        # Every record of a namespace (a session: its record and its lock)
        # lives on the server its name routes to.
        self.servers = get_servers(url, connect_timeout, io_timeout, pool_size)
        self.pool = self.servers.for_key(_bytes(namespace))
        self.io_timeout = pool_option('io_timeout', io_timeout, float)
        # A session lock outlives a request that waited out one server and
        # went on to its partner (connect + io there, io here).
        self.lock_seconds = pool_option('connect_timeout', connect_timeout, float) \
            + 2 * self.io_timeout
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

    def lock_key(self, key):
        return '%slock:%s:%s' % (self.prefix, _bytes(self.namespace), _bytes(key))

    def unreadable(self, reason):
        """UnreadableRecord for this namespace's session, its id shortened."""
        shown = '%s%s...:session' % (self.prefix, _bytes(self.namespace)[:8])
        return UnreadableRecord(self.record_key('session'), reason, shown)

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
        return TyrantLock(self.pool, self.lock_key(key))

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
        try:
            return parse_json(raw)
        except ValueError:
            # A cache value is disposable: a miss makes Beaker recompute it.
            raise KeyError(key)

    def set_value(self, key, value, expiretime=None):
        # expiretime is unused: Beaker keeps it inside cache values.
        self.pool.request('put', self.record_key(key), _dumps(value, key))

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
    * ``session.save()`` of a stored session: three.  The load; then the
      session's lock (``putkeep``) and a re-read of the record, pipelined
      in one; then the write and the unlock, pipelined in one.  Between
      the two, the keys this request set or deleted (found by comparing
      with the record as it was loaded, so in-place changes such as
      ``session['cart'].append(x)`` count) are applied to the record as it
      is *now*: concurrent requests that change different keys all keep
      their changes; for one key the last writer wins.  An access-time
      refresh changes only the time fields the same way.

    ``invalidate()`` deletes the record now and starts an empty session
    under a new id; ``regenerate_id()`` deletes the record under the old
    id now and writes the data under the new id when the response starts;
    ``delete()`` deletes the record now and expires the cookie, and
    nothing later in the request writes it back.  Deleting takes the lock
    too, and a save that finds its record gone under the lock writes
    nothing: a slower request of the same session, still running, cannot
    bring a logged-out session back.

    The lock is a record that expires ``connect_timeout + 2 * io_timeout``
    seconds after it was taken (5 s with the defaults): long enough for a
    request whose server failed over to its partner mid-save.  One left by
    a crashed process delays that session's writes by at most that long,
    then is taken over; a request that cannot get the lock within
    ``io_timeout`` raises TyrantUnavailable (the 503 page), having written
    nothing.  The hosts' clocks must agree to well within ``io_timeout``.
    """

    def __init__(self, request, refresh_interval=None, session_class=None, **options):
        check_session_options(dict(options, refresh_interval=refresh_interval))
        options['data_serializer'] = _SERIALIZER
        options['invalidate_corrupt'] = False           # errors stay errors
        self.refresh_interval = refresh_seconds(refresh_interval, options.get('timeout'))
        self._loaded_raw = None      # the record's bytes as this request found them
        self._deleted = False
        Session.__init__(self, request, **options)

    def _manager(self):
        return self.namespace_class(self.id, **self.namespace_args)

    # -- loading
    def load(self):
        """Read the record: the one command a reading request costs."""
        self.namespace = self._manager()
        if self.use_cookies:
            self.request['set_cookie'] = True
        now = time.time()
        raw = self.namespace.raw('session')
        record = None if raw is None else self._decode(raw)
        self.clear()                                # keeps the configured domain/path
        if record is None or self._timed_out(record, now):
            # Gone (logged out, purged) or idle too long: a new session
            # under a new id, never the id the browser offered.
            self._start_new(now)
            return
        self._loaded_raw = raw
        self.last_accessed = record.get('_accessed_time')
        for name in COOKIE_FIELDS + ('_expires',):
            record.pop(name, None)
        record.setdefault('_creation_time', now)
        record['_accessed_time'] = now
        self.update(record)
        self.accessed_dict = dict(self)

    def _timed_out(self, record, now):
        if '_expires' in record and record['_expires'] < now:
            return True
        accessed = record.get('_accessed_time')
        return bool(self.timeout) and accessed is not None and now - accessed > self.timeout

    def _start_new(self, now):
        self._create_id()                           # is_new; the cookie on first save
        self['_creation_time'] = self['_accessed_time'] = now
        self.accessed_dict = dict(self)
        self._loaded_raw = None
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
    def _encode(self, data):
        """Session dict -> record bytes (UnstorableValue, nothing sent, if
        it cannot be stored)."""
        body = dict((k, v) for k, v in data.iteritems() if k not in COOKIE_FIELDS)
        for key in RESERVED_KEYS:
            if key in body:
                raise UnstorableValue('cannot store session key %r: reserved by tcjson '
                                      '(the record keeps its expiry there)' % key)
        times = {'_accessed_time': body['_accessed_time']}
        if self.timeout:
            times['_expires'] = round(body['_accessed_time'] + self.timeout, 3)
        if self.encrypt_key:
            record = _dumps(dict(times, tcjson=OPAQUE, data=self._encrypt_data(body)))
        else:
            body.update(times)
            record = _dumps(body, 'session')
        if len(record) > self.namespace.max_session_size:
            raise UnstorableValue('cannot store the session: %d bytes of JSON, over '
                                  'max_session_size=%d' % (len(record),
                                                           self.namespace.max_session_size))
        return record

    def save(self, accessed_only=False):
        """Beaker's save(): called when the response starts (by
        SessionMiddleware), with accessed_only=True if the request did not
        call session.save()."""
        if self._deleted or (accessed_only and (self.is_new or not self.save_atime)):
            return
        if getattr(self, 'namespace', None) is None or self.namespace.namespace != self.id:
            self.namespace = self._manager()          # a new session has none yet
        now = time.time()
        if self._loaded_raw is None:
            # Nothing stored under this id: a new session, or a new id from
            # regenerate_id().  Nobody else knows the id yet: no lock.
            data = dict(self.accessed_dict if accessed_only else self, _accessed_time=now)
            record = self._encode(data)
            self.namespace.pool.request('put', self.namespace.record_key('session'), record)
            self._loaded_raw = record
        else:
            snapshot, changed, removed = (None, {}, []) if accessed_only else self._changes()
            if changed or removed or self._refresh_due(now):
                self._merge(snapshot, changed, removed, now)
        self.last_accessed = now
        if self.use_cookies and self.is_new:
            self.request['set_cookie'] = True

    def _refresh_due(self, now):
        return self.last_accessed is None or now - self.last_accessed >= self.refresh_interval

    def _changes(self):
        """(the record as loaded, {key: value} set since, keys deleted since).
        Time and cookie fields are not the request's changes."""
        # A fresh copy of what was read: checked at load already, so only
        # parsed (and, if encrypted, opened) again.
        snapshot = _DECODER.decode(self._loaded_raw.lstrip('\xef\xbb\xbf'))
        if 'tcjson' in snapshot:
            snapshot = self._open_envelope(snapshot)
        skip = TIME_FIELDS + COOKIE_FIELDS
        changed = {}
        for key, value in self.iteritems():
            if key in skip:
                continue
            old = snapshot.get(key, changed)            # (changed: a "missing" marker)
            if old is changed or not _same_json(old, value):
                changed[key] = value
        removed = [key for key in snapshot if key not in self and key not in skip]
        return snapshot, changed, removed

    def _merge(self, snapshot, changed, removed, now):
        """Apply this request's changes to the record as it is now, under
        the session's lock: two round trips."""
        manager = self.namespace
        record_key = manager.record_key('session')
        lock = session_lock(manager)
        current = lock.acquire_and_get(record_key)
        try:
            if current is None:
                # Deleted (logout, invalidate, regenerate_id, purge) since
                # this request loaded it: it stays deleted.
                lock.release()
                return
            if snapshot is not None and current == self._loaded_raw:
                record = snapshot                       # nobody wrote meanwhile
            else:
                record = self._decode(current)
            record.update(changed)
            for key in removed + ['_expires']:
                record.pop(key, None)
            record['_accessed_time'] = now
            data = self._encode(record)
        except BaseException:
            lock.release()
            raise
        lock.release_after(('put', record_key, data))
        self._loaded_raw = data

    # -- ending a session or its id
    def _destroy_stored(self):
        """Delete the record this request loaded, under its lock."""
        if self._loaded_raw is None:
            return
        manager = self.namespace
        lock = session_lock(manager)
        lock.acquire_and_get(manager.record_key('session'))
        lock.release_after(('out', manager.record_key('session')))
        self._loaded_raw = None

    def delete(self):
        """Delete the record now and expire the cookie; later saves in this
        request do nothing."""
        self._destroy_stored()
        Session.delete(self)
        self._deleted = True

    def invalidate(self):
        """Delete the record now; go on with an empty session under a new id."""
        self._destroy_stored()
        self.clear()
        self.was_invalidated = True
        self._start_new(time.time())

    def regenerate_id(self):
        """Delete the record under the old id now; the data is written under
        the new id when the response starts.  A session signed in through
        user_sessions.py has the new id added to its user's index."""
        self._destroy_stored()
        Session.regenerate_id(self)
        self.namespace = self._manager()
        from .user_sessions import add_new_id        # it imports this module
        add_new_id(self)


# -------------------------------------------------------------------- locks
#
# A lock is a record that ``putkeep`` creates only if it does not exist and
# ``out`` removes: {"tcjson": "lock", "owner": "...", "_expires": <time>}.
# A lock past its ``_expires`` belongs to a holder that died; it is
# removed and taken.  Residual race: two processes that find the same dead
# lock within one round trip of each other may both take it (the second
# removes the first one's fresh lock); only a crash opens that window.

_HOST = socket.gethostname()


def _lock_value(expires, owner):
    return _dumps({'tcjson': 'lock', 'owner': owner, '_expires': round(expires, 3)})


def _new_owner():
    return '%s/%d/%s' % (_HOST, os.getpid(), uuid.uuid4().hex[:12])


def _clear_if_dead(pool, key):
    """Remove the lock `key` if its holder is gone; True if it is free now."""
    try:
        held = parse_json(pool.request('get', key))
    except pytyrant.TyrantError:
        return True                                     # released meanwhile
    except ValueError:
        held = None                                     # junk: nobody's lock
    if isinstance(held, dict) and _is_time(held.get('_expires')) \
            and held['_expires'] >= time.time():
        return False
    try:
        pool.request('out', key)
    except pytyrant.TyrantError:
        pass
    return True


class RecordLock(object):
    """A lock held for one round trip: taken together with a read of the
    record it guards, released together with the write.  A session's write
    lock is one (session_lock); user_sessions.py uses others.  Waiting for
    it is bounded by `wait` seconds; it expires `lifetime` seconds after it
    was taken."""

    def __init__(self, pool, key, wait, lifetime=None):
        self.pool, self.key = pool, key
        self.wait, self.lifetime = wait, lifetime or wait
        self.expires = 0.0

    def acquire_and_get(self, record_key):
        """Take the lock and read `record_key` in one round trip; while
        another request holds the lock, retry with short, growing pauses.
        Returns the record's bytes (None: no record)."""
        owner = _new_owner()
        deadline = time.time() + self.wait
        pause = 0.001
        while True:
            self.expires = time.time() + self.lifetime
            taken, record = self.pool.pipeline(
                ('putkeep', self.key, _lock_value(self.expires, owner)), ('get', record_key))
            if taken is None:
                return None if isinstance(record, pytyrant.TyrantError) else record
            if _clear_if_dead(self.pool, self.key):
                continue
            now = time.time()
            if now >= deadline:
                raise TyrantUnavailable(self.pool.url, 'a lock stayed taken by another '
                                        'request for io_timeout=%gs' % self.wait)
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, 0.05)

    def release(self):
        try:
            self.pool.request('out', self.key)
        except pytyrant.TyrantError:
            pass

    def release_after(self, *commands):
        """Send `commands` (the write) and the unlock in one round trip, if
        the lock is still ours: past its expiry another request may hold
        it, and writing then could undo that request's change."""
        if time.time() >= self.expires:
            raise TyrantUnavailable(self.pool.url, 'a lock expired before the write (the '
                                    'server answered too slowly); nothing was written')
        self.pool.pipeline(*(commands + (('out', self.key),)))


def session_lock(manager):
    """The write lock of the session whose manager this is: the record
    ``<prefix>lock:<id>:session``, waited for at most io_timeout, living
    connect_timeout + 2 * io_timeout (see TyrantSession)."""
    return RecordLock(manager.pool, manager.lock_key('session'), manager.io_timeout,
                      manager.lock_seconds)


class TyrantLock(SynchronizerImpl):
    """Beaker's creation lock for a cache value (one process computes it
    while the others wait), valid across hosts.  Readers and writers are
    not told apart (one holder at a time)."""

    def __init__(self, pool, record_key, seconds=CREATION_LOCK_SECONDS, poll=0.05):
        SynchronizerImpl.__init__(self)
        self.pool, self.record_key = pool, record_key
        self.seconds, self.poll = seconds, poll
        self.owner = _new_owner()

    def do_acquire_write_lock(self, wait):
        while True:
            try:
                self.pool.request('putkeep', self.record_key,
                                  _lock_value(time.time() + self.seconds, self.owner))
                return True
            except pytyrant.TyrantError:
                pass
            if _clear_if_dead(self.pool, self.record_key):
                continue
            if not wait:
                return False
            time.sleep(self.poll)

    def do_release_write_lock(self):
        try:
            held = parse_json(self.pool.request('get', self.record_key))
        except (pytyrant.TyrantError, ValueError):
            return
        if isinstance(held, dict) and held.get('owner') == self.owner:  # not if taken over
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

def _session_manager(session):
    if not isinstance(session, Session):
        session = session._session()     # Beaker's lazy SessionObject (or Pylons' proxy)
    if not isinstance(session, TyrantSession):
        raise TypeError('session is not a tcjson.TyrantSession (session_class)')
    if getattr(session, 'namespace', None) is None or session.namespace.namespace != session.id:
        session.namespace = session._manager()
    return session.namespace


def session_record_key(session):
    """The Tyrant key holding this session's record."""
    return _session_manager(session).record_key('session')


def raw_record(session):
    """The stored bytes of this session's record (None if none)."""
    return _session_manager(session).raw('session')


# -------------------------------------------------------------------- purge

PURGE_READ_BYTES = 16 * 1024 * 1024   # bytes of records purge reads per round trip
PURGE_LOCK_KEY = 'tcjson:purge'       # one per server: Tyrant has one iterator
PURGE_LOCK_SECONDS = 120.0            # renewed after every batch


class PurgeBusy(TcjsonError):
    """Another purge is walking the same server."""


def _is_duration(value):
    return isinstance(value, (int, long, float)) and not isinstance(value, bool) and value > 0


def _expired(raw, now, max_age):
    """Is this record one purge may delete?  Session records and locks by
    their ``_expires``; cache values ``[storedtime, expiretime, value]`` as
    Beaker judges them; with `max_age`, session records without
    ``_expires`` (no timeout) by ``_accessed_time``.  Anything else, and
    anything that cannot be parsed, is kept: not ours to judge."""
    try:
        record = parse_json(raw)
    except Exception:                # whatever a hostile record does, purge goes on
        return False
    if isinstance(record, list):
        return len(record) == 3 and _is_time(record[0]) and _is_duration(record[1]) \
            and record[0] + record[1] <= now
    if not isinstance(record, dict):
        return False
    if _is_time(record.get('_expires')):
        return record['_expires'] < now
    accessed = record.get('_accessed_time')
    return bool(max_age) and _is_time(accessed) and accessed + max_age < now


def _key_batches(pool, prefix, batch_size):
    """Yield the keys under `prefix` in lists of <= batch_size.

    A hash database's fwmkeys scans every record per call, so walking by
    prefixes costs O(records x calls); iterating costs one pass.  Tyrant's
    iterator is one per server (hence the purge lock) and survives
    deletes.  Memory stays O(batch_size) at any database size."""
    pool.request('iterinit')
    while True:
        keys = pool.request('next_keys', batch_size)
        batch = [key for key in keys if key.startswith(prefix)]
        if batch:
            yield batch
        if len(keys) < batch_size:
            return


def _read_bounded(pool, keys, max_record):
    """{key: bytes} of `keys`, at most PURGE_READ_BYTES per round trip;
    records over `max_record` bytes are not read (not ours to judge)."""
    sizes = pool.pipeline(*[('vsiz', key) for key in keys])
    found, group, group_bytes = {}, [], 0
    for key, size in zip(keys, sizes):
        if isinstance(size, pytyrant.TyrantError) or size > max_record:
            continue                                    # gone meanwhile, or too big
        if group and group_bytes + size > PURGE_READ_BYTES:
            found.update(pool.request('mget', group))
            group, group_bytes = [], 0
        group.append(key)
        group_bytes += size
    if group:
        found.update(pool.request('mget', group))
    return found


class _PurgeLock(object):
    """Refuses a second purge of one server while the first one runs (both
    would share Tyrant's single iterator and stop early)."""

    def __init__(self, pool):
        self.pool, self.owner = pool, _new_owner()

    def _value(self):
        return _lock_value(time.time() + PURGE_LOCK_SECONDS, self.owner)

    def __enter__(self):
        while True:
            try:
                self.pool.request('putkeep', PURGE_LOCK_KEY, self._value())
                return self
            except pytyrant.TyrantError:
                if not _clear_if_dead(self.pool, PURGE_LOCK_KEY):
                    raise PurgeBusy('another purge is running on %s (its lock, the record '
                                    '%r, expires within %d s of its last batch); run one '
                                    'at a time' % (self.pool.url, PURGE_LOCK_KEY,
                                                   PURGE_LOCK_SECONDS))

    def renew(self):
        self.pool.request('put', PURGE_LOCK_KEY, self._value())

    def __exit__(self, *exc_info):
        try:
            self.pool.request('out', PURGE_LOCK_KEY)
        except (pytyrant.TyrantError, TyrantUnavailable):
            pass


def _prune_user_indexes(url, prefix, keys, now, pool_options):
    """Hand this batch's user indexes (``<prefix>user:...``, see
    user_sessions.py) to user_sessions, which drops the entries of sessions
    that no longer exist and deletes the indexes left empty.  Returns the
    number of indexes deleted."""
    start = _bytes(prefix) + 'user:'
    index_keys = [key for key in keys if key.startswith(start)]
    if not index_keys:
        return 0
    from .user_sessions import prune_indexes      # it imports this module
    return prune_indexes(url, prefix, index_keys, now=now, **pool_options)


def purge_expired(url, prefix=DEFAULT_PREFIX, batch_size=500, progress=None,
                  max_age=None, now=None, max_record=PURGE_READ_BYTES, **pool_options):
    """Delete expired records under `prefix`, `batch_size` keys at a time,
    on every shard of `url` once; safe while the application serves.
    Returns the totals ``{'scanned', 'deleted', 'batches'}``, also passed
    to `progress` after each batch.  Raises PurgeBusy if another purge is
    walking one of the servers.

    Every record of a server is visited once (a few round trips per
    batch_size keys); only those under `prefix` are read, at most
    PURGE_READ_BYTES per round trip.  A record is deleted only if a re-read
    just before the delete returns the bytes judged expired.  A session
    saved in the one round trip between that re-read and the delete is
    lost; TyrantSession never rewrites an expired session (it starts a new
    id), so only a request that loaded it just before expiry can hit that
    window.

    The users' session indexes under ``<prefix>user:`` (user_sessions.py)
    are pruned in the same batches: entries of sessions that no longer
    exist are dropped, indexes left empty are deleted (and counted in
    'deleted').
    """
    now = time.time() if now is None else now
    max_age = float(max_age) if max_age else None
    totals = {'scanned': 0, 'deleted': 0, 'batches': 0}
    for pool in get_servers(url, **pool_options).shards():
        with _PurgeLock(pool) as lock:
            for keys in _key_batches(pool, _bytes(prefix), int(batch_size)):
                seen = _read_bounded(pool, keys, max_record)
                doomed = dict((k, v) for k, v in seen.iteritems() if _expired(v, now, max_age))
                if doomed:
                    again = _read_bounded(pool, list(doomed), max_record)
                    keys_out = [k for k, v in again.iteritems() if doomed[k] == v]
                    if keys_out:
                        try:
                            pool.request('misc', 'outlist', 0, keys_out)
                        except pytyrant.TyrantError:
                            pass                       # some vanished meanwhile
                    totals['deleted'] += len(keys_out)
                totals['deleted'] += _prune_user_indexes(url, prefix, keys, now, pool_options)
                totals['scanned'] += len(keys)
                totals['batches'] += 1
                lock.renew()
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
    purge_expired() with beaker.session.url/prefix from the INI file, and
    with beaker.cache.url/prefix too when the caches are ext:tcjson.
    Returns the exit status."""
    out = out or sys.stdout
    parser = optparse.OptionParser(usage='%prog purge [options] CONFIG.ini')
    parser.add_option('--max-age', type='float', help='also delete session records '
                      'without _expires (no timeout set) whose _accessed_time, the time '
                      'of their last write, is older than this (seconds)')
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

        def get(kind, name, default=None):
            return conf.get('beaker.%s.%s' % (kind, name),
                            conf.get('%s.%s' % (kind, name), default))
        stores = []
        for kind in ('session', 'cache'):
            if kind == 'session' or get(kind, 'type') == 'ext:tcjson':
                if not get(kind, 'url'):
                    raise ConfigError('%s [%s] sets no beaker.%s.url'
                                      % (args[0], options.section, kind))
                stores.append((get(kind, 'url'), get(kind, 'prefix', DEFAULT_PREFIX),
                               dict(connect_timeout=get(kind, 'connect_timeout'),
                                    io_timeout=get(kind, 'io_timeout'))))

        def report(totals):
            out.write('batch %(batches)d: scanned %(scanned)d, deleted %(deleted)d\n' % totals)
        for url, prefix, pool_options in stores:
            totals = purge_expired(url, prefix, options.batch_size, report, options.max_age,
                                   **pool_options)
            out.write('done: %(deleted)d of %(scanned)d records under %(prefix)r deleted\n'
                      % dict(totals, prefix=prefix))
    except TcjsonError as exc:
        sys.stderr.write('purge: %s\n' % exc)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(purge_command())
