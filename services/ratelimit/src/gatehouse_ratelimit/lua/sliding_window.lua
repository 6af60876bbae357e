-- Sliding-log rate limit decision over several descriptors, atomically.
--
-- KEYS: per descriptor i, KEYS[2i-1] = its log (sorted set: member "<token>:<i>:<hits>",
--       score = admission time in microseconds) and KEYS[2i] = the sum of the log's hits.
-- ARGV: [1] now in microseconds, or "" for the server's clock (the default, so replicas
--       with skewed clocks agree); [2] a token unique to this call; [3] hits;
--       then per descriptor: limit, window in microseconds, shadow ("1" or "0").
-- Returns {admitted, then per descriptor: used, reset_us, over}: `used` is the hits in
-- the window after this call, `reset_us` the time until enough hits leave the window
-- for this request to fit (over) or until the oldest hit leaves it (not over).
-- The request is admitted when every non-shadow descriptor has room for `hits`; then
-- the hits are recorded in every descriptor that has room, else in none.

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local token = ARGV[2]
local hits = tonumber(ARGV[3])
local n = #KEYS / 2

local function weight(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- Drop what left the window and return the hits still in it.
local function purge(log, total, cutoff)
  local expired = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  local used
  if #expired > 0 then
    local freed = 0
    for _, member in ipairs(expired) do
      freed = freed + weight(member)
    end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
    used = redis.call('DECRBY', total, freed)
  else
    used = tonumber(redis.call('GET', total) or '0')
  end
  if used <= 0 then
    -- An empty log; also heals a sum that lost its log (e.g. evicted).
    redis.call('DEL', total, log)
    used = 0
  end
  return used
end

local limits, windows, shadows, used, fits = {}, {}, {}, {}, {}
local admitted = 1
for i = 1, n do
  local base = 3 + (i - 1) * 3
  limits[i] = tonumber(ARGV[base + 1])
  windows[i] = tonumber(ARGV[base + 2])
  shadows[i] = ARGV[base + 3] == '1'
  used[i] = purge(KEYS[2 * i - 1], KEYS[2 * i], string.format('%d', now - windows[i]))
  fits[i] = used[i] + hits <= limits[i]
  if not fits[i] and not shadows[i] then
    admitted = 0
  end
end

local reply = {admitted}
for i = 1, n do
  local log, total, window = KEYS[2 * i - 1], KEYS[2 * i], windows[i]
  if admitted == 1 and fits[i] then
    redis.call('ZADD', log, string.format('%d', now), token .. ':' .. i .. ':' .. hits)
    used[i] = redis.call('INCRBY', total, hits)
    local ttl = string.format('%d', math.ceil(window / 1000))
    redis.call('PEXPIRE', log, ttl)
    redis.call('PEXPIRE', total, ttl)
  end
  local reset = 0
  if not fits[i] then
    if hits > limits[i] then
      reset = window
    else
      -- Walk the oldest hits until enough weight would have left the window.
      local need = used[i] + hits - limits[i]
      local oldest = redis.call('ZRANGE', log, 0, need - 1, 'WITHSCORES')
      local freed = 0
      for j = 1, #oldest, 2 do
        freed = freed + weight(oldest[j])
        if freed >= need then
          reset = tonumber(oldest[j + 1]) + window - now
          break
        end
      end
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
end
return reply
