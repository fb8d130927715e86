-- Returns capacity, state, admit_rate, sessions, reserved, waiting per lane,
-- and a newcomer's wait.
if uninitialised() then return redis.error_reply('NOINIT room') end
local waiting0, waiting1 = redis.call('ZCARD', K_L[1]), redis.call('ZCARD', K_L[2])
local w, known = wait(waiting0 + waiting1)
return { int(CAP), STATE, S.admit_rate or '0', redis.call('ZCARD', K_SS), redis.call('HLEN', K_RV),
         waiting0, waiting1, w, known }
