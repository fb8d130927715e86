-- ARGV (after the deadline): session id; from its verified pass, when the session began and
-- when the pass lapses ("" for neither). Slides its deadline; nil if the session is gone.
if uninitialised() then return redis.error_reply('NOINIT room') end
local id = ARGV[2]
local deadline = redis.call('ZSCORE', K_SS, id)
if not deadline then
  -- Unknown: taken back from its pass, unless it ended here or its pass (or session_max) ran out.
  local a, pass_until = tonumber(ARGV[3]), tonumber(ARGV[4])
  if a == nil or pass_until == nil or pass_until <= NOW or redis.call('ZSCORE', K_END, id)
      or (MAXS > 0 and a + MAXS <= NOW) then
    return nil
  end
  a = math.min(a, NOW)
  local next_deadline = NOW + TTL
  if MAXS > 0 then next_deadline = math.min(next_deadline, a + MAXS) end
  redis.call('ZADD', K_SS, next_deadline, id)
  redis.call('ZADD', K_SA, a, id)
  redis.call('HSET', K_SD, id, cjson.encode({ a = a, w = 0, c = 1 }))
  keep_all()
  return { int(a), '0', nil }
end
if tonumber(deadline) <= NOW then
  end_session(id, false)
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
  save()
end
local next_deadline = NOW + TTL
if MAXS > 0 then next_deadline = math.min(next_deadline, data.a + MAXS) end
redis.call('ZADD', K_SS, 'XX', next_deadline, id)
return { int(data.a), int(data.w), data.u }
