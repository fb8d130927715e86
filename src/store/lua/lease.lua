-- Request slots as leases, after clock.lua. KEYS[1] settings (hash, field
-- capacity), KEYS[2] leases by expiry (zset). ARGV[1]: the deadline;
-- ARGV[2]: op; the rest depends on it.
--   init    cfg capacity keep_ms  -> 1  (the deadline first, always)
--   acquire id lease_ms limited   -> 1 taken, 0 full (limited: 1 when the
--           adaptive limit counts too)
--   release id                    -> 1
--   renew   lease_ms id...        -> renewed count
--   usage                         -> {capacity, in use}
--   capacity n                    -> 1
--   line    field per_ms units max_wait_ms ahead_ms -> {1, wait_ms} reserved,
--           {0, retry_ms} too far (a rate: field next; a token budget: tnext)
--   settle  field per_ms delta_units -> 1
--   adapt   down age_ms min | up | keep -> the adaptive limit
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
  local cap = capacity
  if ARGV[5] == '1' then
    cap = math.min(cap, tonumber(redis.call('HGET', KEYS[1], 'limit') or capacity))
  end
  if redis.call('ZCARD', KEYS[2]) >= cap then return 0 end
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
elseif op == 'adapt' then
  -- The adaptive limit under the capacity, one for every instance (AIMD):
  -- down: times 0.9 and at least one less, never below min, once per round
  -- trip (not again for a request sent before the last decrease); up: one
  -- more, up to the capacity; keep: as it is.
  local limit = math.min(capacity, tonumber(redis.call('HGET', KEYS[1], 'limit') or capacity))
  if ARGV[3] == 'down' then
    local sent = NOW - tonumber(ARGV[4])
    local last = tonumber(redis.call('HGET', KEYS[1], 'decreased') or '-1')
    if sent >= last then
      limit = math.max(tonumber(ARGV[5]), math.min(limit - 1, math.floor(limit * 0.9)))
      redis.call('HSET', KEYS[1], 'limit', limit, 'decreased', NOW)
    end
  elseif ARGV[3] == 'up' then
    limit = math.min(capacity, limit + 1)
    redis.call('HSET', KEYS[1], 'limit', limit)
  end
  return limit
end
return redis.error_reply('unknown lease op ' .. op)
