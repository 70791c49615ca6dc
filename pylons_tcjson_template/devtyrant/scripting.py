"""One Lua state running a ttserver extension script (``-ext FILE``), as
ttserver 1.1.41's scrext.c sets it up, on Lua 5.4 through lupa.

Each worker thread of `extension` owns one `LuaState`: the script's text is
run once in it, after the server's functions and variables are defined
(`ENVIRONMENT`); the first state (thread id 1) then calls the script's
``_begin()`` and, when the server stops, its ``_end()``.

`LuaState.call` is ttserver's scrextcallmethod: it calls the global
function a client named with (key, value) and turns the first value it
returns into the answer's bytes, or None (the client gets status 1):

* a name starting with "_", a global that is not a function, a Lua error
  (logged as "Lua error: ..."), nil, false, or nothing returned: None;
* a string as it is; a number as Lua 5.1 writes it (``%.14g``: 42, 1.5,
  9.007199254741e+15, inf, -nan); true as "true";
* a table: its element [1] the same way (none, or a table in it: None).

The server's functions (`host.ScriptHost` does the work) check their
arguments as scrext.c does and raise the same errors ("_put: invalid
arguments").  Provided: _get _put _putkeep _putcat _out _vsiz _addint
_adddouble _iterinit _iternext _fwmkeys _vanish _rnum _size _misc
_stashput _stashputkeep _stashputcat _stashout _stashget _stashvanish
_lock _unlock _time _sleep _log, and the variables _version _pid _sid
_thnum _thid.  Not provided (calling one is a Lua error): _eval _foreach
_mapreduce _stashforeach _pack _unpack _split _codec _hash _bit _strstr
_regex _ucs _dist _isect _union _stat _glob _remove _mkdir.

The script runs on Lua 5.4, not ttserver's 5.1: integers are a subtype
(``tostring(2^53)`` and ``tostring(7 // 2)`` read differently), ``unpack``,
``setfenv``, ``loadstring`` and ``table.getn`` are gone.  Write scripts in
the common subset and test them under both (Debian's lua5.1).
"""
from __future__ import absolute_import

import re

import lupa

VERSION = '1.1.41'

# Defines the server's functions and variables in a fresh state from the
# Python functions and values in table `py`: the argument checks and
# conversions of scrext.c (a key or value may be a string or a number,
# written as Lua 5.1 writes numbers), then the call.  A Python function
# answers (true, result) or (false, nil); the Lua error is raised then, as
# scrext.c raises it.  lupa hands every Python number over as a float;
# whole ones become integers, so that _sid, a size or a count read the same
# as in Lua 5.1 ("@" .. _sid is "@7", not "@7.0").
ENVIRONMENT = r'''
local py, variables = ...
local format, type, select, error, tonumber = string.format, type, select, error, tonumber
local rawlen, rawget, tointeger = rawlen, rawget, math.tointeger

local function whole(v)
  if type(v) == "number" then return tointeger(v) or v end
  return v
end

for name, value in pairs(variables) do _G[name] = whole(value) end

local function tostr(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return format("%.14g", v) end
end

local function define(name, count, convert)
  local fn, message = py[name], "_" .. name .. ": invalid arguments"
  _G["_" .. name] = function(...)
    local n = select("#", ...)
    if count and n ~= count or not count and n < 1 then error(message, 0) end
    local ok, result = fn(convert(...))
    if not ok then error(message, 0) end
    return whole(result)
  end
end

local function none() end
local function key(k) return tostr(k) or false end
local function key_value(k, v) return tostr(k) or false, tostr(v) or false end
local function key_number(k, n) return tostr(k) or false, tonumber(n) or false end

for _, name in ipairs({"get", "vsiz", "out", "stashout", "stashget", "lock", "unlock"}) do
  define(name, 1, key)
end
for _, name in ipairs({"put", "putkeep", "putcat", "stashput", "stashputkeep",
                       "stashputcat"}) do
  define(name, 2, key_value)
end
for _, name in ipairs({"addint", "adddouble"}) do define(name, 2, key_number) end
for _, name in ipairs({"iterinit", "iternext", "vanish", "rnum", "size", "time",
                       "stashvanish"}) do
  define(name, 0, none)
end
define("sleep", 1, function(n) return tonumber(n) or false end)
define("fwmkeys", nil, function(prefix, max, ...)
  return tostr(prefix) or false, type(max) == "number" and max or tonumber(max) or -1
end)
define("log", nil, function(message, level)
  return tostr(message) or false, tonumber(level)
end)

-- _misc(name, ...): strings and numbers, and the elements of tables.
local misc = py.misc
_misc = function(name, ...)
  name = tostr(name)
  if not name then error("_misc: invalid arguments", 0) end
  local args = {}
  for i = 1, select("#", ...) do
    local arg = select(i, ...)
    if type(arg) == "table" then
      for j = 1, rawlen(arg) do args[#args + 1] = tostr(rawget(arg, j)) end
    else
      args[#args + 1] = tostr(arg)
    end
  end
  local ok, result = misc(name, args)
  return result
end

-- What ttserver answers for the value a function returned.
local function text(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return format("%.14g", v) end
  if v == true then return "true" end
end

return function(f, k, v)
  local r = f(k, v)
  if type(r) == "table" then
    if rawlen(r) < 1 then return nil end
    return text(rawget(r, 1))
  end
  return text(r)
end
'''


def read_script(path):
    """The script's text as ttserver takes it from ``-ext PATH``: ``@CODE``
    is the code itself, an empty path an empty script, anything else a
    file (None when it cannot be read: ttserver's "scrextnew failed").
    Lua gets it as a C string: it ends at a NUL byte."""
    if path.startswith('@'):
        text = path[1:]
    elif not path:
        text = ''
    else:
        try:
            with open(path, 'rb') as script:
                text = script.read()
        except (IOError, OSError):
            return None
    return text.split(b'\0', 1)[0]


def chunk_name(source):
    """The name Lua 5.1 gives a chunk loaded from a string (ttserver's
    luaL_loadstring), given to Lua 5.4 verbatim ("=..."), so that error
    messages start alike: ``[string "first line, 43 bytes at most..."]``."""
    line = re.split(b'[\r\n]', source, 1)[0]
    if len(line) > 43 or len(line) < len(source):
        return b'=[string "%s..."]' % line[:43]
    return b'=[string "%s"]' % line


def first_line(error):
    """A Lua error's message without lupa's stack traceback."""
    return str(error).split('\nstack traceback:', 1)[0]


class LuaState(object):
    """One Lua state: the script, the server's functions, and the call."""

    def __init__(self, source, host, thid, thnum, log):
        """`source`: the script's text; `host`: a `host.ScriptHost`;
        `thid`: 0-based (the script sees _thid = thid + 1); `log(message)`
        reports Lua errors."""
        self.thid = thid
        self.log = log
        lua = self.lua = lupa.LuaRuntime(encoding=None, register_eval=False,
                                         register_builtins=False,
                                         unpack_returned_tuples=True)
        lua_globals = self.globals = lua.globals()
        lua_globals.python = None               # lupa's bridge: not ttserver's
        variables = {'_version': VERSION, '_pid': host.pid, '_sid': host.sid,
                     '_thnum': thnum, '_thid': thid + 1}
        self.call_function = lua.execute(ENVIRONMENT, lua.table_from(host.functions(lua)),
                                         lua.table_from(variables))
        self._run_script(source)
        if thid == 0:
            self._hook('_begin')

    def _run_script(self, source):
        loaded = self.globals.load(source, chunk_name(source))
        if isinstance(loaded, tuple):           # nil and the syntax error
            self.log('Lua error: %s' % loaded[1])
            return
        chunk = loaded
        try:
            chunk()
        except lupa.LuaError as exc:
            self.log('Lua error: %s' % first_line(exc))

    def _hook(self, name):
        hook = self.globals[name]
        if lupa.lua_type(hook) == 'function':
            try:
                hook()
            except lupa.LuaError as exc:
                self.log('Lua error: %s' % first_line(exc))

    def call(self, name, key, value):
        """The bytes the function `name` returned for (key, value), or None
        when ttserver answers failure."""
        if name.startswith(b'_'):
            return None
        try:
            function = self.globals[name]
            if lupa.lua_type(function) != 'function':
                return None
            return self.call_function(function, key, value)
        except lupa.LuaError as exc:
            self.log('Lua error: %s' % first_line(exc))
            return None

    def close(self):
        """The server stops: the first state calls the script's _end()."""
        if self.thid == 0:
            self._hook('_end')
