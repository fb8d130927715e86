-- Shared by every waiting-room script: the room's keys, its settings, and the
-- rules of the waiting room, mirroring RoomState in store/memory.rs.
-- Every script runs atomically on the server, with the server's clock.
--
-- KEYS[1]  settings and counters (hash)      KEYS[7]  eligible tickets, normal lane
-- KEYS[2]  sessions by deadline (zset)       KEYS[8]  held tickets by last heard from (zset)
-- KEYS[3]  session data (hash)               KEYS[9]  ticket data (hash)
-- KEYS[4]  live tickets, priority lane       KEYS[10] reservations: ticket -> claim deadline (hash)
-- KEYS[5]  live tickets, normal lane         KEYS[11] reservations by deadline (zset)
-- KEYS[6]  eligible tickets, priority lane     KEYS[12] unconfirmed tickets by arrival (zset)
--                                             KEYS[13] tickets held per client network (hash)
--                                             KEYS[14] Idempotency-Key -> what it got (hash)
--                                             KEYS[15] Idempotency-Keys by expiry (zset)
--                                             KEYS[16] sessions by admission time (zset)
--                                             KEYS[17] ended sessions by when their passes lapse (zset)
-- Lane 0 is priority, 1 normal; a ticket is "<lane>:<seq>", its id "<epoch>.<lane>.<seq>".
-- It runs after clock.lua (NOW, and the deadline in ARGV[1]).
local K_S, K_SS, K_SD = KEYS[1], KEYS[2], KEYS[3]
local K_L = { KEYS[4], KEYS[5] }
local K_E = { KEYS[6], KEYS[7] }
local K_SEEN, K_T, K_RV, K_RQ, K_U = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_NET, K_IDEM, K_IDEMX, K_SA, K_END = KEYS[13], KEYS[14], KEYS[15], KEYS[16], KEYS[17]
-- store::FRESH and store::FRESH_MAX: recent places not confirmed yet that count as ahead.
local FRESH_MS, FRESH_MAX = 2000, 1000
local TAU = 60000

local S = {}
do
  local raw = redis.call('HGETALL', K_S)
  for i = 1, #raw, 2 do S[raw[i]] = raw[i + 1] end
end
local dirty = {}
local function num(k) return tonumber(S[k] or '0') or 0 end
local function set(k, v)
  if type(v) == 'number' then v = string.format('%.17g', v) end
  S[k] = v
  dirty[k] = true
end
local function save()
  local args = {}
  for k, _ in pairs(dirty) do
    args[#args + 1] = k
    args[#args + 1] = S[k]
  end
  if #args > 0 then redis.call('HSET', K_S, unpack(args)) end
end
local function keep_all()
  local keep = num('keep_ms')
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], keep) end
end
local function int(n) return string.format('%.0f', n) end

local CAP, RATE = num('capacity'), num('admit_rate')
local TTL, MAXS, CLAIM = num('ttl_ms'), num('max_ms'), num('claim_ms')
local HB, GRACE, AVG = num('hb_ms'), num('grace_ms'), num('avg_ms')
local CONFIRM = num('confirm_ms')
local PER_NET, IDEM_MS = num('per_net'), num('idem_ms')
local MAXQ, WEIGHT = num('max_queue'), math.max(1, num('weight'))
local STATE = S.state

local function free()
  return CAP - redis.call('ZCARD', K_SS) - redis.call('HLEN', K_RV)
end

local function live_total()
  return redis.call('ZCARD', K_L[1]) + redis.call('ZCARD', K_L[2])
end

-- Bucket of one second of admissions, full to start with.
local function bucket_take()
  if RATE <= 0 then return true end
  local burst = math.max(RATE, 1)
  local tokens = burst
  if S.tokens then
    tokens = math.min(burst, tonumber(S.tokens) + math.max(0, NOW - num('tokens_at')) * RATE / 1000)
  end
  set('tokens_at', NOW)
  if tokens >= 1 then
    set('tokens', tokens - 1)
    return true
  end
  set('tokens', tokens)
  return false
end

-- Admission rate: bias-corrected exponentially weighted average.
local function rate_decayed()
  return num('r_sum') * math.exp(-math.max(0, NOW - num('r_at')) / TAU)
end
-- A silence longer than a visit ends the run (RoomState's Rate::record).
local function rate_record()
  local sum
  local gap = math.min(math.max(tonumber(S.visit_avg or AVG) or AVG, 1000), 5 * TAU)
  if num('r_n') == 0 or NOW - num('r_at') > gap then
    set('r_since', NOW)
    set('r_n', 0)
    sum = 0
  else
    sum = rate_decayed()
  end
  set('r_sum', sum + 1 / TAU)
  set('r_at', NOW)
  set('r_n', num('r_n') + 1)
end
-- The expected visit length: measured, with avg_session standing in until
-- three times as many visits as slots have ended (the first to end are the
-- short ones).
local function visit_ms()
  if not S.visit_avg then return AVG end
  local slots = 3 * math.max(CAP, 1)
  local unseen = math.max(0, slots - num('visits_n')) / slots
  return AVG * unseen + tonumber(S.visit_avg) * (1 - unseen)
end

-- How long a turn waits for its visitor's claim: measured, else half a poll
-- (claim_prior in store/memory.rs).
local function claim_avg()
  if S.claim_avg then return tonumber(S.claim_avg) end
  return num('poll_ms') / 2
end

-- How much longer a session of this age is expected to last (remaining() in store/memory.rs).
local function remaining(age, visit, spread)
  local earliest, latest = visit - spread, visit + spread
  if age < earliest then return visit - age end
  if age < latest then return (latest - age) / 2 end
  return math.max(spread, visit * 0.05) / 4
end

-- When the slot a visitor with `ahead` admissions before theirs needs frees
-- (RoomState::wait in store/memory.rs): the reserved ones ahead have theirs;
-- each other one needs the next session to end, oldest first, each slot
-- freeing again a turnover later; never sooner than admit_rate allows.
local function wait(ahead)
  local visit = visit_ms()
  local claim = claim_avg()
  local reserved = redis.call('HLEN', K_RV)
  local turns = math.max(0, ahead - reserved) + 1
  local busy = redis.call('ZCARD', K_SA)
  -- Slots held for the line become sessions once claimed: the youngest.
  local slots = busy + reserved
  -- How often a slot turns over: measured once each slot has turned over
  -- twice, else a visit and the claim of the next.
  local cycle = visit + claim
  local span = NOW - num('r_since')
  local min = math.max(4, 2 * slots)
  if num('r_n') >= min and span > 0 then
    -- n admissions span n - 1 gaps.
    local rate = rate_decayed() / (1 - math.exp(-span / TAU)) * (num('r_n') - 1) / num('r_n')
    if rate > 0 then cycle = slots / rate end
  end
  local ms = 0
  if slots > 0 then
    local k, cycles = (turns - 1) % slots, math.floor((turns - 1) / slots)
    local began = NOW + claim
    if k < busy then began = tonumber(redis.call('ZRANGE', K_SA, k, k, 'WITHSCORES')[2]) end
    ms = remaining(NOW - began, visit, 2 * num('spread')) + cycles * cycle + claim
  end
  if RATE > 0 then ms = math.max(ms, turns * 1000 / RATE) end
  -- Known once the pace has been measured over three turnovers of each
  -- slot (the first ones end shortest first) and the line moved lately.
  local known = 0
  if S.visit_avg and num('r_n') >= math.floor(min * 3 / 2) and span > 0
    and NOW - num('r_at') <= math.max(10 * visit, 60000) then known = 1 end
  return math.floor(math.min(ms, 1e12)), known
end

-- Places before this one that arrived within FRESH_MS and have not come back
-- yet: in a burst, those whose first poll is still to come. They are told
-- in the position as in the wait, so they must be exactly those before it:
-- one ZCOUNT of earlier milliseconds (both lanes), and of this ticket's own
-- millisecond those of its lane with a smaller number (the memory store
-- counts by sequence within the lane).
local function fresh_before(tkey, joined)
  if joined < NOW - FRESH_MS then return 0 end
  local n = redis.call('ZCOUNT', K_U, NOW - FRESH_MS, '(' .. joined)
  local lane, seq = string.match(tkey, '^(%d+):(%d+)$')
  seq = tonumber(seq)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', K_U, joined, joined)) do
    local l, s = string.match(m, '^(%d+):(%d+)$')
    if l == lane and tonumber(s) < seq then n = n + 1 end
  end
  return math.min(n, FRESH_MAX)
end

local function ahead(lane, seq)
  -- Live tickets before this one: it need not be live itself (unconfirmed).
  local same = redis.call('ZCOUNT', K_L[lane + 1], '-inf', '(' .. seq)
  if lane == 1 then
    return same + math.min(redis.call('ZCARD', K_L[1]), WEIGHT * (same + 1))
  end
  return same + math.min(redis.call('ZCARD', K_L[2]), math.floor(same / WEIGHT))
end

local function ticket_id(lane, seq) return S.epoch .. '.' .. lane .. '.' .. seq end
-- A ticket of any state of the room: lane, sequence (canonical), and whether it is of this one.
local function parse_any_ticket(id)
  local epoch, lane, seq = string.match(id, '^(%d+)%.([01])%.(%d+)$')
  if epoch == nil then return nil end
  return tonumber(lane), int(tonumber(seq)), epoch == S.epoch
end
local function parse_ticket(id)
  local epoch, lane, seq = string.match(id, '^(%d+)%.([01])%.(%d+)$')
  if epoch == nil or epoch ~= S.epoch then return nil end
  return tonumber(lane), seq
end

local function make_stale(lane, seq)
  redis.call('ZREM', K_L[lane + 1], seq)
  redis.call('ZREM', K_E[lane + 1], seq)
end

-- A ticket leaves for good: its network holds one fewer.
local function drop_ticket(tkey)
  local raw = redis.call('HGET', K_T, tkey)
  if raw then
    local n = cjson.decode(raw).n
    if n and n ~= '' and redis.call('HINCRBY', K_NET, n, -1) <= 0 then redis.call('HDEL', K_NET, n) end
  end
  redis.call('HDEL', K_T, tkey)
end

local function forget(lane, seq)
  local tkey = lane .. ':' .. seq
  make_stale(lane, seq)
  redis.call('ZREM', K_U, tkey)
  redis.call('ZREM', K_SEEN, tkey)
  drop_ticket(tkey)
  redis.call('HDEL', K_RV, tkey)
  redis.call('ZREM', K_RQ, tkey)
end

-- Unclaimed reservations go to the next in line; their holder stops counting.
local function lapse()
  local due = redis.call('ZRANGEBYSCORE', K_RQ, '-inf', NOW)
  for _, tkey in ipairs(due) do
    redis.call('ZREM', K_RQ, tkey)
    redis.call('HDEL', K_RV, tkey)
    local lane, seq = string.match(tkey, '^(%d):(%d+)$')
    make_stale(tonumber(lane), seq)
  end
  return #due
end

local function next_lane()
  local p = redis.call('ZCARD', K_E[1]) > 0
  local n = redis.call('ZCARD', K_E[2]) > 0
  if p and n then
    if num('streak') < WEIGHT then return 0 end
    return 1
  end
  if n then return 1 end
  if p then return 0 end
  return nil
end

-- Offers every free slot to the head of the line.
local function promote()
  -- Just rebuilt: the slots are the returning passes' first (init.lua).
  if STATE ~= 'active' or NOW < num('hold_until') then return end
  local claim_until = NOW + CLAIM
  while free() > 0 do
    local lane = next_lane()
    if lane == nil then break end
    if not bucket_take() then break end
    local seq = redis.call('ZRANGE', K_E[lane + 1], 0, 0)[1]
    redis.call('ZREM', K_E[lane + 1], seq)
    local tkey = lane .. ':' .. seq
    redis.call('HSET', K_RV, tkey, int(claim_until))
    redis.call('ZADD', K_RQ, claim_until, tkey)
    -- Every instance hears it; the one with the visitor's event stream wakes it.
    if S.chan then redis.call('PUBLISH', S.chan, S.name .. '\n' .. ticket_id(lane, seq)) end
    if lane == 0 then set('streak', num('streak') + 1) else set('streak', 0) end
  end
end

-- A new session: confirmed when the visitor came from the line (they kept
-- their ticket); one let in at once holds its place for CONFIRM until the
-- visitor comes back with the pass. Only confirmed ones set the line's pace.
local function admit(id, wait_ms, utm, confirmed)
  local deadline = NOW + TTL
  if not confirmed then deadline = NOW + math.min(CONFIRM, TTL) end
  if MAXS > 0 then deadline = math.min(deadline, NOW + MAXS) end
  redis.call('ZADD', K_SS, deadline, id)
  redis.call('ZADD', K_SA, NOW, id)
  local c = 0
  if confirmed then c = 1 end
  redis.call('HSET', K_SD, id, cjson.encode({ a = NOW, w = wait_ms, u = utm, c = c }))
  if confirmed then rate_record() end
  return { 'admitted', id, int(NOW), int(wait_ms), utm }
end

-- Ends a session. One `released`, or never confirmed, is remembered until its pass lapses
-- (at most a session_ttl past its last renewal) so touch.lua does not take it back; one
-- that lapsed unused has a pass that lapses with it.
local function end_session(id, released)
  local raw = redis.call('HGET', K_SD, id)
  redis.call('ZREM', K_SS, id)
  redis.call('ZREM', K_SA, id)
  redis.call('HDEL', K_SD, id)
  if not raw then return nil end
  local data = cjson.decode(raw)
  if released or data.c == 0 then redis.call('ZADD', K_END, NOW + TTL, id) end
  if data.c ~= 0 then
    local visit = NOW - data.a
    local avg = visit
    if S.visit_avg then
      avg = tonumber(S.visit_avg) + (visit - tonumber(S.visit_avg)) / 8
      set('spread', num('spread') + (math.abs(visit - tonumber(S.visit_avg)) - num('spread')) / 8)
    end
    set('visit_avg', avg)
    set('visits_n', num('visits_n') + 1)
  end
  return data
end

-- Turns a reservation into a session.
local function claim(lane, seq, id)
  local tkey = lane .. ':' .. seq
  -- How long a held slot waited for its visitor: part of each turn.
  local held_since = tonumber(redis.call('HGET', K_RV, tkey) or NOW) - CLAIM
  set('claim_avg', claim_avg() + (NOW - held_since - claim_avg()) / 8)
  local data = cjson.decode(redis.call('HGET', K_T, tkey))
  forget(lane, seq)
  return admit(id, NOW - data.j, data.u, true)
end

local function place(lane, seq)
  local a = ahead(lane, seq)
  local data = cjson.decode(redis.call('HGET', K_T, lane .. ':' .. seq))
  -- A burst's places not confirmed yet: told in the position and the wait alike.
  local fresh = fresh_before(lane .. ':' .. seq, data.j)
  local w, known = wait(a + fresh)
  local confirmed = redis.call('ZSCORE', K_U, lane .. ':' .. seq) and 0 or 1
  return { 'queued', ticket_id(lane, seq), lane, a, data.a, live_total(), math.max(0, free()), w, known, STATE, int(data.j), confirmed, fresh }
end

local function uninitialised()
  return S.epoch == nil
end
