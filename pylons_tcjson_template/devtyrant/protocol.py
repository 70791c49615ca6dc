"""Tokyo Tyrant 1.1.41 binary protocol: request parsing and response bytes.

Every request is the magic byte 0xC8, a command byte, a fixed header of
big-endian integers (mostly sizes) and then the variable parts those sizes
announce.  Responses start with a status byte: 0 success, 1 failure.

A `Framer` turns the start of a connection's bytes into a `Request` or
says that more bytes are needed (remembering how far it got), with
ttserver's limits; `parse_request` does the same for a complete buffer.
The server decides what to do with either.  Nothing here touches a socket
or a database.
"""
from __future__ import absolute_import

import itertools
import struct

MAGIC = 0xC8

SUCCESS = b'\x00'
FAILURE = b'\x01'

# Command bytes of ttserver 1.1.41.  (PyTyrant 1.1.17 still uses the older
# numbering for vanish/copy/restore: 0x71/0x72/0x73.)
COMMANDS = {
    0x10: 'put', 0x11: 'putkeep', 0x12: 'putcat', 0x13: 'putshl',
    0x18: 'putnr', 0x20: 'out', 0x30: 'get', 0x31: 'mget', 0x38: 'vsiz',
    0x50: 'iterinit', 0x51: 'iternext', 0x58: 'fwmkeys',
    0x60: 'addint', 0x61: 'adddouble', 0x68: 'ext',
    0x70: 'sync', 0x71: 'optimize', 0x72: 'vanish', 0x73: 'copy',
    0x74: 'restore', 0x78: 'setmst',
    0x80: 'rnum', 0x81: 'size', 0x88: 'stat', 0x90: 'misc',
    0xA0: 'repl',
}
CODES = dict((name, code) for code, name in COMMANDS.items())

# ttserver's limits, checked as it reads a request's header: a key, value or
# name longer than MAX_ARG_SIZE (MAXARGSIZ), a list (mget keys, misc
# arguments) of more than MAX_ARG_COUNT items (MAXARGNUM) or an ext/misc
# function name of more than MAX_NAME bytes (a TTADDRBUFSIZ buffer) is
# "invalid parameters".  A size with the top bit set is negative there.
MAX_ARG_SIZE = 256 << 20
MAX_ARG_COUNT = 1 << 20
MAX_NAME = 1023

_U32 = struct.Struct('>I')
_U64 = struct.Struct('>Q')


class NeedMore(Exception):
    """The buffer holds only part of a request."""


class BadRequest(Exception):
    """ttserver answers nothing to this request ("unknown command" or
    "invalid parameters") after reading `consumed` bytes of it (the command
    and its header).  It then goes on with whatever the client had already
    sent, and closes the connection when nothing is left to read."""

    def __init__(self, message, consumed=2):
        Exception.__init__(self, message)
        self.consumed = consumed


class Request(object):
    """One parsed request: its command name and decoded arguments."""
    __slots__ = ('command', 'args')

    def __init__(self, command, args):
        self.command = command
        self.args = args

    def __repr__(self):
        return 'Request(%r, %r)' % (self.command, self.args)


def _size_ok(size):
    return size <= MAX_ARG_SIZE


class _Fixed(object):
    """A command whose header says how long every part after it is: the
    whole request's length is known once the header is in, so a request
    that arrives slowly costs nothing until its last byte is there."""
    __slots__ = ('header', 'sized', 'valid', 'build')

    def __init__(self, fmt, sized=(), valid=None, build=None):
        self.header = struct.Struct(fmt)
        self.sized = sized                  # header fields giving the parts' sizes
        self.valid = valid                  # further checks of the header
        self.build = build or (lambda values, parts: tuple(parts))

    def parse(self, buf, pos):
        start = pos + 2
        stop = start + self.header.size
        if stop > len(buf):
            raise NeedMore()
        values = self.header.unpack_from(buf, start)
        sizes = [values[i] for i in self.sized]
        if not all(_size_ok(size) for size in sizes) or (self.valid and not self.valid(values)):
            raise BadRequest('invalid parameters', stop - pos)
        if stop + sum(sizes) > len(buf):
            raise NeedMore()
        parts = []
        for size in sizes:
            parts.append(bytes(buf[stop:stop + size]))
            stop += size
        return self.build(values, parts), stop


class _ListProgress(object):
    """How far the items of an incomplete list request have been read."""
    __slots__ = ('values', 'name', 'items', 'offset', 'count')

    def __init__(self, values, name, offset, count):
        self.values = values
        self.name = name
        self.items = []
        self.offset = offset        # from the request's first byte
        self.count = count


class _List(object):
    """mget and misc: a header (with a function name for misc) and a count
    of length-prefixed items.  Items are read as they arrive and kept, so a
    large list is read once, not again from its start on every read.

    As in ttserver, an item longer than MAX_ARG_SIZE ends the list early:
    the request ends after that item's size field and is answered with the
    items before it."""

    def __init__(self, fmt, count_at, name_at=None, build=None):
        self.header = struct.Struct(fmt)
        self.count_at = count_at
        self.name_at = name_at
        self.build = build

    def start(self, buf, pos):
        """The progress once the header (and name) are in."""
        stop = pos + 2 + self.header.size
        if stop > len(buf):
            raise NeedMore()
        values = self.header.unpack_from(buf, pos + 2)
        count = values[self.count_at]
        name_size = values[self.name_at] if self.name_at is not None else 0
        if count > MAX_ARG_COUNT or name_size > MAX_NAME:
            raise BadRequest('invalid parameters', stop - pos)
        if stop + name_size > len(buf):
            raise NeedMore()
        name = bytes(buf[stop:stop + name_size])
        return _ListProgress(values, name, stop + name_size - pos, count)

    def resume(self, progress, buf, pos):
        """Read the items that have arrived; the finished request, or
        NeedMore with `progress` brought up to date."""
        items, end = progress.items, len(buf)
        at = pos + progress.offset
        unpack, append = _U32.unpack_from, items.append
        try:
            while len(items) < progress.count:
                if at + 4 > end:
                    raise NeedMore()
                size, = unpack(buf, at)
                if not _size_ok(size):
                    at += 4
                    break
                if at + 4 + size > end:
                    raise NeedMore()
                append(bytes(buf[at + 4:at + 4 + size]))
                at += 4 + size
        finally:
            progress.offset = at - pos
        return self.build(progress, items), at


_KV = _Fixed('>II', sized=(0, 1))
_KEY = _Fixed('>I', sized=(0,))
_NOTHING = _Fixed('')
_NON_NEGATIVE = 0x80000000          # an int field ttserver refuses when negative

_LAYOUTS = {
    'put': _KV, 'putkeep': _KV, 'putcat': _KV, 'putnr': _KV,
    'putshl': _Fixed('>III', sized=(0, 1), valid=lambda v: v[2] < _NON_NEGATIVE,
                     build=lambda v, p: (p[0], p[1], v[2])),
    'out': _KEY, 'get': _KEY, 'vsiz': _KEY,
    'mget': _List('>I', count_at=0, build=lambda progress, items: (items,)),
    'iterinit': _NOTHING, 'iternext': _NOTHING,
    # fwmkeys' limit is a signed int: -1 = no limit.
    'fwmkeys': _Fixed('>Ii', sized=(0,), build=lambda v, p: (p[0], v[1])),
    'addint': _Fixed('>Ii', sized=(0,), build=lambda v, p: (p[0], v[1])),
    'adddouble': _Fixed('>Iqq', sized=(0,), build=lambda v, p: (p[0], v[1], v[2])),
    'ext': _Fixed('>IIII', sized=(0, 2, 3), valid=lambda v: v[0] <= MAX_NAME,
                  build=lambda v, p: (_c_string(p[0]), v[1], p[1], p[2])),
    'sync': _NOTHING, 'vanish': _NOTHING, 'rnum': _NOTHING,
    'size': _NOTHING, 'stat': _NOTHING,
    'optimize': _KEY, 'copy': _KEY,
    'restore': _Fixed('>IQI', sized=(0,), build=lambda v, p: (p[0], v[1], v[2])),
    'setmst': _Fixed('>IIQI', sized=(0,), valid=lambda v: v[1] < _NON_NEGATIVE,
                     build=lambda v, p: (p[0], v[1], v[2], v[3])),
    'misc': _List('>III', count_at=2, name_at=0,
                  build=lambda progress, items: (_c_string(progress.name), progress.values[1],
                                                 items)),
    'repl': _Fixed('>QI', build=lambda v, p: v),        # (ts, sid): the slave's request
}


def _c_string(name):
    """A function name as ttserver keeps it (a C string): up to a NUL."""
    return name.split(b'\0', 1)[0]


def _command_at(buf, pos):
    if len(buf) - pos < 2:
        raise NeedMore()
    command = COMMANDS.get(bytearray(buf[pos + 1:pos + 2])[0])
    if command is None:
        raise BadRequest('unknown command', 2)
    return command


class Framer(object):
    """Cuts one connection's bytes into requests.

    An incomplete request costs nothing to look at again: a fixed one is
    only measured (its header gives its length), and a list request (mget,
    misc) keeps the items read so far (`_List`).  The caller passes the
    position where the incomplete request starts each time; it may drop
    the bytes before it meanwhile."""

    def __init__(self):
        self._command = None
        self._progress = None

    def parse(self, buf, pos=0):
        """Parse one request starting at ``buf[pos]``: ``(request,
        next_pos)``.  Raises `NeedMore` when it is not complete yet and
        `BadRequest` for what ttserver does not answer.  The caller checks
        the magic byte."""
        if self._progress is None:
            command = _command_at(buf, pos)
            layout = _LAYOUTS[command]
            if isinstance(layout, _Fixed):
                args, stop = layout.parse(buf, pos)
                return Request(command, args), stop
            self._command, self._progress = command, layout.start(buf, pos)
        args, stop = _LAYOUTS[self._command].resume(self._progress, buf, pos)
        command, self._command, self._progress = self._command, None, None
        return Request(command, args), stop


def parse_request(buf, pos=0):
    """One complete request at ``buf[pos]`` (see `Framer.parse`), for a
    buffer that is not read any further (an update log body, a test)."""
    return Framer().parse(buf, pos)


# ------------------------------------------------------------ responses

def pack_u32(n):
    return _U32.pack(n)


def pack_u64(n):
    return _U64.pack(n)


def sized(data):
    """A 4-byte big-endian length followed by the bytes."""
    return _U32.pack(len(data)) + data


def value_response(value):
    """The answer to get: status, size, value; failure when missing."""
    if value is None:
        return FAILURE
    return SUCCESS + _U32.pack(len(value)) + value


def list_response(items, status=SUCCESS):
    """A count followed by length-prefixed items (fwmkeys, misc)."""
    parts = [status, _U32.pack(len(items))]
    parts.extend(_U32.pack(len(item)) + item for item in items)
    return b''.join(parts)


_PAIR_SIZES = struct.Struct('>II')
_CHUNK = 64 * 1024
# Keys looked up (or answered) between two turns of the server's loop.
_BATCH = 4096


class Streamed(object):
    """An answer produced piece by piece while the client reads it (mget,
    misc getlist).  A request of a few bytes can name one large record a
    million times; built whole, its answer would take that much memory, and
    a million lookups at once would keep every other client waiting.

    `status` is the first byte; `chunks` yields every byte, status
    included, and None where the server should serve others before it asks
    for more."""
    __slots__ = ('status', 'chunks')

    def __init__(self, status, chunks):
        self.status = status
        self.chunks = chunks


def status_of(answer):
    """The status byte of an answer, built whole or `Streamed`."""
    if isinstance(answer, Streamed):
        return answer.status
    return answer[:1]


def _chunked(pieces):
    """Small pieces joined into chunks of about _CHUNK bytes; a large piece
    (a value) goes out as it is, never copied into a chunk; None passes."""
    batch, size = [], 0
    for piece in pieces:
        if piece is None or len(piece) >= _CHUNK:
            if batch:
                yield b''.join(batch)
                batch, size = [], 0
            yield piece
            continue
        batch.append(piece)
        size += len(piece)
        if size >= _CHUNK:
            yield b''.join(batch)
            batch, size = [], 0
    if batch:
        yield b''.join(batch)


def _found_pieces(keys, read, per_record, pieces):
    """Look the keys up `_BATCH` at a time (`read(batch, found)` fills the
    dict found: key -> value or None, each distinct key read once), then
    the count of records found times `per_record`, then `pieces(key,
    value)` for each, in the order of `keys`.  None between batches: a
    short list is answered at once."""
    found, count = {}, 0
    for start in range(0, len(keys), _BATCH):
        if start:
            yield None
        batch = keys[start:start + _BATCH]
        read(batch, found)
        count += sum(1 for key in batch if found[key] is not None)
    yield SUCCESS + _U32.pack(count * per_record)
    for start in range(0, len(keys), _BATCH):
        if start:
            yield None
        for key in keys[start:start + _BATCH]:
            value = found[key]
            if value is not None:
                for piece in pieces(key, value):
                    yield piece


def pairs_answer(keys, read):
    """mget's answer: count, then (ksiz, vsiz, key, value) for each of
    `keys`, in order, that is stored."""
    return Streamed(SUCCESS, _chunked(_found_pieces(
        keys, read, 1, lambda key, value: (_PAIR_SIZES.pack(len(key), len(value)) + key,
                                           value))))


def list_pairs_answer(keys, read):
    """misc getlist's answer: a list of key, value, key, value... for each
    of `keys` that is stored."""
    return Streamed(SUCCESS, _chunked(_found_pieces(
        keys, read, 2, lambda key, value: (_U32.pack(len(key)) + key + _U32.pack(len(value)),
                                           value))))


def request_bytes(command, *fields):
    """Build a request: for tests and tools that speak raw bytes.

    ``fields`` are integers (packed as 4 bytes) and byte strings (sent as
    they are), in the order the protocol lays them out.
    """
    parts = [bytearray([MAGIC, CODES[command]])]
    for field in fields:
        if isinstance(field, int):
            parts.append(_U32.pack(field & 0xFFFFFFFF))
        else:
            parts.append(field)
    return b''.join(bytes(p) for p in parts)


class ConnectionClosed(EOFError):
    """The peer closed the connection before `size` bytes came;
    `received` holds what did."""

    def __init__(self, received, size):
        EOFError.__init__(self, 'connection closed after %d of %d bytes'
                          % (len(received), size))
        self.received = received


def recv_exactly(sock, size):
    """Read exactly `size` bytes from a blocking socket (raw clients:
    tests and benchmarks)."""
    data = b''
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionClosed(data, size)
        data += chunk
    return data
