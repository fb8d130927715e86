-- ARGV (after the deadline): most items per kind, this instance's name, lock duration (ms).
-- One instance sweeps a room at a time; the others skip until the lock lapses.
-- Returns: lapsed reservations, more-to-do flag, expired sessions (id, data
-- pairs), expired tickets' campaigns, the ids of unconfirmed sessions and of
-- unconfirmed tickets lapsed.
if uninitialised() then return redis.error_reply('NOINIT room') end
local limit, owner, lock_ms = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if num('sweep_until') > NOW and S.sweep_owner ~= owner then return { 'skipped' } end
set('sweep_owner', owner)
set('sweep_until', NOW + lock_ms)
local more = 0
local lapsed = lapse()

local sessions = {}
local unconfirmed_sessions = {}
local due = redis.call('ZRANGEBYSCORE', K_SS, '-inf', NOW, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local data = end_session(id, false)
  if data and data.c == 0 then
    unconfirmed_sessions[#unconfirmed_sessions + 1] = id
  else
    sessions[#sessions + 1] = id
    sessions[#sessions + 1] = data and data.u or ''
  end
end
if #due >= limit then more = 1 end

local unconfirmed_tickets = {}
local never = redis.call('ZRANGEBYSCORE', K_U, '-inf', NOW - CONFIRM, 'LIMIT', 0, limit)
for _, tkey in ipairs(never) do
  redis.call('ZREM', K_U, tkey)
  drop_ticket(tkey)
  local lane, seq = string.match(tkey, '^(%d):(%d+)$')
  unconfirmed_tickets[#unconfirmed_tickets + 1] = ticket_id(lane, seq)
end
if #never >= limit then more = 1 end

redis.call('ZREMRANGEBYSCORE', K_END, '-inf', NOW)
local spent = redis.call('ZRANGEBYSCORE', K_IDEMX, '-inf', NOW, 'LIMIT', 0, limit)
for _, key in ipairs(spent) do
  redis.call('ZREM', K_IDEMX, key)
  redis.call('HDEL', K_IDEM, key)
end
if #spent >= limit then more = 1 end

local tickets = {}
local gone = redis.call('ZRANGEBYSCORE', K_SEEN, '-inf', NOW - GRACE, 'LIMIT', 0, limit)
for _, tkey in ipairs(gone) do
  local raw = redis.call('HGET', K_T, tkey)
  tickets[#tickets + 1] = raw and cjson.decode(raw).u or ''
  local lane, seq = string.match(tkey, '^(%d):(%d+)$')
  forget(tonumber(lane), seq)
end
if #gone >= limit then more = 1 end

-- Tickets that went silent since the last sweep stop counting.
local silent = redis.call('ZRANGEBYSCORE', K_SEEN, num('stale_mark'), NOW - HB, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #silent, 2 do
  local tkey = silent[i]
  if redis.call('HEXISTS', K_RV, tkey) == 0 then
    local lane, seq = string.match(tkey, '^(%d):(%d+)$')
    make_stale(tonumber(lane), seq)
  end
end
if #silent / 2 >= limit then
  more = 1
  set('stale_mark', tonumber(silent[#silent]))
else
  set('stale_mark', NOW - HB)
end

promote()
save()
keep_all()
return { lapsed, more, sessions, tickets, unconfirmed_sessions, unconfirmed_tickets }
