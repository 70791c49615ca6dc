# -*- coding: utf-8 -*-
"""The session bench's targets (issues 5 and 9), judged on one run's results.

Every target compares rows measured side by side in the same run: part 1
rows take turns round by round, so each target also lists its ratio round
by round.  A target is 'met', 'MISSED' or 'not measured'; '(info)' lines
give the figures that explain a target.
"""
from __future__ import division

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

# What TyrantSession's docstring promises for a request with no other
# request of the same session in flight: (commands, round trips).
PROMISED_TRAFFIC = {'read': (1, 1), 'write': (5, 3)}


def find(rows, backend, size, kind):
    for row in rows:
        if (row['backend'], row['size'], row['kind']) == (backend, size, kind):
            return row
    return None


def round_ratios(per_round, size, kind, ref):
    """tcjson's overhead / ref's overhead, round by round (same round =
    same machine conditions), as a sorted list."""
    ratios = []
    for (row_size, row_kind, _), medians in sorted(per_round.items()):
        if (row_size, row_kind) != (size, kind) or not all(
                name in medians for name in (TCJSON, ref, MEMORY)):
            continue
        ref_over = medians[ref] - medians[MEMORY]
        if ref_over > 0:
            ratios.append((medians[TCJSON] - medians[MEMORY]) / ref_over)
    return sorted(ratios)


def floor_us(floors, size, kind):
    """Median µs of the commands a TyrantSession request of `kind` sends,
    on a bare socket (inproc.session_floor), or None.  A mix: 9 reads and
    a write, per request."""
    for row in floors or []:
        if row['size'] == size:
            if kind == 'mix':
                return (9 * row['read_us'] + row['write_us']) / 10
            return row['%s_us' % kind]
    return None


def _status(verdicts):
    if not verdicts or None in verdicts:
        return 'not measured'
    return 'met' if all(verdicts) else 'MISSED'


def overhead_target(part1, kind, ref, factor, label, what):
    """tcjson's overhead over memory <= factor x ref's, for both sizes."""
    details, verdicts = [], []
    for size in SIZES:
        ours, other = (find(part1['rows'], TCJSON, size, kind),
                       find(part1['rows'], ref, size, kind))
        if not ours or not other:
            details.append('%s: not measured' % size)
            verdicts.append(None)
            continue
        limit = factor * other['overhead_us']
        verdicts.append(ours['overhead_us'] <= limit)
        ratio = (ours['overhead_us'] / other['overhead_us'] if other['overhead_us'] > 0
                 else float('inf'))
        ratios = round_ratios(part1.get('per_round', {}), size, kind, ref)
        details.append('%s: %.0f us vs limit %.2f x %.0f = %.0f us (ratio %.2f; per round %s)'
                       % (size, ours['overhead_us'], factor, other['overhead_us'], limit,
                          ratio, ' '.join('%.2f' % r for r in ratios) or '-'))
        floor = floor_us(part1.get('floors'), size, kind)
        if floor is not None and floor > limit:
            details[-1] += (' -- out of reach on this machine: its round trips alone cost '
                            '%.0f us over bare sockets' % floor)
    return ("%s: tcjson overhead over memory <= %s x %s's" % (what, factor, label),
            _status(verdicts), '; '.join(details))


def _traffic(row):
    return '%.2f commands / %.2f round trips' % (row['cmds_per_req'],
                                                 row['round_trips_per_req'])


def traffic_target(part1):
    """TyrantSession's promised commands and round trips, counted."""
    details, verdicts = [], []
    for kind, (commands, trips) in sorted(PROMISED_TRAFFIC.items()):
        for size in SIZES:
            row = find(part1['rows'], TCJSON, size, kind)
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
    return ('tcjson: a read-only request 1 command in 1 round trip, a write 5 commands '
            'in 3 round trips', _status(verdicts), '; '.join(details))


def _step(diagnosis, size, prefix):
    for row_size, _, steps in diagnosis or []:
        if row_size == size:
            for name, us in steps:
                if name.startswith(prefix):
                    return us
    return None


def merge_info(part1, diagnosis):
    """What a write costs over memcached's, and what of it is the merge."""
    details = []
    for size in SIZES:
        ours, mc = (find(part1['rows'], TCJSON, size, 'write'),
                    find(part1['rows'], MEMCACHED, size, 'write'))
        if not ours or not mc:
            continue
        text = ('%s: write overhead %.0f us vs memcached %.0f us (%+.0f us)'
                % (size, ours['overhead_us'], mc['overhead_us'],
                   ours['overhead_us'] - mc['overhead_us']))
        lock = _step(diagnosis, size, 'save: putkeep lock + get')
        reparse = _step(diagnosis, size, 'save: _changes')
        put_out = _step(diagnosis, size, 'save: put + out')
        put = _step(diagnosis, size, 'reference: one put round trip')
        if None not in (lock, reparse, put_out, put):
            text += ('; the merge adds a round trip (lock + re-read, %.0f us) and a parse '
                     'of the record as loaded (with the comparison, %.0f us); the unlock '
                     'rides with the write (put + out %.0f us vs a plain put %.0f us)'
                     % (lock, reparse, put_out, put))
        details.append(text)
    if not details:
        return None
    return ('(info) write request: tcjson next to memcached, and what the merge costs',
            'info', '; '.join(details) + ' (step timings: table 1b)')


def floors_info(part1):
    floors = part1.get('floors')
    if not floors:
        return None
    return ('(info) the round trips alone', 'info', '; '.join(
        '%s: read %.0f us, write %.0f us' % (row['size'], row['read_us'], row['write_us'])
        for row in floors) + ' -- the same commands sent on a bare socket to the same Tyrant '
        "server (read: get; write: get | putkeep+get | put+out): the least any client adds")


def serializer_info(part1):
    details = []
    for size in SIZES:
        ours, mem_json = (find(part1['rows'], TCJSON, size, 'write'),
                          find(part1['rows'], MEMORY_JSON, size, 'write'))
        if ours and mem_json:
            details.append('%s: %.0f us' % (size, ours['median_us'] - mem_json['median_us']))
    if not details:
        return None
    return ('(info) write request: tcjson overhead over memory + JSONSerializer', 'info',
            '; '.join(details) + ' -- JSON encoding cost taken out (Beaker encodes the '
            'session for memory too when given a serializer)')


def fullstack_target(part2, floors, server=''):
    """The generated app's visit rows under development.ini's server
    (paster serve), or with `server` fullstack.WAITRESS, production.ini's."""
    gen = [r for r in part2['rows']
           if r['label'].startswith(server + 'generated app ' + fullstack.VISIT_PATH)]
    verdicts, details = [], []
    for conns in sorted(set(r['connections'] for r in gen)):
        ours = [r for r in gen if r['connections'] == conns and r['label'].endswith('ext:tcjson')]
        mem = [r for r in gen if r['connections'] == conns and r['label'].endswith('memory')]
        empty = sum(r.get('empty_runs', 0) for r in ours + mem)
        if empty:
            verdicts.append(None)
            details.append('c=%d: wrk got no response in %d runs' % (conns, empty))
            continue
        if not (ours and mem and mem[0]['rps'] > 0):
            continue
        ratio = ours[0]['rps'] / mem[0]['rps']
        verdicts.append(ratio >= 0.85)
        details.append('c=%d: %.0f vs %.0f req/s = %.3f'
                       % (conns, ours[0]['rps'], mem[0]['rps'], ratio))
        rounds = [a / b for a, b in zip(ours[0].get('round_rps', []),
                                        mem[0].get('round_rps', [])) if b]
        if len(rounds) > 1:
            details[-1] += ' (per run %s)' % ' '.join('%.2f' % r for r in sorted(rounds))
        floor = floor_us(floors, 'small', 'write')
        if conns == 1 and floor is not None:
            # One connection waits out every round trip: at best, a request
            # takes memory's time plus the write's bare round trips (timed
            # in part 1, minutes apart: an estimate, not a limit).
            best = 1.0 / (1.0 + floor * 1e-6 * mem[0]['rps'])
            details[-1] += (' (about %.2f expected at best: memory plus the 3 bare round '
                            'trips of a write, %.0f us)' % (best, floor))
    details += many_sessions_info(gen)
    return ('full stack (generated app%s, a write per request): tcjson req/s >= 0.85 x memory'
            % (' under waitress' if server else ''),
            _status(verdicts), '; '.join(details) or '; '.join(part2['notes']))


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


def many_sessions_info(gen):
    """The same ratio where every connection has a session of its own
    (not judged: the target was set for one cookie on all connections)."""
    details = []
    for conns in sorted(set(r['connections'] for r in gen)):
        ours = [r for r in gen if r['connections'] == conns
                and r['label'].endswith('ext:tcjson' + fullstack.MANY_SESSIONS)]
        mem = [r for r in gen if r['connections'] == conns
               and r['label'].endswith('memory' + fullstack.MANY_SESSIONS)]
        if ours and mem and mem[0]['rps'] > 0 and not ours[0]['empty_runs']:
            details.append('(info, not judged) c=%d%s: %.0f vs %.0f req/s = %.3f'
                           % (conns, fullstack.MANY_SESSIONS, ours[0]['rps'],
                              mem[0]['rps'], ours[0]['rps'] / mem[0]['rps']))
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
    return ('lost updates, %d threads x %d requests over HTTP on one session, each thread '
            'its own key: tcjson 0' % (first['threads'], first['requests']),
            'met' if ok else 'MISSED', '; '.join(details))


def purge_target(part3):
    rows = part3['rows']
    if len(rows) < 2:
        return ('purge memory flat', 'not measured', '; '.join(part3['notes']))
    small, big = rows[0], rows[-1]
    peak_small = small['vmhwm_kb'] or small['ru_maxrss_kb']
    peak_big = big['vmhwm_kb'] or big['ru_maxrss_kb']
    ok = peak_big <= 1.10 * peak_small and all(r['correct'] for r in rows)
    return ('purge memory flat (peak at %d <= 1.10 x peak at %d; right count left)'
            % (big['records'], small['records']), 'met' if ok else 'MISSED',
            '%d KB vs %d KB (x%.2f); remaining correct: %s'
            % (peak_big, peak_small, peak_big / float(peak_small),
               ', '.join('%d: %s' % (r['records'], r['correct']) for r in rows)))


def judge(part1, part2, part3, diagnosis=None):
    """[(target, status, detail)] in report order."""
    lines = [
        traffic_target(part1),
        overhead_target(part1, 'read', MEMCACHED, 0.6, 'memcached', 'read-only request'),
        overhead_target(part1, 'mix', MEMCACHED, 0.7, 'memcached', '9 reads : 1 write'),
        overhead_target(part1, 'write', MEMCACHED, 1.1, 'memcached', 'write request'),
        merge_info(part1, diagnosis),
        overhead_target(part1, 'write', BASELINE, 0.25, '2009 backend', 'write request'),
        serializer_info(part1),
        floors_info(part1),
        lost_updates_target(part2),
        fullstack_target(part2, part1.get('floors')),
        fullstack_target(part2, part1.get('floors'), fullstack.WAITRESS),
        servers_info(part2),
        purge_target(part3),
    ]
    return [line for line in lines if line is not None]
