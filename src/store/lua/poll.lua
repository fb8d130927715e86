-- ARGV (after the deadline): ticket id, the session id to use if admitted,
-- whether to confirm a ticket not yet confirmed ('1') or only tell its place ('0'),
-- whether to claim a slot held for it ('1') or only say it is its turn ('0':
-- an event stream's heartbeat).
if uninitialised() then return redis.error_reply('NOINIT room') end
lapse()
local lane, seq, same = parse_any_ticket(ARGV[2])
if lane == nil then
  save()
  return { 'expired' }
end
local tkey = lane .. ':' .. seq
if redis.call('HEXISTS', K_T, tkey) == 0 then
  local counter = 'seq' .. lane
  if same and tonumber(seq) < num(counter) then
    -- Given out here and forgotten since (silent past rejoin_grace, or it left).
    save()
    return { 'expired' }
  end
  -- A verified ticket this state never held (the store lost its state, or failed over to a
  -- replica that had not caught up): back at the place its number gives, never ahead of it.
  if tonumber(seq) >= num(counter) then set(counter, tonumber(seq) + 1) end
  redis.call('HSET', K_T, tkey, cjson.encode({ j = NOW, a = ahead(lane, seq) }))
end
local arrived = redis.call('ZSCORE', K_U, tkey)
if arrived and tonumber(arrived) <= NOW - CONFIRM then
  -- Too late to confirm, swept or not: a stale solution finds nothing.
  forget(lane, seq)
  save()
  return { 'expired' }
end
if ARGV[4] ~= '1' and arrived then
  -- Not seen: it lapses at its deadline unless the challenge is solved.
  local r = place(lane, seq)
  save()
  return r
end
-- Back with the ticket: confirmed (first time), or back after a silence.
redis.call('ZREM', K_U, tkey)
redis.call('ZADD', K_SEEN, NOW, tkey)
if not redis.call('ZSCORE', K_L[lane + 1], seq) then
  -- Back after a silence: the original place, which is the front if it has passed.
  redis.call('ZADD', K_L[lane + 1], seq, seq)
  redis.call('ZADD', K_E[lane + 1], seq, seq)
end
promote()
local r
if redis.call('HEXISTS', K_RV, tkey) == 0 then
  r = place(lane, seq)
elseif ARGV[5] == '0' then
  r = place(lane, seq)
  r[1] = 'turn'
else
  r = claim(lane, seq, ARGV[3])
end
save()
return r
