-- ARGV (after the deadline): session id. Slides its deadline; nil if the session is gone.
if uninitialised() then return redis.error_reply('NOINIT room') end
local id = ARGV[2]
local deadline = redis.call('ZSCORE', K_SS, id)
if not deadline then return nil end
if tonumber(deadline) <= NOW then
  end_session(id)
  promote()
  save()
  return nil
end
local raw = redis.call('HGET', K_SD, id)
if not raw then return nil end
local data = cjson.decode(raw)
if data.c == 0 then
  -- The visitor came back with the pass: the place is theirs for the session.
  data.c = 1
  redis.call('HSET', K_SD, id, cjson.encode(data))
  rate_record()
  save()
end
local next_deadline = NOW + TTL
if MAXS > 0 then next_deadline = math.min(next_deadline, data.a + MAXS) end
redis.call('ZADD', K_SS, 'XX', next_deadline, id)
return { int(data.a), int(data.w), data.u }
