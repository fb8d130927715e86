-- ARGV (after the deadline): config (one string; applied when it differs from the stored one, so
-- live admin changes survive restarts of instances with the same file),
-- then its fields: capacity, state, admit_rate, ttl_ms, max_ms, claim_ms,
-- hb_ms, grace_ms, avg_ms, max_queue, weight, keep_ms, confirm_ms, per_net, idem_ms; then an epoch to use
-- if the room has none yet; last, the channel its reservations are published on and the room's name.
-- Returns the room's epoch.
if S.cfg ~= ARGV[2] then
  local fields = { 'capacity', 'state', 'admit_rate', 'ttl_ms', 'max_ms', 'claim_ms', 'hb_ms',
                   'grace_ms', 'avg_ms', 'max_queue', 'weight', 'keep_ms', 'confirm_ms', 'per_net',
                   'idem_ms' }
  for i, field in ipairs(fields) do set(field, ARGV[i + 2]) end
  set('cfg', ARGV[2])
end
if S.epoch == nil then set('epoch', ARGV[18]) end
if S.chan ~= ARGV[19] or S.name ~= ARGV[20] then
  set('chan', ARGV[19])
  set('name', ARGV[20])
end
save()
keep_all()
return S.epoch
