-- One admission of a call against its key's limits, all or nothing, in one round trip
-- (services/gateway/redis_limits.py). Nothing changes unless every check passes.
--
-- KEYS[1] bucket hash (tokens, ts, rate, burst)    KEYS[2] leases zset (id -> expiry ms)
-- KEYS[3] holds hash (id -> "images,megapixels,tokens", and "total": their sum)
-- KEYS[4] today's used hash
-- ARGV[1] now (ms, the gateway's clock)   ARGV[2] rate per s (0: none)   ARGV[3] burst
-- ARGV[4] max concurrent (0: none)   ARGV[5] lease id   ARGV[6] lease duration (ms)
-- ARGV[7..9] the call's estimate of images, megapixels, tokens
-- ARGV[10..12] the key's daily caps (-1: none, or the call does not draw on that unit)
-- Returns {"ok"}, {"budget", unit index, spent, held}, {"concurrency", running}
-- or {"rate", seconds to wait}; numbers go back as strings (Redis would truncate them).
local now = tonumber(ARGV[1])
local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local max_concurrent = tonumber(ARGV[4])
local lease_id, lease_ms = ARGV[5], tonumber(ARGV[6])

local function amounts(value)
  local out, i = {0, 0, 0}, 1
  for amount in string.gmatch(value or "", "[^,]+") do
    out[i] = tonumber(amount)
    i = i + 1
  end
  return out
end

-- Leases of calls whose gateway died end at their expiry, and so do their holds
-- (the same bookkeeping as settle.lua's, in batches Lua can unpack).
local expired = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", now)
if #expired > 0 then
  local total = amounts(redis.call("HGET", KEYS[3], "total"))
  for first = 1, #expired, 1000 do
    local batch = {unpack(expired, first, math.min(first + 999, #expired))}
    for _, value in ipairs(redis.call("HMGET", KEYS[3], unpack(batch))) do
      local held = amounts(value)
      for i = 1, 3 do total[i] = total[i] - held[i] end
    end
    redis.call("HDEL", KEYS[3], unpack(batch))
  end
  redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now)
  if redis.call("HLEN", KEYS[3]) <= 1 then
    redis.call("DEL", KEYS[3])  -- no hold left: no rounding kept either
  else
    redis.call("HSET", KEYS[3], "total", math.max(0, total[1]) .. "," ..
               math.max(0, total[2]) .. "," .. math.max(0, total[3]))
  end
end

-- Daily budgets, counting what calls in flight hold.
local estimate = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
local held = amounts(redis.call("HGET", KEYS[3], "total"))
local capped = false
for i = 1, 3 do
  if tonumber(ARGV[9 + i]) >= 0 then capped = true end
end
if capped then
  local used = redis.call("HMGET", KEYS[4], "images", "megapixels", "tokens")
  for i = 1, 3 do
    local cap = tonumber(ARGV[9 + i])
    if cap >= 0 then
      local spent = tonumber(used[i] or "0")
      local left = math.max(0, cap - spent - held[i])
      if not (spent + held[i] < cap and estimate[i] <= left) then
        return {"budget", tostring(i), tostring(spent), tostring(held[i])}
      end
    end
  end
end

-- Concurrency.
local running = redis.call("ZCARD", KEYS[2])
if max_concurrent > 0 and running >= max_concurrent then
  return {"concurrency", tostring(running)}
end

-- Rate: a token bucket refilled for the time since it was last used.
if rate > 0 then
  local bucket = redis.call("HMGET", KEYS[1], "tokens", "ts", "rate", "burst")
  local tokens, ts = tonumber(bucket[1]), tonumber(bucket[2])
  if tokens == nil or tonumber(bucket[3]) ~= rate or tonumber(bucket[4]) ~= burst then
    tokens, ts = burst, now  -- a new key, or its limits changed in the keys file
  end
  -- Gateways' clocks and their calls' order differ by a little: time never runs back
  -- here, or the same interval would be refilled twice.
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) / 1000 * rate)
    ts = now
  end
  if tokens < 1 then
    redis.call("HSET", KEYS[1], "tokens", tostring(tokens), "ts", tostring(ts),
               "rate", ARGV[2], "burst", ARGV[3])
    return {"rate", tostring((1 - tokens) / rate)}
  end
  redis.call("HSET", KEYS[1], "tokens", tostring(tokens - 1), "ts", tostring(ts),
             "rate", ARGV[2], "burst", ARGV[3])
  -- An idle key's bucket is full again after burst / rate seconds: forget it then.
  redis.call("PEXPIRE", KEYS[1], math.ceil(burst / rate * 1000) + 60000)
end

-- Admitted: a lease (concurrency) and a hold (budgets) until the call settles or they expire.
redis.call("ZADD", KEYS[2], now + lease_ms, lease_id)
if redis.call("PTTL", KEYS[2]) < lease_ms then redis.call("PEXPIRE", KEYS[2], lease_ms) end
if estimate[1] > 0 or estimate[2] > 0 or estimate[3] > 0 then
  redis.call("HSET", KEYS[3], lease_id, ARGV[7] .. "," .. ARGV[8] .. "," .. ARGV[9],
             "total", (held[1] + estimate[1]) .. "," .. (held[2] + estimate[2]) .. "," ..
             (held[3] + estimate[3]))
  if redis.call("PTTL", KEYS[3]) < lease_ms then redis.call("PEXPIRE", KEYS[3], lease_ms) end
end
return {"ok"}
