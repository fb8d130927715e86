-- Request slots as leases. KEYS[1] settings (hash, field capacity), KEYS[2]
-- leases by expiry (zset). ARGV[1]: op; the rest depends on it.
--   init    cfg capacity keep_ms  -> 1
--   acquire id lease_ms           -> 1 taken, 0 full
--   release id                    -> 1
--   renew   lease_ms id...        -> renewed count
--   usage                         -> {capacity, in use}
--   capacity n                    -> 1
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local op = ARGV[1]
if op == 'init' then
  if redis.call('HGET', KEYS[1], 'cfg') ~= ARGV[2] then
    redis.call('HSET', KEYS[1], 'cfg', ARGV[2], 'capacity', ARGV[3])
  end
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
  return 1
end
local capacity = tonumber(redis.call('HGET', KEYS[1], 'capacity') or '')
if capacity == nil then return redis.error_reply('NOINIT room') end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if op == 'acquire' then
  if redis.call('ZCARD', KEYS[2]) >= capacity then return 0 end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]) * 2)
  return 1
elseif op == 'release' then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
elseif op == 'renew' then
  local args = { 'XX', 'CH' }
  for i = 3, #ARGV do
    args[#args + 1] = now + tonumber(ARGV[2])
    args[#args + 1] = ARGV[i]
  end
  local renewed = 0
  if #args > 2 then renewed = redis.call('ZADD', KEYS[2], unpack(args)) end
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) * 2)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 100)
  return renewed
elseif op == 'usage' then
  return { capacity, redis.call('ZCARD', KEYS[2]) }
elseif op == 'capacity' then
  redis.call('HSET', KEYS[1], 'capacity', ARGV[2])
  return 1
end
return redis.error_reply('unknown lease op ' .. op)
