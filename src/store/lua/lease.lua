-- Request slots, after clock.lua. KEYS[1] settings (hash, field capacity);
-- KEYS[2] per-request leases by expiry (zset; only instances of versions
-- before allowances take them, counted here so a rolling upgrade respects
-- them); KEYS[3] allowances by expiry (zset of instances); KEYS[4] each
-- instance's allowance and in-flight count (hash, "granted:in_flight");
-- KEYS[5] instances short of what they need, until when (zset).
-- ARGV[1]: the deadline; ARGV[2]: op; the rest depends on it.
--   init    cfg capacity keep_ms  -> 1  (the deadline first, always)
--   allow   instance need want in_flight lease_ms limited taking
--           -> {granted, contended}: the instance's allowance set to at most
--           want within the capacity (limited: and the adaptive limit) less
--           the others'; its use: in_flight, and the taking it was granted;
--           contended: another instance is short
--   usage                         -> {capacity, in flight}
--   capacity n                    -> 1
--   line    field per_ms units max_wait_ms ahead_ms -> {1, wait_us} reserved,
--           {0, retry_us} too far (a rate: field next; a token budget: tnext)
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
-- The allowances of instances that stopped renewing them (they died) come back.
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', NOW)
if #gone > 0 then
  redis.call('HDEL', KEYS[4], unpack(gone))
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', NOW)
end
-- Each instance's allowance and in-flight count.
local function allowances()
  local all = redis.call('HGETALL', KEYS[4])
  local out = {}
  for i = 1, #all, 2 do
    local granted, flying = string.match(all[i + 1], '^(%d+):(%d+)$')
    out[all[i]] = { tonumber(granted) or 0, tonumber(flying) or 0 }
  end
  return out
end
if op == 'allow' then
  local me, need, want = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local flying, lease = tonumber(ARGV[6]), tonumber(ARGV[7])
  local cap = capacity
  if ARGV[8] == '1' then
    cap = math.min(cap, tonumber(redis.call('HGET', KEYS[1], 'limit') or capacity))
  end
  local others = redis.call('ZCARD', KEYS[2])
  for instance, a in pairs(allowances()) do
    if instance ~= me then others = others + a[1] end
  end
  local granted = math.max(0, math.min(want, cap - others))
  flying = flying + math.min(tonumber(ARGV[9]) or 0, math.max(0, granted - flying))
  if granted > 0 or flying > 0 then
    redis.call('HSET', KEYS[4], me, granted .. ':' .. flying)
    redis.call('ZADD', KEYS[3], NOW + lease, me)
  else
    redis.call('HDEL', KEYS[4], me)
    redis.call('ZREM', KEYS[3], me)
  end
  -- Short of what its requests need: the others give back what is returned
  -- to them until it asks again and has it (or for a second at most).
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', NOW)
  if granted < need then
    redis.call('ZADD', KEYS[5], NOW + math.min(lease, 1000), me)
  else
    redis.call('ZREM', KEYS[5], me)
  end
  local shorts = redis.call('ZCARD', KEYS[5])
  if redis.call('ZSCORE', KEYS[5], me) then shorts = shorts - 1 end
  for k = 3, 5 do redis.call('PEXPIRE', KEYS[k], lease * 2) end
  redis.call('PEXPIRE', KEYS[1], lease * 100)
  return { granted, shorts > 0 and 1 or 0 }
elseif op == 'usage' then
  local flying = redis.call('ZCARD', KEYS[2])
  for _, a in pairs(allowances()) do flying = flying + a[2] end
  return { capacity, flying }
elseif op == 'capacity' then
  redis.call('HSET', KEYS[1], 'capacity', ARGV[3])
  return 1
elseif op == 'line' then
  -- A line of moments (GCRA), on Redis's clock for every instance: each unit
  -- takes per_ms, and up to ahead_ms may be taken before its time.
  -- The clock to the microsecond: a rate faster than one a millisecond
  -- takes several moments within one, and whole milliseconds would cut it
  -- to a thousand a second. Waits go back in microseconds for the same reason.
  local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
  local field, per, units = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local nxt = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local paid = math.max(nxt, now) + units * per
  local wait = math.max(0, paid - tonumber(ARGV[7]) - now)
  if wait > tonumber(ARGV[6]) then return { 0, math.ceil(wait * 1000) } end
  redis.call('HSET', KEYS[1], field, string.format('%.3f', paid))
  return { 1, math.ceil(wait * 1000) }
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
