-- ARGV (after the deadline): lane, utm (JSON or ""), the session id to use if
-- admitted, the Idempotency-Key ("" for none), the client network ("" for none).
if uninitialised() then return redis.error_reply('NOINIT room') end
local lane, utm, id, key, net = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6]
lapse()
if STATE == 'maintenance' then
  save()
  return { 'maintenance' }
end
-- The same key again: what it was given, while that holds.
if key ~= '' and (tonumber(redis.call('ZSCORE', K_IDEMX, key) or '0') or 0) > NOW then
  local given = redis.call('HGET', K_IDEM, key)
  local glane, gseq = string.match(given or '', '^t:(%d):(%d+)$')
  if glane and redis.call('HEXISTS', K_T, glane .. ':' .. gseq) == 1 then
    local r = place(tonumber(glane), gseq)
    r[1] = 'queued_again'
    save()
    return r
  end
  local gid = string.match(given or '', '^s:(%x+)$')
  local raw = gid and redis.call('HGET', K_SD, gid)
  if raw then
    local data = cjson.decode(raw)
    save()
    return { 'admitted_again', gid, int(data.a), int(data.w), data.u }
  end
end
local function remember(what)
  if key == '' then return end
  redis.call('HSET', K_IDEM, key, what)
  redis.call('ZADD', K_IDEMX, NOW + IDEM_MS, key)
end
if STATE == 'active' and NOW >= num('hold_until')
    and redis.call('ZCARD', K_E[1]) + redis.call('ZCARD', K_E[2]) == 0
    and redis.call('HLEN', K_RV) == 0 and free() > 0 and bucket_take() then
  local r = admit(id, 0, utm, false)
  remember('s:' .. id)
  save()
  return r
end
if MAXQ > 0 and live_total() >= MAXQ then
  save()
  return { 'full' }
end
if net ~= '' then
  if PER_NET > 0 and tonumber(redis.call('HGET', K_NET, net) or '0') >= PER_NET then
    save()
    return { 'limited' }
  end
  redis.call('HINCRBY', K_NET, net, 1)
end
local counter = 'seq' .. lane
-- Never numbered below the clock (ms x 1000): a replica promoted before it had
-- the last arrivals numbers past the tickets it lost, never the same again.
local seq = int(math.max(num(counter), NOW * 1000))
set(counter, seq + 1)
-- Not in line yet: the ticket counts from its holder's first poll, at this place.
local tkey = lane .. ':' .. seq
redis.call('ZADD', K_U, NOW, tkey)
redis.call('HSET', K_T, tkey, cjson.encode({ j = NOW, a = ahead(lane, seq), u = utm, n = net }))
remember('t:' .. tkey)
promote()
local r = place(lane, seq)
save()
return r
