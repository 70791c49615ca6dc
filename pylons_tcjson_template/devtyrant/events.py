"""What the server reports while it runs: one line on stderr per event.

The words follow ttserver 1.1.41's log where it has a line for the event
("replication finished", "do_setmst: forbidden"), so an operator who knows
one server can read the other's log.
"""
from __future__ import absolute_import, print_function

import sys


def log(message):
    print('tcjson-tyrant: %s' % message, file=sys.stderr)
    sys.stderr.flush()
