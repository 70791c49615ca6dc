"""Session records in Tokyo Tyrant: their JSON, and reading and changing
them where they live (one server, or a dual-master pair).

Between lib/tyrant.py and lib/servers.py (the servers) and lib/tcjson.py
(Beaker's session): what JSON a record may hold, how a record read from
Tyrant is checked before anything trusts it, and the three things a
session does to its record, each one command to Tyrant:

* ``load``: a ``get`` (on a pair: one ``mget`` on each member, at once);
* ``merge``: lib/tcjson.lua's ``merge``, which applies the request's
  changes to the record as it is now, under the record's lock in Tyrant;
* ``delete``: lib/tcjson.lua's ``delete``, under the same lock, so that a
  merge can never bring an ended session back.

On a pair each member writes only its own copy of a record ("slot",
``<key>@<sid>``), the names in it carrying versions, and a session that
ended leaves a tombstone (``<key>@ended``).  Replication applies puts
blindly in arrival order; with one writer per slot, no late or replayed
put can hide a newer one, and a reader that takes, name by name, the
newest version among the slots of both members sees every write either
member acknowledged (lib/tcjson.lua, "Pair slots").
"""
from __future__ import absolute_import

import string
import time

import simplejson as json

from .servers import PairRoute
from .tyrant import ExtRefused, TcjsonError, _bytes, is_no

MAX_SESSION_SIZE = 1024 * 1024   # bytes of JSON per session record, both ways
MAX_DEPTH = 32                   # nesting of arrays and objects in a record read
MAX_VALUES = 20000               # values, nested ones included, in a record read
TIME_FIELDS = ('_accessed_time', '_creation_time', '_expires')
VERSIONS = '_v'                  # a pair slot's versions (lib/tcjson.lua)
ENDED = '@ended'                 # suffix of a pair's tombstone


class UnstorableValue(TcjsonError, TypeError):
    """A value JSON cannot hold; nothing was written."""


class UnreadableRecord(TcjsonError, ValueError):
    """A session record this module will not use (written by something
    else, truncated, too big, too deep).  Raised on load and left untouched
    in the store: the application answers with an error and a fresh cookie
    (or, with invalidate_corrupt, a new session)."""

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


def dumps(value, name='value'):
    """JSON text of `value` (UTF-8 bytes); UnstorableValue naming the
    culprit if JSON cannot hold it.  Checking every item up front costs
    several times the encoding, so it runs only once the encoder refused."""
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


def _finite_float(text):
    number = float(text)
    if number - number != 0:                            # 1e999 parses as inf
        raise ValueError('the number %s is too large for a float' % text[:24])
    return number


# simplejson's C scanner refuses NaN and Infinity, and integers of more than
# a few thousand digits (whose conversion would hold the GIL for seconds).
# Only a float can still go wrong: 1e999 parses as inf.
DECODER = json.JSONDecoder(parse_float=_finite_float)

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


def _without_bom(raw):
    """`raw` without the byte order mark another writer may have put first."""
    return raw[3:] if raw[:3] == '\xef\xbb\xbf' else raw


def parse_json(raw, max_size=None):
    """JSON bytes read from Tyrant -> value.  ValueError says why they are
    refused: over `max_size` bytes, too deep, too many values, not UTF-8
    JSON, a float out of range."""
    if max_size is not None and len(raw) > max_size:
        raise ValueError('%d bytes, over max_session_size=%d' % (len(raw), max_size))
    _check_shape(raw)
    raw = _without_bom(raw)
    try:
        # Bytes, not text: simplejson parses them twice as fast, giving
        # ASCII strings as str and the others as unicode (bad UTF-8 is a
        # ValueError too).
        return DECODER.decode(raw)
    except RuntimeError:                     # the C parser's recursion guard
        raise ValueError('nested too deeply')


_REPARSER = json.JSONDecoder()


def reparse(raw):
    """A fresh copy of the value in bytes that parse_json accepted or dumps
    wrote: nothing left to check, so no float hook (a sixth faster)."""
    return _REPARSER.decode(_without_bom(raw))


def is_time(value):
    return isinstance(value, (int, long, float)) and not isinstance(value, bool) \
        and 0 <= value < 1e11


def parse_session_record(raw, max_size=None):
    """A session record's bytes -> dict; ValueError if they are no session:
    not a JSON object, or a Beaker time field that is not a Unix time."""
    record = parse_json(raw, max_size)
    if not isinstance(record, dict):
        raise ValueError('JSON %s, not an object' % type(record).__name__)
    for name in TIME_FIELDS:
        if name in record and not is_time(record[name]):
            raise ValueError('%s is %s, not a Unix time'
                             % (name, type(record[name]).__name__))
    return record


def same_json(old, new):
    """Is `new` what `old` (parsed from JSON) was?  Strings compare as text;
    otherwise the types must agree too, since True == 1 == 1.0."""
    if isinstance(old, basestring) and isinstance(new, basestring):
        return old == new
    return type(old) is type(new) and old == new


# ------------------------------------------------------------- pair slots

_GONE = object()


def merge_slots(slots, max_size=None):
    """The record a pair holds, from its slots [(sid, bytes)] (copies of
    one slot from both members included): name by name, the value of the
    highest version, ties going to the higher sid.  Returns (record,
    {name: version}).  ValueError for a slot that is no session record."""
    best = {}
    for sid, raw in slots:
        record = parse_session_record(raw, max_size)
        versions = record.pop(VERSIONS, {})
        if not isinstance(versions, dict) or not all(
                isinstance(v, (int, long)) and not isinstance(v, bool)
                for v in versions.itervalues()):
            raise ValueError('"%s" is not a map of versions' % VERSIONS)
        for name in set(record).union(versions):
            rank = (versions.get(name, 0), sid)
            if name not in best or rank > best[name][0]:
                best[name] = (rank, record.get(name, _GONE))
    record = dict((name, value) for name, (_, value) in best.iteritems() if value is not _GONE)
    return record, dict((name, rank[0]) for name, (rank, _) in best.iteritems())


# ------------------------------------------------------------- one record

def merge_request(changed, removed, limit, versions=None, sids=None, create=False):
    """The JSON of a lib/tcjson.lua merge: `changed` {name: JSON text of
    its value}, `removed` [names]; on a pair also the members' `sids` and
    each name's new version: above the one the caller read (`versions`),
    and at least this host's time in microseconds.  The request carries it,
    so a copy that reaches a server late (a stopped member) is as old as
    it was when it was sent, and loses to every write that came after."""
    parts = ['"set":{%s}' % ','.join('%s:%s' % (dumps(_text(name)), text)
                                     for name, text in changed.iteritems())]
    if removed:
        parts.append('"unset":%s' % dumps([_text(name) for name in removed]))
    parts.append('"limit":%d' % limit)
    if sids is not None:
        now = int(time.time() * 1e6)
        stamps = dict((_text(name), max(now, (versions or {}).get(name, 0) + 1))
                      for name in list(changed) + list(removed))
        parts.append('"pair":%s,"ver":%s' % (dumps(sids), dumps(stamps)))
        if create:
            parts.append('"create":true')
    return '{%s}' % ','.join(parts)


def _text(name):
    return name.decode('utf-8') if isinstance(name, str) else name


class Record(object):
    """One session record (its key) on the server or pair that holds it.

    Answers of merge: 'ok', 'missing' (no record: nothing written),
    'ended' (a pair's tombstone: nothing written), 'too large'."""

    def __init__(self, target, key, max_size):
        self.target, self.key, self.max_size = target, _bytes(key), max_size
        self.pair = target.pair if isinstance(target, PairRoute) else None

    def load(self):
        """(the record's bytes, {name: version} on a pair, else None), or
        (None, None) when there is no record.  ValueError for a pair slot
        that is no session record."""
        if self.pair is None:
            raw, = self.target.pipeline(('get', self.key))
            return (None if is_no(raw) else raw), None
        sids = self.pair.sids()
        keys = [self.key + '@%d' % sid for sid in sids] + [self.key + ENDED]
        answers = self.pair.read([('mget', keys)])
        if any(self.key + ENDED in found for _, (found,) in answers):
            self._clear_after_end(sids, answers)
            return None, None
        slots = [(sid, found[key]) for _, (found,) in answers
                 for sid, key in zip(sids, keys) if key in found]
        if not slots:
            return None, None
        record, versions = merge_slots(slots, self.max_size)
        return dumps(record, 'session'), versions

    def _clear_after_end(self, sids, answers):
        """An ended session whose copy arrived after its end (a member's
        writes replicated late): delete that copy too, so that both members
        hold the same again."""
        request = _pair_delete(self.pair, None)
        for member, (found,) in answers:
            if any(self.key + '@%d' % sid in found for sid in sids):
                member.pipeline(('ext', 'delete', self.key, request))

    def create(self, record, text):
        """Store a record under a new id (nobody else knows it yet): a put,
        or on a pair a merge that writes this member's slot."""
        if self.pair is None:
            self.target.request('put', self.key, text)
            return 'ok'
        changed = dict((name, dumps(value, name)) for name, value in record.iteritems())
        return self._pair_merge(merge_request(changed, [], self.max_size, {},
                                              self.pair.sids(), create=True))

    def merge(self, changed, removed, versions=None):
        """Apply `changed` ({name: JSON text}) and `removed` to the record
        as it is now, under its lock in Tyrant."""
        if self.pair is None:
            return self.target.ext('merge', self.key,
                                   merge_request(changed, removed, self.max_size))
        return self._pair_merge(merge_request(changed, removed, self.max_size, versions,
                                              self.pair.sids()))

    def _pair_merge(self, request):
        member, (answer,) = self.pair.write(self.target.key, [('ext', 'merge', self.key, request)])
        if is_no(answer):
            raise ExtRefused(member.url, 'merge', self.key)
        return answer

    def delete(self, expires=None):
        """End the session: delete the record under its lock (on a pair on
        both members, leaving a tombstone that lives until `expires`).
        Returns whether there was one."""
        if self.pair is None:
            return self.target.ext('delete', self.key, '{}') == 'deleted'
        answers = self.pair.write_all([('ext', 'delete', self.key,
                                        _pair_delete(self.pair, expires))])
        for member, (answer,) in answers:
            if is_no(answer):
                raise ExtRefused(member.url, 'delete', self.key)
        return any(answer == 'deleted' for _, (answer,) in answers)


def _pair_delete(pair, expires):
    """The request of a delete on a pair: every member's slot goes, a
    tombstone stays until `expires` (None: until purge --max-age)."""
    return '{"pair":%s%s}' % (dumps(pair.sids()), ',"expires":%.3f' % expires if expires else '')


# ------------------------------------------------------------- many records

READ_BYTES = 16 * 1024 * 1024   # bytes of records read per round trip, at most
PIPELINE = 500                  # records deleted per round trip, at most


def read_bounded(pool, keys, max_size):
    """{key: bytes} of `keys` on one server, at most READ_BYTES per round
    trip; a record over `max_size` bytes is not read but named, with None."""
    sizes = pool.pipeline(*[('vsiz', key) for key in keys])
    found, group, group_bytes = {}, [], 0
    for key, size in zip(keys, sizes):
        if is_no(size):
            continue                                    # no such record
        if size > max_size:
            found[key] = None
            continue
        if group and group_bytes + size > READ_BYTES:
            found.update(pool.pipeline(('mget', group))[0])
            group, group_bytes = [], 0
        group.append(key)
        group_bytes += size
    if group:
        found.update(pool.pipeline(('mget', group))[0])
    return found


def _read_pair(pair, keys, max_size):
    """{key: bytes of the merged record, or None} for a pair's records."""
    sids = pair.sids()
    slots = dict((key, [key + '@%d' % sid for sid in sids]) for key in keys)
    wanted = [name for key in keys for name in slots[key] + [key + ENDED]]
    copies = {}
    for _, read in pair.each_member(lambda member: read_bounded(member, wanted, max_size)):
        for name, raw in read.iteritems():
            copies.setdefault(name, []).append(raw)
    found = {}
    for key in keys:
        if key + ENDED in copies:
            continue
        held = [(sid, raw) for sid, name in zip(sids, slots[key])
                for raw in copies.get(name, ())]
        if not held:
            continue
        try:
            if any(raw is None for _, raw in held):
                raise ValueError('a slot is over the size limit')
            found[key] = dumps(merge_slots(held, max_size)[0], 'session')
        except ValueError:
            found[key] = None
    return found


def read_on(target, keys, max_size):
    """{key: record dict, or None if it exists but is no readable session}
    for the session records `keys` on one server or pair; missing ones are
    left out.  The sizes, then the records (a pair: each member's slots)."""
    read = (_read_pair(target, keys, max_size) if hasattr(target, 'members')
            else read_bounded(target, keys, max_size))
    found = {}
    for key, raw in read.iteritems():
        try:
            found[key] = None if raw is None else parse_session_record(raw, max_size)
        except ValueError:
            found[key] = None
    return found


def delete_on(target, keys, expires=None):
    """End these sessions on one server or pair as Record.delete() does,
    PIPELINE per round trip (a pair: on both members)."""
    for start in xrange(0, len(keys), PIPELINE):
        chunk = keys[start:start + PIPELINE]
        if hasattr(target, 'members'):
            request = _pair_delete(target, expires)
            target.write_all([('ext', 'delete', key, request) for key in chunk])
        else:
            target.pipeline(*[('ext', 'delete', key, '{}') for key in chunk])
