-- ext-probe.lua: what ttserver 1.1.41 answers for each kind of Lua function
-- and what its server functions do (tests/record_ext_transcript.py runs it
-- under a real ttserver; tests/test_devtyrant_ext_transcript.py replays the
-- answers against tcjson-tyrant).  Plain Lua 5.1 that also runs on 5.4.

-- Hooks: thread 1 calls _begin once the script is loaded, _end at shutdown.
function _begin() _putcat("hook", "begin;") end
function _end() _putcat("hook", "end;") end

function echo(key, value) return key .. "|" .. value end

-- What becomes of each kind of return value.
function ret_nil() return nil end
function ret_nothing() end
function ret_false() return false end
function ret_true() return true end
function ret_int() return 42 end
function ret_float() return 1.5 end
function ret_big() return 2^53 + 1 end
function ret_tiny() return 1e-300 end
function ret_nan() return 0/0 end
function ret_inf() return -1/0 end
function ret_table() return {"first", "second"} end
function ret_table_empty() return {} end
function ret_table_true() return {true} end
function ret_table_false() return {false} end
function ret_table_number() return {7.25} end
function ret_table_table() return {{"x"}} end
function ret_table_hash() return {a = "b"} end
function ret_function() return print end
function ret_two() return "a", "b" end
function ret_empty() return "" end
function ret_binary() return "\0\1\255" end
function fail() error("boom") end
function fail_table() error({}) end
function error_message() local ok, e = pcall(function() error("boom") end) return e end
not_a_function = "a string"

-- The server's functions.
function put(key, value) return tostring(_put(key, value)) end
function putkeep(key, value) return tostring(_putkeep(key, value)) end
function putcat(key, value) return tostring(_putcat(key, value)) end
function out(key) return tostring(_out(key)) end
function get(key) return _get(key) or "(nil)" end
function vsiz(key) return _vsiz(key) end
function addint(key, value) return tostring(_addint(key, tonumber(value))) end
function adddouble(key, value) return tostring(_adddouble(key, tonumber(value))) end
function numbers(key)
  _put(key, 2^53)
  _putcat(key, "|")
  _putcat(key, 12.5)
  _putcat(key, "|")
  _putcat(key, 7)
  return _get(key)
end
function count() return _rnum() end
function keys(prefix, max)
  return table.concat(_fwmkeys(prefix, tonumber(max)), ",")
end
function iterate()
  local seen = {}
  _iterinit()
  while true do
    local key = _iternext()
    if not key then break end
    seen[#seen + 1] = key
  end
  table.sort(seen)
  return table.concat(seen, ",")
end
function misc(name, value)
  local args = {}
  for arg in string.gmatch(value, "[^,]+") do args[#args + 1] = arg end
  local result = _misc(name, args)
  if not result then return "(nil)" end
  return table.concat(result, ",")
end
function misc_spread()
  local result = _misc("putlist", "s1", 1, {"s2", 2.5}, true)
  return type(result) .. " " .. #result
end
function stash(key, value)
  _stashput(key, value)
  _stashputkeep(key, "kept?")
  _stashputcat(key, "+")
  local got = _stashget(key)
  local removed = _stashout(key)
  return got .. " " .. tostring(removed) .. " " .. tostring(_stashget(key))
end
function locks(name)
  local first = _lock(name)
  local other = _unlock(name)
  local again = _unlock(name)
  return tostring(first) .. " " .. tostring(other) .. " " .. tostring(again)
end
function variables()
  return table.concat({_version, _thnum, _sid, type(_thid), type(_pid), type(_time())}, ",")
end

-- Arguments the server's functions refuse, and how they say so.
local function refused(f, ...)
  local ok, e = pcall(f, ...)
  return tostring(ok) .. ":" .. tostring(e)
end
function bad_args()
  return table.concat({
    refused(_put, "k"), refused(_put, "k", {}), refused(_put, "k", "v", "x"),
    refused(_get), refused(_get, true), refused(_out, nil),
    refused(_addint, "k", "x"), refused(_adddouble, "k"), refused(_vsiz, {}),
    refused(_fwmkeys), refused(_stashput, "k"), refused(_lock), refused(_time, 1),
    refused(_log),
  }, "\n")
end

-- For tests/test_devtyrant_ext.py (not in the transcript: their answers
-- depend on time or on the process).
function incr(key)
  local n = tonumber(_get(key) or "0")
  for i = 1, 3000 do end                -- widen the gap between read and write
  _put(key, tostring(n + 1))
  return n + 1
end
function sleep(key, value) _sleep(tonumber(value)) return "slept" end
function pid() return _pid end
function thread() return _thid end
function tick() _putcat("ticks", "x") end
function lock_held(key, value)
  if not _lock(key) then return "stopped" end
  _sleep(tonumber(value))
  _unlock(key)
  return "done"
end
