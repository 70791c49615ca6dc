# -*- coding: utf-8 -*-
"""The session bench's Markdown report (bench/RESULTS.md)."""
from __future__ import division

import os
import sys

import fullstack
import inproc
from targets import MEMCACHED, REDIS, TCJSON, TCJSON_TT, find

KIND_TITLES = {
    'read': 'read-only requests (the app reads the session, never calls save())',
    'write': 'write requests (one key changed, session.save())',
    'mix': '9 read-only requests to 1 write (a read-mostly site)',
}


def _fmt(value, pattern='%.0f'):
    return '-' if value is None else pattern % value


def _header(args, info):
    lines = ['# Session backend benchmark', '',
             'Command: `%s`%s' % (' '.join([os.path.relpath(sys.executable)] + sys.argv),
                                  ' (quick mode)' if args.quick else ''),
             '', '| | |', '|---|---|']
    return lines + ['| %s | %s |' % pair for pair in info]


def _part1_intro(args):
    return ['', '## 1. In-process: one request through SessionMiddleware', '',
            '%d rounds x %d requests per row (after %d warm-up), every row once per '
            'round, the rows taking turns.  ext:tcjson is user_sessions.UserSession (a '
            'tcjson.TyrantSession) as the generated app configures it (refresh_interval '
            'at its default, 60 s here: no read in a round is due for an access-time '
            'write), on tcjson-tyrant ("tcjson") and, where the run had one, on ttserver '
            '("tcjson (ttserver)"); the peers are '
            "Beaker's own Session with its default serializer (pickle).  Each "
            'request of a row uses the same session (the cookie of a first write).  '
            'Large session: %d bytes of JSON.  Commands are counted by the servers '
            '(memcached stats, redis INFO, Tyrant stat cnt_*) and round trips by this '
            'process (a profile hook sees every socket call: a receive after a send '
            'is one round trip, so pipelined commands share one; connects count '
            'too), both over %d more requests of each round, not timed.  Server '
            "CPU = the server process's own user+sys time per request.  A mix's "
            'median and p99 are those of blocks of 9 reads + 1 write, divided by 10 '
            '(the average request at that ratio).'
            % (args.rounds, args.requests, args.warmup, inproc.payload_json_size('large'),
               args.counted)]


def _part1_tables(part1):
    lines = []
    for kind in inproc.KINDS:
        rows = [row for row in part1['rows'] if row['kind'] == kind]
        if not rows:
            continue
        lines += ['', '### %s' % KIND_TITLES[kind], '',
                  '| backend | server | size | median µs | p99 µs | req/s | commands/req '
                  '| round trips/req (incl. connects) | overhead over memory µs '
                  '| server CPU µs/req |',
                  '|---|---|---|---:|---:|---:|---:|---:|---:|---:|']
        for row in rows:
            lines.append('| %s | %s | %s | %.1f | %.1f | %.0f | %.2f | %.2f (%.2f) | %s | %s |' % (
                row['backend'], row['server'], row['size'], row['median_us'],
                row['p99_us'], row['rps'], row['cmds_per_req'],
                row['round_trips_per_req'], row['connects_per_req'],
                _fmt(row['overhead_us'], '%.1f'), _fmt(row['server_cpu_us'], '%.1f')))
    lines += ['- ' + note for note in part1['notes']]
    return lines


def _traffic_table(part1):
    """Commands and round trips per request, tcjson next to the peers."""
    names = [name for name in (TCJSON, TCJSON_TT, MEMCACHED, REDIS)
             if find(part1['rows'], name, 'small', 'read')]
    if not names:
        return []
    lines = ['', '### Commands and round trips per request (counted, small session)', '',
             '| backend | read-only: commands | read-only: round trips | write: commands '
             '| write: round trips | 9 reads : 1 write: commands | round trips |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for name in names:
        cells = []
        for kind in ('read', 'write', 'mix'):
            row = find(part1['rows'], name, 'small', kind)
            cells += (['%.2f' % row['cmds_per_req'], '%.2f' % row['round_trips_per_req']]
                      if row else ['-', '-'])
        lines.append('| %s | %s |' % (name, ' | '.join(cells)))
    return lines + ["- tcjson: a read is one get; a write is the get, then one ext call of "
                    "tcjson.lua's merge, which applies the changed keys to the record "
                    'under its lock inside Tyrant: 2 commands in 2 round trips.  '
                    "Beaker's own Session writes the whole session back on every "
                    'request, reads included (its access time).']


def _round_trip_tables(part1):
    lines = []
    if part1.get('rtt'):
        lines += ['', 'Bare client round trips, no Beaker (the server + wire share of the '
                  'rows above):', '',
                  '| client -> server | value | get median µs | put/set median µs |',
                  '|---|---:|---:|---:|']
        for row in part1['rtt']:
            lines.append('| %s | %s, %d B | %.1f | %.1f |' % (
                row['client'], row['size'], row['bytes'], row['get_us'], row['put_us']))
    if part1.get('floors'):
        lines += ['', "TyrantSession's commands on a bare socket to the same Tyrant server "
                  '(the least any client pays for them):', '',
                  '| server | value | read: get µs | write: get, then ext merge µs |',
                  '|---|---|---:|---:|']
        for row in part1['floors']:
            lines.append('| %s | %s, %d B | %.1f | %.1f |' % (
                row['server'], row['size'], row['bytes'], row['read_us'], row['write_us']))
    return lines


def _diagnosis_table(diagnosis):
    if not diagnosis:
        return []
    lines = ['', '### 1b. tcjson.TyrantSession step by step (medians, each step timed '
             'alone; bench/diagnose_tcjson.py)', '',
             '| step | ' + ' | '.join('%s, %s (%d B record) µs' % (server, size, record_len)
                                     for server, size, record_len, _ in diagnosis) + ' |',
             '|---|' + '---:|' * len(diagnosis)]
    for index, (name, _) in enumerate(diagnosis[0][3]):
        lines.append('| %s | %s |' % (name, ' | '.join(
            '%.1f' % steps[index][1] for _, _, _, steps in diagnosis)))
    return lines + ['- "server: ext merge" and "server: get" replay the request\'s own bytes '
                    'on a bare socket; their difference is what tcjson.lua\'s merge costs '
                    'inside the server beyond a get.  "server CPU" is the server process\'s '
                    'own user + system time per call (its stat ru_user + ru_sys).']


def _lua_merge_table(part1):
    found = part1.get('lua_merge')
    if not found:
        return []
    lines = ['', "tcjson.lua's merge of the write above, outside any server, under lua5.1 (the "
             'Lua ttserver links; bench/merge_cost.lua, median of 5 runs):', '',
             '| part | ' + ' | '.join('%s (%d B record) µs' % (size, record_len)
                                     for size, record_len, _ in found) + ' |',
             '|---|' + '---:|' * len(found)]
    for index, (name, _) in enumerate(found[0][2]):
        lines.append('| %s | %s |' % (name, ' | '.join(
            '%.1f' % rows[index][1] for _, _, rows in found)))
    return lines


def _part2(part2):
    lines = ['', '## 2. Full stack: paster serve (threaded) and waitress + wrk, one session '
             'cookie', '',
             'Rows labelled "waitress:" serve the same app and settings under production.ini\'s '
             'server (waitress, 8 threads); the others under development.ini\'s (Paste\'s '
             'threaded HTTP server), as `paster serve` runs each.  '
             '%d s of wrk per row, as %d runs of %d s; the rows take turns, run by run, so '
             'that a slow spell of the machine hits all of them. req/s = all requests / '
             "all seconds; p50 and p99 are the median run's.  Every request writes the "
             'session: the small one (%s, a visit counter) or the large one (%s).  Rows '
             '"on ttserver" keep their sessions on ttserver, the others on tcjson-tyrant.'
             % (part2.get('rounds', 1) * part2.get('seconds_per_run', 0),
                part2.get('rounds', 1), part2.get('seconds_per_run', 0),
                fullstack.VISIT_PATH, fullstack.LARGE_PATH), '',
             '| app / sessions | connections | req/s | p50 µs | p99 µs | requests | non-2xx '
             '| Tyrant commands/req | app process CPU µs/req | Tyrant CPU µs/req |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for row in part2['rows']:
        lines.append('| %s | %d | %.1f | %s | %s | %d | %d | %s | %s | %s |' % (
            row['label'], row['connections'], row['rps'], _fmt(row['p50_us']),
            _fmt(row['p99_us']), row['requests'], row['non2xx'],
            _fmt(row['cmds_per_req'], '%.2f'), _fmt(row.get('app_cpu_us')),
            _fmt(row.get('tyrant_cpu_us'))))
    lines += ['- ' + note for note in part2['notes']]
    lost = part2.get('lost') or []
    if lost:
        lines += ['', '### 2b. Lost updates: concurrent requests of one session', '',
                  '%d threads x %d requests over HTTP (the generated app under paster '
                  'serve), all with one session cookie, each thread adding 1 to a key of '
                  'its own (/benchvisit/bump?key=tN, then session.save()); then the '
                  'stored counts are read back.  Each row runs with the small session and '
                  'again with the large one ("large session").  Lost = answered requests '
                  'whose increment the stored session does not hold.'
                  % (lost[0]['threads'], lost[0]['requests']), '',
                  '| app / sessions | answered | errors | increments kept | lost | seconds |',
                  '|---|---:|---:|---:|---:|---:|']
        for row in lost:
            lines.append('| %s | %d | %d | %d | %d | %.1f |' % (
                row['label'], row['answered'], row['errors'], row['stored'], row['lost'],
                row['seconds']))
        lines += ['- errors: %s: %s' % (row['label'], row['last_error'])
                  for row in lost if row['errors']]
    return lines


def _part3(part3):
    lines = ['', '## 3. Scale: purge.purge_expired on a .tch file', '',
             '| server | records | expired | load s | purge s | purge peak KB (VmHWM) | '
             'ru_maxrss KB | RSS before purge KB | left / expected | db bytes |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|']
    for row in part3['rows']:
        lines.append('| %s | %d | %d | %.1f | %.1f | %s | %s | %s | %d / %d | %d |' % (
            row['server'], row['records'], row['expired'], row['load_s'], row['purge_s'],
            row['vmhwm_kb'], row['ru_maxrss_kb'], row['start_rss_kb'],
            row['remaining'], row['expected_remaining'], row['db_bytes']))
    if part3['rows']:
        lines.append('- Peak memory is VmHWM of the purge process.  ru_maxrss is shown for '
                     'completeness but on Linux it survives exec, so it carries the bench '
                     "parent's size at fork.")
    return lines + ['- ' + note for note in part3['notes']]


def report(args, info, part1, part2, part3, verdicts, elapsed, diagnosis=None):
    """The whole report as unicode Markdown."""
    lines = (_header(args, info) + _part1_intro(args) + _part1_tables(part1)
             + _traffic_table(part1) + _round_trip_tables(part1)
             + _diagnosis_table(diagnosis) + _lua_merge_table(part1) + _part2(part2)
             + _part3(part3))
    lines += ['', '## Targets', '', '| target | status | detail |', '|---|---|---|']
    lines += ['| %s | **%s** | %s |' % verdict for verdict in verdicts]
    lines += ['', 'Total bench time: %.0f s.' % elapsed, '']
    return u'\n'.join(line if isinstance(line, unicode) else line.decode('utf-8')
                      for line in lines)
