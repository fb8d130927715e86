-- ARGV (after the deadline): session id. Ends it at once; nil if it was gone.
if uninitialised() then return redis.error_reply('NOINIT room') end
local data = end_session(ARGV[2], true)
promote()
save()
if data == nil then return nil end
return { int(data.a), int(data.w), data.u }
