"""The README's tchmgr commands work while the demo's Tyrant server runs.

The server holds the Tokyo Cabinet file lock for as long as it runs; a
plain ``tchmgr list FILE`` waits for that lock, i.e. hangs until the demo
is stopped.  The commands are taken from README.txt itself, so the test
fails if the README teaches one that hangs.
"""
import os
import re

import pytest
import pytyrant

from test_template_support import run

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'README.txt')
DEMO_FILE = 'demo/data/tyrant/sessions.tch'
DEMO_KEY = 'tcjsondemo:session:<id>:session'

pytestmark = pytest.mark.skipif(
    not any(os.access(os.path.join(d, 'tchmgr'), os.X_OK)
            for d in os.environ.get('PATH', '').split(os.pathsep)),
    reason='tchmgr is not installed')


def readme_tchmgr_commands():
    """The indented ``tchmgr ...`` lines of README.txt, as argument lists."""
    return [line.split() for line in open(README).read().splitlines()
            if re.match(r'^ {4}tchmgr ', line)]


def test_readme_commands_read_the_file_of_a_running_server(tyrant_factory, tmpdir):
    commands = readme_tchmgr_commands()
    assert [argv[1] for argv in commands] == ['list', 'get']
    server = tyrant_factory('sessions.tch')
    key = 'tcjsondemo:session:0123abcd:session'
    pytyrant.PyTyrant.open(server.host, server.port)[key] = '{"visits":3}'
    path = str(tmpdir.join('sessions.tch'))
    outputs = []
    for argv in commands:
        argv = [path if arg == DEMO_FILE else key if arg == DEMO_KEY else arg
                for arg in argv]
        status, output = run(argv, str(tmpdir), timeout=5)
        assert status == 0, (argv, output)
        outputs.append(output)
    assert outputs[0].splitlines() == [key]
    assert outputs[1].strip() == '{"visits":3}'
    assert server.running
