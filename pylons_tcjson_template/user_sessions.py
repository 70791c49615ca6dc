"""Sessions per user: sign in, list them, sign out one, everywhere else,
everywhere -- safely, whatever else the user's sessions do meanwhile.

Beside lib/tcjson.py in a project.  config/middleware.py passes this
module's session class, so that Beaker's own ``session.regenerate_id()``
keeps a signed-in session listed and revocable::

    SessionMiddleware(app, config, session_class=user_sessions.UserSession)

In the login action, after checking the password::

    user_sessions.sign_in(session, user_id, detail={'agent': request.user_agent})

And in the pages that manage a user's sessions::

    user_sessions.list_sessions(session)        # SessionInfo of each, this one marked
    user_sessions.sign_out_session(session, handle)
    user_sessions.sign_out_others(session)      # everywhere else
    user_sessions.sign_out_everywhere(session)  # this one too

Operators use ``UserSessions.from_config(url, prefix)`` (or ``paster
tcjson-sessions development.ini``): ``sessions(user_id)``,
``revoke(user_id)``.

What is stored where
====================

The session record holds the user id under ``user`` (USER_KEY) and, under
``_sign_in``, the sign-in's lineage and detail: ``{"line": "<lineage>",
"detail": {...}}``.  A lineage is a random name each sign-in starts and
every later id of that session (``regenerate_id()``) carries on.  The
record is the truth: a session belongs to a user while its record exists,
has not expired and names the user.  Beside it, each user has an index, a
hint that saves searching every session::

    <prefix>user:<escaped user id>
    {"revoked":{"7c1e...":1764358800.456}}
    {"id":"0f3c...9a","line":"a41b...","at":1764355200.123,"agent":"Mozilla/5.0 ..."}

one JSON object per line: the lineages signed out lately (with when), then
one line per signed-in session (oldest first): its id, lineage, the time
of the sign-in (Unix) and the small, non-secret detail the login action
gave (strings of at most MAX_DETAIL characters, control characters
removed).  The user id in the key is its UTF-8 bytes percent-encoded except
``A-Z a-z 0-9 - . _ ~`` (Python's ``quote(id, safe='~')``), so a key never
holds ``:`` or spaces, whatever the id.  Any Tyrant client can read an
index and split it on ``\\n``.  On a dual-master pair each member keeps its
own copy (``...@<sid>``), and readers take the union.

Concurrency
===========

Every change to an index is one call of lib/tcjson.lua under the index's
record lock in Tyrant (``index_add``, ``index_drop``, ``index_revoke``):
concurrent sign-ins and sign-outs of one user lose nothing, and no lock
record exists.  Session records are deleted as TyrantSession.delete()
deletes them: a request of that session still in flight finds nothing
when it saves, and writes nothing.

Signing out cannot be escaped by changing the session's id.  A sign-out
first marks the lineages it signs out in the index (one atomic call), then
deletes the records of the sessions it lists.  A session that changes its
id meanwhile either deleted its old record first (the sign-out then finds
its new id listed, under the lineage it marked, and deletes that record
once it exists) or finds its old record gone and starts empty; its new id
joins the index only through ``index_add``, which refuses a marked
lineage; and a record stored under a new id is checked against the marks
right after it is written (``UserSession.created``), so a new id listed too
late for the sign-out to see its record deletes itself.  A mark is kept
REVOKED_SECONDS, far longer than any request.

Bounds: a user has at most MAX_SESSIONS signed-in sessions; the sign-in
past that signs the oldest out, as services usually do.

Costs, in round trips: sign-in two (the index, then the new record and its
check when the response starts; plus the old record's delete); listing
three (the index; per server, the records' sizes and the records);
revoking, one more for the marks and one per server for the deletes.
"""
from __future__ import absolute_import

import hashlib
import re
import time
import unicodedata
import urllib
import uuid
from collections import namedtuple

from . import records, tcjson
from .servers import DualMasterPair
from .tyrant import _bytes, is_no

USER_KEY = 'user'             # the session key holding the signed-in user's id
SIGN_IN_KEY = '_sign_in'      # ...and the sign-in's lineage and detail
MAX_USER_ID = 256             # characters of a user id
MAX_DETAIL = 200              # characters kept of each detail string
MAX_DETAILS = 8               # detail values per sign-in
MAX_SESSIONS = 50             # signed-in sessions per user; past it the oldest go
SIGN_IN_GRACE = 60.0          # seconds an entry may wait for its record
REVOKED_SECONDS = 86400.0     # how long a signed-out lineage stays marked
INDEX_READ_BYTES = 1024 * 1024   # an index is compacted before one this big is read
# What an index line's id and lineage may be: Beaker's ids are 32 hex digits.
_NAME = re.compile(r'^[0-9A-Za-z_-]{1,128}\Z')

# One session of a user, as list_sessions() shows it.  `handle` names it in
# pages and forms instead of its id; times are Unix times (None: unknown,
# e.g. an encrypted record); `detail` is what the sign-in recorded.
SessionInfo = namedtuple('SessionInfo', 'id handle line signed_in created accessed '
                                        'expires detail current')


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


def printable(text):
    """`text` without control characters (a terminal would obey them)."""
    if isinstance(text, str):
        text = text.decode('utf-8', 'replace')
    return u''.join(ch for ch in text if unicodedata.category(ch)[0] != 'C')


def clean_detail(detail, strict=True):
    """The detail of a sign-in as it is stored: at most MAX_DETAILS
    strings, names of at most 32 characters, values cut at MAX_DETAIL and
    without control characters.  With `strict`, anything else raises
    UnstorableValue; without, it is left out."""
    kept = {}
    for name, value in sorted((detail or {}).items()):
        if not isinstance(name, basestring) or not 0 < len(name) <= 32 \
                or name in ('id', 'line', 'at'):
            problem = 'detail name %r: a string of at most 32 characters, not id, line or at'
        elif value is not None and not isinstance(value, basestring):
            problem = 'detail %r is not a string'
        elif len(kept) == MAX_DETAILS:
            problem = 'detail %%r: a sign-in records at most %d details' % MAX_DETAILS
        else:
            problem = None
            if value is not None:
                kept[printable(name)] = printable(value)[:MAX_DETAIL]
        if problem and strict:
            raise records.UnstorableValue(problem % (name,))
    return kept


def _sign_in_of(session):
    """(user id, lineage, detail) of a signed-in session, or None: also
    when what the session holds is not what sign_in() stored."""
    user_id, sign = session.get(USER_KEY), session.get(SIGN_IN_KEY)
    if user_id is None or not isinstance(sign, dict):
        return None
    line = sign.get('line')
    if not isinstance(line, basestring) or not _NAME.match(line):
        return None
    try:
        escape_user_id(user_id)
    except ValueError:
        return None
    detail = sign.get('detail')
    return user_id, str(line), clean_detail(detail if isinstance(detail, dict) else {},
                                            strict=False)


# ------------------------------------------------------------ the index

def _parse_index(text):
    """({lineage: time marked}, [entries]) of one copy of an index."""
    revoked, entries = {}, []
    for line in (text or '').split('\n'):
        try:
            item = records.parse_json(line) if line else None
        except ValueError:
            continue                                  # a line that is not ours
        if not isinstance(item, dict):
            continue
        if set(item) == set(['revoked']) and isinstance(item['revoked'], dict):
            revoked.update((str(k), v) for k, v in item['revoked'].iteritems()
                           if records.is_time(v))
        elif all(isinstance(item.get(f), basestring) and _NAME.match(item[f])
                 for f in ('id', 'line')) and records.is_time(item.get('at')):
            item['id'], item['line'] = str(item['id']), str(item['line'])
            entries.append(item)
    return revoked, entries


class _Index(object):
    """One user's index: its key, and the lib/tcjson.lua calls that read
    and change it.  New entries go to the shard its key hashes to; reads
    and sign-outs reach every shard, so that adding or removing a shard
    never hides a session from a sign-out (README, "Several Tyrant
    servers")."""

    def __init__(self, store, escaped):
        self.key = store.prefix + 'user:' + escaped
        self.servers = store.servers
        owner = self.servers.for_key(self.key)
        self.owner = getattr(owner, 'pair', owner)

    def call(self, name, request, everywhere=False):
        """tcjson.lua's `name` on the index: a list of answers (one per
        shard, and per member of a pair: each member keeps its own copy)."""
        answers = []
        for shard in self.servers.shards() if everywhere else [self.owner]:
            if not isinstance(shard, DualMasterPair):
                answers.append(shard.ext(name, self.key, records.dumps(request)))
                continue
            text = records.dumps(dict(request, pair=shard.sids()))
            for member, (answer,) in shard.write_all([('ext', name, self.key, text)]):
                if is_no(answer):
                    raise tcjson.ExtRefused(member.url, name, self.key)
                answers.append(answer)
        return answers

    def read(self):
        """({lineage: time}, [entries]) of the index, every copy merged.
        A copy over INDEX_READ_BYTES is compacted in Tyrant first (index_trim):
        nothing here loads an index of any size."""
        texts, oversized = [], False
        for shard in self.servers.shards():
            if isinstance(shard, DualMasterPair):
                keys = [self.key + '@%d' % sid for sid in shard.sids()]
                copies = shard.each_member(
                    lambda member: records.read_bounded(member, keys, INDEX_READ_BYTES))
                found = [text for _, read in copies for text in read.itervalues()]
            else:
                found = records.read_bounded(shard, [self.key], INDEX_READ_BYTES).values()
            oversized = oversized or None in found
            texts.extend(text for text in found if text is not None)
        if oversized:
            self.call('index_trim', {'max': MAX_SESSIONS, 'keep': REVOKED_SECONDS},
                      everywhere=True)
            return self.read()
        return _merge_copies(texts)

    def is_revoked(self, line):
        """Whether the lineage `line` was signed out: one call per shard."""
        for shard in self.servers.shards():
            if isinstance(shard, DualMasterPair):
                request = records.dumps({'line': line, 'pair': shard.sids()})
                answers = [answer for _, (answer,) in shard.read(
                    [('ext', 'index_check', self.key, request)])]
            else:
                answers = [shard.ext('index_check', self.key, records.dumps({'line': line}))]
            if 'revoked' in answers:
                return True
        return False

    def add(self, session_id, line, detail, now):
        """(whether the lineage is signed out, ids of the sessions the bound
        signed out)."""
        entry = dict(detail, id=session_id, line=line, at=round(now, 3))
        answers = self.call('index_add', {'entry': entry, 'max': MAX_SESSIONS,
                                          'keep': REVOKED_SECONDS})
        results = [records.parse_json(answer) for answer in answers]
        return (any(result['revoked'] for result in results),
                sorted(set(str(id) for result in results for id in result['evicted'])))

    def drop(self, session_ids):
        self.call('index_drop', {'ids': sorted(session_ids), 'keep': REVOKED_SECONDS},
                  everywhere=True)

    def revoke(self, lines=(), all_but=None):
        """Mark lineages signed out: ({lineage: time} of every lineage
        marked, [entries]) as the index is then."""
        request = {'lines': sorted(lines), 'keep': REVOKED_SECONDS}
        if all_but is not None:
            request.update(all=True, but=all_but)
        return _merge_copies(self.call('index_revoke', request, everywhere=True))


def _merge_copies(texts):
    """({lineage: time}, [entries], oldest sign-in first) of the copies of
    one index (one per member of a pair)."""
    revoked, entries, seen = {}, [], set()
    for text in texts:
        if is_no(text):
            continue
        marks, found = _parse_index(text)
        revoked.update(marks)
        for entry in found:
            if entry['id'] not in seen:
                seen.add(entry['id'])
                entries.append(entry)
    entries.sort(key=lambda entry: entry['at'])
    return revoked, entries


class UserSessions(object):
    """The user indexes of one session store: its servers and prefix."""

    def __init__(self, servers, prefix, max_record):
        self.servers, self.prefix, self.max_record = servers, _bytes(prefix), max_record

    @classmethod
    def from_manager(cls, manager):
        return cls(manager.servers, manager.prefix, manager.max_session_size)

    @classmethod
    def of_session(cls, session):
        """The store a UserSession (or Beaker's or Pylons' proxy of one) uses."""
        if not isinstance(tcjson.real_session(session), UserSession):
            raise TypeError('sessions per user need SessionMiddleware(..., session_class='
                            'user_sessions.UserSession) (config/middleware.py)')
        return cls.from_manager(tcjson.session_manager(session))

    @classmethod
    def from_config(cls, url, prefix=tcjson.DEFAULT_PREFIX, **options):
        """From beaker.session.url, prefix and the other manager options."""
        return cls.from_manager(tcjson.TyrantNamespaceManager(
            'user', url=url, prefix=prefix, **options))

    def index(self, user_id):
        return _Index(self, escape_user_id(user_id))

    def record_key(self, session_id):
        """TyrantNamespaceManager's key schema for a session record."""
        return '%s%s:session' % (self.prefix, session_id)

    # -- reading
    def read_records(self, session_ids):
        """{session id: its record as a dict, or None if it exists but is no
        readable session}; ids without a record are left out.  Every shard
        is read: after a shard was added, a session's record may still sit
        where its id used to hash (the owner's copy wins)."""
        keys = dict((self.record_key(session_id), session_id) for session_id in session_ids)
        found = {}
        for index, shard in enumerate(self.servers.shards()):
            for key, record in records.read_on(shard, sorted(keys), self.max_record).items():
                session_id = keys[key]
                if session_id not in found or self.servers.shard_index(session_id) == index:
                    found[session_id] = record
        return found

    def _look(self, index, user_id, now):
        """(live SessionInfo list, ids of dead entries): one read of the
        index, one of the records."""
        entries = index.read()[1]
        found = self.read_records([entry['id'] for entry in entries])
        live, dead = [], set()
        for entry in entries:
            state = _judge(entry, found, user_id, now)
            if state == 'live':
                live.append(_info(entry, found[entry['id']]))
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

    # -- signing out
    def revoke(self, user_id, lines=None, all_but=None, now=None):
        """Sign the user out of the sessions of `lines` (lineages), or of all
        but the lineage `all_but`, or (neither given) of all: mark them,
        then delete their records.  Returns the SessionInfo of the sessions
        removed."""
        now = time.time() if now is None else now
        index = self.index(user_id)
        if lines is None and all_but is None:
            all_but = ''
        revoked, entries = index.revoke(lines or (), all_but)
        chosen = [entry for entry in entries if entry['line'] in revoked]
        found = self.read_records([entry['id'] for entry in chosen])
        removed = [_info(entry, found[entry['id']]) for entry in chosen
                   if _judge(entry, found, user_id, now) == 'live']
        self.delete_sessions([info.id for info in removed],
                             max([info.expires for info in removed] or [None]))
        if chosen:
            index.drop(entry['id'] for entry in chosen)
        return removed

    def delete_sessions(self, session_ids, expires=None):
        """Delete these session records as TyrantSession.delete() does, on
        every shard (on a pair, the tombstones live until `expires`, when
        the sessions would have expired anyway)."""
        keys = [self.record_key(session_id) for session_id in session_ids]
        if keys:
            for shard in self.servers.shards():
                records.delete_on(shard, keys, expires)

    # -- purge
    def prune_indexes(self, index_keys, now=None):
        """Drop the entries of sessions that are gone from these indexes
        (their keys as stored: on a pair, one per member) and forget old
        marks; an index left empty goes.  Returns the number of indexes
        looked at."""
        now = time.time() if now is None else now
        start = len(self.prefix + 'user:')
        escaped = set(key[start:].partition('@')[0] for key in index_keys)
        for name in escaped:
            index = _Index(self, name)
            user_id = urllib.unquote(name)
            dead = self._look(index, user_id, now)[1]
            index.drop(dead)
        return len(escaped)


def _judge(entry, found, user_id, now):
    """'live', 'dead', or 'young' (no record yet, within SIGN_IN_GRACE)."""
    if entry['id'] not in found:
        return 'young' if now - entry['at'] < SIGN_IN_GRACE else 'dead'
    record = found[entry['id']]
    if record is None:
        return 'live'                       # exists; nothing more can be known
    if records.is_time(record.get('_expires')) and record['_expires'] < now:
        return 'dead'                       # TyrantSession would start a new session
    if record.get('tcjson') == tcjson.OPAQUE:
        return 'live'                       # encrypted: the user id is inside
    owner = record.get(USER_KEY)
    return 'live' if owner is not None and _bytes(owner) == _bytes(user_id) else 'dead'


def _info(entry, record):
    record = record or {}

    def when(name):
        return record[name] if records.is_time(record.get(name)) else None
    detail = dict((k, v) for k, v in entry.iteritems() if k not in ('id', 'line', 'at'))
    return SessionInfo(entry['id'], session_handle(entry['id']), entry['line'], entry['at'],
                       when('_creation_time'), when('_accessed_time'), when('_expires'),
                       detail, False)


# ------------------------------------------------------------ the session

class UserSession(tcjson.TyrantSession):
    """TyrantSession that keeps a signed-in session in its user's index
    through Beaker's own ``regenerate_id()``, and lets no new id of a
    signed-out session live (module docstring, "Concurrency")."""

    def regenerate_id(self):
        """Beaker's regenerate_id(); a signed-in session's new id joins its
        user's index under its lineage, unless that lineage was signed out
        (then an empty session starts, as when the old record was gone)."""
        signed_in = _sign_in_of(self)
        if signed_in is None:
            for key in (USER_KEY, SIGN_IN_KEY):     # no usable sign-in: signed out
                self.pop(key, None)
        tcjson.TyrantSession.regenerate_id(self)
        if signed_in is None or USER_KEY not in self:
            return                                   # nobody, or the record was gone
        user_id, line, detail = signed_in
        store = UserSessions.from_manager(self.namespace)
        revoked, evicted = store.index(user_id).add(self.id, line, detail, time.time())
        if revoked:
            self.clear()
            self.was_invalidated = True
            self._start_new(time.time())
        elif evicted:
            store.delete_sessions(evicted)

    def created(self):
        """A record was just stored under a new id: if its lineage was
        signed out meanwhile, delete it again (nothing of it survives)."""
        signed_in = _sign_in_of(self)
        if signed_in is None:
            return
        user_id, line, _ = signed_in
        store = UserSessions.from_manager(self.namespace)
        if store.index(user_id).is_revoked(line):
            self.namespace.record().delete()
            self._ended = True


def signed_in_user(session):
    """The id of the user signed in to this session, or None."""
    return session.get(USER_KEY)


def sign_in(session, user_id, detail=None):
    """Sign `session` in as `user_id`: a new session id (against session
    fixation; the old record is deleted), a new lineage in the user's
    index, the user id and `detail` stored in the session.  `detail`: a few
    short, non-secret strings to show later, e.g. {'agent': user agent}.
    Bad input raises before anything changes."""
    store = UserSessions.of_session(session)
    escape_user_id(user_id)
    detail = clean_detail(detail)
    for key in (USER_KEY, SIGN_IN_KEY):             # nothing carries over to the new id
        session.pop(key, None)
    session.regenerate_id()
    line = uuid.uuid4().hex
    revoked, evicted = store.index(user_id).add(session.id, line, detail, time.time())
    session[USER_KEY] = user_id
    session[SIGN_IN_KEY] = {'line': line, 'detail': detail}
    session.save()
    if evicted:
        store.delete_sessions(evicted)


def list_sessions(session):
    """SessionInfo of every live session of this session's user (none if
    nobody is signed in), this one marked ``current``."""
    signed_in = _sign_in_of(session)
    if signed_in is None:
        return []
    return UserSessions.of_session(session).sessions(signed_in[0], current_id=session.id)


def sign_out_session(session, handle):
    """Sign the signed-in user out of the one session with this handle (see
    SessionInfo); this session itself is deleted as by logout.  Returns
    whether the user had such a session."""
    signed_in = _sign_in_of(session)
    if signed_in is None:
        return False
    if handle == session_handle(session.id):
        session.delete()
        return True
    store = UserSessions.of_session(session)
    for info in store.sessions(signed_in[0], current_id=session.id):
        if info.handle == handle:
            return bool(store.revoke(signed_in[0], lines=[info.line]))
    return False


def sign_out_others(session):
    """Sign the signed-in user out everywhere but here (this session's
    lineage); returns the SessionInfo of the sessions removed."""
    signed_in = _sign_in_of(session)
    if signed_in is None:
        return []
    return UserSessions.of_session(session).revoke(signed_in[0], all_but=signed_in[1])


def sign_out_everywhere(session):
    """Sign the signed-in user out of every session, this one included
    (deleted as by logout: the cookie expires too)."""
    signed_in = _sign_in_of(session)
    if signed_in is None:
        return []
    removed = UserSessions.of_session(session).revoke(signed_in[0])
    session.delete()
    return removed
