--[[ tcjson.lua: the server half of lib/tcjson.py, run inside Tokyo Tyrant.

    ttserver -ext /path/to/myapp/lib/tcjson.lua ... sessions.tch

lib/tcjson.py calls the functions below with Tyrant's ext command and the
record-lock option (tcrdbext's RDBXOLCKREC): ttserver then runs each call
alone for its key, so reading a record, changing it and writing it back is
one atomic step.  No other ext call on that key can come in between.  Plain
put, out and replication do not take that lock; that is why every change
lib/tcjson.py makes to a stored session comes through here.

Plain Lua 5.1 (what ttserver links) that also runs under Lua 5.4 (lupa, in
the development server).  Every global function can be called by any client
that reaches the port; helpers are local.  A function either returns a
short word (or JSON) saying what it did, or raises an error, and then it has
written nothing: ttserver answers a failed call with status 1 whatever the
cause, so expected outcomes ("missing", "too large") are answers, never
errors.

Records are other programs' input too, so this file never trusts one.  It
scans JSON instead of decoding it: a value is kept as the exact bytes it
was stored with (Lua numbers are doubles, and decoding 9007199254740993 or
1.0 would change them), only member names are unescaped (to compare them),
and the scan is bounded (MAX_DEPTH, MAX_MEMBERS, the size the request
allows).

Key schema (lib/tcjson.py's docstring has the whole of it):
  single server      <prefix><id>:session           the session, one JSON object
  dual-master pair   <prefix><id>:session@<sid>     what the server with that
                                                    -sid wrote (a "slot")
                     <prefix><id>:session@ended     the session was ended
  user index         <prefix>user:<user id>         (@<sid> on a pair) lines
                                                    {"gen":N} then {"id":...}
]]

local VERSION = "1"
local MAX_DEPTH = 32        -- nesting of arrays and objects in one value
local MAX_MEMBERS = 20000   -- members of one object, entries of one index

local find, sub, gsub = string.find, string.sub, string.gsub
local byte, char = string.byte, string.char
local format, concat, floor = string.format, table.concat, math.floor

local function fail(why)
  error("tcjson: " .. why, 0)
end

-- Microseconds on this server's clock: versions and index generations.
local function now_us()
  return floor(_time() * 1000000)
end

------------------------------------------------------------ scanning JSON

local WS = "[^ \t\r\n]"
-- What may lie between the brackets and strings of a stored value: the
-- characters of numbers and literals, commas, colons and spaces.
local BETWEEN = "[ \t\r\n,:%w%.%+%-]"
local BETWEEN_AT, BETWEEN_RUN = "^" .. BETWEEN .. "*", BETWEEN .. "+"

-- Index of the first non-space at or after i (#s + 1 at the end).
local function skip(s, i)
  return find(s, WS, i) or #s + 1
end

local ESCAPES = {['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
                 n = "\n", r = "\r", t = "\t"}

-- s has '"' at i: the index of the closing quote.
local function string_end(s, i)
  while true do
    local j = find(s, '["\\\1-\31]', i + 1)
    if not j then fail("unterminated string") end
    local c = byte(s, j)
    if c == 34 then return j end
    if c ~= 92 then fail("control character inside a string") end
    local escaped = sub(s, j + 1, j + 1)
    if escaped == "u" then
      if not find(s, "^%x%x%x%x", j + 2) then fail("bad \\u escape") end
      i = j + 5
    elseif ESCAPES[escaped] then
      i = j + 1
    else
      fail("bad escape in a string")
    end
  end
end

-- A JSON number, exactly: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
local function json_number(word)
  local digits, rest = word:match("^%-?(%d+)(.*)$")
  if not digits or (#digits > 1 and sub(digits, 1, 1) == "0") then return false end
  rest = rest:match("^%.%d+(.*)$") or rest
  return rest == "" or find(rest, "^[eE][%+%-]?%d+$") ~= nil
end

local function scalar(word)
  return word == "true" or word == "false" or word == "null" or json_number(word)
end

-- The numbers and literals between the brackets and strings of a value
-- (strict: a request, whose values are stored as they are).
local function check_gap(s, j, e)
  local gap = sub(s, j, e)
  if find(gap, "[%w%.%+%-]%s+[%w%.%+%-]") then fail("a ',' missing") end
  for word in gap:gmatch("[^%s,:]+") do
    if not scalar(word) then fail("not a JSON value: " .. sub(word, 1, 20)) end
  end
end

-- A shortcut to the end of an array or object of a stored record: Lua's
-- balanced match (%b) finds where its bracket closes, counting brackets
-- inside strings too, so the answer is checked on the value with its
-- strings taken out.  Every step is one library call over the whole value,
-- where value_end takes a step of Lua per string and bracket (a merge into
-- the bench's 18 KB cart, under lua5.1: 265 us against 676).  nil when in
-- doubt: value_end then scans step by step and says what is wrong, if
-- anything is.
local function quick_end(s, i, c)
  local _, e = find(s, c == "{" and "^%b{}" or "^%b[]", i)
  if not e then return nil end
  -- Strings without escapes or control characters go; a quote or a
  -- backslash still there belongs to another kind of string.
  local bare = gsub(sub(s, i, e), '"[^"\\\1-\31]*"', "")
  -- Then numbers, literals, commas, colons and spaces go: what is left
  -- must be brackets.
  local brackets = gsub(bare, BETWEEN_RUN, "")
  if find(brackets, "[^{}%[%]]") then return nil end
  -- The first bracket closes at the end, not before (a string held a bracket).
  if not find(brackets, c == "{" and "^%b{}$" or "^%b[]$") then return nil end
  local depth, one = 0, gsub(brackets, "[{}]", {["{"] = "[", ["}"] = "]"})
  while one ~= "" do                           -- one level of nesting per pass
    depth = depth + 1
    local n
    one, n = gsub(one, "%[%]", "")
    if n == 0 or depth > MAX_DEPTH then return nil end
  end
  repeat                                       -- each bracket closed by its own kind
    local a, b
    brackets, a = gsub(brackets, "{}", "")
    brackets, b = gsub(brackets, "%[%]", "")
  until a + b == 0
  if brackets ~= "" then return nil end
  return e
end

-- The index of the last byte of the JSON value that starts at i.  Inside
-- arrays and objects only brackets and strings are tracked; what lies
-- between them may hold nothing but the characters of numbers, literals,
-- commas, colons and spaces -- with `strict`, only numbers and literals
-- written as JSON writes them.
local function value_end(s, i, strict)
  local c = sub(s, i, i)
  if c == '"' then return string_end(s, i) end
  if c == "{" or c == "[" then
    local e = not strict and quick_end(s, i, c)
    if e then return e end
    local open, j = {c}, i + 1
    while true do
      local _, e = find(s, BETWEEN_AT, j)
      if strict and e >= j then check_gap(s, j, e) end
      local k = e + 1
      local ch = sub(s, k, k)
      if ch == '"' then
        j = string_end(s, k) + 1
      elseif ch == "{" or ch == "[" then
        if #open >= MAX_DEPTH then fail("nested deeper than " .. MAX_DEPTH) end
        open[#open + 1] = ch
        j = k + 1
      elseif ch == "}" or ch == "]" then
        if (open[#open] == "{") ~= (ch == "}") then fail("mismatched brackets") end
        open[#open] = nil
        if #open == 0 then return k end
        j = k + 1
      else
        fail("not JSON")                       -- also the end of the text
      end
    end
  end
  local _, e = find(s, "^[%w%.%+%-]+", i)
  if not e then fail("a value expected") end
  local word = sub(s, i, e)
  if not (scalar(word) or (not strict and find(word, "^%-?%d+%.?%d*[eE]?[%+%-]?%d*$"))) then
    fail("not a JSON value")
  end
  return e
end

local function utf8(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then
    return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64,
              0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local function hex4(s, i)
  local digits = sub(s, i, i + 3)
  if not find(digits, "^%x%x%x%x$") then fail("bad \\u escape") end
  return tonumber(digits, 16)
end

-- The text of a JSON string (with its quotes).  Writers escape differently
-- ("\u00e9" from Python, raw UTF-8 from Node, "\/"): names are compared
-- unescaped, or one key could end up twice in a record.
local function unescape(raw)
  local body = sub(raw, 2, -2)
  if not find(body, "\\", 1, true) then return body end
  local out, i = {}, 1
  while true do
    local j = find(body, "\\", i, true)
    if not j then
      out[#out + 1] = sub(body, i)
      return concat(out)
    end
    out[#out + 1] = sub(body, i, j - 1)
    local c = sub(body, j + 1, j + 1)
    if c == "u" then
      local cp = hex4(body, j + 2)
      i = j + 6
      if cp >= 0xD800 and cp < 0xDC00 and sub(body, i, i + 1) == "\\u" then
        local low = hex4(body, i + 2)
        if low >= 0xDC00 and low < 0xE000 then
          cp, i = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00), i + 6
        end
      end
      out[#out + 1] = utf8(cp)
    else
      out[#out + 1] = ESCAPES[c] or fail("bad escape \\" .. c)
      i = j + 2
    end
  end
end

-- Checks shared by every text this file scans.
local function start(s, what)
  if find(s, "\0", 1, true) then fail(what .. " holds a NUL byte") end
  local i = skip(s, sub(s, 1, 3) == "\239\187\191" and 4 or 1)   -- a BOM
  return i
end

-- The members of the JSON object `s`, in order: {{raw name, name, raw value}...}.
local function members(s, what, strict)
  local list, i = {}, start(s, what)
  if sub(s, i, i) ~= "{" then fail(what .. " is not a JSON object") end
  i = skip(s, i + 1)
  if sub(s, i, i) ~= "}" then
    while true do
      if sub(s, i, i) ~= '"' then fail(what .. ": a member name expected") end
      local e = string_end(s, i)
      local raw = sub(s, i, e)
      i = skip(s, e + 1)
      if sub(s, i, i) ~= ":" then fail(what .. ": ':' expected") end
      i = skip(s, i + 1)
      local last = value_end(s, i, strict)
      if #list >= MAX_MEMBERS then fail(what .. " has too many members") end
      list[#list + 1] = {raw, unescape(raw), sub(s, i, last)}
      i = skip(s, last + 1)
      local c = sub(s, i, i)
      if c == "}" then break end
      if c ~= "," then fail(what .. ": ',' or '}' expected") end
      i = skip(s, i + 1)
    end
  end
  if skip(s, i + 1) <= #s then fail(what .. ": text after the object") end
  return list
end

-- The elements of the JSON array `s`, as raw texts.
local function elements(s, what)
  local list, i = {}, start(s, what)
  if sub(s, i, i) ~= "[" then fail(what .. " is not a JSON array") end
  i = skip(s, i + 1)
  if sub(s, i, i) ~= "]" then
    while true do
      local last = value_end(s, i)
      if #list >= MAX_MEMBERS then fail(what .. " has too many elements") end
      list[#list + 1] = sub(s, i, last)
      i = skip(s, last + 1)
      local c = sub(s, i, i)
      if c == "]" then break end
      if c ~= "," then fail(what .. ": ',' or ']' expected") end
      i = skip(s, i + 1)
    end
  end
  if skip(s, i + 1) <= #s then fail(what .. ": text after the array") end
  return list
end

-- The text of a JSON string the request gives (a name, an id).
local function text_of(raw, what)
  if sub(raw, 1, 1) ~= '"' then fail(what .. " must be a string") end
  return unescape(raw)
end

local function by_name(list)
  local map = {}
  for _, m in ipairs(list) do map[m[2]] = m end
  return map
end

-- A whole number the request gives (a size, a time in us, a server id),
-- exact in a double.
local function whole(raw, what)
  local n = raw and find(raw, "^%d+$") and #raw <= 16 and tonumber(raw)
  if not n or n > 9007199254740991 then fail(what .. " must be a whole number") end
  return n
end

local function number(raw, what)
  local n = raw and tonumber(raw)
  if not n or n ~= n or n == math.huge or n == -math.huge then
    fail(what .. " must be a number")
  end
  return n
end

----------------------------------------------------------- the request

-- A request is one JSON object:
--   set     {"name": value, ...}   members to set, values kept as written
--   unset   ["name", ...]          members to delete
--   limit   N                      bytes a record may have, before and after
--   pair    [SID, ...]             on a dual-master pair: the members' -sid
--   ver     {"name": N, ...}       pair: the version of each name it sets
--   create  true                   pair: write even if nothing is stored
--   expires T                      delete on a pair: when the tombstone may go
--   before  T                      delete (purge): only if "_expires" < T
--   idle    T                      delete (purge): or, without "_expires",
--                                  if "_accessed_time" < T
--   entry, max, ids, lines, line, all, but, keep    user indexes (below)
local function parse_request(text)
  local r = {set = {}, unset = {}, ver = {}}
  for _, m in ipairs(members(text, "the request", true)) do
    local name, raw = m[2], m[3]
    if name == "set" then
      r.set = members(raw, "set")
    elseif name == "unset" then
      for _, item in ipairs(elements(raw, "unset")) do
        r.unset[text_of(item, "a name to unset")] = item   -- the name as written
      end
    elseif name == "ver" then
      for _, v in ipairs(members(raw, "ver")) do r.ver[v[2]] = whole(v[3], "a version") end
    elseif name == "limit" then r.limit = whole(raw, "limit")
    elseif name == "pair" then
      r.pair = {}
      for _, item in ipairs(elements(raw, "pair")) do r.pair[#r.pair + 1] = whole(item, "a sid") end
    elseif name == "create" then r.create = raw == "true"
    elseif name == "expires" then r.expires = number(raw, "expires")
    elseif name == "before" then r.before = number(raw, "before")
    elseif name == "idle" then r.idle = number(raw, "idle")
    elseif name == "entry" then r.entry = raw
    elseif name == "max" then r.max = whole(raw, "max")
    elseif name == "keep" then r.keep = number(raw, "keep")
    elseif name == "all" then r.all = raw == "true"
    elseif name == "but" then r.but = text_of(raw, "but")
    elseif name == "line" then r.line = text_of(raw, "line")
    elseif name == "ids" or name == "lines" then
      local set = {}
      for _, item in ipairs(elements(raw, name)) do set[text_of(item, name)] = true end
      r[name] = set
    else
      fail("unknown request member " .. m[1])
    end
  end
  return r
end

local function read(key, limit)
  local text = _get(key)
  if text and limit and #text > limit then fail("the record is over the size limit") end
  return text
end

-- The object `list` with the members of `set` (replacing those of the same
-- name, in place; new ones at the end) and without the names in `unset`.
-- A name the list holds twice keeps its last value (as JSON parsers do).
local function apply(list, set, unset)
  local new, last = by_name(set), {}
  for index, m in ipairs(list) do last[m[2]] = index end
  local out, done = {}, {}
  for index, m in ipairs(list) do
    local name = m[2]
    if last[name] == index and not unset[name] then
      local value = new[name] and new[name][3] or m[3]
      out[#out + 1] = m[1] .. ":" .. value
      done[name] = true
    end
  end
  for _, m in ipairs(set) do
    if not done[m[2]] and not unset[m[2]] then
      out[#out + 1] = m[1] .. ":" .. m[3]
      done[m[2]] = true
    end
  end
  return "{" .. concat(out, ",") .. "}"
end

------------------------------------------------------------ the functions

-- Which script, which server, and the pair around it: lib/tyrant.py sends
-- this on each new connection before it relies on anything here.
-- "members" lists the -sid of every server that ever answered it here:
-- each adds itself with putcat, which replication replays as an append,
-- so both members of a pair learn both ids (and a reader can name the
-- slots of a member that is down).  "born" is this server's identity
-- record (see member_init), 0 if it has none.
function probe(key, value)
  local sid = _sid or 0
  local members = _get("tcjson:members") or ""
  if sid > 0 and not find(members, " " .. sid .. " ", 1, true) then
    _putcat("tcjson:members", " " .. sid .. " ")
    members = members .. " " .. sid .. " "
  end
  local born = _get(format("tcjson:member@%d", sid)) or "0"
  if not find(born, "^%d+$") then born = "0" end
  return format('{"tcjson":%s,"sid":%d,"members":"%s","born":%s}', VERSION, sid, members, born)
end

-- Give this server its identity record "tcjson:member@<sid>" (the time it
-- was given, in us) unless it has one; answers the record.  A pair member
-- whose partner holds its record while it has none has lost its database
-- (lib/tyrant.py stops using it until an operator acts).
function member_init(key, value)
  local own = format("tcjson:member@%d", _sid or 0)
  _putkeep(own, format("%d", now_us()))
  return _get(own)
end

-- Pair slots: each server writes only its own, so replication, which
-- applies puts blindly in arrival order, can never put an older copy of a
-- slot over a newer one from the same writer.  Beside the session's
-- members a slot keeps "_v": {"name": version}: the version of each name
-- this server set or deleted (a deleted name has a version and no value).
-- Readers take, name by name, the value with the highest version among the
-- slots.  The caller gives each name's version ("ver"): higher than every
-- version it read, so a request never undoes a write it saw, on whichever
-- server that write was made.  A name whose version here is already as
-- high is left as it is: this request is older than what is stored (it
-- reached this server late, after being answered elsewhere).  A name
-- without a version from the caller gets max(now in us, this slot's + 1).
local function any_slot(key, sids)
  for _, sid in ipairs(sids) do
    if _vsiz(key .. "@" .. sid) >= 0 then return true end
  end
  return false
end

local function merge_slot(key, r)
  if by_name(r.set)._v or r.unset._v then fail('"_v" is the versions\' name') end
  if _vsiz(key .. "@ended") >= 0 then return "ended" end
  local own = key .. "@" .. (_sid or 0)
  local text = read(own, r.limit)
  if not text and not r.create and not any_slot(key, r.pair) then return "missing" end
  local list, old = {}, {}
  for _, m in ipairs(text and members(text, "the slot") or {}) do
    if m[2] == "_v" then
      for _, v in ipairs(members(m[3], "_v")) do old[v[2]] = v end
    else
      list[#list + 1] = m
    end
  end
  local t = now_us()
  local function newer(raw, name)              -- stamps the name; false if stale
    local seen = old[name] and whole(old[name][3], "a stored version") or 0
    local v = r.ver[name] or math.max(t, seen + 1)
    if v <= seen then return false end
    old[name] = {raw, name, format("%d", v)}
    return true
  end
  local set, unset = {}, {}
  for _, m in ipairs(r.set) do
    if newer(m[1], m[2]) then set[#set + 1] = m end
  end
  for name, raw in pairs(r.unset) do
    if newer(raw, name) then unset[name] = raw end
  end
  local versions = {}
  for _, v in pairs(old) do versions[#versions + 1] = v[1] .. ":" .. v[3] end
  table.sort(versions)
  set[#set + 1] = {'"_v"', "_v", "{" .. concat(versions, ",") .. "}"}
  local new = apply(list, set, unset)
  if r.limit and #new > r.limit then return "too large" end
  _put(own, new)
  return "ok"
end

-- Apply a request's set and unset to the stored record as it is now.
-- Every member the request does not name keeps its exact bytes.  Nothing
-- stored: "missing", and nothing is written (a session that was ended
-- stays ended).  Answers "ok", "missing", "ended" (a pair's tombstone) or
-- "too large".
function merge(key, value)
  local r = parse_request(value)
  if r.pair then return merge_slot(key, r) end
  local text = read(key, r.limit)
  if not text then return "missing" end
  local new = apply(members(text, "the record"), r.set, r.unset)
  if r.limit and #new > r.limit then return "too large" end
  _put(key, new)
  return "ok"
end

-- The session as one JSON object, for programs that only read it.  On a
-- single server, the record as stored.  On a pair ({"pair": [sids]}), the
-- copies this server holds, merged as lib/records.py merges them: name by
-- name the value of the highest version, ties to the higher sid, without
-- "_v" (a copy the other member has not sent yet is not here: read both
-- members to be sure of the newest).  "missing" or "ended" otherwise.
function load(key, value)
  local r = parse_request(value)
  if not r.pair then return read(key, r.limit) or "missing" end
  if _vsiz(key .. "@ended") >= 0 then return "ended" end
  local best, found = {}, false
  local function consider(name, version, sid, member)
    local held = best[name]
    if not held or version > held[1] or (version == held[1] and sid > held[2]) then
      best[name] = {version, sid, member}
    end
  end
  for _, sid in ipairs(r.pair) do
    local text = read(key .. "@" .. sid, r.limit)
    if text then
      found = true
      local versions, values = {}, {}
      for _, m in ipairs(members(text, "a slot")) do
        if m[2] == "_v" then
          for _, v in ipairs(members(m[3], "_v")) do versions[v[2]] = whole(v[3], "a version") end
        else
          values[m[2]] = m
        end
      end
      for name, m in pairs(values) do consider(name, versions[name] or 0, sid, m) end
      for name, v in pairs(versions) do
        if not values[name] then consider(name, v, sid, false) end
      end
    end
  end
  if not found then return "missing" end
  local out = {}
  for _, held in pairs(best) do
    if held[3] then out[#out + 1] = held[3][1] .. ":" .. held[3][3] end
  end
  table.sort(out)
  return "{" .. concat(out, ",") .. "}"
end

-- The number a member of a stored record holds, or nil.
local function time_field(list, name)
  for _, m in ipairs(list) do
    if m[2] == name then return tonumber(m[3]) end
  end
end

-- Purge's test: with "before", a record whose "_expires" has passed; with
-- "idle", one without "_expires" whose "_accessed_time" is older.
local function expired(text, r)
  local list = members(text, "the record")
  local expires = time_field(list, "_expires")
  if expires then return r.before ~= nil and expires < r.before end
  local accessed = time_field(list, "_accessed_time")
  return r.idle ~= nil and accessed ~= nil and accessed < r.idle
end

-- Purge on a pair: the session goes only if every copy here has expired,
-- and leaves no tombstone (no copy that arrives later can be younger).
local function purge_slots(key, r)
  local found = false
  for _, sid in ipairs(r.pair) do
    local text = read(key .. "@" .. sid, r.limit)
    if text then
      if not expired(text, r) then return "kept" end
      found = true
    end
  end
  if not found then return "missing" end
  for _, sid in ipairs(r.pair) do _out(key .. "@" .. sid) end
  return "deleted"
end

-- End a session: delete its record under the same lock merge takes, so a
-- merge can never bring it back.  On a pair every copy goes and a
-- tombstone "<key>@ended" stays, so that no copy replication delivers
-- later revives it.  With "before" or "idle" (purge): only an expired
-- record goes.  Answers "deleted", "missing" or "kept".
function delete(key, value)
  local r = parse_request(value)
  local purge = r.before or r.idle
  if r.pair and purge then return purge_slots(key, r) end
  if r.pair then
    local found = false
    for _, sid in ipairs(r.pair) do
      found = _out(key .. "@" .. sid) or found
    end
    if _vsiz(key .. "@ended") < 0 then           -- the first end is the one that counts
      local expires = r.expires and format(',"_expires":%.3f', r.expires) or ""
      _put(key .. "@ended", format('{"tcjson":"ended","_accessed_time":%.3f%s}', _time(),
                                   expires))
    end
    return found and "deleted" or "missing"
  end
  if purge then
    local text = read(key, r.limit)
    if not text then return "missing" end
    if not expired(text, r) then return "kept" end
  end
  return _out(key) and "deleted" or "missing"
end

------------------------------------------------------------ user indexes

-- A user's index (lib/user_sessions.py) is lines: one
-- {"id":"<session id>","line":"<lineage>",...} per signed-in session,
-- oldest first, and at most one {"revoked":{"<lineage>":<time>,...}}.  A
-- lineage is what a sign-in starts and every new id of that session
-- carries on; "revoked" lists those signed out, with when, so that a
-- session changing its id while it is signed out is caught (index_add
-- refuses it; lib/user_sessions.py checks a new record against it).  Lines
-- of other shapes are kept as they are.  On a pair each member keeps its
-- own copy of the index ("<key>@<sid>"); readers take the union.

local ID = "^[%w_%-]+$"

local function index_key(key, r)
  return r.pair and key .. "@" .. (_sid or 0) or key
end

-- `trimming`: other lines are dropped, and any number of lines is read.
local function read_lines(index, text, trimming)
  for line in text:gmatch("[^\n]+") do
    local ok, list = pcall(members, line, "a line")
    local fields = ok and by_name(list) or {}
    local id, lineage = fields.id, fields.line
    if fields.revoked and #list == 1 then
      for _, m in ipairs(members(fields.revoked[3], "revoked")) do
        index.revoked[m[2]] = number(m[3], "a revocation time")
      end
    elseif id and lineage and find(unescape(id[3]), ID) and find(unescape(lineage[3]), ID) then
      index.entries[#index.entries + 1] = {unescape(id[3]), unescape(lineage[3]), line}
    elseif not trimming then
      index.other[#index.other + 1] = line
    end
    if not trimming and #index.entries + #index.other > MAX_MEMBERS then
      fail("the index has too many lines")
    end
  end
  return index
end

local function read_index(key)
  return read_lines({revoked = {}, entries = {}, other = {}}, _get(key) or "")
end

local function write_index(key, index)
  local marks, lines = {}, {}
  for lineage, at in pairs(index.revoked) do
    marks[#marks + 1] = format('"%s":%.3f', lineage, at)
  end
  if #marks > 0 then
    table.sort(marks)
    lines[1] = '{"revoked":{' .. concat(marks, ",") .. '}}'
  end
  for _, entry in ipairs(index.entries) do lines[#lines + 1] = entry[3] end
  for _, line in ipairs(index.other) do lines[#lines + 1] = line end
  local text = #lines > 0 and concat(lines, "\n") .. "\n" or ""
  if text == "" then _out(key) else _put(key, text) end
  return text
end

-- Marks older than "keep" seconds go: no request lives that long.
local function forget_old_marks(index, r, now)
  for lineage, at in pairs(index.revoked) do
    if r.keep and at < now - r.keep then index.revoked[lineage] = nil end
  end
end

-- Add a session {"entry": {"id": ..., "line": ...}, "max": N}.  If its
-- lineage was signed out: {"revoked":true}, nothing added.  Otherwise the
-- entry replaces one of the same id, and past N entries the oldest are
-- signed out (their lineages marked) and named, for the caller to delete
-- their records: {"revoked":false,"evicted":["<id>",...]}.
function index_add(key, value)
  local r = parse_request(value)
  local fields = r.entry and not find(r.entry, "\n", 1, true) and by_name(members(r.entry, "entry")) or {}
  local id = fields.id and unescape(fields.id[3])
  local lineage = fields.line and unescape(fields.line[3])
  if not (id and lineage and find(id, ID) and find(lineage, ID)) then
    fail('"entry" must be {"id":"<id>","line":"<lineage>",...} on one line')
  end
  key = index_key(key, r)
  local index, now = read_index(key), _time()
  if index.revoked[lineage] then return '{"revoked":true,"evicted":[]}' end
  local kept = {}
  for _, entry in ipairs(index.entries) do
    if entry[1] ~= id then kept[#kept + 1] = entry end
  end
  local evicted, excess = {}, #kept + 1 - (r.max or MAX_MEMBERS)
  while excess > 0 do
    local oldest = table.remove(kept, 1)
    if oldest[2] ~= lineage then index.revoked[oldest[2]] = now end
    evicted[#evicted + 1] = '"' .. oldest[1] .. '"'
    excess = excess - 1
  end
  kept[#kept + 1] = {id, lineage, r.entry}
  index.entries = kept
  forget_old_marks(index, r, now)
  write_index(key, index)
  return format('{"revoked":false,"evicted":[%s]}', concat(evicted, ","))
end

-- Drop the entries {"ids": [...]}; old marks go too.  Answers
-- {"dropped":N,"entries":M}.
function index_drop(key, value)
  local r = parse_request(value)
  key = index_key(key, r)
  local index, dropped = read_index(key), 0
  local kept = {}
  for _, entry in ipairs(index.entries) do
    if r.ids and r.ids[entry[1]] then dropped = dropped + 1 else kept[#kept + 1] = entry end
  end
  index.entries = kept
  forget_old_marks(index, r, _time())
  if _vsiz(key) >= 0 then write_index(key, index) end
  return format('{"dropped":%d,"entries":%d}', dropped, #kept)
end

-- Is the lineage {"line": ...} signed out?  Every copy this server holds
-- is looked at (on a pair, the members' copies: {"pair": [sids]}), so the
-- answer is bounded by the index, never by what a reader can hold.
-- Answers "revoked" or "ok".
function index_check(key, value)
  local r = parse_request(value)
  local line = r.line or fail('"line" missing')
  local keys = {key}
  if r.pair then
    keys = {}
    for _, sid in ipairs(r.pair) do keys[#keys + 1] = key .. "@" .. sid end
  end
  for _, each in ipairs(keys) do
    if read_index(each).revoked[line] then return "revoked" end
  end
  return "ok"
end

-- Compact an index grown past what a reader should load (only another
-- program can make one): the lines in its first and its last TRIM_BYTES
-- are read (its marks and its oldest and newest sessions), of those the
-- newest "max" entries stay, and every other line goes.  Bounded work
-- whatever the index's size.  Answers {"entries":N}.
local TRIM_BYTES = 256 * 1024
function index_trim(key, value)
  local r = parse_request(value)
  key = index_key(key, r)
  local text = _get(key)
  if not text then return '{"entries":0}' end
  local index = {revoked = {}, entries = {}, other = {}}
  if #text <= 2 * TRIM_BYTES then
    read_lines(index, text, true)
  else                                           -- whole lines only, on both ends
    read_lines(index, sub(text, 1, TRIM_BYTES):match("^(.*)\n") or "", true)
    read_lines(index, sub(text, -TRIM_BYTES):match("\n(.*)$") or "", true)
  end
  local keep, newest = r.max or MAX_MEMBERS, {}
  for n = math.max(1, #index.entries - keep + 1), #index.entries do
    newest[#newest + 1] = index.entries[n]
  end
  index.entries = newest
  forget_old_marks(index, r, _time())
  write_index(key, index)
  return format('{"entries":%d}', #index.entries)
end

-- Sign lineages out: {"lines": [...]}, or {"all": true, "but": "<lineage>"}
-- for every lineage in the index except one.  Answers the index as it is
-- then (the caller deletes the records of the sessions signed out).
function index_revoke(key, value)
  local r = parse_request(value)
  key = index_key(key, r)
  local index, now = read_index(key), _time()
  local chosen = r.lines or {}
  if r.all then
    for _, entry in ipairs(index.entries) do
      if entry[2] ~= r.but then chosen[entry[2]] = true end
    end
  end
  for lineage in pairs(chosen) do
    if not find(lineage, ID) then fail("a lineage is letters, digits, _ and -") end
    index.revoked[lineage] = now
  end
  forget_old_marks(index, r, now)
  return write_index(key, index)
end
