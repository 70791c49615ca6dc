-- Where tcjson.lua's merge spends its time, under the Lua ttserver links:
--     lua5.1 bench/merge_cost.lua pylons_tcjson_template/tcjson.lua RECORD REQUEST [COUNT]
-- RECORD is a file holding a stored session record, REQUEST one holding a
-- merge request (bench/diagnose_tcjson.py writes both from the bench's
-- sessions, and runs this).  Prints the microseconds per call, median of 5 runs of COUNT
-- calls, of the whole merge and of its two scans: the stored record's
-- members (the scan of every nested value), and the request's.  ttserver's
-- functions are played by a table, as in tests/lua/test_tcjson.lua.

local script, record_file, request_file = arg[1], arg[2], arg[3]
local count = tonumber(arg[4] or "200")

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local store = {}
function _get(key) return store[key] end
function _put(key, value) store[key] = value; return true end
function _vsiz(key) local v = store[key]; return v and #v or -1 end
function _time() return 1795000000.25 end
_sid = 1

-- The script's local scanner, reached through the function that uses it.
local source = slurp(script) .. "\nreturn members, parse_request"
local members, parse_request = assert(loadstring(source))()
local record, request = slurp(record_file), slurp(request_file)

local function per_call_us(fn)
  local runs = {}
  for run = 1, 5 do
    local started = os.clock()
    for _ = 1, count do fn() end
    runs[run] = (os.clock() - started) / count * 1e6
  end
  table.sort(runs)
  return runs[3]
end

print(string.format("record %d bytes, request %d bytes, %d calls x 5 (median run)",
                    #record, #request, count))
print(string.format("merge, whole:               %8.1f us", per_call_us(function()
  store.k = record
  assert(merge("k", request) == "ok")
end)))
print(string.format("members() of the record:    %8.1f us", per_call_us(function()
  members(record, "the record")
end)))
print(string.format("parse_request():            %8.1f us", per_call_us(function()
  parse_request(request)
end)))
