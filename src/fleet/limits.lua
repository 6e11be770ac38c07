-- One usage-plan decision for the whole fleet, atomically: the caller's rate (GCRA), the
-- caller's daily quota, and the global rate (GCRA), each checked, and all charged only if all
-- admit the request. Time is Redis' own clock, the same for every replica.
--
-- KEYS[1] the caller's GCRA key, KEYS[2] the caller's quota key, KEYS[3] the global GCRA key
-- ARGV[1] cost (transactions)
-- ARGV[2], ARGV[3] the caller's emission interval and tolerance (µs; 0: no rate limit)
-- ARGV[4] the caller's quota per UTC day (0: none)
-- ARGV[5], ARGV[6] the global emission interval and tolerance (µs; 0: no global limit)
--
-- Returns {verdict, retry_ms, caller_remaining, caller_full_ms, quota_used}:
-- verdict 0 admitted, 1 the caller's rate, 2 the caller's quota, 3 the global rate;
-- retry_ms -1 when the cost can never be admitted (over the burst).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])

-- {admitted, new_tat or 0, retry_us}
local function gcra(key, interval, tolerance)
  local increment = interval * cost
  if increment > tolerance + 0.5 then
    return {false, 0, -1}
  end
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then
    tat = now
  end
  local new_tat = tat + increment
  local allow_at = new_tat - tolerance
  if allow_at > now then
    return {false, 0, allow_at - now}
  end
  return {true, new_tat, 0}
end

local function retry_ms(us)
  if us < 0 then
    return -1
  end
  return math.ceil(us / 1000)
end

local caller_interval, caller_tolerance = tonumber(ARGV[2]), tonumber(ARGV[3])
local per_day = tonumber(ARGV[4])
local global_interval, global_tolerance = tonumber(ARGV[5]), tonumber(ARGV[6])

local caller = nil
if caller_interval > 0 then
  caller = gcra(KEYS[1], caller_interval, caller_tolerance)
  if not caller[1] then
    return {1, retry_ms(caller[3]), 0, retry_ms(caller_tolerance), 0}
  end
end

local day = math.floor(now / 86400000000)
local used = 0
if per_day > 0 then
  local stored = redis.call('HMGET', KEYS[2], 'day', 'used')
  if tonumber(stored[1]) == day then
    used = tonumber(stored[2]) or 0
  end
  if used + cost > per_day then
    local midnight = (day + 1) * 86400000000
    return {2, retry_ms(midnight - now), 0, 0, used}
  end
end

local global = nil
if global_interval > 0 then
  global = gcra(KEYS[3], global_interval, global_tolerance)
  if not global[1] then
    return {3, retry_ms(global[3]), 0, 0, used}
  end
end

-- Admitted: charge everything.
local remaining, full_ms = 0, 0
if caller then
  local ahead = caller[2] - now
  redis.call('SET', KEYS[1], string.format('%.0f', caller[2]), 'PX', math.ceil(ahead / 1000) + 1)
  remaining = math.floor((caller_tolerance - ahead) / caller_interval + 1e-9)
  full_ms = retry_ms(ahead)
end
if per_day > 0 then
  used = used + cost
  redis.call('HSET', KEYS[2], 'day', day, 'used', used)
  redis.call('EXPIRE', KEYS[2], 90000)
end
if global then
  local ahead = global[2] - now
  redis.call('SET', KEYS[3], string.format('%.0f', global[2]), 'PX', math.ceil(ahead / 1000) + 1)
end
return {0, 0, remaining, full_ms, used}
