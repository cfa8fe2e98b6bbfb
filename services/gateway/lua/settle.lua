-- The end of calls, in one round trip (services/gateway/redis_limits.py): their leases and
-- holds released, what they generated charged to a UTC day.
-- KEYS[1] leases zset   KEYS[2] holds hash (id -> amounts, "total": their sum)
-- KEYS[3] the day's used hash
-- ARGV[1..3] images, megapixels, tokens used   ARGV[4] seconds the day's hash is kept
-- ARGV[5..] the lease ids to release (none when only charging usage)
-- Returns the day's totals of images, megapixels, tokens as strings.
local function amounts(value)
  local out, i = {0, 0, 0}, 1
  for amount in string.gmatch(value or "", "[^,]+") do
    out[i] = tonumber(amount)
    i = i + 1
  end
  return out
end

if #ARGV > 4 then
  local total = amounts(redis.call("HGET", KEYS[2], "total"))
  for first = 5, #ARGV, 1000 do  -- in batches Lua can unpack
    local batch = {unpack(ARGV, first, math.min(first + 999, #ARGV))}
    redis.call("ZREM", KEYS[1], unpack(batch))
    for _, value in ipairs(redis.call("HMGET", KEYS[2], unpack(batch))) do
      local held = amounts(value)
      for i = 1, 3 do total[i] = total[i] - held[i] end
    end
    redis.call("HDEL", KEYS[2], unpack(batch))
  end
  if redis.call("HLEN", KEYS[2]) <= 1 then
    redis.call("DEL", KEYS[2])  -- no hold left: no rounding kept either
  else
    redis.call("HSET", KEYS[2], "total", math.max(0, total[1]) .. "," ..
               math.max(0, total[2]) .. "," .. math.max(0, total[3]))
  end
end
local units = {"images", "megapixels", "tokens"}
local charged = false
for i = 1, 3 do
  if tonumber(ARGV[i]) > 0 then
    redis.call("HINCRBYFLOAT", KEYS[3], units[i], ARGV[i])
    charged = true
  end
end
if charged then redis.call("EXPIRE", KEYS[3], tonumber(ARGV[4])) end
local used = redis.call("HMGET", KEYS[3], units[1], units[2], units[3])
for i = 1, 3 do used[i] = used[i] or "0" end
return used
