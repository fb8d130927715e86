-- ARGV (after the deadline): lane, utm (JSON or ""), the session id to use if admitted.
if uninitialised() then return redis.error_reply('NOINIT room') end
local lane, utm, id = tonumber(ARGV[2]), ARGV[3], ARGV[4]
lapse()
if STATE == 'maintenance' then
  save()
  return { 'maintenance' }
end
if STATE == 'active' and redis.call('ZCARD', K_E[1]) + redis.call('ZCARD', K_E[2]) == 0
    and redis.call('HLEN', K_RV) == 0 and free() > 0 and bucket_take() then
  local r = admit(id, 0, utm, false)
  save()
  return r
end
if MAXQ > 0 and live_total() >= MAXQ then
  save()
  return { 'full' }
end
local counter = 'seq' .. lane
local seq = int(num(counter))
set(counter, num(counter) + 1)
-- Not in line yet: the ticket counts from its holder's first poll, at this place.
local tkey = lane .. ':' .. seq
redis.call('ZADD', K_U, NOW, tkey)
redis.call('HSET', K_T, tkey, cjson.encode({ j = NOW, a = ahead(lane, seq), u = utm }))
promote()
local r = place(lane, seq)
save()
return r
