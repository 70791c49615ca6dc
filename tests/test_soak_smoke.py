"""soak/run.py for 12 seconds: one fault of each kind, and the summary."""
import os
import re
import sys

from test_template_support import run

SOAK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    'soak', 'run.py')


def test_soak_runs_and_reports(tmpdir):
    code, output = run([sys.executable, SOAK, '--seconds', '12', '--fault-every', '0.5',
                        '--clients', '8', '--dir', str(tmpdir)], tmpdir, timeout=120)
    assert code == 0, output
    faults = re.search(r'^faults injected: (\d+) \(kill -9: (\d+), SIGSTOP: (\d+), '
                       r'junk record: (\d+)\)$', output, re.M)
    assert faults, output
    total, killed, stopped, junked = [int(number) for number in faults.groups()]
    assert killed >= 1 and stopped >= 1 and junked >= 1, output
    assert total == killed + stopped + junked
    served = int(re.search(r'^requests served: (\d+)', output, re.M).group(1))
    assert served > 100, output
    statuses = re.search(r'^responses by status: (.*)$', output, re.M).group(1)
    assert set(re.findall(r'(\w+): \d+', statuses)) <= set(['200', '400', '503']), output
    assert re.search(r'^errors by kind: 503: [1-9]\d*, 400: %d, 500: 0, connection errors: 0, '
                     r'slow \(> [\d.]+ s\): 0, failed after recovery: 0, other: 0$'
                     % junked, output, re.M), output
    intact = re.search(r'^sessions verified intact: (\d+)/(\d+)$', output, re.M)
    assert intact and intact.group(1) == intact.group(2) == '8', output
    assert re.search(r'^junk records answered 400 and left unchanged: %d/%d$'
                     % (junked, junked), output, re.M), output
    assert 'PROBLEM' not in output and output.rstrip().endswith('result: PASS'), output

    # A second run reuses the generated project.
    code, again = run([sys.executable, SOAK, '--seconds', '3', '--clients', '2',
                       '--dir', str(tmpdir)], tmpdir, timeout=60)
    assert code == 0 and 'result: PASS' in again, again
