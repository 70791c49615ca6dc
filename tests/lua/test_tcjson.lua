-- The tests of pylons_tcjson_template/tcjson.lua, run on their own:
--     lua5.1 tests/lua/test_tcjson.lua pylons_tcjson_template/tcjson.lua
-- (tests/test_tcjson_lua.py runs this file under lua5.1 and under lupa's
-- Lua 5.4).  ttserver's functions are played by a table: every call here
-- is what the script would do inside one ext call.

local script = (arg and arg[1]) or SCRIPT

local store, clock = {}, 1795000000.25
function _get(key) return store[key] end
function _put(key, value) store[key] = value; return true end
function _putkeep(key, value) if store[key] then return false end; store[key] = value; return true end
function _putcat(key, value) store[key] = (store[key] or "") .. value; return true end
function _out(key) local had = store[key] ~= nil; store[key] = nil; return had end
function _vsiz(key) local v = store[key]; return v and #v or -1 end
function _time() return clock end
_sid = 1
dofile(script)

local passed = 0
local function check(name, got, want)
  if got ~= want then
    error(string.format("%s: got %s, want %s", name, tostring(got), tostring(want)), 2)
  end
  passed = passed + 1
end

-- Calls `fn` expecting a Lua error: the record must be left as it was.
local function refused(name, fn, key, value)
  local before = store[key]
  local ok, err = pcall(fn, key, value)
  check(name .. " fails", ok, false)
  check(name .. " says tcjson", tostring(err):match("^tcjson: ") ~= nil, true)
  check(name .. " writes nothing", store[key], before)
end

-- probe: script version, server id, the pair's ids, identity
check("probe", probe("", ""), '{"tcjson":1,"sid":1,"members":" 1 ","born":0}')
store["tcjson:members"] = store["tcjson:members"] .. " 2 "
check("probe sees the partner", probe("", ""), '{"tcjson":1,"sid":1,"members":" 1  2 ","born":0}')
check("member_init", member_init("", ""), "1795000000250000")
clock = clock + 5
check("member_init keeps", member_init("", ""), "1795000000250000")
check("probe born", probe("", ""), '{"tcjson":1,"sid":1,"members":" 1  2 ","born":1795000000250000}')
clock = 1795000000.25
store = {}

-- merge: nothing stored, nothing written
check("merge missing", merge("s", '{"set":{"a":1}}'), "missing")
check("merge missing writes nothing", store.s, nil)

-- values a request sets are JSON as JSON writes it
store.s = '{"a":1}'
merge("s", '{"set":{"n":[-0,0.5,1e-7,2E+10,-12.5e3,true,null,"x"]}}')
check("strict JSON accepted", store.s, '{"a":1,"n":[-0,0.5,1e-7,2E+10,-12.5e3,true,null,"x"]}')

-- merge keeps every untouched byte: numbers are never decoded
store.s = '{"big":9007199254740993,"f":1.0,"z":-0.0,"e":1E+400,"u":"\\u00e9\\/",'
  .. '"n":{"a":[1,2,{"b":null}]} , "t":true}'
check("merge ok", merge("s", '{"set":{"counter":3}}'), "ok")
check("untouched bytes", store.s, '{"big":9007199254740993,"f":1.0,"z":-0.0,"e":1E+400,'
  .. '"u":"\\u00e9\\/","n":{"a":[1,2,{"b":null}]},"t":true,"counter":3}')

-- a set replaces in place; unset removes; a name written twice keeps its last value
store.s = '{"a":1,"b":2,"a":3,"c":4}'
merge("s", '{"set":{"b":"two"},"unset":["c"]}')
check("set in place, unset", store.s, '{"b":"two","a":3}')

-- names are compared unescaped: one member, whatever the writer's escaping
store.s = '{"caf\\u00e9":1,"x\\/y":2,"\\ud83d\\ude00":3}'
merge("s", '{"set":{"caf\195\169":10,"x/y":20},"unset":["\240\159\152\128"]}')
check("escaped names", store.s, '{"caf\\u00e9":10,"x\\/y":20}')

-- a byte order mark from another writer is skipped
store.s = '\239\187\191{"a":1}'
merge("s", '{"set":{"b":2}}')
check("bom", store.s, '{"a":1,"b":2}')

-- limits: a stored record over the limit is refused, a result over it is an answer
store.s = '{"a":"' .. string.rep("x", 100) .. '"}'
refused("over limit", merge, "s", '{"set":{"b":1},"limit":50}')
check("result too large", merge("s", '{"set":{"b":1},"limit":110}'), "too large")
check("within limit", merge("s", '{"set":{"b":1},"limit":200}'), "ok")

-- nested values are kept whole whatever their strings hold (brackets,
-- escapes: where the shortcut past a value cannot be sure, the step by
-- step scan decides) and however deep they nest, up to 32 levels
local nested = {
  '{"s":"}{","t":"[x]","u":{"v":"{"},"w":{"x":"}"}}', '[{"c":"{"},{"d":"}"},"]["]',
  '["\\"]",{"f":"\\\\"},"\\u005d"]', '[[[]],{},[{}],{"a":[{"b":[]}]}]',
  '{"a":[1,2.5,-3e2,true,false,null]}', '{"x":"\127 is DEL"}',
  string.rep("[", 32) .. string.rep("]", 32),
}
for index, value in ipairs(nested) do
  store.s = '{"a":' .. value .. ',"b":0}'
  merge("s", '{"set":{"b":1}}')
  check("nested value " .. index, store.s, '{"a":' .. value .. ',"b":1}')
end

-- hostile records and malformed requests: refused, nothing written
local hostile = {
  '{"a":"unterminated}', '[1,2]', '"text"', '{"a":1,}', '{"a" 1}', '{"a":1} trailing',
  '{"a":tru}', '{"a":[1,2}', '{"a":{"b":1]}', '{"a":"\1"}', '{"a":"x\0y"}',
  '{"a":"\\q"}', '{"a":"\\u12"}',
  '{"a":' .. string.rep("[", 40) .. string.rep("]", 40) .. '}',
  '{"a":' .. string.rep("[", 33) .. string.rep("]", 33) .. '}',
  '{"a":[{]}]}', '{"a":{"b":[1}]}', '{"a":[{"b":"]"}}',
  '{"a":{"b":"\1"}}', '{"a":{"b":"unterminated}}', '{"a":[1,2]]}',
}
for index, record in ipairs(hostile) do
  store.s = record
  refused("hostile record " .. index, merge, "s", '{"set":{"b":1}}')
end
store.s = '{"a":1}'
for index, request in ipairs({'{"set":[1]}', '{"set":{"b":}}', '{"unset":[1]}',
                              '{"nonsense":1}', '{"limit":-1}', 'nope', '{"set":{"b":1}',
                              '{"set":{"b":1-}}', '{"set":{"b":01}}', '{"set":{"b":1.}}',
                              '{"set":{"b":[tru,-]}}', '{"set":{"b":[1 2]}}',
                              '{"set":{"b":{"c":1e}}}'}) do
  refused("malformed request " .. index, merge, "s", request)
end

-- delete
store.s = '{"a":1}'
check("delete", delete("s", "{}"), "deleted")
check("delete removes", store.s, nil)
check("delete missing", delete("s", "{}"), "missing")
store.s = '{"_expires":1795000100.5}'
check("delete before: not yet", delete("s", '{"before":1795000000}'), "kept")
check("delete before: kept", store.s ~= nil, true)
check("delete before: expired", delete("s", '{"before":1795000200}'), "deleted")
store.s = '{"_accessed_time":1}'
check("delete before: no expiry kept", delete("s", '{"before":1795000200}'), "kept")
check("delete idle: accessed later kept", delete("s", '{"idle":0.5}'), "kept")
check("delete idle: accessed before", delete("s", '{"idle":2}'), "deleted")

-- pairs: each server writes its own slot, names carry versions
store = {}
check("slot missing", merge("p", '{"pair":[1,2],"set":{"a":1}}'), "missing")
check("slot create", merge("p", '{"pair":[1,2],"create":true,"set":{"a":1}}'), "ok")
check("slot written", store["p@1"], '{"a":1,"_v":{"a":1795000000250000}}')
clock = clock + 1
check("slot merge", merge("p", '{"pair":[1,2],"set":{"b":[2]},"unset":["a"],'
  .. '"ver":{"b":1795999999000000}}'), "ok")
check("versions: the caller's, or now", store["p@1"],
  '{"b":[2],"_v":{"a":1795000001250000,"b":1795999999000000}}')
check("a late request", merge("p", '{"pair":[1,2],"set":{"b":"late","c":3},'
  .. '"ver":{"b":1795999998000000,"c":1795999998000000}}'), "ok")
check("changes only what it is newer for", store["p@1"],
  '{"b":[2],"c":3,"_v":{"a":1795000001250000,"b":1795999999000000,"c":1795999998000000}}')
store = {["p@2"] = '{"a":1,"_v":{"a":5}}'}
check("partner slot counts", merge("p", '{"pair":[1,2],"set":{"c":3}}'), "ok")
store["p@2"] = '{"a":2,"b":"two","_v":{"a":5,"b":9,"d":9}}'
store["p@1"] = '{"a":1,"b":"one","d":"gone here","_v":{"a":6,"b":9,"d":8}}'
check("load merges the copies", load("p", '{"pair":[1,2]}'), '{"a":1,"b":"two"}')
check("load of one server", load("p@1", '{}'), store["p@1"])
check("load of nothing", load("q", '{"pair":[1,2]}'), "missing")
store["p@2"] = '{"a":5,"_v":{"a":5}}' 
refused("versions name reserved", merge, "p", '{"pair":[1,2],"set":{"_v":1}}')
check("pair delete", delete("p", '{"pair":[1,2],"expires":1795003600}'), "deleted")
check("tombstone", store["p@ended"],
      '{"tcjson":"ended","_accessed_time":1795000001.250,"_expires":1795003600.000}')
check("slots gone", store["p@1"] == nil and store["p@2"] == nil, true)
store["p@2"] = '{"late":1}'                    -- a copy replication delivered late
clock = clock + 7
check("ended again: the copy goes", delete("p", '{"pair":[1,2]}'), "deleted")
check("the first tombstone stays", store["p@ended"],
      '{"tcjson":"ended","_accessed_time":1795000001.250,"_expires":1795003600.000}')
clock = clock - 7
store["q@1"], store["q@2"] = '{"_expires":5,"_v":{}}', '{"_expires":1795000100,"_v":{}}'
check("purge on a pair: one copy alive", delete("q", '{"pair":[1,2],"before":1795000000}'), "kept")
check("purge on a pair: all expired", delete("q", '{"pair":[1,2],"before":1795000200}'), "deleted")
check("purge leaves no tombstone", store["q@1"] == nil and store["q@2"] == nil and store["q@ended"] == nil, true)
check("ended stays ended", merge("p", '{"pair":[1,2],"create":true,"set":{"a":1}}'), "ended")
check("ended writes nothing", store["p@1"], nil)

-- user indexes: lineages, revocation marks, the bound
store, clock = {}, 1795000000.25
local function entry(id, line, at)
  return string.format('{"id":"%s","line":"%s","at":%d}', id, line, at)
end
check("index add", index_add("u", '{"entry":' .. entry("s1", "L1", 1) .. '}'),
      '{"revoked":false,"evicted":[]}')
index_add("u", '{"entry":' .. entry("s2", "L2", 2) .. '}')
check("index lines", store.u, entry("s1", "L1", 1) .. "\n" .. entry("s2", "L2", 2) .. "\n")
index_add("u", '{"entry":' .. entry("s1", "L1", 3) .. '}')
check("same id replaced", store.u, entry("s2", "L2", 2) .. "\n" .. entry("s1", "L1", 3) .. "\n")
store.u = store.u .. "not ours\n"
check("oldest signed out past max", index_add("u", '{"entry":' .. entry("s3", "L3", 4) .. ',"max":2}'),
      '{"revoked":false,"evicted":["s2"]}')
check("evicted lineage marked", store.u, '{"revoked":{"L2":1795000000.250}}\n'
      .. entry("s1", "L1", 3) .. "\n" .. entry("s3", "L3", 4) .. "\nnot ours\n")
check("a signed-out lineage is refused", index_add("u", '{"entry":' .. entry("s9", "L2", 5) .. '}'),
      '{"revoked":true,"evicted":[]}')
refused("entry without lineage", index_add, "u", '{"entry":{"id":"x","at":1}}')
refused("entry with a bad id", index_add, "u", '{"entry":{"id":"a:b","line":"L"}}')
check("drop", index_drop("u", '{"ids":["s1","zz"]}'), '{"dropped":1,"entries":1}')
clock = clock + 10
check("revoke all but one", index_revoke("u", '{"all":true,"but":"L9"}'),
      '{"revoked":{"L2":1795000000.250,"L3":1795000010.250}}\n' .. entry("s3", "L3", 4) .. "\nnot ours\n")
check("old marks forgotten", index_revoke("u", '{"lines":["L5"],"keep":5}'),
      '{"revoked":{"L3":1795000010.250,"L5":1795000010.250}}\n' .. entry("s3", "L3", 4) .. "\nnot ours\n")
check("a revoked lineage", index_check("u", '{"line":"L3"}'), "revoked")
check("a live lineage", index_check("u", '{"line":"L9"}'), "ok")
store["big"] = entry("s1", "L1", 1) .. "\n" .. string.rep("junk line\n", 1000)
  .. entry("s2", "L2", 2) .. "\n" .. entry("s3", "L3", 3) .. "\n"
check("trim", index_trim("big", '{"max":2}'), '{"entries":2}')
check("trimmed", store["big"], entry("s2", "L2", 2) .. "\n" .. entry("s3", "L3", 3) .. "\n")
store["big"] = entry("s1", "L1", 1) .. "\n" .. string.rep("x\n", 2000000) .. entry("s2", "L2", 2) .. "\n"
check("trim of a huge index", index_trim("big", '{"max":5}'), '{"entries":2}')
check("revoke on no index", index_revoke("none", '{"lines":["L1"]}'),
      '{"revoked":{"L1":1795000010.250}}\n')
store = {["u@2"] = "partner's"}
index_add("u", '{"pair":[1,2],"entry":' .. entry("s9", "L9", 1) .. '}')
check("index slot", store["u@1"], entry("s9", "L9", 1) .. "\n")
check("partner's slot untouched", store["u@2"], "partner's")
store["u@2"] = '{"revoked":{"L8":1795000000.250}}\n'
check("a mark in the partner's copy counts", index_check("u", '{"line":"L8","pair":[1,2]}'),
      "revoked")
store = {u = entry("s1", "L1", 1) .. "\n"}
index_drop("u", '{"ids":["s1"]}')
check("an empty index goes", store.u, nil)

print(string.format("ok %d checks (%s)", passed, _VERSION))
