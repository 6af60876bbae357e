-- Sliding-log rate limits over several descriptors, atomically, in one of two modes:
-- "decide" admits a request's hits in every descriptor together, or in none
-- (ShouldRateLimit); "grant" gives each descriptor quota on its own, as many hits as
-- fit up to the hits wanted (LeaseQuota).
--
-- KEYS: per descriptor i, KEYS[2i-1] = its log (sorted set: member "<token>:<i>:<hits>",
--       score = the time the hits count from, in microseconds) and KEYS[2i] = the sum
--       of the log's hits.
-- ARGV: [1] now in microseconds, or "" for the server's clock (the default, so replicas
--       with skewed clocks agree); [2] a token unique to this call; [3] the mode;
--       [4] share: a grant takes at most 1/share of the room left (at least one hit);
--       then per descriptor seven values: limit, window in microseconds, shadow ("1" or
--       "0"), hits, hold in microseconds (recorded hits count from now + hold, the end
--       of their lease; 0 when deciding), a member of this log to give hits back from
--       (or ""), and how many of its hits to give back.
-- Returns {admitted, then per descriptor: used, reset_us, over, granted, reservation,
-- returned}: `used` is the hits in the window after this call; `over` says the
-- descriptor had no room (deciding: for the request's hits; granting: for one hit);
-- `reset_us` is the time until enough hits leave the window for that to fit (over) or
-- until the oldest hit leaves it (not over); `granted` the hits recorded, under the
-- member `reservation`; `returned` the hits given back.
-- Deciding, the request is admitted when every non-shadow descriptor has room for its
-- hits; then the hits are recorded in every descriptor that has room, else in none.
-- Granting, a shadow descriptor gets every hit wanted (recorded, even beyond its limit),
-- any other min(hits, room, max(1, floor(room / share))).

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local token = ARGV[2]
local granting = ARGV[3] == 'grant'
local share = tonumber(ARGV[4])
local n = #KEYS / 2
local PER = 7

local function weight(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- The hits the log still holds; an empty log is deleted (which also heals a sum that
-- lost its log, e.g. evicted).
local function settle(log, total, used)
  if used <= 0 then
    redis.call('DEL', total, log)
    return 0
  end
  return used
end

-- Drop what left the window and return the hits still in it.
local function purge(log, total, cutoff)
  local expired = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  if #expired == 0 then
    return settle(log, total, tonumber(redis.call('GET', total) or '0'))
  end
  local freed = 0
  for _, member in ipairs(expired) do
    freed = freed + weight(member)
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
  return settle(log, total, redis.call('DECRBY', total, freed))
end

-- Give back up to `hits` of `member` (still in the log): it is replaced by a member of
-- the same score holding the rest. Returns (hits given back, used after).
local function give_back(log, total, member, hits, used)
  if member == '' or hits <= 0 then
    return 0, used
  end
  local score = redis.call('ZSCORE', log, member)
  if not score then
    return 0, used
  end
  local held = weight(member)
  local back = math.min(hits, held)
  redis.call('ZREM', log, member)
  if held > back then
    local rest = string.gsub(member, ':%d+$', '') .. 'r:' .. (held - back)
    redis.call('ZADD', log, score, rest)
  end
  return back, settle(log, total, redis.call('DECRBY', total, back))
end

-- Time until `need` hits have left the window (walking the oldest members).
local function room_in(log, window, need)
  local oldest = redis.call('ZRANGE', log, 0, need - 1, 'WITHSCORES')
  local freed = 0
  for j = 1, #oldest, 2 do
    freed = freed + weight(oldest[j])
    if freed >= need then
      return tonumber(oldest[j + 1]) + window - now
    end
  end
  return window
end

local limits, windows, shadows, hits, holds, used, fits, returned = {}, {}, {}, {}, {}, {}, {}, {}
local admitted = 1
for i = 1, n do
  local base = 4 + (i - 1) * PER
  local log, total = KEYS[2 * i - 1], KEYS[2 * i]
  limits[i] = tonumber(ARGV[base + 1])
  windows[i] = tonumber(ARGV[base + 2])
  shadows[i] = ARGV[base + 3] == '1'
  hits[i] = tonumber(ARGV[base + 4])
  holds[i] = tonumber(ARGV[base + 5])
  used[i] = purge(log, total, string.format('%d', now - windows[i]))
  returned[i], used[i] = give_back(log, total, ARGV[base + 6], tonumber(ARGV[base + 7]), used[i])
  -- Deciding asks room for the request's hits; granting, room for one hit.
  local need = granting and 1 or hits[i]
  fits[i] = used[i] + need <= limits[i]
  if not fits[i] and not shadows[i] then
    admitted = 0
  end
end

local reply = {admitted}
for i = 1, n do
  local log, total, window, limit = KEYS[2 * i - 1], KEYS[2 * i], windows[i], limits[i]
  local granted = 0
  if granting then
    if shadows[i] then
      granted = hits[i]
    elseif fits[i] then
      local room = limit - used[i]
      granted = math.min(hits[i], room, math.max(1, math.floor(room / share)))
    end
  elseif admitted == 1 and fits[i] then
    granted = hits[i]
  end
  local reservation = ''
  if granted > 0 then
    reservation = token .. ':' .. i .. ':' .. granted
    redis.call('ZADD', log, string.format('%d', now + holds[i]), reservation)
    used[i] = redis.call('INCRBY', total, granted)
    -- Keep the keys until the newest hit has left the window.
    local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
    local ttl = string.format('%d', math.ceil((tonumber(newest[2]) - now + window) / 1000))
    redis.call('PEXPIRE', log, ttl)
    redis.call('PEXPIRE', total, ttl)
  end
  local reset = 0
  if not fits[i] then
    local need = used[i] + (granting and 1 or hits[i]) - limit
    if need > used[i] then
      -- More hits than the limit: the whole window must pass.
      reset = window
    else
      reset = room_in(log, window, need)
    end
  else
    local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
    if #oldest == 2 then
      reset = tonumber(oldest[2]) + window - now
    end
  end
  reply[#reply + 1] = used[i]
  reply[#reply + 1] = reset
  reply[#reply + 1] = fits[i] and 0 or 1
  reply[#reply + 1] = granted
  reply[#reply + 1] = reservation
  reply[#reply + 1] = returned[i]
end
return reply
