local ttl = ARGV[1]
local maxlen = tonumber(ARGV[2])
local closed = {}
local replies = {}
local a = 2
for i = 1, #KEYS / 2 do
  local stream, seen = KEYS[2 * i - 1], KEYS[2 * i]
  local id, topic, haskey, key = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local payload, headers = ARGV[a + 5], ARGV[a + 6]
  local extra_from, extra_to = a + 8, a + 7 + 2 * tonumber(ARGV[a + 7])
  a = extra_to
  if haskey == '1' and closed[key] then
    replies[i] = '-'
  else
    local existing = redis.call('GET', seen)
    if existing then
      replies[i] = '=' .. existing
    else
      local fields = {'message_id', id, 'topic', topic}
      if haskey == '1' then
        fields[#fields + 1] = 'key'
        fields[#fields + 1] = key
      end
      for j = extra_from, extra_to do
        fields[#fields + 1] = ARGV[j]
      end
      fields[#fields + 1] = 'payload'
      fields[#fields + 1] = payload
      fields[#fields + 1] = 'headers'
      fields[#fields + 1] = headers
      local entry
      if maxlen > 0 then
        entry = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
      else
        entry = redis.pcall('XADD', stream, '*', unpack(fields))
      end
      if type(entry) == 'table' and entry.err then
        local err = entry.err
        if string.sub(err, 1, 9) == 'WRONGTYPE' or string.sub(err, 1, 6) == 'NOPERM' then
          replies[i] = '!' .. err
          if haskey == '1' then closed[key] = true end
        else
          return redis.error_reply(err)
        end
      else
        redis.call('SET', seen, entry, 'EX', ttl)
        replies[i] = '+' .. entry
      end
    end
  end
end
return replies
