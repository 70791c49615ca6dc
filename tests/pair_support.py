"""Dual-master pairs of live Tyrant servers for the tests, the soak and the
benchmarks: two servers (tcjson-tyrant, or ttserver where installed), each
with its own database, update log and .rts file, each replicating from the
other, as README.txt's "Several Tyrant servers" shows for production."""
import os
import time
import uuid

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess, free_port
from test_faults_support import raw_get, raw_put

# A freshly started server asks its partner for the log about 2 s after it
# connects (ttserver 1.1.41 does, and tcjson-tyrant does as ttserver does).
REPLICATION_START = 15.0


class DualMaster(object):
    """Two servers on 127.0.0.1 replicating from each other."""

    def __init__(self, directory, first_sid=1, ports=None):
        ports = ports or (free_port(), free_port())
        self.members = []
        for index, port in enumerate(ports):
            home = os.path.join(str(directory), 'member%d-%d' % (index, port))
            if not os.path.isdir(home):
                os.makedirs(home)
            self.members.append(TyrantProcess(
                os.path.join(home, 'sessions.tch'), port=port,
                log=open(os.path.join(home, 'server.log'), 'ab'),
                ulog=os.path.join(home, 'ulog'), sid=first_sid + index,
                mhost='127.0.0.1', mport=ports[1 - index],
                rts=os.path.join(home, 'replication.rts')))

    @property
    def url(self):
        return '|'.join(member.url for member in self.members)

    def start(self):
        for member in self.members:
            member.start()
        return self

    def stop(self):
        for member in self.members:
            member.stop()

    def wait_replicating(self, timeout=REPLICATION_START):
        """Block until a write on each member has reached the other."""
        for index in (0, 1):
            key = 'pair-check:%s' % uuid.uuid4().hex
            raw_put(self.members[index].port, key, 'x')
            if not wait_for_value(self.members[1 - index].port, key, 'x', timeout):
                raise AssertionError('%s does not replicate from %s'
                                     % (self.members[1 - index].url, self.members[index].url))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def wait_for_value(port, key, value, timeout):
    """Whether `key` holds `value` on the server at `port` within `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if raw_get(port, key) == value:
            return True
        time.sleep(0.02)
    return False


def set_master(port, host='', master_port=0, ts=0):
    """ttserver's setmst on the server at `port`: replicate from
    host:master_port from `ts` on (0: from its .rts), or from nobody."""
    import socket
    import struct
    sock = socket.create_connection(('127.0.0.1', port), 5)
    try:
        sock.sendall(struct.pack('>BBIIQI', 0xC8, 0x78, len(host), master_port, ts, 0) + host)
        assert sock.recv(1) == '\x00'
    finally:
        sock.close()
