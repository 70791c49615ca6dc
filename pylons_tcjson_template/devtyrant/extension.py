"""The ext command (0xC8 0x68) on worker threads, as ttserver 1.1.41 runs it.

ttserver hands every request to one of ``-thnum`` worker threads (8 by
default), each with its own Lua state; nothing is shared between the
states but the database, the stash and the named locks.  Here the event
loop answers every other command itself (they take microseconds) and hands
ext calls to a pool of as many threads, each with its own `scripting.
LuaState`, so a long Lua call never holds up other clients.

The call's options decide what it waits for, as in ttserver:

* 1 (RDBXOLCKREC): one of 31 mutexes, picked by a hash of the key, so two
  calls on the same key never run at once (a read-modify-write in Lua loses
  no update).  Plain put, out and the rest take no such mutex;
* 2 (RDBXOLCKGLB): all 31, in order: no other locked call runs meanwhile;
* 0: none; calls on one key may interleave.

A finished call's answer goes back through `on_done(token, answer)`, on
the worker's thread: the server queues it for its loop.
"""
from __future__ import absolute_import

import threading
import time

try:
    import Queue as queue
except ImportError:                     # pragma: no cover (Python 3)
    import queue

from .host import ScriptHost, log
from .protocol import FAILURE, SUCCESS, pack_u32

try:
    from .scripting import LuaState, read_script
except ImportError as exc:      # lupa missing: the script cannot run
    LuaState = read_script = None
    _MISSING = str(exc)

DEFAULT_THREADS = 8             # ttserver's -thnum default
RECORD_MUTEXES = 31             # ttserver's RECMTXNUM
LOCK_RECORD = 1                 # RDBXOLCKREC
LOCK_GLOBAL = 2                 # RDBXOLCKGLB
STOP_WAIT = 5.0                 # seconds the server waits for a running call when it stops


class Settings(object):
    """The command line's -ext FILE (None: no Lua), -thnum N and -extpc
    NAME PERIOD (any number of them)."""

    def __init__(self, path=None, threads=DEFAULT_THREADS, periodic=()):
        self.path = path
        self.threads = threads
        self.periodic = list(periodic)


def mutex_index(key):
    """ttserver's recmtxidx: the record mutex of a key."""
    value = 725
    for byte in bytearray(key):
        value = (value * 29 + byte) & 0xFFFFFFFF
    return value % RECORD_MUTEXES


def answer(result):
    """The ext command's answer for what the function returned (None:
    status 1, whatever the reason)."""
    if result is None:
        return FAILURE
    return SUCCESS + pack_u32(len(result)) + result


def _daemon(name, target, *args):
    """A started thread that does not keep the process alive: a Lua call
    that never ends must not stop the server from exiting."""
    thread = threading.Thread(target=target, name=name, args=args)
    thread.daemon = True
    thread.start()
    return thread


class Extension(object):
    """The script loaded in `threads` Lua states and the threads that run
    the calls.  A script that cannot be read leaves no state at all: every
    call fails, and `failed` makes the server's exit status 1 (ttserver's
    "scrextnew failed")."""

    def __init__(self, path, dispatcher, threads=DEFAULT_THREADS, on_done=None,
                 periodic=()):
        """`periodic`: (function name, seconds) pairs, ttserver's -extpc:
        each function is called with ("", "") that often, in a state of
        its own, without record locks."""
        self.path = path
        self.host = ScriptHost(dispatcher)
        self.on_done = on_done
        self.mutexes = [threading.Lock() for _ in range(RECORD_MUTEXES)]
        self.jobs = queue.Queue()
        self.stopped = threading.Event()
        log('scripting extension: %s' % path)
        source = self._source(path)
        self.failed = source is None
        # Created one after the other before the server serves, as ttserver
        # does: the first one's _begin() has run by the first call.
        self.states = [self._state(source, i, threads) for i in range(threads)]
        self.workers = [_daemon('ext worker %d' % (i + 1), self._work, state)
                        for i, state in enumerate(self.states)]
        for i, (name, period) in enumerate(periodic):
            state = self._state(source, threads + i, threads)
            self.workers.append(_daemon('extpc %s' % name, self._repeat, state, name, period))

    @staticmethod
    def _source(path):
        """The script's text; None (logged) when it cannot be run."""
        if read_script is None:
            log('ERROR scrextnew failed: %s (pip install lupa)' % _MISSING)
            return None
        source = read_script(path)
        if source is None:
            log('ERROR scrextnew failed: cannot read %s' % path)
        return source

    def _state(self, source, thid, threads):
        return None if source is None else LuaState(source, self.host, thid, threads, log)

    def submit(self, token, name, opts, key, value):
        """Run a call on a worker; `on_done(token, answer)` follows."""
        self.jobs.put((token, name, opts, key, value))

    def _work(self, state):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            token, name, opts, key, value = job
            try:
                result = self.run(state, name, opts, key, value)
            except Exception as exc:        # a bug here must not kill the worker
                log('ERROR ext %r failed: %s: %s' % (name, type(exc).__name__, exc))
                result = FAILURE
            self.on_done(token, result)

    def _repeat(self, state, name, period):
        """-extpc: call `name` every `period` seconds until the server stops."""
        if state is None or not name or period <= 0:
            return
        while not self.stopped.wait(period):
            state.call(name, b'', b'')

    def run(self, state, name, opts, key, value):
        """The answer to one call, under the lock its options ask for."""
        if state is None:
            return FAILURE
        if opts & LOCK_GLOBAL:
            held = self.mutexes
        elif opts & LOCK_RECORD:
            held = [self.mutexes[mutex_index(key)]]
        else:
            held = []
        for mutex in held:
            mutex.acquire()
        try:
            return answer(state.call(name, key, value))
        finally:
            for mutex in reversed(held):
                mutex.release()

    def stop(self, timeout=STOP_WAIT):
        """Stop the workers (a running call may finish, for `timeout`
        seconds at most).  False when a call was still running: the caller
        must not trust the store to be left alone then."""
        self.host.stopping = True
        self.stopped.set()
        for _ in self.workers:
            self.jobs.put(None)
        deadline = time.time() + timeout
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.time()))
        return not any(worker.is_alive() for worker in self.workers)

    def end(self):
        """The script's _end(), in the first state, once the database is
        closed (as ttserver calls it)."""
        if self.states[0] is not None:
            self.states[0].close()
