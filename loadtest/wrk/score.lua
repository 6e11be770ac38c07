-- wrk script: POST /v1/transactions/score.
-- UNIQUE=1 gives every request its own transaction_id (cache misses); otherwise every request
-- is the same transaction (cache hits after the first). API_KEY, when set, is sent as x-api-key.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("API_KEY")
if key and key ~= "" then
  wrk.headers["x-api-key"] = key
end
local unique = os.getenv("UNIQUE") == "1"

local template = '{"transaction_id":"%s","card_id":"card-42","amount":%d.5,"currency":"EUR",' ..
  '"timestamp":"2026-11-26T03:12:45Z","merchant_category":5967,"card_present":false,' ..
  '"country":"BR","home_country":"DE","distance_from_home_km":9500,"tx_count_1h":4,' ..
  '"tx_count_24h":11,"avg_amount_30d":48.2}'

local threads = {}
local counter = 0
local tid = 0

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  tid = wrk.thread:get("tid") or 0
  if not unique then
    wrk.body = string.format(template, "tx-same", 912)
  end
end

function request()
  if not unique then
    return wrk.format()
  end
  counter = counter + 1
  return wrk.format(nil, nil, nil, string.format(template, "tx-" .. tid .. "-" .. counter, counter % 2000))
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f non2xx=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, non2xx))
end
