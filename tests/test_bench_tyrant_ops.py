"""Smoke test of bench/tyrant_ops.py: tiny runs, checks it printed figures.

No figure is judged: only that every case ran and reported a positive rate.
"""
import os
import re
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'bench', 'tyrant_ops.py')
FIGURE = re.compile(r'^(tcjson-tyrant|ttserver)\s+(memory|\.tch)\s+(\d+) clients?\s+'
                    r'(\d+) ops/s  \((\d+)-(\d+)\)$', re.M)


def run_bench(*args):
    env = dict(os.environ, TCJSON_TTSERVER='builtin')      # tcjson-tyrant only
    proc = subprocess.Popen([sys.executable, SCRIPT] + list(args), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    return out.decode('utf-8')


@pytest.mark.parametrize('mode', ['processes', 'threads'])
def test_prints_a_figure_per_case(mode):
    out = run_bench('--seconds', '0.2', '--repeat', '1', '--clients', '1,2',
                    '--keys', '10', '--mode', mode)
    assert 'clients are %s' % mode in out
    figures = FIGURE.findall(out)
    cases = set((db, clients) for _, db, clients, _, _, _ in figures)
    assert cases == set([('memory', '1'), ('memory', '2'), ('.tch', '1'), ('.tch', '2')])
    assert all(int(rate) > 0 for _, _, _, rate, _, _ in figures)


def test_rejects_bad_arguments():
    proc = subprocess.Popen([sys.executable, SCRIPT, '--db', 'tcb'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    assert proc.returncode == 2 and b'--db' in err
