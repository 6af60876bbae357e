-- Connection leases: a sorted set per holder key, member = lease id, score = expiry
-- in microseconds. Expired leases are purged on every call, so a crashed holder's
-- leases vanish after their TTL; the key itself expires with its last lease.
--
-- KEYS[1]: the lease set. ARGV: [1] op ("acquire" | "renew" | "release"); [2] now in
-- microseconds, or "" for the server's clock; [3] lease id; [4] limit; [5] TTL in
-- microseconds. Returns {granted (0/1), active leases}.

local key, op, id = KEYS[1], ARGV[1], ARGV[3]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local limit, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])

redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now))

if op == 'release' then
  redis.call('ZREM', key, id)
  return {1, redis.call('ZCARD', key)}
end

local held = redis.call('ZSCORE', key, id)
local granted = 0
if held then
  granted = 1
elseif op == 'acquire' and redis.call('ZCARD', key) < limit then
  granted = 1
end
if granted == 1 then
  redis.call('ZADD', key, string.format('%d', now + ttl), id)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', key, string.format('%d', math.ceil((tonumber(last[2]) - now) / 1000)))
end
return {granted, redis.call('ZCARD', key)}
