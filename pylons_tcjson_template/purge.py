"""Tokyo Tyrant never expires records: purge deletes what has run out, and
counts what is stored.

``purge_expired()`` (``paster tcjson-purge development.ini``) visits every
record under the sessions' prefix once, on every shard, and deletes:

* session records whose ``_expires`` has passed (those TyrantSession would
  refuse), through lib/tcjson.lua's ``delete`` under the record lock: a
  request that saves the session at that moment either comes first (and
  the record is no longer expired) or finds nothing and writes nothing;
* with ``max_age``, session records without ``_expires`` (no timeout set)
  whose ``_accessed_time`` (their last write) is older than that;
* a pair's tombstones whose ``_expires`` has passed;
* cache values Beaker would consider stale;
* with ``unreadable_age``, session records no reader accepts (written by
  something else, corrupt: the 400 page's log names them), once the
  ``_accessed_time`` they carry is older than that, or at once if they
  carry none;

and drops, from the users' indexes (lib/user_sessions.py), the entries of
sessions that are gone.  It sits above lib/tcjson.py and
lib/user_sessions.py, the one module that knows both.

``store_stats()`` (``paster tcjson-sessions development.ini``) counts what
the same walk finds.

Both walk Tyrant's one iterator per server, so they take turns: while one
runs, the record ``tcjson:purge`` on that server says so (with its
expiry), and a second one raises PurgeBusy.
"""
from __future__ import absolute_import

import os
import re
import socket
import time
import uuid

from . import records, tcjson, user_sessions
from .servers import DualMasterPair, get_servers
from .tyrant import TcjsonError, TyrantUnavailable, _bytes, is_no

PURGE_KEY = 'tcjson:purge'        # one per server: Tyrant has one iterator
PURGE_SECONDS = 120.0             # the marker's lifetime, renewed after every batch
# The time a record that is no JSON may still carry.
_ACCESSED = re.compile(r'"_accessed_time"\s*:\s*([0-9]{1,11}(?:\.[0-9]+)?)')


class PurgeBusy(TcjsonError):
    """Another purge (or count) is walking the same server."""


class _Walking(object):
    """Says, on one server, that a walk of its iterator is under way."""

    def __init__(self, pool):
        self.pool = pool
        self.owner = '%s/%d/%s' % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12])

    def _value(self):
        return records.dumps({'tcjson': 'purge', 'owner': self.owner,
                              '_expires': round(time.time() + PURGE_SECONDS, 3)})

    def __enter__(self):
        for _ in range(2):
            taken, held = self.pool.pipeline(('putkeep', PURGE_KEY, self._value()),
                                             ('get', PURGE_KEY))
            if not is_no(taken):
                return self
            try:
                expires = records.parse_json(held).get('_expires')
            except (ValueError, AttributeError, TypeError):
                expires = None                         # not ours to keep: take it over
            if records.is_time(expires) and expires >= time.time():
                break
            self.pool.pipeline(('out', PURGE_KEY))     # its walker died
        raise PurgeBusy('another purge is running on %s (the record %r says so until '
                        '%d s after its last batch); run one at a time'
                        % (self.pool.url, PURGE_KEY, PURGE_SECONDS))

    def renew(self):
        self.pool.pipeline(('put', PURGE_KEY, self._value()))

    def __exit__(self, *exc_info):
        try:
            self.pool.pipeline(('out', PURGE_KEY))
        except TyrantUnavailable:
            pass


def _walked(shard):
    """The server whose iterator visits a shard: itself, or a usable member
    of a pair (both hold every record)."""
    if isinstance(shard, DualMasterPair):
        shard.check()
        usable = shard.usable()
        if not usable:
            raise TyrantUnavailable(shard.name, 'no member can serve')
        return usable[0]
    return shard


def _key_batches(pool, prefix, batch_size):
    """Yield the keys under `prefix` in lists of <= batch_size.  A hash
    database's fwmkeys scans every record per call; the iterator is one
    pass, survives deletes, and keeps memory at O(batch_size)."""
    pool.request('iterinit')
    while True:
        keys = pool.request('next_keys', batch_size)
        batch = [key for key in keys if key.startswith(prefix)]
        if batch:
            yield batch
        if len(keys) < batch_size:
            return


def walk(url, prefix, batch_size, visit, **pool_options):
    """visit(shard, pool, keys) for every batch of keys under `prefix`, on
    every shard of `url` once, one walk per server at a time."""
    for shard in get_servers(url, **pool_options).shards():
        pool = _walked(shard)
        with _Walking(pool) as walking:
            for keys in _key_batches(pool, _bytes(prefix), int(batch_size)):
                visit(shard, pool, keys)
                walking.renew()


# ----------------------------------------------------------------- kinds

def kind_of(prefix, key):
    """What a key under `prefix` holds: 'session', 'slot' (a pair's copy of
    one), 'ended' (a pair's tombstone), 'index' (a user's), 'cache'."""
    if key.startswith(prefix + 'user:'):
        return 'index'
    if key.endswith(':session'):
        return 'session'
    base, at, suffix = key.rpartition('@')
    if at and base.endswith(':session'):
        return 'ended' if suffix == 'ended' else 'slot' if suffix.isdigit() else 'cache'
    return 'cache'


def _stale_cache(raw, now):
    """A cache value ``[storedtime, expiretime, value]`` Beaker would not
    use any more; anything else is not ours to judge."""
    try:
        value = records.parse_json(raw)
    except ValueError:
        return False
    return isinstance(value, list) and len(value) == 3 and records.is_time(value[0]) \
        and isinstance(value[1], (int, long, float)) and not isinstance(value[1], bool) \
        and value[1] > 0 and value[0] + value[1] <= now


def _unreadable_and_old(raw, max_size, before):
    """Is this session record one no reader accepts, and old enough?"""
    try:
        records.parse_session_record(raw, max_size)
        return False
    except ValueError:
        accessed = _ACCESSED.search(raw[:max_size])
        return accessed is None or float(accessed.group(1)) < before


# ----------------------------------------------------------------- purge

def purge_expired(url, prefix=tcjson.DEFAULT_PREFIX, batch_size=500, progress=None,
                  max_age=None, unreadable_age=None, now=None,
                  max_size=records.MAX_SESSION_SIZE, **pool_options):
    """Delete what has run out (module docstring) on every shard of `url`
    once; safe while the application serves.  Returns the totals
    ``{'scanned', 'deleted', 'unreadable', 'batches'}``, also passed to
    `progress` after each batch.  Raises PurgeBusy if another purge walks
    one of the servers."""
    now = time.time() if now is None else now
    condition = {'before': now, 'limit': max_size}
    if max_age:
        condition['idle'] = now - float(max_age)
    totals = {'scanned': 0, 'deleted': 0, 'unreadable': 0, 'batches': 0}
    users = user_sessions.UserSessions.from_config(url, prefix, max_session_size=max_size,
                                                   **pool_options)

    def visit(shard, pool, keys):
        kinds = {}
        for key in keys:
            kinds.setdefault(kind_of(prefix, key), []).append(key)
        totals['deleted'] += _purge_sessions(shard, pool, kinds, condition, totals,
                                             unreadable_age, now, max_size)
        totals['deleted'] += _purge_caches(pool, kinds.get('cache', []), now)
        if kinds.get('index'):
            users.prune_indexes(kinds['index'], now)
        totals['scanned'] += len(keys)
        totals['batches'] += 1
        if progress is not None:
            progress(dict(totals))
    walk(url, prefix, batch_size, visit, **pool_options)
    return totals


def _purge_sessions(shard, pool, kinds, condition, totals, unreadable_age, now, max_size):
    """Conditional deletes of this batch's session records (one pipeline):
    lib/tcjson.lua judges each under its lock.  Returns how many went."""
    pair = isinstance(shard, DualMasterPair)
    if pair:
        sids = shard.sids()
        bases = set(key.rpartition('@')[0] for key in kinds.get('slot', []))
        request = records.dumps(dict(condition, pair=sids))
        commands = [('ext', 'delete', base, request) for base in sorted(bases)]
    else:
        request = records.dumps(condition)
        commands = [('ext', 'delete', key, request) for key in kinds.get('session', [])]
    tombstones = kinds.get('ended', [])
    deleted = 0
    for start in xrange(0, len(commands), records.PIPELINE):
        chunk = commands[start:start + records.PIPELINE]
        answers = pool.pipeline(*chunk)
        deleted += sum(1 for answer in answers if answer == 'deleted')
        refused = [command[2] for command, answer in zip(chunk, answers) if is_no(answer)]
        deleted += _purge_unreadable(pool, refused, pair and sids, unreadable_age,
                                     now, max_size, totals)
    if tombstones:
        found = records.read_bounded(pool, tombstones, max_size)
        gone = [key for key, raw in found.iteritems()
                if raw is not None and _expired_tombstone(raw, condition)]
        if gone:
            pool.pipeline(*[('out', key) for key in gone])
        deleted += len(gone)
    return deleted


def _expired_tombstone(raw, condition):
    """A tombstone goes when its ``_expires`` has passed (every copy of the
    session has expired by then), or, without one, after max_age."""
    try:
        tombstone = records.parse_json(raw)
        expires, ended = tombstone.get('_expires'), tombstone.get('_accessed_time')
    except (ValueError, AttributeError):
        return False
    if records.is_time(expires):
        return expires < condition['before']
    return 'idle' in condition and records.is_time(ended) and ended < condition['idle']


def _purge_unreadable(pool, keys, sids, unreadable_age, now, max_size, totals):
    """Session records tcjson.lua refused to judge: counted, and deleted
    once old enough when `unreadable_age` is given.  Returns how many went."""
    totals['unreadable'] += len(keys)
    if not keys or unreadable_age is None:
        return 0
    names = [key + '@%d' % sid for key in keys for sid in sids] if sids else keys
    # A record far over the size limit is no session of ours, whatever it says.
    found = records.read_bounded(pool, names, max_size * 4)
    doomed = [name for name, raw in found.iteritems()
              if raw is None or _unreadable_and_old(raw, max_size, now - unreadable_age)]
    if doomed:
        pool.pipeline(*[('out', name) for name in doomed])
    return len(doomed)


def _purge_caches(pool, keys, now):
    """Delete this batch's stale cache values (read again just before: a
    value rewritten meanwhile stays).  Returns how many went."""
    if not keys:
        return 0
    found = records.read_bounded(pool, keys, records.READ_BYTES)
    stale = dict((key, raw) for key, raw in found.iteritems()
                 if raw is not None and _stale_cache(raw, now))
    if not stale:
        return 0
    again = records.read_bounded(pool, list(stale), records.READ_BYTES)
    gone = [key for key, raw in again.iteritems() if raw == stale[key]]
    if gone:
        pool.pipeline(*[('out', key) for key in gone])
    return len(gone)


# ----------------------------------------------------------------- counts

def store_stats(url, prefix=tcjson.DEFAULT_PREFIX, batch_size=500, progress=None,
                max_size=records.MAX_SESSION_SIZE, now=None, **pool_options):
    """Counts of what is stored under `prefix`, walking every server as
    purge does.  Returns a dict, also passed to `progress` after each
    batch: records, bytes, sessions (live ones: readable, not expired,
    not ended), signed_in (live sessions that name a user), expired (left
    for purge), unreadable, session_bytes, oldest and newest
    (_creation_time of live sessions), users (indexes), index_bytes,
    ended (a pair's tombstones), other (cache values, foreign records)."""
    now = time.time() if now is None else now
    names = ('records', 'bytes', 'sessions', 'signed_in', 'expired', 'unreadable',
             'session_bytes', 'users', 'index_bytes', 'ended', 'other', 'batches')
    totals = dict.fromkeys(names, 0)
    totals.update(oldest=None, newest=None)

    def visit(shard, pool, keys):
        sizes = dict((key, size) for key, size in
                     zip(keys, pool.pipeline(*[('vsiz', key) for key in keys]))
                     if not is_no(size))
        totals['records'] += len(sizes)
        totals['bytes'] += sum(sizes.itervalues())
        kinds = {}
        for key in sizes:
            kinds.setdefault(kind_of(prefix, key), []).append(key)
        bases = set(kinds.get('session', []))
        bases.update(key.rpartition('@')[0] for key in kinds.get('slot', []))
        totals['session_bytes'] += sum(sizes[key] for key in kinds.get('session', []) +
                                       kinds.get('slot', []))
        found = records.read_on(shard, sorted(bases), max_size)
        for base in bases:
            _count_session(found.get(base, ()), now, totals)
        totals['users'] += len(set(key.rpartition('@')[0] if '@' in key else key
                                   for key in kinds.get('index', [])))
        totals['index_bytes'] += sum(sizes[key] for key in kinds.get('index', []))
        totals['ended'] += len(kinds.get('ended', []))
        totals['other'] += len(kinds.get('cache', []))
        totals['batches'] += 1
        if progress is not None:
            progress(dict(totals))
    walk(url, prefix, batch_size, visit, **pool_options)
    return totals


def _count_session(record, now, totals):
    if record == ():
        return                                  # ended, or gone meanwhile
    if record is None:
        totals['unreadable'] += 1
        return
    if records.is_time(record.get('_expires')) and record['_expires'] < now:
        totals['expired'] += 1
        return
    totals['sessions'] += 1
    totals['signed_in'] += user_sessions.USER_KEY in record
    created = record.get('_creation_time')
    if records.is_time(created):
        totals['oldest'] = min(totals['oldest'] or created, created)
        totals['newest'] = max(totals['newest'], created)
