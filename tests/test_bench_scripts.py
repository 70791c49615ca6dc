"""Smoke tests of bench/pairs.py and bench/user_sessions.py: tiny runs on
tcjson-tyrant, checking that every table is printed and the counts that do
not depend on timing (commands and round trips per request).  No time is
judged."""
import os
import re
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench')


def run_script(name, *args):
    env = dict(os.environ, TCJSON_TTSERVER='builtin')      # tcjson-tyrant only
    proc = subprocess.Popen([sys.executable, os.path.join(BENCH, name)] + list(args),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    assert proc.returncode == 0, (out + err)[-3000:]
    return out.decode('utf-8')


def cells(out, label):
    """The cells after `label` (one or more cells) of the one table row
    that starts with it."""
    rows = [line for line in out.splitlines() if line.startswith('| %s |' % label)]
    assert len(rows) == 1, (label, out[-3000:])
    return [cell.strip() for cell in rows[0].split('|')[2 + label.count('|'):-1]]


@pytest.mark.timeout(240)
def test_pairs_prints_throughput_replication_and_failover(tmpdir):
    out_file = tmpdir.join('RESULTS.md')
    out_file.write('# Results\n\n## 1. Kept\n\nrows\n')
    out = run_script('pairs.py', '--threads', '2', '--seconds', '0.3', '--rounds', '1',
                     '--sessions', '20', '--samples', '10', '--out', str(out_file))
    # read: commands / round trips; write: commands / round trips.  A pair's
    # read asks both members at once (one round trip), its write is the
    # merge on one member after that read.
    assert cells(out, 'one server')[-2:] == ['1.00 / 1.00', '2.00 / 2.00']
    for pair in ('one pair', 'two pairs (shards)'):
        assert cells(out, pair)[-2:] == ['2.00 / 1.00', '3.00 / 2.00'], pair
    # median, p99, max; then how many writes never reached the other member
    row = r' \| [\d.]+ ms' * 3 + r' \| \d+ of 10 \|$'
    for traffic in ('none but the probe', 'the throughput load'):
        assert re.search(r'^\| %s.*%s' % (traffic, row), out, re.M), traffic
    for fault in ('kill -9, then started again', 'SIGSTOP, then SIGCONT'):
        first, slowest, failed, back = cells(out, fault)
        assert first.endswith(' ms') and back.endswith(' s'), (fault, first, back)
    written = out_file.read()
    assert written.startswith('# Results\n\n## 1. Kept\n\nrows\n\n'
                              '## Several servers (bench/pairs.py)\n')


@pytest.mark.timeout(120)
def test_user_sessions_counts_sign_in_listing_and_revoking(tmpdir):
    out_file = tmpdir.join('RESULTS-user-sessions.md')
    out_file.write('old tables\n\n## Reading the table\n\nkept\n')
    out = run_script('user_sessions.py', '--sessions', '3,6000', '--repeat', '3',
                     '--out', str(out_file))
    # round trips, commands: the index (vsiz, mget), then the records (3
    # vsiz, one mget); sign-in: delete, index_add, put, index_check.
    assert cells(out, 'tcjson-tyrant | 3 | listing')[:2] == ['4', '6']
    assert cells(out, 'tcjson-tyrant | 3 | sign-in (regenerate_id, index entry, new '
                      'record and its check)')[:2] == ['4', '4']
    # An index over INDEX_READ_BYTES is compacted to the newest MAX_SESSIONS.
    assert cells(out, 'tcjson-tyrant | 6000 | listing of an index of 6000 entries written '
                      'by another program (50 listed)')
    written = out_file.read()
    assert written.startswith('# Sessions per user') and 'old tables' not in written
    assert written.endswith('\n## Reading the table\n\nkept\n')
