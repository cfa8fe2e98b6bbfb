-- A gateway says it is alive until its expiry; answers how many are
-- (services/gateway/redis_limits.py: the replica count the local fallback divides by).
-- KEYS[1] gateways zset (instance -> expiry ms)
-- ARGV[1] now (ms)   ARGV[2] this gateway's instance   ARGV[3] how long it is alive (ms)
local now, alive = tonumber(ARGV[1]), tonumber(ARGV[3])
redis.call("ZADD", KEYS[1], now + alive, ARGV[2])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
redis.call("PEXPIRE", KEYS[1], alive * 2)
return redis.call("ZCARD", KEYS[1])
