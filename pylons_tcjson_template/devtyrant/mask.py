"""ttserver's -mask / -unmask: the commands a server refuses.

A production Tyrant serves whoever reaches its port, and some commands are
not for them: ``setmst`` points the server at a master of the caller's
choosing (which then replays its own writes, a vanish included), ``vanish``
empties the database, ``restore``/``copy`` read and write paths on the
server's disk.  ttserver 1.1.41 lets the operator forbid commands with
``-mask EXPR`` and allow them again with ``-unmask EXPR``; this module
reads those expressions exactly as ttserver's getcmdmask does, and says
what a forbidden command answers (tests/data/tyrant-1.1.41-mask.txt holds
the answers recorded from the real server).

EXPR is split at spaces and commas.  Each field is a command name, a group
name or ``0x`` and a hexadecimal bit mask; names are compared without
regard to case and unknown ones are ignored.  Every name is one bit:
a group is a bit of its own, not the set of its members, so
``-mask allwrite -unmask put`` still forbids put.  ``all`` sets every bit.
"""
from __future__ import absolute_import

import re
import struct

from . import protocol

# ttserver.c's TTSEQ* numbering: the bit of each name.
BITS = dict((name, bit) for bit, name in enumerate((
    'put', 'putkeep', 'putcat', 'putshl', 'putnr', 'out', 'get', 'mget', 'vsiz',
    'iterinit', 'iternext', 'fwmkeys', 'addint', 'adddouble', 'ext', 'sync', 'optimize',
    'vanish', 'copy', 'restore', 'setmst', 'rnum', 'size', 'stat', 'misc', 'repl', 'slave',
    'allorg', 'allmc', 'allhttp', 'allread', 'allwrite', 'allmanage')))
ALL = 2 ** 64 - 1
_HEX_DIGITS = re.compile(r'[0-9a-fA-F]*')

# The group each binary command belongs to besides allorg (ext and repl: none).
_GROUPS = {
    'allread': ('get', 'mget', 'vsiz', 'iterinit', 'iternext', 'fwmkeys', 'rnum', 'size',
                'stat'),
    'allwrite': ('put', 'putkeep', 'putcat', 'putshl', 'putnr', 'out', 'addint',
                 'adddouble', 'vanish', 'misc'),
    'allmanage': ('sync', 'optimize', 'copy', 'restore', 'setmst'),
}
_GROUP_OF = dict((command, group) for group, commands in _GROUPS.items()
                 for command in commands)

_EMPTY_LIST = protocol.list_response([])
_ZERO_COUNT = protocol.SUCCESS + struct.pack('>Q', 0)
# What a forbidden command answers when it is not a bare failure byte.  putnr
# answers nothing, as always; stat answers its counters only (see Dispatcher).
_REFUSALS = {'putnr': None, 'mget': _EMPTY_LIST, 'fwmkeys': _EMPTY_LIST,
             'misc': _EMPTY_LIST, 'rnum': _ZERO_COUNT, 'size': _ZERO_COUNT}


def parse(expr):
    """The bits EXPR names, as ttserver's getcmdmask computes them."""
    bits = 0
    for field in re.split(r'[ ,]', expr):
        name = field.lower()
        if name.startswith('0x'):
            bits |= int('0' + _HEX_DIGITS.match(name, 2).group(), 16)
        elif name == 'all':
            bits |= ALL
        elif name in BITS:
            bits |= 1 << BITS[name]
    return bits & ALL


def refusal(command):
    """The bytes a forbidden binary command answers (None: nothing)."""
    return _REFUSALS.get(command, protocol.FAILURE)


class CommandMask(object):
    """The bit mask of a server's -mask and -unmask options."""

    def __init__(self, bits=0):
        self.bits = bits & ALL

    @classmethod
    def from_options(cls, options):
        """`options`: ``('mask', EXPR)`` and ``('unmask', EXPR)`` pairs in
        command line order; -mask adds bits, -unmask clears them."""
        bits = 0
        for kind, expr in options:
            if kind == 'mask':
                bits |= parse(expr)
            else:
                bits &= ~parse(expr)
        return cls(bits)

    def _has(self, name):
        return bool(self.bits & (1 << BITS[name]))

    def forbids(self, command):
        """Whether a client's binary command is refused: by its own bit,
        by allorg or by its group (repl only by its own bit)."""
        if command == 'repl':
            return self._has('repl')
        group = _GROUP_OF.get(command)
        return (self._has(command) or self._has('allorg')
                or (group is not None and self._has(group)))

    @property
    def replicates_from_master(self):
        """False under -mask slave: the server never follows its -mhost."""
        return not self._has('slave')

    def __nonzero__(self):
        return bool(self.bits)
    __bool__ = __nonzero__
