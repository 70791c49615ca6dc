"""What an extension script may do to the server: the Python side of the
functions `scripting` defines in each Lua state.

Writes go through the dispatcher as ttserver's tculogadb functions do:
applied under the dispatcher's lock and logged in the update log as the
plain command (a put, an out...) under this server's sid, so a slave
replays them without the script.  They are not counted in stat's cnt_
lines.  Reads take the same lock.  The stash (a dict every state shares)
and the named locks of _lock/_unlock are the server's, not a state's.

`ScriptHost.functions` hands them to a Lua state; each answers ``(True,
result)``, or ``(False, None)`` for arguments scrext.c refuses (the Lua
side raises the error then).
"""
from __future__ import absolute_import, print_function

import os
import struct
import sys
import threading
import time

from . import protocol, ulog
from .protocol import FAILURE, SUCCESS, Request

_INT = struct.Struct('>i')
_INT_MIN = -2 ** 31
LOCK_POLL = 0.1                 # _lock tries again this often, as ttserver does
# _log's levels (ttserver's TTLOGDEBUG..TTLOGERROR); debug is not shown.
_LEVELS = {1: 'INFO', 2: 'SYSTEM', 3: 'ERROR'}


def c_int(number):
    """``(int)number`` for a Lua number, as C converts a double on x86-64:
    toward zero, INT_MIN when out of range."""
    if number != number or not _INT_MIN <= number < 2 ** 31:
        return _INT_MIN
    return int(number)


def log(message):
    print('tcjson-tyrant: %s' % message, file=sys.stderr)
    sys.stderr.flush()


def _list_items(answer):
    """The byte strings of a list answer (misc), built whole or streamed."""
    if isinstance(answer, protocol.Streamed):
        answer = b''.join(chunk for chunk in answer.chunks if chunk)
    count, = struct.unpack_from('>I', answer, 1)
    items, pos = [], 5
    for _ in range(count):
        size, = struct.unpack_from('>I', answer, pos)
        items.append(answer[pos + 4:pos + 4 + size])
        pos += 4 + size
    return items


def _checked(function):
    """Answer ``(False, None)`` when the Lua side could not convert an
    argument (it passes False then), else ``(True, result)``."""
    def checked(*args):
        if any(arg is False for arg in args):
            return False, None
        return True, function(*args)
    return checked


class ScriptHost(object):
    """The server's side of every Lua state of one server."""

    FUNCTIONS = ('get vsiz out put putkeep putcat addint adddouble iterinit iternext '
                 'fwmkeys vanish rnum size misc time sleep log stashput stashputkeep '
                 'stashputcat stashout stashget stashvanish lock unlock').split()

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.sid = dispatcher.sid
        self.pid = os.getpid()
        self.stopping = False           # _lock gives up once the server stops
        self._shared = threading.Lock()
        self._stash = {}
        self._locks = set()

    def functions(self, lua):
        """name -> Python function, for `scripting.ENVIRONMENT`; lists are
        returned as tables of the state `lua`."""
        functions = dict((name, _checked(getattr(self, name))) for name in self.FUNCTIONS)
        fwmkeys, misc = functions['fwmkeys'], functions['misc']
        functions['fwmkeys'] = lambda *args: self._as_table(lua, fwmkeys(*args))
        functions['misc'] = lambda name, args: self._as_table(lua, misc(name, list(args.values())))
        return functions

    @staticmethod
    def _as_table(lua, answer):
        ok, items = answer
        return ok, (lua.table_from(items) if items is not None else None)

    # ---- the database
    def _write(self, command, *args):
        return self.dispatcher.run_local(Request(command, args))

    def _read(self, method, *args):
        with self.dispatcher.lock:
            return getattr(self.dispatcher.store, method)(*args)

    def get(self, key):
        return self._read('get', key)

    def vsiz(self, key):
        value = self._read('get', key)
        return -1 if value is None else len(value)

    def out(self, key):
        return self._write('out', key) == SUCCESS

    def put(self, key, value):
        return self._write('put', key, value) == SUCCESS

    def putkeep(self, key, value):
        return self._write('putkeep', key, value) == SUCCESS

    def putcat(self, key, value):
        return self._write('putcat', key, value) == SUCCESS

    def addint(self, key, number):
        answer = self._write('addint', key, c_int(number))
        return _INT.unpack(answer[1:])[0] if answer[:1] == SUCCESS else None

    def adddouble(self, key, number):
        """Added as the exact double; logged with the number packed as
        ttserver packs it (the request's own form would round it)."""
        number = float(number)
        dispatcher = self.dispatcher
        with dispatcher.lock:
            total = dispatcher.store.adddouble(key, number)
            if number != 0 and dispatcher.journal is not None:
                body = (protocol.request_bytes('adddouble', len(key)) + ulog.pack_double(number)
                        + key + (FAILURE if total is None else SUCCESS))
                dispatcher.journal.write(self.sid, 0, body)
        return total

    def iterinit(self):
        return self._read('iterinit')

    def iternext(self):
        return self._read('iternext')

    def fwmkeys(self, prefix, limit):
        return self._read('fwmkeys', prefix, c_int(limit))

    def vanish(self):
        return self._write('vanish') == SUCCESS

    def rnum(self):
        return self._read('rnum')

    def size(self):
        return self._read('size')

    def misc(self, name, args):
        """A name starting with "$" is not logged (misc's opts bit 1)."""
        opts = 0
        if name.startswith(b'$'):
            name, opts = name[1:], ulog.MISC_NO_ULOG
        answer = self._write('misc', name, opts, args)
        if protocol.status_of(answer) != SUCCESS:
            return None
        return _list_items(answer)

    # ---- the server
    def time(self):
        return time.time()

    def sleep(self, seconds):
        if seconds > 0:
            time.sleep(seconds)
        return True

    def log(self, message, level=None):
        level = 1 if level is None else c_int(level)
        if level in _LEVELS:
            log('%s %s' % (_LEVELS[level], message))

    # ---- the stash and named locks, shared by every state
    def stashput(self, key, value):
        with self._shared:
            self._stash[key] = value
        return True

    def stashputkeep(self, key, value):
        with self._shared:
            self._stash.setdefault(key, value)
        return True

    def stashputcat(self, key, value):
        with self._shared:
            self._stash[key] = self._stash.get(key, b'') + value
        return True

    def stashout(self, key):
        with self._shared:
            return self._stash.pop(key, None) is not None

    def stashget(self, key):
        with self._shared:
            return self._stash.get(key)

    def stashvanish(self):
        with self._shared:
            self._stash.clear()

    def lock(self, name):
        """Wait until nobody holds `name`, then hold it; False when the
        server stops meanwhile."""
        while True:
            with self._shared:
                if name not in self._locks:
                    self._locks.add(name)
                    return True
            if self.stopping:
                return False
            time.sleep(LOCK_POLL)

    def unlock(self, name):
        with self._shared:
            held = name in self._locks
            self._locks.discard(name)
        return held
