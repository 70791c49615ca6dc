-- wrk script: one session per connection, roughly.  The session cookies
-- come in $BENCH_COOKIES, one "name=value" a line; wrk thread number t (of
-- $BENCH_THREADS) takes every cookie whose position is t modulo the thread
-- count and sends its requests with them in turn, so that with as many
-- cookies as connections two requests of one session seldom overlap.
local cookies = {}
for line in string.gmatch(os.getenv("BENCH_COOKIES") or "", "[^\n]+") do
  cookies[#cookies + 1] = line
end
local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
local created = 0

function setup(thread)
  thread:set("number", created)
  created = created + 1
end

local mine, turn = nil, 0

function request()
  if mine == nil then
    mine = {}
    for position, cookie in ipairs(cookies) do
      if (position - 1) % threads == number then
        mine[#mine + 1] = cookie
      end
    end
  end
  turn = turn % #mine + 1
  return wrk.format(nil, nil, { Cookie = mine[turn] })
end
