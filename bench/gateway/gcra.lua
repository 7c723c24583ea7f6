-- GCRA (the generic cell rate algorithm) for one key, as go-redis/redis_rate
-- and redis-cell compute it, in one atomic script: bench/loadgen's redis-gcra
-- targets run it with EVALSHA once per check.
--
-- KEYS[1]: the key. ARGV: burst, rate (requests per period), period_ms, cost.
-- Returns {allowed (1 or 0), remaining, retry_ms (-1 when allowed), reset_ms}.
--
-- The theoretical arrival time (TAT) is kept in microseconds of the server's
-- clock (TIME), so a rate of a million a second (an emission interval of
-- 1 µs) is exact; it is stored as an integer string with a time to live
-- (SET ... PX, the one-command form of SET then PEXPIRE) of when the bucket
-- is full again, so idle keys disappear.
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local period_us = tonumber(ARGV[3]) * 1000
local cost = tonumber(ARGV[4])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local interval = period_us / rate -- µs between two requests at the rate
local increment = interval * cost
local burst_offset = interval * burst

local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
	tat = math.max(tonumber(stored), now)
end

local new_tat = tat + increment
local diff = now - (new_tat - burst_offset)
if diff < 0 then
	-- Refused: nothing is charged; retry when enough of the burst is back.
	return {0, 0, math.ceil(-diff / 1000), math.ceil((tat - now) / 1000)}
end

local reset_us = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil(reset_us / 1000)))
return {1, math.floor(diff / interval), -1, math.ceil(reset_us / 1000)}
