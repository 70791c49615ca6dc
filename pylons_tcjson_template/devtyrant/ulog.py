"""Update log: ttserver 1.1.41's record of every write, the source of replication.

Files ``DIR/00000001.ulog``, ``00000002.ulog``, ... hold records (their
format and how damage in them is told apart: `ulogfile`).  TS is when the
write happened on this server (microseconds since the epoch), SID the
server where a client made the write, MID the master it was received from
(0 for a local client write).  BODY is the command as a binary request
(``c8``, command byte, arguments) plus one result byte, 0 when the operation
succeeded here, 1 when it failed.  After the record that brings a file to
``limit`` bytes the next number is opened; nothing is ever deleted (the
operator removes old files once every peer has read them).

`UpdateLog` writes, `LogReader` reads from a timestamp on (what a master
sends a slave), `command_body` says what a request logs and
`decode_body` turns a logged body back into a request to redo.

Unlike ttserver, which appends after whatever a crash or a full disk left
and then replicates garbage or nothing, the log here is kept whole: a
torn last record is cut off when the log is opened and as soon as a write
fails, and readers skip (and report) bytes that are not a record.
"""
from __future__ import absolute_import

import math
import os
import re
import struct
import time

from . import protocol
from .events import log
from .ulogfile import Cursor, pack_record

SUFFIX = '.ulog'
DEFAULT_LIMIT = 1024 ** 3                 # ttserver's default -ulim: 1 GiB

# A master picks the file to start reading from by its first record, allowing
# for clocks that differ this much between servers (ttserver's TCULTMDEVALW).
_CLOCK_DEVIANCE_US = 30 * 1000000
_LIMIT_SUFFIXES = {'k': 1, 'm': 2, 'g': 3, 't': 4, 'p': 5, 'e': 6}
_LIMIT = re.compile(r'^\s*(\d+(?:\.\d*)?)\s*([kmgtpe]?)', re.IGNORECASE)
_SCAN_CHUNK = 1024 * 1024                 # bytes read at a time when checking a file whole

_U32 = struct.Struct('>I')
_I32 = struct.Struct('>i')
_DOUBLE_PAIR = struct.Struct('>qq')
_INT64_MAX, _INT64_MIN = 2 ** 63 - 1, -2 ** 63
_FRACT = 1000000000000
# misc opts bit 1: the client asks for no update log record.
MISC_NO_ULOG = 1


def parse_limit(text):
    """``-ulim`` as ttserver reads it: a number with an optional binary
    suffix (``64m`` = 67108864); what cannot be read is 0."""
    match = _LIMIT.match(text)
    if not match:
        return 0
    number, suffix = match.groups()
    return int(float(number) * 1024 ** _LIMIT_SUFFIXES.get(suffix.lower(), 0))


def file_path(directory, number):
    return os.path.join(directory, '%08d%s' % (number, SUFFIX))


def newest_number(directory):
    """The highest file number in the directory, 1 when there is none."""
    newest = 1
    for name in os.listdir(directory):
        if not name.endswith(SUFFIX):
            continue
        digits = re.match(r'\d+', name)
        if not digits:
            continue
        number = int(digits.group())
        if number > newest and os.path.isfile(file_path(directory, number)):
            newest = number
    return newest


def now_us():
    return int(time.time() * 1000000)


class UpdateLogError(Exception):
    """The update log directory cannot be used, or a write to it failed."""


class UpdateLog(object):
    """Appends records to the newest file of an update log directory.

    Like ttserver, the file is opened at the first write (a server that is
    never written to creates none) and a restarted server appends to the
    highest-numbered file.  `listeners` are called after every write: the
    replication feeds of connected slaves wake up on it.  `failure` is
    ``(time, message)`` while the last write failed, None otherwise.
    """

    def __init__(self, directory, limit=DEFAULT_LIMIT):
        if not os.path.isdir(directory):
            raise UpdateLogError('ulog(%s) is not a directory' % directory)
        self.directory = directory
        self.limit = limit if limit > 0 else 2 ** 62
        self.number = newest_number(directory)
        self.fd = None
        self.size = 0
        self.last_ts = 0
        self.listeners = []
        self.failure = None
        self._cut_torn_tail()
        self._torn = False                  # a failed write may have left part of a record

    def write(self, sid, mid, body):
        """Append one record stamped now; returns its timestamp.  Raises
        UpdateLogError when it cannot, having removed any part of the
        record that did reach the file.

        Timestamps only grow here, by at least a microsecond.  (ttserver
        can stamp two writes alike; a slave that stopped after the first
        of them would then resume after both, as it asks for .rts + 1.)"""
        ts = self.last_ts = max(now_us(), self.last_ts + 1)
        record = pack_record(ts, sid, mid, body)
        try:
            if self.fd is None:
                self._open()
            written = 0
            while written < len(record):    # os.write may stop short (a signal, a full disk)
                written += os.write(self.fd, record[written:])
        except (IOError, OSError, UpdateLogError) as exc:
            return self._failed(exc)
        self.failure = None
        self.size += len(record)
        if self.size >= self.limit:
            os.close(self.fd)
            self.fd = None
            self.number += 1
            try:
                self._open()                # created now, as ttserver does
            except (IOError, OSError):
                pass                        # the next write tries again, and says why
        for listener in self.listeners:
            listener()
        return ts

    def _open(self):
        if self._torn:
            self._cut_torn_tail()
            self._torn = False
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self.fd).st_size

    @property
    def path(self):
        return file_path(self.directory, self.number)

    def _failed(self, exc):
        """Cut the file back to its last whole record, then raise."""
        message = 'cannot write %s: %s' % (self.path, getattr(exc, 'strerror', None) or exc)
        self.failure = (time.time(), message)
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                # Left as it is; the next write reopens the file and cuts
                # its torn tail then.
                os.close(self.fd)
                self.fd = None
                self._torn = True
        raise UpdateLogError(message)

    def _cut_torn_tail(self):
        """A crash or a full disk may have left the newest file ending in
        part of a record; cut it off, so the next record follows a whole
        one instead of being read as the rest of the torn one.  Damage
        with whole records after it is left for readers to skip."""
        path = self.path
        if not os.path.isfile(path):
            return
        said = []
        cursor = Cursor(path, report=said.append)
        while not cursor.at_end:
            cursor.read(_SCAN_CHUNK, collect=False)
        if cursor.damage is not None:
            said.pop()                      # "skipping": it is cut off instead
        for message in said:
            log(message)
        if cursor.damage is None:
            return
        start, reason = cursor.damage
        size = os.path.getsize(path)
        try:
            with open(path, 'r+b') as log_file:
                log_file.truncate(start)
        except (IOError, OSError) as exc:
            raise UpdateLogError('cannot cut the torn end of %s: %s' % (path, exc))
        log('update log %s: cut off its last %d bytes, a torn record (%s)'
            % (path, size - start, reason))

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _first_ts(path):
    try:
        with open(path, 'rb') as log_file:
            head = log_file.read(9)
    except (IOError, OSError):
        return None
    if len(head) < 9:
        return 2 ** 63             # an empty file never stops the search
    return struct.unpack('>Q', head[1:9])[0]


class LogReader(object):
    """Reads records with TS >= `ts` from an update log directory, file
    after file, picking up records written after it was created.

    The first file read is the newest one whose first record is at least
    30 s older than `ts`, else the oldest one reachable by counting down
    from the newest without a gap: files that were removed by the operator
    are silently skipped, as ttserver does.  Damaged bytes are skipped and
    reported (see `ulogfile.Cursor`), where ttserver would stop or misread.
    """

    def __init__(self, directory, ts):
        self.directory = directory
        self.ts = ts
        self.number = self._start_number(directory, ts)
        self.cursor = Cursor(file_path(directory, self.number))
        self.exhausted = False

    @staticmethod
    def _start_number(directory, ts):
        bound = ts - _CLOCK_DEVIANCE_US if ts > _CLOCK_DEVIANCE_US else 0
        number = newest_number(directory)
        start = 1
        while number > 0:
            first = _first_ts(file_path(directory, number))
            if first is None:
                break
            start = number
            if bound >= first:
                break
            number -= 1
        return start

    def read(self, max_bytes):
        """The complete records available now, about `max_bytes` of them at
        most, as ``(ts, sid, mid, body)``.  Afterwards `exhausted` says
        whether it stopped because there is nothing more to read yet."""
        records = []
        while True:
            # Looked at before the file is read: a file with a successor
            # was complete before the successor was created, so only the
            # newest one may end in a record still being written.
            self.cursor.growing = not os.path.exists(file_path(self.directory,
                                                               self.number + 1))
            before = self.cursor.offset
            found = self.cursor.read(max_bytes)
            records.extend(record for record in found if record[0] >= self.ts)
            max_bytes -= self.cursor.offset - before
            if not self.cursor.at_end:
                self.exhausted = False
                return records
            if self.cursor.growing:
                self.exhausted = True
                return records
            self.cursor.leave()
            self.number += 1
            self.cursor = Cursor(file_path(self.directory, self.number))
            if max_bytes <= 0:
                self.exhausted = False
                return records


# ------------------------------------------------------------ bodies

def pack_double(num):
    """A double as ttserver packs it in a log body: integer part and the
    fraction times 1e12, with its markers for infinities and NaN."""
    if math.isnan(num):
        return _DOUBLE_PAIR.pack(_INT64_MIN, _INT64_MIN)
    if math.isinf(num):
        return _DOUBLE_PAIR.pack(_INT64_MAX if num > 0 else _INT64_MIN, 0)
    fract, integ = math.modf(num)
    return _DOUBLE_PAIR.pack(_clamp64(integ), _clamp64(fract * _FRACT))


def unpack_double(data):
    integ, fract = _DOUBLE_PAIR.unpack(data)
    if integ == _INT64_MIN and fract == _INT64_MIN:
        return float('nan')
    if integ == _INT64_MAX:
        return float('inf')
    if integ == _INT64_MIN:
        return float('-inf')
    return integ + float(fract) / _FRACT


def _clamp64(value):
    if not _INT64_MIN <= value <= _INT64_MAX:
        return _INT64_MIN
    return int(value)


_HEADS = dict((name, bytes(bytearray([protocol.MAGIC, code])))
              for code, name in protocol.COMMANDS.items())
_TWO_SIZES = struct.Struct('>II')


def _head(command):
    return _HEADS[command]


def _sized(data):
    return _U32.pack(len(data)) + data


def _body_kv(command):
    head = _head(command)

    def body(key, value):
        return head + _TWO_SIZES.pack(len(key), len(value)) + key + value
    return body


def _body_putshl(key, value, width):
    return (_head('putshl') + _U32.pack(len(key)) + _U32.pack(len(value))
            + _U32.pack(width) + key + value)


def _body_out(key):
    return _head('out') + _sized(key)


def _body_addint(key, num):
    if num == 0:
        return None
    return _head('addint') + _U32.pack(len(key)) + _I32.pack(num) + key


def _body_adddouble(key, integ, fract):
    num = integ + float(fract) / _FRACT
    if num == 0:
        return None
    return _head('adddouble') + _U32.pack(len(key)) + pack_double(num) + key


def _body_misc(name, opts, args):
    if opts & MISC_NO_ULOG:
        return None
    return (_head('misc') + _U32.pack(len(name)) + _U32.pack(len(args)) + name
            + b''.join(_sized(arg) for arg in args))


_BODIES = {
    'put': _body_kv('put'), 'putnr': _body_kv('put'),      # putnr is logged as put
    'putkeep': _body_kv('putkeep'), 'putcat': _body_kv('putcat'),
    'putshl': _body_putshl, 'out': _body_out,
    'addint': _body_addint, 'adddouble': _body_adddouble,
    'sync': lambda: _head('sync'),
    'optimize': lambda params: _head('optimize') + _sized(params),
    'vanish': lambda: _head('vanish'),
    'misc': _body_misc,
}


def command_body(request):
    """What `request` writes to the update log, without the result byte;
    None for the commands ttserver does not log (reads, stat, setmst,
    copy, restore, ext without Lua, adding zero, misc with opts bit 1)."""
    make = _BODIES.get(request.command)
    if make is None:
        return None
    return make(*request.args)


class BadBody(ValueError):
    """A logged body that is not a command a log can hold."""


def decode_body(body):
    """``(request, succeeded_at_origin)`` from a logged body.

    Bodies are requests plus the result byte, except misc, which was logged
    without its opts field (and is redone with opts 0)."""
    if len(body) < 3 or bytearray(body[:1])[0] != protocol.MAGIC:
        raise BadBody('not a logged command: %r' % body[:16])
    command_bytes, succeeded = body[:-1], body[-1:] == protocol.SUCCESS
    code = bytearray(body[1:2])[0]
    if protocol.COMMANDS.get(code) == 'misc':
        request = _decode_misc(command_bytes)
    else:
        try:
            request, end = protocol.parse_request(command_bytes)
        except (protocol.NeedMore, protocol.BadRequest) as exc:
            raise BadBody('cannot parse logged body: %s' % (exc,))
        if end != len(command_bytes):
            raise BadBody('logged body has %d extra bytes' % (len(command_bytes) - end))
    if request.command not in _BODIES:
        raise BadBody('%s is never logged' % request.command)
    return request, succeeded


def _decode_misc(data):
    """misc as logged: c8 90 NAMELEN ARGCOUNT NAME {ARGLEN ARG}*."""
    try:
        nsiz, count = struct.unpack_from('>II', data, 2)
    except struct.error:
        raise BadBody('short misc body')
    pos = 10
    name = data[pos:pos + nsiz]
    pos += nsiz
    args = []
    for _ in range(count):
        if pos + 4 > len(data):
            raise BadBody('short misc body')
        size, = _U32.unpack_from(data, pos)
        args.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    if pos != len(data) or len(name) != nsiz:
        raise BadBody('misc body of the wrong length')
    return protocol.Request('misc', (bytes(name), 0, [bytes(arg) for arg in args]))
