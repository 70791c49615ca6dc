"""One update log file: the record format, and walking it record by record
with damaged bytes told apart from records.

A file holds records simply concatenated, no file header::

    c9  TS(8)  SID(2)  MID(2)  SIZE(4)  BODY

BODY is a logged command: ``c8``, a command byte, its arguments, then the
result byte (0 or 1).  Nothing marks where a record ends but SIZE, so one
bad SIZE (the torn last record a crash or a full disk leaves, a flipped
bit) makes a blind reader take the start of the next record for the rest
of this one.  ttserver 1.1.41 reads blindly: measured, it sent a torn put
to a slave with two bytes of the next record as its value, silently never
sent the records written after a torn one, and died on an assertion at a
SIZE near 4 GiB.  Here a record is believed only when it is plausible as a
whole (`check_record`), and `Cursor` skips bytes that are not one up to the
next record that is, saying so in the server's log.
"""
from __future__ import absolute_import

import os
import struct
import time

from . import protocol
from .events import log

RECORD_MAGIC = 0xC9
NOP_MAGIC = 0xCA
MAX_SID = 0xFFFF
DISK_HEADER = struct.Struct('>BQHHI')     # magic, ts, sid, mid, size
# A body holds one request and its result byte: at most a put of the
# largest key and value ttserver takes, with its header.  Nothing larger was
# ever logged by this server nor could be redone by it: a larger SIZE is
# damage.
MAX_BODY = 2 * protocol.MAX_ARG_SIZE + 64
# The commands a log can hold (what ttserver's tculogadbredo accepts).
LOGGED_CODES = frozenset(protocol.CODES[name] for name in (
    'put', 'putkeep', 'putcat', 'putshl', 'out', 'addint', 'adddouble', 'sync',
    'optimize', 'vanish', 'misc'))

OK, MORE, BAD, WAIT = 'ok', 'more', 'bad', 'wait'
# The server appends a record with one write under its lock, but a reader
# can see it in part (a write that crosses a page boundary grows the file
# page by page).  A record that runs past the end of a file still being
# written is taken for one in progress this long before it counts as torn.
TAIL_PATIENCE = 1.0     # seconds
_HEADER = DISK_HEADER.size
_MAGIC_BYTE = bytes(bytearray([RECORD_MAGIC]))
_COMMAND_BYTE = bytes(bytearray([protocol.MAGIC]))
_LOGGED_HEADS = frozenset(bytes(bytearray([protocol.MAGIC, code])) for code in LOGGED_CODES)
_RESULT_BYTES = (b'\x00', b'\x01')


def pack_record(ts, sid, mid, body):
    return DISK_HEADER.pack(RECORD_MAGIC, ts, sid & MAX_SID, mid & MAX_SID, len(body)) + body


def check_record(data, pos, limit, growing=False):
    """Whether a plausible record starts at ``data[pos]``.

    `data` is a piece of a file read from some offset, and `limit` how many
    bytes the file has from that offset on (``len(data)`` when the piece
    reaches the end).  A record is plausible when its header has the magic
    byte and a possible size, its body starts like a logged command and
    ends with a result byte, and the next record starts right after it (or
    the file ends there).  Returns ``(OK, end)``, ``(MORE, bytes needed from
    pos)`` when the piece is too short to tell, ``(WAIT, None)`` when the
    file ends inside the record and is `growing` (being written: the rest
    is on its way), or ``(BAD, reason)``.
    """
    have = len(data)
    if pos + _HEADER > have:
        if pos + _HEADER > limit:
            return (WAIT, None) if growing else (BAD, 'a torn record header')
        return MORE, _HEADER + 1
    magic, _, _, _, size = DISK_HEADER.unpack_from(data, pos)
    if magic != RECORD_MAGIC:
        return BAD, 'no record starts there'
    if not 3 <= size <= MAX_BODY:
        return BAD, 'impossible record size %d' % size
    end = pos + _HEADER + size
    if end > limit:
        if growing:
            return WAIT, None
        return BAD, 'a record of %d bytes runs past the end of the file' % size
    if not _may_be_logged(data[pos + _HEADER:pos + _HEADER + 2]):
        return BAD, 'a record that holds no logged command'
    wanted = end + 1 if end < limit else end
    if wanted > have:
        return MORE, wanted - pos
    if data[end - 1:end] not in _RESULT_BYTES:
        return BAD, 'a record without its result byte'
    if end < limit and data[end:end + 1] != _MAGIC_BYTE:
        return BAD, 'a record whose size does not lead to the next one'
    return OK, end


def _may_be_logged(head):
    """Whether a body's first bytes (as many as were read, up to two)
    can start a logged command."""
    if len(head) == 2:
        return head in _LOGGED_HEADS
    return head in (b'', _COMMAND_BYTE)


class Cursor(object):
    """A position in one update log file, moved over whole records.

    `read` returns the plausible records from the position on and moves
    past them; bytes that are not a record are skipped up to the next
    plausible one, and `report` (the server's log) is told once when such
    damage is met and once when it is left.  While bytes are being skipped,
    `damage` is ``(offset where it started, reason)``.  A file that does not
    exist (yet) reads as empty.  While `growing` (the server may be writing
    to the file), a record cut short by the end of the file is waited for
    (TAIL_PATIENCE) before it is judged torn.
    """

    def __init__(self, path, offset=0, report=log):
        self.path = path
        self.offset = offset
        self.report = report
        self.damage = None
        self.at_end = False
        self.growing = False
        self._waiting = None        # (offset of a record cut short, since when)

    def read(self, budget, collect=True):
        """About `budget` bytes worth of records as ``(ts, sid, mid, body)``
        (one larger record is read whole).  Afterwards `at_end` says whether
        the position is at the end of the file."""
        records = []
        need = 0
        while True:
            piece = self._piece(max(budget + _HEADER + 1, need))
            if piece is None:
                self.at_end = True
                return records
            data, limit = piece
            used, need = self._walk(data, limit, records if collect else None)
            self.offset += used
            budget -= used
            # Nothing used and nothing needed: the file shrank under us;
            # count that as its end rather than read it again at once.
            self.at_end = used == limit or not (used or need)
            if self.at_end or (used and budget <= 0):
                return records

    def _piece(self, size):
        """``(bytes from the position, bytes the file has from there)``."""
        try:
            with open(self.path, 'rb') as log_file:
                limit = os.fstat(log_file.fileno()).st_size - self.offset
                log_file.seek(self.offset)
                return log_file.read(size), max(limit, 0)
        except (IOError, OSError):
            return None

    def _walk(self, data, limit, records):
        """Take the records in `data`; ``(bytes used, bytes needed)``."""
        pos = 0
        while pos < len(data):
            if self.damage is not None:
                pos, need = self._resync(data, pos, limit)
                if need or self.damage is not None:
                    return pos, need
            status, value = check_record(data, pos, limit, self._may_grow(pos))
            if status == WAIT:
                return pos, 0
            if status == MORE:
                return pos, value
            if status == BAD:
                self._damaged(pos, value)
                pos += 1
                continue
            if records is not None:
                _, ts, sid, mid, _ = DISK_HEADER.unpack_from(data, pos)
                records.append((ts, sid, mid, bytes(data[pos + _HEADER:value])))
            pos = value
        return pos, 0

    def _may_grow(self, pos):
        """Whether a record at `pos` cut short by the end of the file may
        still be completed: the file is growing, and the record has not
        stayed short for TAIL_PATIENCE."""
        if not self.growing:
            return False
        offset, now = self.offset + pos, time.time()
        if self._waiting is None or self._waiting[0] != offset:
            self._waiting = (offset, now)
        return now - self._waiting[1] < TAIL_PATIENCE

    def _resync(self, data, pos, limit):
        """Look for the next plausible record from `pos` on."""
        while True:
            pos = data.find(_MAGIC_BYTE, pos)
            if pos < 0:
                return len(data), 0
            status, value = check_record(data, pos, limit)
            if status == OK:
                self._resumed(pos)
                return pos, 0
            if status == MORE:
                return pos, value
            pos += 1

    def _damaged(self, pos, reason):
        if self.damage is None:
            self.damage = (self.offset + pos, reason)
            self.report('update log %s: %s at offset %d; skipping to the next whole record'
                        % (self.path, reason, self.offset + pos))

    def _resumed(self, pos):
        start = self.damage[0]
        self.damage = None
        self.report('update log %s: skipped %d bytes (offsets %d to %d)'
                    % (self.path, self.offset + pos - start, start, self.offset + pos))

    def leave(self):
        """Done with this file (at its end): report damage that ran to it."""
        if self.damage is not None:
            self._resumed(0)
