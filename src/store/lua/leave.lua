-- ARGV (after the deadline): ticket id. Takes it out of the line.
if uninitialised() then return redis.error_reply('NOINIT room') end
local lane, seq = parse_ticket(ARGV[2])
if lane == nil or redis.call('HEXISTS', K_T, lane .. ':' .. seq) == 0 then return 0 end
forget(lane, seq)
promote()
save()
return 1
