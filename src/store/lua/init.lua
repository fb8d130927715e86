-- ARGV (after the deadline): config (one string; applied when it differs from the stored one, so
-- live admin changes survive restarts of instances with the same file),
-- then its fields: capacity, state, admit_rate, ttl_ms, max_ms, claim_ms,
-- hb_ms, grace_ms, avg_ms, max_queue, weight, keep_ms, confirm_ms, per_net, idem_ms, poll_ms; then an epoch to use
-- if the room has none yet; the channel its reservations are published on and the room's name;
-- last, how long to hold newcomers back if the room is set up anew (its state was lost: ms, 0 for none).
-- Returns the room's epoch.
if S.cfg ~= ARGV[2] then
  local fields = { 'capacity', 'state', 'admit_rate', 'ttl_ms', 'max_ms', 'claim_ms', 'hb_ms',
                   'grace_ms', 'avg_ms', 'max_queue', 'weight', 'keep_ms', 'confirm_ms', 'per_net',
                   'idem_ms', 'poll_ms' }
  for i, field in ipairs(fields) do set(field, ARGV[i + 2]) end
  set('cfg', ARGV[2])
end
if S.epoch == nil then
  set('epoch', ARGV[19])
  -- Numbered past every ticket given out before (up to 1000 a millisecond), so that
  -- a ticket of the lost state rejoins at its own number, ahead of every new one.
  set('seq0', NOW * 1000)
  set('seq1', NOW * 1000)
  local hold = tonumber(ARGV[22]) or 0
  if hold > 0 then set('hold_until', NOW + hold) end
end
if S.chan ~= ARGV[20] or S.name ~= ARGV[21] then
  set('chan', ARGV[20])
  set('name', ARGV[21])
end
save()
keep_all()
return S.epoch
