-- Request slots as leases, after clock.lua. KEYS[1] settings (hash, field
-- capacity), KEYS[2] leases by expiry (zset). ARGV[1]: the deadline;
-- ARGV[2]: op; the rest depends on it.
--   init    cfg capacity keep_ms  -> 1  (the deadline first, always)
--   acquire id lease_ms           -> 1 taken, 0 full
--   release id                    -> 1
--   renew   lease_ms id...        -> renewed count
--   usage                         -> {capacity, in use}
--   capacity n                    -> 1
--   line    field per_ms units max_wait_ms ahead_ms -> {1, wait_ms} reserved,
--           {0, retry_ms} too far (a rate: field next; a token budget: tnext)
--   settle  field per_ms delta_units -> 1
local op = ARGV[2]
if op == 'init' then
  if redis.call('HGET', KEYS[1], 'cfg') ~= ARGV[3] then
    redis.call('HSET', KEYS[1], 'cfg', ARGV[3], 'capacity', ARGV[4])
  end
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
  return 1
end
local capacity = tonumber(redis.call('HGET', KEYS[1], 'capacity') or '')
if capacity == nil then return redis.error_reply('NOINIT room') end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', NOW)
if op == 'acquire' then
  if redis.call('ZCARD', KEYS[2]) >= capacity then return 0 end
  redis.call('ZADD', KEYS[2], NOW + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]) * 2)
  return 1
elseif op == 'release' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 1
elseif op == 'renew' then
  local args = { 'XX', 'CH' }
  for i = 4, #ARGV do
    args[#args + 1] = NOW + tonumber(ARGV[3])
    args[#args + 1] = ARGV[i]
  end
  local renewed = 0
  if #args > 2 then renewed = redis.call('ZADD', KEYS[2], unpack(args)) end
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]) * 2)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 100)
  return renewed
elseif op == 'usage' then
  return { capacity, redis.call('ZCARD', KEYS[2]) }
elseif op == 'capacity' then
  redis.call('HSET', KEYS[1], 'capacity', ARGV[3])
  return 1
elseif op == 'line' then
  -- A line of moments (GCRA), on Redis's clock for every instance: each unit
  -- takes per_ms, and up to ahead_ms may be taken before its time.
  local field, per, units = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local nxt = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local paid = math.max(nxt, NOW) + units * per
  local wait = math.max(0, paid - tonumber(ARGV[7]) - NOW)
  if wait > tonumber(ARGV[6]) then return { 0, math.ceil(wait) } end
  redis.call('HSET', KEYS[1], field, string.format('%.3f', paid))
  return { 1, math.ceil(wait) }
elseif op == 'settle' then
  local nxt = tonumber(redis.call('HGET', KEYS[1], ARGV[3]) or '')
  if nxt then
    local settled = nxt + tonumber(ARGV[5]) * tonumber(ARGV[4])
    redis.call('HSET', KEYS[1], ARGV[3], string.format('%.3f', settled))
  end
  return 1
end
return redis.error_reply('unknown lease op ' .. op)
