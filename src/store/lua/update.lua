-- ARGV (after the deadline): capacity, state, admit_rate ("" leaves one as it is). Returns the snapshot.
if uninitialised() then return redis.error_reply('NOINIT room') end
if ARGV[2] ~= '' then set('capacity', ARGV[2]); CAP = tonumber(ARGV[2]) end
if ARGV[3] ~= '' then set('state', ARGV[3]); STATE = ARGV[3] end
if ARGV[4] ~= '' then set('admit_rate', ARGV[4]); RATE = tonumber(ARGV[4]) end
promote()
save()
local waiting0, waiting1 = redis.call('ZCARD', K_L[1]), redis.call('ZCARD', K_L[2])
local w, known = wait(waiting0 + waiting1)
return { int(CAP), STATE, S.admit_rate or '0', redis.call('ZCARD', K_SS), redis.call('HLEN', K_RV),
         waiting0, waiting1, w, known }
