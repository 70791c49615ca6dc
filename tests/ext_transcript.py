"""tests/data/tyrant-1.1.41-ext.txt: what a real ttserver 1.1.41 (built with
Lua) answered, written by tests/record_ext_transcript.py and replayed by
tests/test_devtyrant_ext_transcript.py.  This module reads and writes the
file and runs its steps against a server; it has no tests of its own.

The file is sections, each on a server of its own::

    [name] what the section shows
    server  ext=tests/data/ext-probe.lua sid=7 ulog=yes db=casket.tch
    LABEL   REQ hex             one request on a fresh connection, the client
            RSP hex             half-closes; everything until the server's EOF
            RSP~ hex            the same, but a run of 15 or more digits (a
                                time in microseconds) matches any such run
    LABEL   SEND hex            the request, the connection left open: what
            GOT hex, open       came within 1 s, and whether the server had
                                closed it (", closed") or not (", open")
    restart                     stop (SIGTERM) and start again, same files
    stop    EXIT n              stop; the exit status
    ulog    SID MID hex         the update log, one record per line (body with
                                its result byte; timestamps left out)

``ext=`` is a path relative to the repository (or absolute: a file that is
not there), ``ext=none`` no -ext; ``sha1=`` the start of the script's SHA-1
when it was recorded (a script changed since then must be recorded again);
``db=`` a file name in a fresh directory (``*``: in memory); ``ulog=yes``
an update log there.  Lines starting with "#" are notes.
"""
import binascii
import hashlib
import os
import re
import socket
import time

from pylons_tcjson_template.devtyrant import ulog as ulog_module
from pylons_tcjson_template.devtyrant.launcher import TyrantProcess
from test_devtyrant_transcripts import connect, exchange

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSCRIPT = os.path.join(ROOT, 'tests', 'data', 'tyrant-1.1.41-ext.txt')
SILENCE = 1.0           # "GOT": what comes within this long
LABEL_WIDTH = 40


_CLOCK = re.compile(br'\d{15,}')


class Step(object):
    def __init__(self, kind, label='', request=b'', expected=None, lineno=0, clock=False):
        self.kind = kind            # exchange, open, restart, stop, ulog
        self.label = label
        self.request = request
        self.expected = expected    # bytes; (bytes, closed); exit status; [(sid, mid, body)]
        self.lineno = lineno
        self.clock = clock          # the answer holds times: compare without them

    def matches(self, got):
        if self.clock:
            return _CLOCK.sub(b'N', got) == _CLOCK.sub(b'N', self.expected)
        return got == self.expected

    def __repr__(self):
        return 'line %d %s %r' % (self.lineno, self.kind, self.label)


class Section(object):
    def __init__(self, name, title, server, steps, lineno=0):
        self.name = name
        self.title = title
        self.server = server        # dict from the "server" line
        self.steps = steps
        self.lineno = lineno


# ------------------------------------------------------------ servers

def script_sha1(server):
    """The first 12 hex digits of the SHA-1 of a section's script (None:
    no script, or none there)."""
    path = os.path.join(ROOT, server.get('ext', 'none'))
    if server.get('ext', 'none') == 'none' or not os.path.isfile(path):
        return None
    with open(path, 'rb') as script:
        return hashlib.sha1(script.read()).hexdigest()[:12]


def start_server(server, tmpdir, ttserver):
    """A TyrantProcess for a section's "server" line, in `tmpdir` (a path)."""
    ext = server.get('ext', 'none')
    db = server.get('db', '*')
    kwargs = dict(ttserver=ttserver or False,
                  ext=False if ext == 'none' else os.path.join(ROOT, ext))
    if server.get('sid'):
        kwargs['sid'] = int(server['sid'])
    if server.get('ulog') == 'yes':
        kwargs['ulog'] = os.path.join(tmpdir, 'ulog')
    dbpath = db if db == '*' else os.path.join(tmpdir, db)
    return TyrantProcess(dbpath, **kwargs).start()


def send_and_listen(process, request):
    """(what came within SILENCE seconds, whether the server closed)."""
    sock = connect(process)
    try:
        sock.sendall(request)
        sock.settimeout(SILENCE)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return b''.join(chunks), False
            except socket.error:
                return b''.join(chunks), True
            if not chunk:
                return b''.join(chunks), True
            chunks.append(chunk)
    finally:
        sock.close()


def read_ulog(tmpdir):
    """(sid, mid, body) of every record of the section's update log."""
    directory = os.path.join(tmpdir, 'ulog')
    if not os.path.isdir(directory):
        return []
    reader = ulog_module.LogReader(directory, 0)
    return [(sid, mid, body) for _, sid, mid, body in reader.read(1 << 30)]


def run_step(step, process, tmpdir):
    """What the server did for `step`, in the form of `Step.expected`."""
    if step.kind == 'exchange':
        return exchange(process, step.request)
    if step.kind == 'open':
        return send_and_listen(process, step.request)
    if step.kind == 'restart':
        process.restart()
        return None
    if step.kind == 'stop':
        return process.stop()
    if step.kind == 'ulog':
        # ttserver writes a record when the call returns; a moment for the
        # last one to reach the file.
        time.sleep(0.2)
        return read_ulog(tmpdir)
    raise ValueError('unknown step %r' % step)


# ------------------------------------------------------------ the file

def _hex(data):
    return binascii.hexlify(data).decode('ascii')


def _label(text):
    return text.ljust(LABEL_WIDTH - 1) + ' ' if len(text) < LABEL_WIDTH else text + ' '


def format_step(step, got):
    pad = ' ' * LABEL_WIDTH
    if step.kind == 'exchange':
        return ['%sREQ %s' % (_label(step.label), _hex(step.request)),
                '%sRSP%s %s' % (pad, '~' if step.clock else '', _hex(got))]
    if step.kind == 'open':
        data, closed = got
        return ['%sSEND %s' % (_label(step.label), _hex(step.request)),
                '%sGOT %s, %s' % (pad, _hex(data), 'closed' if closed else 'open')]
    if step.kind == 'restart':
        return ['restart']
    if step.kind == 'stop':
        return ['%sEXIT %d' % (_label('stop'), got)]
    if step.kind == 'ulog':
        return ['%s%d %d %s' % (_label('ulog'), sid, mid, _hex(body)) for sid, mid, body in got]
    raise ValueError(step.kind)


_SECTION = re.compile(r'^\[(?P<name>[\w-]+)\]\s*(?P<title>.*)$')
_SERVER = re.compile(r'^server\s+(?P<fields>.*)$')
_REQ = re.compile(r'^(?P<label>\S.*?)\s+(?P<kind>REQ|SEND) (?P<hex>[0-9a-f]*)$')
_RSP = re.compile(r'^\s+RSP(?P<clock>~?) (?P<hex>[0-9a-f]*)$')
_GOT = re.compile(r'^\s+GOT (?P<hex>[0-9a-f]*), (?P<state>open|closed)$')
_STOP = re.compile(r'^stop\s+EXIT (?P<status>\d+)$')
_ULOG = re.compile(r'^ulog\s+(?P<sid>\d+) (?P<mid>\d+) (?P<hex>[0-9a-f]+)$')


def _notes_left_out(lines):
    for lineno, line in enumerate(lines, 1):
        if line.strip() and not line.startswith('#'):
            yield lineno, line


def _exchange_step(m, answer_line, lineno):
    """A REQ or SEND line `m` and the RSP or GOT line after it."""
    request = binascii.unhexlify(m.group('hex'))
    if m.group('kind') == 'REQ':
        a = _RSP.match(answer_line)
        if a:
            return Step('exchange', m.group('label'), request, binascii.unhexlify(a.group('hex')),
                        lineno, clock=bool(a.group('clock')))
    else:
        a = _GOT.match(answer_line)
        if a:
            return Step('open', m.group('label'), request,
                        (binascii.unhexlify(a.group('hex')), a.group('state') == 'closed'), lineno)
    raise ValueError('line %d: %s without its answer line' % (lineno, m.group('kind')))


def _ulog_step(steps, m, lineno):
    """A ulog line joins the ulog step before it, or starts one."""
    record = (int(m.group('sid')), int(m.group('mid')), binascii.unhexlify(m.group('hex')))
    if steps and steps[-1].kind == 'ulog':
        steps[-1].expected.append(record)
    else:
        steps.append(Step('ulog', 'ulog', expected=[record], lineno=lineno))


def parse(path=TRANSCRIPT):
    """The file's sections; ValueError names a line not understood."""
    with open(path) as transcript:
        lines = _notes_left_out(transcript.read().splitlines())
    sections = []
    for lineno, line in lines:
        m = _SECTION.match(line)
        if m:
            sections.append(Section(m.group('name'), m.group('title'), {}, [], lineno))
        elif not sections:
            raise ValueError('line %d: outside a section' % lineno)
        elif _SERVER.match(line):
            fields = _SERVER.match(line).group('fields').split()
            sections[-1].server = dict(field.split('=', 1) for field in fields)
        elif _REQ.match(line):
            answer_line = next(lines, (lineno, ''))[1]
            sections[-1].steps.append(_exchange_step(_REQ.match(line), answer_line, lineno))
        elif line.strip() == 'restart':
            sections[-1].steps.append(Step('restart', 'restart', lineno=lineno))
        elif _STOP.match(line):
            status = int(_STOP.match(line).group('status'))
            sections[-1].steps.append(Step('stop', 'stop', expected=status, lineno=lineno))
        elif _ULOG.match(line):
            _ulog_step(sections[-1].steps, _ULOG.match(line), lineno)
        else:
            raise ValueError('line %d not understood: %r' % (lineno, line))
    return sections


def replay(section, tmpdir, ttserver=None):
    """Run a section's steps on a fresh server; the mismatches, as text."""
    recorded, now = section.server.get('sha1'), script_sha1(section.server)
    if recorded != now:
        return ['[%s] %s changed since it was recorded (sha1 %s, now %s): record again with '
                'TCJSON_TTSERVER=/path/to/ttserver python tests/record_ext_transcript.py'
                % (section.name, section.server.get('ext'), recorded, now)]
    failures = []
    process = start_server(section.server, tmpdir, ttserver)
    try:
        for step in section.steps:
            got = run_step(step, process, tmpdir)
            if step.kind != 'restart' and not step.matches(got):
                failures.append('[%s] %r: got %r, expected %r'
                                % (section.name, step, got, step.expected))
    finally:
        process.stop()
    return failures
