"""The servers one ``url`` names, and which of them to ask for a key.

``url = a1:1978|a2:1978;b1:1978|b2:1978``: shards separated by ";", each
one server or a dual-master pair joined by "|".  ``get_servers(url)``
gives the process's ``ServerSet``; its ``for_key(key)`` the server of a
key.  lib/tyrant.py talks to each server; this module only chooses.

Sharding.  Each shard owns RING_POINTS points on a 32-bit circle, taken
from md5 of its name (its servers, as parse_servers spells them); a key
belongs to the shard owning the first point at or after md5(key).  Every
client builds the same ring from the same url, whatever order or
spelling (localhost, upper case) it uses, and a new shard takes over only
the keys that land just before its own points: about 1/N of them.

Pairs.  Two ttservers that replicate from each other (-mhost/-mport) hold
the same records, about a millisecond apart.  What a pair stores is made
safe for that by lib/records.py (each member writes its own copy of a
record, names carry versions, readers take the newest); this module only
says which member to ask: ``DualMasterPair``.
"""
from __future__ import absolute_import

import bisect
import hashlib
import logging
import struct
import threading
import time

from .tyrant import (PROBE_INTERVAL, RESENDABLE, ExtensionMissing, TyrantPool,
                     TyrantUnavailable, _bytes, canonical_url, get_pool, is_no, parallel,
                     parse_servers, pool_options)

log = logging.getLogger(__name__)

RING_POINTS = 160           # points per shard on the hash ring
# A member back from a failure takes its keys' writes again only this long
# after this process found it back: by then every process, each with its
# own watcher, reads it again, so none reads only the partner while this
# one writes on it.
WRITE_HOLD = 2 * PROBE_INTERVAL


class HashRing(object):
    """Which of several named shards a key digest belongs to."""

    def __init__(self, names, points_per_shard=RING_POINTS):
        points = []
        for index, name in enumerate(names):
            for replica in xrange(points_per_shard // 4):
                digest = hashlib.md5('%s#%d' % (name, replica)).digest()
                points.extend((point, name, index)
                              for point in struct.unpack('>4I', digest))
        points.sort()                    # ties, if any, broken by name: same everywhere
        self._points = [point for point, _, _ in points]
        self._owners = [index for _, _, index in points]

    def shard_of(self, digest):
        """Index of the shard owning md5 `digest` (its first 4 bytes)."""
        position = bisect.bisect_left(self._points, struct.unpack_from('>I', digest)[0])
        return self._owners[position % len(self._owners)]


class PairUnavailable(TyrantUnavailable):
    """No member of a pair can serve: the only outage a pair shows."""

    def __init__(self, pair, failures):
        TyrantUnavailable.__init__(self, pair, 'no member can serve (%s)' % '; '.join(
            str(failure) for failure in failures))


class DualMasterPair(object):
    """Two servers replicating from each other; which one to ask.

    Writes of a key go to its preferred member (rendezvous hashing over the
    members' names: the same in every process, whatever order the url
    lists them in), or to the other while the preferred one is down.  Reads
    ask both at once (``read``) and take the newest (lib/records.py): what
    a read returns never depends on this process's idea of which member is
    up.  A member that fails is skipped until the watcher finds it
    answering; one that lost its database (its partner holds its identity
    record, it does not) is never used again until an operator acts
    (README, "Several Tyrant servers")."""

    def __init__(self, addresses, connect_timeout, io_timeout, pool_size):
        self.name = '|'.join(sorted(addresses))
        self.members = tuple(TyrantPool(address, connect_timeout, io_timeout, pool_size)
                             for address in sorted(addresses))
        for member in self.members:
            member.down_on_any_failure = True      # its partner serves meanwhile
            member.on_back.append(self._member_back)
        self.lost = {}                 # member url -> why it is never used
        self.notes = {}                # member url -> what an operator should know
        self._checked = False
        self._check_lock = threading.Lock()

    def preferred(self, key):
        """Index of the member that takes `key`'s writes while both are up."""
        scores = [hashlib.md5(member.url + '\0' + key).digest() for member in self.members]
        return scores.index(max(scores))

    def usable(self):
        return [member for member in self.members
                if member.down is None and member.url not in self.lost]

    # -- requests
    def read(self, commands):
        """`commands` (a function of the member, or a list) on every usable
        member at once: [(member, results)] of those that answered."""
        self.check()
        members = self.usable()
        jobs = [(member, commands(member) if callable(commands) else commands)
                for member in members]
        answered, failures = [], []
        for member, outcome in zip(members, parallel(jobs)):
            if isinstance(outcome, TyrantUnavailable):
                self._lost_member(member, outcome)
                failures.append(outcome)
            else:
                answered.append((member, outcome))
        if not answered:
            raise PairUnavailable(self.name, failures or self._why_none())
        return answered

    def write(self, key, commands):
        """`commands` on `key`'s preferred usable member, or on the other if
        that one fails: (member, results)."""
        return self.on_preferred(key, lambda member: (member, member.pipeline(*commands)),
                                 all(command[0] in RESENDABLE for command in commands))

    def on_preferred(self, key, call, resendable=True):
        """call(member) on `key`'s preferred usable member, then on the other
        if that one fails -- unless the request may have been applied and
        cannot be repeated (putcat...): its outcome is unknown, and the
        failure is raised."""
        self.check()
        order = list(self.members)
        if self.preferred(key):
            order.reverse()
        if time.time() - order[0].back_since < WRITE_HOLD:
            order.reverse()          # just back: every process reads it again first
        failures = []
        for member in order:
            if member.down is not None or member.url in self.lost:
                continue
            try:
                return call(member)
            except ExtensionMissing:
                raise
            except TyrantUnavailable as exc:
                self._lost_member(member, exc)
                if exc.sent and not resendable:
                    raise
                failures.append(exc)
        raise PairUnavailable(self.name, failures or self._why_none())

    def each_member(self, call):
        """call(member) on every usable member in turn, for work of several
        round trips: [(member, result)] of those that answered."""
        self.check()
        answered, failures = [], []
        for member in self.usable():
            try:
                answered.append((member, call(member)))
            except TyrantUnavailable as exc:
                self._lost_member(member, exc)
                failures.append(exc)
        if not answered:
            raise PairUnavailable(self.name, failures or self._why_none())
        return answered

    def write_all(self, commands):
        """`commands` on every usable member at once: [(member, results)]
        of those that answered (at least one, or PairUnavailable)."""
        return self.read(commands)

    def _lost_member(self, member, exc):
        if isinstance(exc, ExtensionMissing):
            raise exc
        member.mark_down(exc)

    def _why_none(self):
        return ['%s: %s' % (member.url, self.lost.get(member.url) or member.down)
                for member in self.members]

    # -- the members' identities
    def sids(self):
        """The -sid of every server that has served this pair (both
        members', also one that is down: lib/tcjson.lua's probe keeps the
        list, and replication carries it to both)."""
        self.check()
        found = set()
        for member in self.members:
            if member.identity:
                found.update(int(sid) for sid in member.identity['members'].split())
        return sorted(found)

    def check(self):
        """Once per process, before the first request: probe both members,
        give each an identity record if neither holds one for it, and stop
        using one whose partner holds its record while it does not (its
        database was lost)."""
        if self._checked:
            return
        with self._check_lock:
            if self._checked:
                return
            identities = {}
            for member in self.members:
                try:
                    identities[member.url] = member.probe()
                except ExtensionMissing:
                    raise
                except TyrantUnavailable as exc:
                    member.mark_down(exc)
            self._check_identities(identities)
            self._checked = True

    def _member_back(self, member):
        """The watcher found `member` answering again: check it as at first
        use before any request goes there."""
        identities = {}
        for each in self.members:
            if each is member or each.down is None:
                try:
                    identities[each.url] = each.probe()
                except TyrantUnavailable:
                    if each is member:
                        return False
        self._check_identities(identities)
        return member.url not in self.lost

    def _check_identities(self, identities):
        sids = [identity['sid'] for identity in identities.values()]
        if 0 in sids or len(set(sids)) != len(sids):
            raise TyrantUnavailable(self.name, 'the members of a pair each need their '
                                    'own -sid (and -ulog, -mhost, -mport), got %s' % sids)
        for member in self.members:
            own = identities.get(member.url)
            if own is None:
                continue
            if own['born']:
                self._check_replication(member)
            if len(identities) == 2 and not own['born']:
                self._check_born(member, own)

    def _check_born(self, member, own):
        """A member without its identity record: a new pair (both members
        lack it: give it one), or one that lost its database (its partner
        holds its record: never use it again until an operator acts)."""
        partner = self.members[1 - self.members.index(member)]
        held = partner.pipeline(('get', 'tcjson:member@%d' % own['sid']))[0]
        if is_no(held):
            own['born'] = int(member.ext('member_init', '', ''))
            return
        self.lost[member.url] = (
            'lost its database: its partner %s holds its identity record, it does '
            'not; rebuild it from its partner (README, "Several Tyrant servers")'
            % partner.url)
        log.error('Tokyo Tyrant %s of pair %s %s', member.url, self.name,
                  self.lost[member.url])

    def _check_replication(self, member):
        """Say so when a member does not follow its partner (stat has no rts
        line) or has just started over from the partner's whole update log
        (rts 0 although it has served: its .rts file was lost).  Reads take
        the newest of both members, so neither serves an old record; but
        an operator should know (paster tcjson-sessions shows notes)."""
        stat = dict(line.split('\t', 1) for line in
                    member.request('stat').splitlines() if '\t' in line)
        if 'rts' not in stat:
            note = 'does not replicate from its partner (no -mhost/-mport)'
        elif stat['rts'].strip() in ('0', ''):
            note = ('replays its partner\'s whole update log: its .rts file was lost '
                    '(records converge once it has caught up)')
        else:
            self.notes.pop(member.url, None)
            return
        if self.notes.get(member.url) != note:
            self.notes[member.url] = note
            log.warning('Tokyo Tyrant %s of pair %s %s', member.url, self.name, note)

    def close(self):
        for member in self.members:
            member.close()


class PairRoute(object):
    """A pair as one key sees it: what ServerSet.for_key() returns.  Its
    request() and pipeline() (for caches: session records go through
    lib/records.py) run on the key's preferred member, or the other."""

    __slots__ = ('pair', 'key', 'url')

    def __init__(self, pair, key):
        self.pair, self.key, self.url = pair, key, pair.name

    def request(self, command, *args):
        return self.pair.on_preferred(self.key, lambda member: member.request(command, *args),
                                      command in RESENDABLE)

    def pipeline(self, *commands):
        return self.pair.write(self.key, commands)[1]


class ServerSet(object):
    """The servers named by one ``url`` option, and which of them holds a key.

    ``for_key(key)`` gives the TyrantPool of a single server, or a
    PairRoute; ``shards()`` the TyrantPool or DualMasterPair of each
    shard, for work that visits every record once (purge); ``servers()``
    every server, for the health check."""

    def __init__(self, url, shards):
        self.url = url
        self.shard_list = shards
        self._ring = HashRing([_shard_name(shard) for shard in shards]) \
            if len(shards) > 1 else None

    def for_key(self, key):
        shard = self.shard_list[self.shard_index(key)]
        return PairRoute(shard, key) if isinstance(shard, DualMasterPair) else shard

    def shard_index(self, key):
        """Which shard holds `key` (0 with one shard)."""
        if self._ring is None:
            return 0
        return self._ring.shard_of(hashlib.md5(_bytes(key)).digest())

    def shards(self):
        return list(self.shard_list)

    def servers(self):
        return [member for shard in self.shard_list
                for member in (shard.members if isinstance(shard, DualMasterPair) else [shard])]


def _shard_name(shard):
    return shard.name if isinstance(shard, DualMasterPair) else shard.url


_server_sets = {}
_server_sets_lock = threading.Lock()


def get_servers(url, connect_timeout=None, io_timeout=None, pool_size=None):
    """The process's ServerSet for `url` (created on first use; no I/O).
    A bad url or option raises ConfigError (at startup: Beaker constructs
    a manager for its first request)."""
    key = (url or '').strip()
    servers = _server_sets.get(key)
    if servers is None:
        servers = _build_servers(url, pool_options(connect_timeout, io_timeout, pool_size))
        with _server_sets_lock:
            servers = _server_sets.setdefault(key, servers)
    return servers


def _build_servers(url, options):
    shards = parse_servers(url)
    return ServerSet(canonical_url(shards),
                     [DualMasterPair(shard, **options) if len(shard) == 2
                      else get_pool(shard[0], **options) for shard in shards])
