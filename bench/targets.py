# -*- coding: utf-8 -*-
"""The session bench's targets, judged on one run's results.

Every target compares rows measured side by side in the same run: part 1
rows take turns round by round, so each target also lists its ratio round
by round.  A target is 'met', 'MISSED' or 'not measured'; a missed one
says by how much, and what the request's own parts cost (the floors and
table 1b); '(info)' lines give the figures that explain a target.  The
part-1 targets are judged for ext:tcjson on tcjson-tyrant and, where the
run had one, on ttserver.
"""
from __future__ import division

import diagnose_tcjson
import fullstack

# Part-1 row names.
TCJSON = 'tcjson'
TCJSON_TT = 'tcjson (ttserver)'
BASELINE = 'tcjson 2009'
MEMCACHED = 'ext:memcached'
REDIS = 'ext:redis'
MEMORY = 'memory'
MEMORY_JSON = 'memory + JSONSerializer'
FILE = 'file'
SIZES = ('small', 'large')

# The part-1 rows judged, and their Tyrant server.
JUDGED = ((TCJSON, 'tcjson-tyrant'), (TCJSON_TT, 'ttserver'))

# What TyrantSession's docstring promises for a request: (commands, round
# trips), counted by the servers and by this process.
PROMISED_TRAFFIC = {'read': (1, 1), 'write': (2, 2)}

# The limits: tcjson's overhead over memory <= factor x memcached's.
OVERHEAD_LIMITS = (('write', 1.0, 'write request'),
                   ('read', 0.6, 'read-only request'),
                   ('mix', 0.65, '9 reads : 1 write'))
FULLSTACK_RATIO = 0.75        # tcjson req/s >= this x memory's, a write per request


def find(rows, backend, size, kind):
    for row in rows:
        if (row['backend'], row['size'], row['kind']) == (backend, size, kind):
            return row
    return None


def round_ratios(per_round, size, kind, ref, ours=TCJSON):
    """`ours`'s overhead / ref's overhead, round by round (same round =
    same machine conditions), as a sorted list."""
    ratios = []
    for (row_size, row_kind, _), medians in sorted(per_round.items()):
        if (row_size, row_kind) != (size, kind) or not all(
                name in medians for name in (ours, ref, MEMORY)):
            continue
        ref_over = medians[ref] - medians[MEMORY]
        if ref_over > 0:
            ratios.append((medians[ours] - medians[MEMORY]) / ref_over)
    return sorted(ratios)


def floor_us(floors, size, kind, server='tcjson-tyrant'):
    """Median µs of the commands a TyrantSession request of `kind` sends,
    on a bare socket to `server` (inproc.session_floor), or None.  A mix:
    9 reads and a write, per request."""
    for row in floors or []:
        if row['size'] == size and row['server'] == server:
            if kind == 'mix':
                return (9 * row['read_us'] + row['write_us']) / 10
            return row['%s_us' % kind]
    return None


def _status(verdicts):
    if not verdicts or None in verdicts:
        return 'not measured'
    return 'met' if all(verdicts) else 'MISSED'


def _judged_rows(part1):
    """(row name, server) of the judged rows part 1 measured."""
    return [(name, server) for name, server in JUDGED
            if any(row['backend'] == name for row in part1['rows'])]


def overhead_target(part1, kind, factor, what, ours=TCJSON, server='tcjson-tyrant',
                    diagnosis=None, ref=MEMCACHED):
    """`ours`'s overhead over memory <= factor x ref's, for both sizes; a
    miss says by how much and what the request's own parts cost."""
    details, verdicts = [], []
    for size in SIZES:
        mine, other = (find(part1['rows'], ours, size, kind),
                       find(part1['rows'], ref, size, kind))
        if not mine or not other:
            details.append('%s: not measured' % size)
            verdicts.append(None)
            continue
        limit = factor * other['overhead_us']
        verdicts.append(mine['overhead_us'] <= limit)
        ratio = (mine['overhead_us'] / other['overhead_us'] if other['overhead_us'] > 0
                 else float('inf'))
        ratios = round_ratios(part1.get('per_round', {}), size, kind, ref, ours)
        details.append('%s: %.0f us vs limit %.2f x %.0f = %.0f us (ratio %.2f; per round %s)'
                       % (size, mine['overhead_us'], factor, other['overhead_us'], limit,
                          ratio, ' '.join('%.2f' % r for r in ratios) or '-'))
        if not verdicts[-1]:
            details[-1] += ' -- missed by %.0f us%s' % (
                mine['overhead_us'] - limit, _limits(part1, diagnosis, kind, size, server))
    return ("%s: %s overhead over memory <= %s x %s's" % (what, ours, factor, ref),
            _status(verdicts), '; '.join(details))


def _limits(part1, diagnosis, kind, size, server):
    """What a request of `kind` spends on its own parts (the floors and
    table 1b), for a target line that was missed."""
    parts = []
    floor = floor_us(part1.get('floors'), size, kind, server)
    if floor is not None:
        parts.append('its commands alone on a bare socket %.0f us' % floor)
    parse = diagnose_tcjson.step(diagnosis, server, size, 'load: parse_session_record')
    if parse is not None:
        parts.append('the parse of the record at load %.0f us' % parse)
    if kind != 'read':
        compare = diagnose_tcjson.step(diagnosis, server, size, 'save: _changes')
        inside = diagnose_tcjson.merge_inside_us(diagnosis, server, size)
        if compare is not None:
            parts.append('the comparison with the record as loaded %.0f us' % compare)
        if inside is not None:
            parts.append('the merge inside %s %.0f us more than a get' % (server, inside))
    if not parts:
        return ''
    return ' (a %s request: %s)' % ('9:1' if kind == 'mix' else kind, ', '.join(parts)) + (
        '; a write is 1 request in 10' if kind == 'mix' else '')


def _traffic(row):
    return '%.2f commands / %.2f round trips' % (row['cmds_per_req'],
                                                 row['round_trips_per_req'])


def traffic_target(part1, ours=TCJSON):
    """TyrantSession's promised commands and round trips, counted."""
    details, verdicts = [], []
    for kind, (commands, trips) in sorted(PROMISED_TRAFFIC.items()):
        for size in SIZES:
            row = find(part1['rows'], ours, size, kind)
            if row is None:
                verdicts.append(None)
                details.append('%s %s: not measured' % (kind, size))
                continue
            verdicts.append(abs(row['cmds_per_req'] - commands) < 0.005
                            and abs(row['round_trips_per_req'] - trips) < 0.005)
            details.append('%s %s: %s' % (kind, size, _traffic(row)))
    peers = []
    for name in (MEMCACHED, REDIS):
        rows = [(kind, find(part1['rows'], name, 'small', kind)) for kind in ('read', 'write')]
        if all(row for _, row in rows):
            peers.append('%s: %s' % (name, ', '.join('%s %s' % (kind, _traffic(row))
                                                     for kind, row in rows)))
    if peers:
        details.append('for comparison (small) ' + '; '.join(peers))
    return ('%s: a read-only request 1 command in 1 round trip, a write 2 commands in 2 '
            'round trips (counted by the servers and by this process)' % ours,
            _status(verdicts), '; '.join(details))


def write_info(diagnosis, server='tcjson-tyrant'):
    """Where a write request's time goes on `server` (table 1b's steps)."""
    details = []
    for size in SIZES:
        def step(prefix):
            return diagnose_tcjson.step(diagnosis, server, size, prefix)
        figures = [step(prefix) for prefix in (
            'load: the session with the id', 'save: session.save() in all',
            'server: ext merge on a bare', 'server: get on a bare',
            'server CPU: per ext merge', 'server CPU: per get')]
        if None in figures:
            continue
        details.append('%s: the load %.0f us (get round trip and parse), the save %.0f us '
                       '(comparison, encoding, merge round trip); on a bare socket the merge '
                       '%.0f us against a get %.0f us; server CPU per merge %.0f us, per get '
                       '%.0f us' % tuple([size] + figures))
    if not details:
        return None
    return ('(info) write request on %s: where the time goes (table 1b)' % server, 'info',
            '; '.join(details))


def lua_merge_info(part1):
    """What tcjson.lua's merge costs in Lua itself (lua5.1, no server)."""
    found = part1.get('lua_merge')
    if not found:
        return None
    return ("(info) tcjson.lua's merge under lua5.1, outside any server", 'info', '; '.join(
        '%s: %s' % (size, ', '.join('%s %.0f us' % part for part in rows))
        for size, _, rows in found) + ' -- the scan of the stored record walks every '
        'nested value')


def floors_info(part1):
    floors = part1.get('floors')
    if not floors:
        return None
    return ('(info) the round trips alone', 'info', '; '.join(
        '%s %s: read %.0f us, write %.0f us' % (row['server'], row['size'],
                                              row['read_us'], row['write_us'])
        for row in floors) + ' -- the same commands sent on a bare socket to the same Tyrant '
        "server (read: get; write: get, then tcjson.lua's merge): the least any client adds")


def _write_rows(part1, other):
    """(size, tcjson's write row, `other`'s) for each size both measured."""
    for size in SIZES:
        ours, theirs = (find(part1['rows'], TCJSON, size, 'write'),
                        find(part1['rows'], other, size, 'write'))
        if ours and theirs:
            yield size, ours, theirs


def baseline_info(part1):
    """The 2009 backend's write next to tcjson's (information only)."""
    details = ['%s: %.0f us vs %.0f us' % (size, ours['overhead_us'], old['overhead_us'])
               for size, ours, old in _write_rows(part1, BASELINE)]
    if not details:
        return None
    return ("(info) write request: tcjson overhead over memory next to the 2009 backend's",
            'info', '; '.join(details))


def serializer_info(part1):
    """tcjson's write next to memory's with Beaker encoding JSON."""
    details = ['%s: %.0f us' % (size, ours['median_us'] - mem_json['median_us'])
               for size, ours, mem_json in _write_rows(part1, MEMORY_JSON)]
    if not details:
        return None
    return ('(info) write request: tcjson overhead over memory + JSONSerializer', 'info',
            '; '.join(details) + ' -- JSON encoding cost taken out (Beaker encodes the '
            'session for memory too when given a serializer)')


def _row(rows, label, conns):
    for row in rows:
        if row['label'] == label and row['connections'] == conns:
            return row
    return None


def fullstack_target(part2, floors, server='', tyrant='tcjson-tyrant'):
    """The generated app's visit rows (small and large session) under
    development.ini's server (paster serve), or with `server`
    fullstack.WAITRESS production.ini's (small only); `tyrant`: the
    server the ext:tcjson rows ran on."""
    rows = part2['rows']
    suffix = '' if tyrant == 'tcjson-tyrant' else fullstack.on_server(tyrant)
    paths = (fullstack.VISIT_PATH,) if server else (fullstack.VISIT_PATH, fullstack.LARGE_PATH)
    verdicts, details = [], []
    for path in paths:
        size = fullstack.PATH_SIZES[path]
        label = server + 'generated app %s, ' % path
        for conns in sorted(set(r['connections'] for r in rows)):
            ours, mem = (_row(rows, label + 'ext:tcjson' + suffix, conns),
                         _row(rows, label + 'memory', conns))
            if not (ours and mem):
                continue
            verdict, detail = _fullstack_ratio(ours, mem, size, conns, floors, tyrant)
            verdicts.append(verdict)
            details.append(detail)
    if not server and not suffix:
        details += many_sessions_info(rows)
    where = (' under waitress' if server else '') + (', on ' + tyrant if suffix else '')
    return ('full stack (generated app%s, a write per request): tcjson req/s >= %s x memory'
            % (where, FULLSTACK_RATIO), _status(verdicts),
            '; '.join(details) or '; '.join(part2['notes']))


def _fullstack_ratio(ours, mem, size, conns, floors, tyrant):
    """(met, detail) of one size and connection count."""
    if ours['empty_runs'] or mem['empty_runs']:
        return None, '%s c=%d: wrk got no response in %d runs' % (
            size, conns, ours['empty_runs'] + mem['empty_runs'])
    ratio = ours['rps'] / mem['rps']
    detail = '%s c=%d: %.0f vs %.0f req/s = %.3f' % (size, conns, ours['rps'], mem['rps'],
                                                     ratio)
    rounds = [a / b for a, b in zip(ours.get('round_rps', []), mem.get('round_rps', [])) if b]
    if len(rounds) > 1:
        detail += ' (per run %s)' % ' '.join('%.2f' % r for r in sorted(rounds))
    if ratio < FULLSTACK_RATIO:
        detail += ' -- missed by %.3f' % (FULLSTACK_RATIO - ratio)
        if ours.get('app_cpu_us') and mem.get('app_cpu_us'):
            detail += '; app CPU %.0f vs %.0f us/req' % (ours['app_cpu_us'], mem['app_cpu_us'])
        if ours.get('tyrant_cpu_us'):
            detail += ', %s CPU %.0f us/req' % (tyrant, ours['tyrant_cpu_us'])
    floor = floor_us(floors, size, 'write', tyrant)
    if conns == 1 and floor is not None:
        # One connection waits out every round trip: at best, a request
        # takes memory's time plus the write's bare round trips (timed in
        # part 1, minutes apart: an estimate, not a limit).
        best = 1.0 / (1.0 + floor * 1e-6 * mem['rps'])
        detail += (' (about %.2f expected at best: memory plus the bare get and merge of '
                   'a write, %.0f us)' % (best, floor))
    return ratio >= FULLSTACK_RATIO, detail


def servers_info(part2):
    """waitress (production.ini's server) next to paster serve
    (development.ini's): req/s of the same rows, and the app's CPU."""
    rows = dict(((r['label'], r['connections']), r) for r in part2['rows'])
    details = []
    for session_type in ('ext:tcjson', 'memory'):
        label = 'generated app %s, %s' % (fullstack.VISIT_PATH, session_type)
        for conns in sorted(set(c for l, c in rows if l == label)):
            paste, waitress = rows.get((label, conns)), rows.get((fullstack.WAITRESS + label, conns))
            if not (paste and waitress and paste['rps'] > 0):
                continue
            cpu = ''
            if paste.get('app_cpu_us') and waitress.get('app_cpu_us'):
                cpu = ', app CPU %.0f vs %.0f us/req' % (waitress['app_cpu_us'],
                                                          paste['app_cpu_us'])
            details.append('%s c=%d: %.0f vs %.0f req/s = %.2fx%s' % (
                session_type, conns, waitress['rps'], paste['rps'],
                waitress['rps'] / paste['rps'], cpu))
    if not details:
        return None
    return ('(info) waitress (production.ini) vs paster serve (development.ini), same app',
            'info', '; '.join(details))


def many_sessions_info(rows):
    """The same ratio where every connection has a session of its own
    (not judged: the target is for one cookie on all connections)."""
    details = []
    label = 'generated app %s, ' % fullstack.VISIT_PATH
    for conns in sorted(set(r['connections'] for r in rows)):
        ours = _row(rows, label + 'ext:tcjson' + fullstack.MANY_SESSIONS, conns)
        mem = _row(rows, label + 'memory' + fullstack.MANY_SESSIONS, conns)
        if ours and mem and mem['rps'] > 0 and not ours['empty_runs']:
            details.append('(info, not judged) small c=%d%s: %.0f vs %.0f req/s = %.3f'
                           % (conns, fullstack.MANY_SESSIONS, ours['rps'], mem['rps'],
                              ours['rps'] / mem['rps']))
    return details


def lost_updates_target(part2):
    rows = part2.get('lost') or []
    ours = [r for r in rows if 'ext:tcjson' in r['label']]
    if not ours:
        return ('lost updates (concurrent requests of one session, each its own key): '
                'tcjson 0', 'not measured', '; '.join(part2['notes']))
    first = rows[0]
    details = ['%s: %d of %d answered lost (%d errors)'
               % (r['label'], r['lost'], r['answered'], r['errors']) for r in rows]
    ok = all(r['lost'] == 0 and r['errors'] == 0 for r in ours)
    return ('lost updates, %d threads x %d requests over HTTP on one session (small and '
            'large), each thread its own key: tcjson 0' % (first['threads'], first['requests']),
            'met' if ok else 'MISSED', '; '.join(details))


def purge_target(part3):
    rows = [row for row in part3['rows'] if row['server'] == 'tcjson-tyrant']
    if len(rows) < 2:
        return ('purge memory flat', 'not measured', '; '.join(part3['notes']))
    small, big = rows[0], rows[-1]
    peak_small = small['vmhwm_kb'] or small['ru_maxrss_kb']
    peak_big = big['vmhwm_kb'] or big['ru_maxrss_kb']
    ok = peak_big <= 1.10 * peak_small and all(r['correct'] for r in rows)
    return ('purge memory flat (peak at %d <= 1.10 x peak at %d; right count left)'
            % (big['records'], small['records']), 'met' if ok else 'MISSED',
            '%d KB vs %d KB (x%.2f); remaining correct: %s; purge %s'
            % (peak_big, peak_small, peak_big / float(peak_small),
               ', '.join('%d on %s: %s' % (r['records'], r['server'], r['correct'])
                         for r in part3['rows']),
               ', '.join('%d on %s: %.1f s' % (r['records'], r['server'], r['purge_s'])
                         for r in part3['rows'])))


def judge(part1, part2, part3, diagnosis=None):
    """[(target, status, detail)] in report order: each part-1 target for
    every judged row measured (tcjson on tcjson-tyrant, and on ttserver)."""
    lines = []
    for name, server in _judged_rows(part1) or JUDGED[:1]:
        lines.append(traffic_target(part1, name))
        for kind, factor, what in OVERHEAD_LIMITS:
            lines.append(overhead_target(part1, kind, factor, what, name, server, diagnosis))
        lines.append(write_info(diagnosis, server))
    floors = part1.get('floors')
    lines += [lua_merge_info(part1), baseline_info(part1), serializer_info(part1),
              floors_info(part1),
              lost_updates_target(part2), fullstack_target(part2, floors)]
    if any(row['label'].endswith(fullstack.on_server('ttserver')) for row in part2['rows']):
        lines.append(fullstack_target(part2, floors, tyrant='ttserver'))
    lines += [fullstack_target(part2, floors, fullstack.WAITRESS), servers_info(part2),
              purge_target(part3)]
    return [line for line in lines if line is not None]
