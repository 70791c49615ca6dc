"""Sessions per user: list them, sign out one, everywhere, everywhere else.

Beside lib/tcjson.py in a project (``from myapp.lib import user_sessions``).
In the login action, after checking the password::

    user_sessions.sign_in(session, user_id, detail={'agent': request.user_agent})

Later changes of a signed-in session's id are Beaker's own
``session.regenerate_id()``: TyrantSession tells this module (add_new_id),
and the user's index learns the new id.  And in the pages that manage a user's sessions::

    user_sessions.list_sessions(session)        # SessionInfo of each, this one marked
    user_sessions.sign_out_session(session, handle)
    user_sessions.sign_out_others(session)      # everywhere else
    user_sessions.sign_out_everywhere(session)  # this one too

Operators use ``UserSessions.from_config(url, prefix)`` (or ``paster
tcjson-sessions development.ini``): ``sessions(user_id)``,
``revoke(user_id)``.

What is stored where
====================

The session record (lib/tcjson.py) holds the user id under ``user``
(USER_KEY).  That is the truth: a session belongs to a user while its
record exists, has not expired and names the user.  Beside it, each user
has an index of sign-ins, a hint that saves searching every session::

    <prefix>user:<escaped user id>
    {"id":"0f3c...9a","at":1764355200.123,"agent":"Mozilla/5.0 ..."}\\n
    {"id":"7be1...04","at":1764358800.456,"agent":"curl/8.5.0"}\\n

one JSON object per line, one line per sign-in: the session id, the time
of the sign-in (Unix) and the small, non-secret detail the login action
gave (strings of at most MAX_DETAIL characters).  The user id in the key
is its UTF-8 bytes percent-encoded except ``A-Z a-z 0-9 - . _ ~`` (RFC
3986's unreserved characters; Python's ``quote(id, safe='~')``, Perl's
``uri_escape``), so a key never holds ``:``, ``%`` unescaped, spaces or
control characters, whatever the id.  Any Tyrant client can read an index
and split it on ``\\n``.  Lines this module did not write are left alone.

Two more records per user come with rewrites of the index (see
"Concurrency"): ``<prefix>lock:user:<escaped id>``, the rewrite's lock
while it runs (the session lock's format:
``{"tcjson":"lock","owner":...,"_expires":...}``), and
``<prefix>lock:user:<escaped id>:pruned``, a mark each rewrite changes
(``{"tcjson":"pruned","owner":...,"_expires":<a day later>}``); purge
deletes either once expired.  Caches must not share the sessions' prefix
(a cache namespace ``user`` would be read as an index).

Concurrency
===========

Sign-in appends its line with ``putcat``, which Tyrant applies atomically:
concurrent sign-ins of one user need no lock and lose no line.  Only a
rewrite (dropping the lines of sessions that are gone) could lose a line
appended between its read and its write, so a rewrite takes the lock,
reads, writes the index and then the mark, and unlocks.  A sign-in sends,
in its one round trip: get mark, putcat, get lock, get mark.  If a rewrite
read the index before the append and wrote it after, then either the
sign-in's ``get lock`` came before the unlock (it sees the lock) or after
it, and then its second ``get mark`` came after the mark was changed and
its first one before (the mark changes after the write, the write comes
after the append; a mark lives a day, so purge cannot remove it between
two commands of one pipeline).  Either way the sign-in notices, takes the lock itself
(so it waits for the rewrite to finish) with a read of the index, and
appends its line again under the lock if the rewrite dropped it.

Revoking deletes each record under its session lock, as TyrantSession's
``delete()`` does: the lock (``putkeep``) first, then the record and the
lock.  A request of that session still in flight saves under the same lock
and re-reads the record there; it finds nothing and writes nothing (see
TyrantSession).  The revoked browser's next request finds no record and
starts a new, anonymous session, on any server and in any process.

A sign-in is in the index before its record exists: the record is written
when the sign-in's response starts.  So an entry without a record is kept
for SIGN_IN_GRACE seconds, and a revocation that runs in that moment does
not see that session: it signed in after the revocation.

Several servers (tyrant.py): an index lives where its key hashes, a session
where its id hashes (as TyrantSession puts it); reading and revoking send
one pipeline per server.  On a dual-master pair everything fails over like
the sessions themselves, except that an append whose answer was lost is
not sent again (putcat cannot be repeated safely): that sign-in fails with
TyrantUnavailable and the user signs in again.

Costs, in round trips, whatever the number of sessions (until a pipeline
of PIPELINE_SESSIONS or a read of PURGE_READ_BYTES is full): sign-in one
(plus the two of regenerate_id() when the session was stored, and the
record's put when the response starts); listing three (the index; per
server, the records' sizes and the records), three more when it drops
entries (the sizes of the missing records; the rewrite's lock and read,
its write and unlock); revoking, listing's reads, two per server (locks;
records and locks out) and the rewrite.  The template's
bench/user_sessions.py measures them (bench/RESULTS-user-sessions.md).
"""
from __future__ import absolute_import

import hashlib
import re
import time
import urllib
from collections import namedtuple

import pytyrant

from . import tcjson
from .tcjson import _bytes

USER_KEY = 'user'             # the session key holding the signed-in user's id
DETAIL_KEY = 'sign_in_detail'  # ...and what sign_in recorded with it (non-secret)
MAX_USER_ID = 256             # characters of a user id
MAX_DETAIL = 200              # characters kept of each detail string
MAX_DETAILS = 8               # detail values per sign-in
SIGN_IN_GRACE = 60.0          # seconds an entry may wait for its record
MARK_SECONDS = 86400.0        # lifetime of a rewrite's mark
PIPELINE_SESSIONS = 500       # sessions locked or deleted per round trip
RESERVED_FIELDS = ('id', 'at')
# What an index line's id may be: Beaker's ids are 32 hex digits.  Anything
# else (a ':' that would point into other keys) is not a line of ours.
_SESSION_ID = re.compile(r'^[0-9A-Za-z_-]{1,128}\Z')

# One session of a user, as list_sessions() shows it.  `handle` names it in
# pages and forms instead of its id; times are Unix times (None: unknown,
# e.g. an encrypted record); `detail` is what the sign-in recorded.
SessionInfo = namedtuple('SessionInfo', 'id handle signed_in created accessed expires '
                                        'detail current')


def escape_user_id(user_id):
    """The user id as it appears in keys (see the module docstring).
    ValueError for an empty or over-long id."""
    if isinstance(user_id, (int, long)) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, basestring) or not user_id:
        raise ValueError('a user id is a non-empty string, got %r' % (user_id,))
    text = user_id if isinstance(user_id, unicode) else user_id.decode('utf-8')
    if len(text) > MAX_USER_ID:
        raise ValueError('a user id has at most %d characters, got %d'
                         % (MAX_USER_ID, len(text)))
    return urllib.quote(text.encode('utf-8'), safe='~')


def session_handle(session_id):
    """A name for a session that pages and forms may show: it tells the
    sessions apart without being the id a cookie carries."""
    return hashlib.sha256(_bytes(session_id)).hexdigest()[:16]


def _entry_line(session_id, now, detail):
    entry = {'id': session_id, 'at': round(now, 3)}
    detail = detail or {}
    if len(detail) > MAX_DETAILS:
        raise tcjson.UnstorableValue('a sign-in records at most %d details, got %d'
                                     % (MAX_DETAILS, len(detail)))
    for name, value in detail.iteritems():
        if name in RESERVED_FIELDS or not isinstance(name, basestring) or len(name) > 32:
            raise tcjson.UnstorableValue('detail name %r: a string of at most 32 '
                                         'characters, not id or at' % (name,))
        if value is None:
            continue
        if isinstance(value, str):
            value = value.decode('utf-8', 'replace')
        if not isinstance(value, unicode):
            raise tcjson.UnstorableValue('detail %r is %s; details are strings'
                                         % (name, type(value).__name__))
        entry[name] = value[:MAX_DETAIL]
    return tcjson._dumps(entry) + '\n'


def _parse_entry(line):
    """An index line -> its entry (a dict with id and at), or None if the
    line is not one of ours."""
    try:
        entry = tcjson.parse_json(line)
    except ValueError:
        return None
    if isinstance(entry, dict) and isinstance(entry.get('id'), basestring) \
            and _SESSION_ID.match(entry['id']) and tcjson._is_time(entry.get('at')):
        entry['id'] = str(entry['id'])
        return entry
    return None


def _index_lines(raw):
    return [line for line in (raw or '').split('\n') if line]


def _value(answer):
    """A pipelined get's answer: the bytes, or None where the key is missing."""
    return None if isinstance(answer, pytyrant.TyrantError) else answer


class _Index(object):
    """The keys of one user's index and the server holding them."""

    def __init__(self, store, escaped):
        prefix = store.prefix
        self.key = prefix + 'user:' + escaped
        self.lock_key = prefix + 'lock:user:' + escaped
        self.mark_key = self.lock_key + ':pruned'
        self.pool = store.servers.for_key(self.key)
        self.io_timeout = store.io_timeout

    def append(self, line, session_id):
        """putcat `line`: one round trip.  If a rewrite overlapped (module
        docstring, "Concurrency"), take the rewrite lock, which waits for
        that rewrite to finish, and append the line again under it if the
        rewrite dropped it."""
        mark_before, _, lock, mark_after = self.pool.pipeline(
            ('get', self.mark_key), ('putcat', self.key, line),
            ('get', self.lock_key), ('get', self.mark_key))
        if _value(lock) is None and _value(mark_before) == _value(mark_after):
            return
        lock, raw = self.begin_rewrite()
        if any(entry is not None and entry['id'] == session_id
               for entry in map(_parse_entry, _index_lines(raw))):
            lock.release()
        else:
            lock.release_after(('putcat', self.key, line))

    def read(self):
        try:
            return self.pool.request('get', self.key)
        except pytyrant.TyrantError:
            return None

    def begin_rewrite(self):
        """Take the lock and read the index in one round trip: (lock, the
        index's bytes or None)."""
        lock = tcjson.RecordLock(self.pool, self.lock_key, self.io_timeout)
        return lock, lock.acquire_and_get(self.key)

    def finish_rewrite(self, lock, lines):
        """Write `lines` (none: delete the index), then the mark, and
        unlock, in one round trip."""
        write = ('put', self.key, ''.join(line + '\n' for line in lines)) if lines \
            else ('out', self.key)
        mark = tcjson._dumps({'tcjson': 'pruned', 'owner': tcjson._new_owner(),
                              '_expires': round(time.time() + MARK_SECONDS, 3)})
        lock.release_after(write, ('put', self.mark_key, mark))

    def drop(self, session_ids):
        """Remove the entries of `session_ids` (an empty index is deleted).
        Returns (entries dropped, whether the index was deleted)."""
        lock, raw = self.begin_rewrite()
        lines = _index_lines(raw)
        kept = [line for line in lines
                if (_parse_entry(line) or {}).get('id') not in session_ids]
        if raw is None or (lines and len(kept) == len(lines)):
            lock.release()                      # gone meanwhile, or nothing to drop
            return 0, False
        self.finish_rewrite(lock, kept)
        return len(lines) - len(kept), not kept


class UserSessions(object):
    """The user indexes of one session store: its servers and prefix."""

    def __init__(self, servers, prefix, io_timeout, max_record):
        self.servers, self.prefix = servers, _bytes(prefix)
        self.io_timeout, self.max_record = io_timeout, max_record

    @classmethod
    def from_manager(cls, manager):
        return cls(manager.servers, manager.prefix, manager.io_timeout,
                   manager.max_session_size)

    @classmethod
    def of_session(cls, session):
        """The store a TyrantSession (or Beaker's or Pylons' proxy of one) uses."""
        return cls.from_manager(tcjson._session_manager(session))

    @classmethod
    def from_config(cls, url, prefix=tcjson.DEFAULT_PREFIX, **options):
        """From beaker.session.url, prefix and the other manager options."""
        return cls.from_manager(tcjson.TyrantNamespaceManager(
            'user', url=url, prefix=prefix, **options))

    def index(self, user_id):
        return _Index(self, escape_user_id(user_id))

    # -- the key schema of TyrantNamespaceManager for session records
    def record_key(self, session_id):
        return '%s%s:session' % (self.prefix, session_id)

    def session_lock_key(self, session_id):
        return '%slock:%s:session' % (self.prefix, session_id)

    def _by_server(self, session_ids):
        """[(server, ids)]: a session lives where its id hashes (TyrantSession)."""
        return _group(session_ids, self.servers.for_key)

    # -- signing in
    def add(self, user_id, session_id, detail=None, now=None):
        """Append a sign-in of `session_id` to the user's index: one round trip."""
        session_id = _bytes(session_id)
        if not _SESSION_ID.match(session_id):
            raise ValueError('session id %r: expected letters, digits, _ and -' % session_id)
        line = _entry_line(session_id, time.time() if now is None else now, detail)
        self.index(user_id).append(line, session_id)

    # -- reading
    def read_records(self, session_ids):
        """{session id: its record as a dict, or None if it exists but is no
        readable session here (over max_record bytes, not JSON)}; ids
        without a record are left out.  Per server: the records' sizes,
        then the records, at most PURGE_READ_BYTES per round trip."""
        found = {}
        for pool, ids in self._by_server(set(session_ids)):
            keys = dict((self.record_key(session_id), session_id) for session_id in ids)
            read = tcjson._read_bounded(pool, list(keys), self.max_record)
            for key, raw in read.iteritems():
                try:
                    found[keys[key]] = tcjson.parse_session_record(raw)
                except ValueError:
                    found[keys[key]] = None
            unread = [key for key in keys if key not in read]
            if unread:                                 # missing, or too big to read
                sizes = pool.pipeline(*[('vsiz', key) for key in unread])
                found.update((keys[key], None) for key, size in zip(unread, sizes)
                             if _value(size) is not None)
        return found

    def _entries(self, raw):
        """The index's entries, first sign-in of each id only."""
        entries, seen = [], set()
        for entry in map(_parse_entry, _index_lines(raw)):
            if entry is not None and entry['id'] not in seen:
                seen.add(entry['id'])
                entries.append(entry)
        return entries

    def _look(self, index, user_id, now):
        """(live SessionInfo list, ids of dead entries): one read of the
        index, one of the records."""
        entries = self._entries(index.read())
        records = self.read_records([entry['id'] for entry in entries])
        live, dead = [], set()
        for entry in entries:
            state = _judge(entry, records, user_id, now)
            if state == 'live':
                live.append(_info(entry, records[entry['id']]))
            elif state == 'dead':
                dead.add(entry['id'])
        return live, dead

    def sessions(self, user_id, current_id=None, now=None):
        """The user's live sessions, oldest sign-in first, `current_id`
        marked; entries of sessions that are gone are dropped from the
        index on the way."""
        now = time.time() if now is None else now
        index = self.index(user_id)
        live, dead = self._look(index, user_id, now)
        if dead:
            index.drop(dead)
        return [info._replace(current=info.id == current_id) for info in live]

    # -- revoking
    def revoke(self, user_id, choose=None, now=None):
        """Sign the user out of the live sessions whose SessionInfo
        `choose` accepts (None: all of them): each record is deleted under
        its session lock.  Returns the SessionInfo of those removed.  The
        sessions are chosen from their records as read just before; only
        application code that sets ``user`` without sign_in (which always
        changes the id) could give one to another user in between."""
        now = time.time() if now is None else now
        index = self.index(user_id)
        live, dead = self._look(index, user_id, now)
        chosen = [info for info in live if choose is None or choose(info)]
        self.delete_sessions([info.id for info in chosen])
        gone = dead | set(info.id for info in chosen)
        if gone:
            index.drop(gone)
        return chosen

    def delete_sessions(self, session_ids):
        """Delete these session records as TyrantSession.delete() does:
        lock, then record and lock out, pipelined per server (two round
        trips per PIPELINE_SESSIONS sessions).  A session whose lock a
        request holds is waited for, as a save waits."""
        for pool, ids in self._by_server(session_ids):
            for start in xrange(0, len(ids), PIPELINE_SESSIONS):
                for session_id in self._delete_locked(pool, ids[start:start + PIPELINE_SESSIONS]):
                    self._delete_one(pool, session_id)

    def _delete_locked(self, pool, ids):
        """Delete what can be locked at once; return the ids left to do."""
        expires = time.time() + self.io_timeout
        value = tcjson._lock_value(expires, tcjson._new_owner())
        answers = pool.pipeline(*[('putkeep', self.session_lock_key(session_id), value)
                                  for session_id in ids])
        taken = [session_id for session_id, answer in zip(ids, answers) if answer is None]
        busy = [session_id for session_id, answer in zip(ids, answers) if answer is not None]
        if taken and time.time() < expires:
            pool.pipeline(*[command for session_id in taken for command in (
                ('out', self.record_key(session_id)),
                ('out', self.session_lock_key(session_id)))])
        else:
            busy.extend(taken)              # our locks expired first: one by one
        return busy

    def _delete_one(self, pool, session_id):
        lock = tcjson.RecordLock(pool, self.session_lock_key(session_id), self.io_timeout)
        lock.acquire_and_get(self.record_key(session_id))
        lock.release_after(('out', self.record_key(session_id)))

    # -- purge
    def prune_indexes(self, index_keys, now=None):
        """Drop the entries of sessions that are gone from these indexes and
        delete the indexes left empty; returns the number deleted.  Reads
        at most PURGE_READ_BYTES of indexes per round trip."""
        now = time.time() if now is None else now
        start = len(self.prefix + 'user:')
        indexes = {}
        for pool, keys in _group(index_keys, self.servers.for_key):
            for key, raw in tcjson._read_bounded(pool, keys, tcjson.PURGE_READ_BYTES).items():
                indexes[key] = raw
        records = self.read_records(entry['id'] for raw in indexes.values()
                                    for entry in self._entries(raw))
        deleted = 0
        for key, raw in indexes.iteritems():
            user_id = urllib.unquote(key[start:])
            dead = set(entry['id'] for entry in self._entries(raw)
                       if _judge(entry, records, user_id, now) == 'dead')
            if dead or not raw:
                deleted += _Index(self, key[start:]).drop(dead)[1]
        return deleted

    def count_batch(self, pool, keys, totals):
        """Add one batch of keys (all on `pool`) to store_stats' totals."""
        sizes = pool.pipeline(*[('vsiz', key) for key in keys])
        groups = {}
        for key, size in zip(keys, sizes):
            if _value(size) is None:
                continue                                    # deleted meanwhile
            kind = _kind(self.prefix, key)
            groups.setdefault(kind, []).append(key)
            totals[kind] += 1
            totals['records'] += 1
            totals['bytes'] += size
            if kind in ('sessions', 'users'):
                totals['session_bytes' if kind == 'sessions' else 'index_bytes'] += size
        sessions = groups.get('sessions', [])
        records = tcjson._read_bounded(pool, sessions, self.max_record)
        totals['unreadable'] += len(sessions) - len(records)        # over max_session_size
        _count_sessions(records, totals)
        _count_indexes(tcjson._read_bounded(pool, groups.get('users', []),
                                            tcjson.PURGE_READ_BYTES), totals)
        totals['batches'] += 1


def _group(items, place):
    groups = {}
    for item in items:
        groups.setdefault(place(item), []).append(item)
    return groups.items()


def _judge(entry, records, user_id, now):
    """'live', 'dead', or 'young' (no record yet, within SIGN_IN_GRACE)."""
    if entry['id'] not in records:
        return 'young' if now - entry['at'] < SIGN_IN_GRACE else 'dead'
    record = records[entry['id']]
    if record is None:
        return 'live'                       # exists; nothing more can be known
    if tcjson._is_time(record.get('_expires')) and record['_expires'] < now:
        return 'dead'                       # TyrantSession would start a new session
    if record.get('tcjson') == tcjson.OPAQUE:
        return 'live'                       # encrypted: the user id is inside
    owner = record.get(USER_KEY)
    return 'live' if owner is not None and _bytes(owner) == _bytes(user_id) else 'dead'


def _info(entry, record):
    record = record or {}

    def when(name):
        return record[name] if tcjson._is_time(record.get(name)) else None
    detail = dict((k, v) for k, v in entry.iteritems() if k not in RESERVED_FIELDS)
    return SessionInfo(entry['id'], session_handle(entry['id']), entry['at'],
                       when('_creation_time'), when('_accessed_time'), when('_expires'),
                       detail, False)


# ------------------------------------------------------ for the application

def signed_in_user(session):
    """The id of the user signed in to this session, or None."""
    return session.get(USER_KEY)


def sign_in(session, user_id, detail=None):
    """Sign `session` in as `user_id`: a new session id (against session
    fixation; the old record is deleted), the sign-in appended to the
    user's index, the user id and `detail` stored in the session.
    `detail`: a few short, non-secret strings to show later, e.g.
    {'agent': user agent}."""
    store = UserSessions.of_session(session)
    escape_user_id(user_id)                         # a bad id fails before anything changes
    # Whoever was signed in before keeps no claim on the new id.
    for key in (USER_KEY, DETAIL_KEY):
        session.pop(key, None)
    session.regenerate_id()
    store.add(user_id, session.id, detail)
    session[USER_KEY] = user_id
    if detail:
        session[DETAIL_KEY] = detail
    session.save()


def add_new_id(session):
    """TyrantSession.regenerate_id() calls this after giving a session a new
    id: a signed-in session's new id goes into its user's index, with the
    detail of its sign-in, so that Beaker's own ``session.regenerate_id()``
    keeps listing and "sign out everywhere" complete.  No I/O for a session
    nobody is signed in to."""
    user_id = signed_in_user(session)
    if isinstance(user_id, basestring) and user_id:
        detail = session.get(DETAIL_KEY)
        UserSessions.of_session(session).add(user_id, session.id,
                                             detail if isinstance(detail, dict) else None)


def list_sessions(session):
    """SessionInfo of every live session of this session's user (none if
    nobody is signed in), this one marked ``current``."""
    user_id = signed_in_user(session)
    if user_id is None:
        return []
    return UserSessions.of_session(session).sessions(user_id, current_id=session.id)


def sign_out_session(session, handle):
    """Sign the signed-in user out of the one session with this handle (see
    SessionInfo); this session itself is deleted as by logout.  Returns
    whether the user had such a session."""
    user_id = signed_in_user(session)
    if user_id is None:
        return False
    if handle == session_handle(session.id):
        session.delete()
        return True
    return bool(UserSessions.of_session(session).revoke(
        user_id, lambda info: info.handle == handle))


def sign_out_others(session):
    """Sign the signed-in user out everywhere but here; returns the
    SessionInfo of the sessions removed."""
    user_id = signed_in_user(session)
    if user_id is None:
        return []
    current = session.id
    return UserSessions.of_session(session).revoke(user_id, lambda info: info.id != current)


def sign_out_everywhere(session):
    """Sign the signed-in user out of every session, this one included
    (deleted as by logout: the cookie expires too)."""
    removed = sign_out_others(session)
    session.delete()
    return removed


def prune_indexes(url, prefix, index_keys, now=None, **options):
    """purge_expired's hook: prune these index keys (see
    UserSessions.prune_indexes); returns the number of indexes deleted."""
    return UserSessions.from_config(url, prefix, **options).prune_indexes(index_keys, now)


# ------------------------------------------------------------ for operators

def store_stats(url, prefix=tcjson.DEFAULT_PREFIX, batch_size=500, progress=None,
                **options):
    """Counts of what is stored under `prefix`, visiting every record of
    every server once, `batch_size` keys at a time, as purge does (and
    under the purge's lock: tcjson.PurgeBusy while a purge runs).  Returns
    a dict, also passed to `progress` after each batch: records, bytes,
    sessions, signed_in, session_bytes, unreadable (session records this
    module cannot read), oldest and newest (_creation_time), users (indexes),
    index_entries, index_bytes, locks (and rewrite marks), other."""
    store = UserSessions.from_config(url, prefix, **options)
    totals = dict.fromkeys(('records', 'bytes', 'sessions', 'signed_in', 'session_bytes',
                            'unreadable', 'users', 'index_entries', 'index_bytes', 'locks',
                            'other', 'batches'), 0)
    totals.update(oldest=None, newest=None)
    for pool in store.servers.shards():
        with tcjson._PurgeLock(pool) as lock:
            for keys in tcjson._key_batches(pool, store.prefix, int(batch_size)):
                store.count_batch(pool, keys, totals)
                lock.renew()
                if progress is not None:
                    progress(dict(totals))
    return totals


def _kind(prefix, key):
    if key.startswith(prefix + 'lock:'):
        return 'locks'
    if key.startswith(prefix + 'user:'):
        return 'users'
    return 'sessions' if key.endswith(':session') else 'other'


def _count_sessions(records, totals):
    for raw in records.itervalues():
        try:
            record = tcjson.parse_session_record(raw)
        except ValueError:
            totals['unreadable'] += 1
            continue
        totals['signed_in'] += USER_KEY in record
        created = record.get('_creation_time')
        if tcjson._is_time(created):
            totals['oldest'] = min(totals['oldest'] or created, created)
            totals['newest'] = max(totals['newest'], created)


def _count_indexes(indexes, totals):
    for raw in indexes.itervalues():
        totals['index_entries'] += sum(1 for line in _index_lines(raw) if _parse_entry(line))
