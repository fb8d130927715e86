-- The first lines of every script: the server's clock, and the step's
-- deadline. ARGV[1] is the moment (server clock, ms) the instance stops
-- waiting for the answer; a step that starts later is refused, so a step the
-- instance gave up on (Redis was frozen or slow) never takes effect behind
-- its back. 0: no deadline (the clocks have not been compared yet).
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local DEADLINE = tonumber(ARGV[1]) or 0
if DEADLINE > 0 and NOW > DEADLINE then
  return redis.error_reply('LATE the instance stopped waiting for this step')
end
