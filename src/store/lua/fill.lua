-- ARGV (after the deadline): lane, count. Adds synthetic waiting visitors at
-- the back of the line (for rehearsals and load tests). Returns the count added.
if uninitialised() then return redis.error_reply('NOINIT room') end
local lane, count = tonumber(ARGV[2]), tonumber(ARGV[3])
local counter = 'seq' .. lane
local first = math.max(num(counter), NOW * 1000)
for i = 0, count - 1 do
  local seq = int(first + i)
  redis.call('ZADD', K_L[lane + 1], seq, seq)
  redis.call('ZADD', K_E[lane + 1], seq, seq)
  redis.call('ZADD', K_SEEN, NOW, lane .. ':' .. seq)
  redis.call('HSET', K_T, lane .. ':' .. seq, cjson.encode({ j = NOW, a = 0, u = '' }))
end
set(counter, first + count)
promote()
save()
return count
