-- wrk script: POST the real 11 KB package payload, signed, to /hooks/github.
-- BENCH_PAYLOAD is the payload file, BENCH_SIGNATURE its X-Hub-Signature-256
-- (computed by run.sh with openssl), BENCH_RUN a prefix unique per run.
-- It prints the answers' status codes (CODES 202=n 401=n …) and a RESULT line.
-- Every request carries a new X-GitHub-Delivery, or all but the first would
-- be answered as duplicates.

local f = assert(io.open(os.getenv("BENCH_PAYLOAD"), "rb"))
local body = f:read("*a")
f:close()
local signature = assert(os.getenv("BENCH_SIGNATURE"))
local run = os.getenv("BENCH_RUN") or "run"
local counter = 0
local threads = {}
codes = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "GitHub-Hookshot/bench",
    ["X-GitHub-Event"] = "package",
    ["X-GitHub-Delivery"] = string.format("%s-%d-%d", run, tid, counter),
    ["X-Hub-Signature-256"] = signature,
  }, body)
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("codes")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, string.format("%d=%d", status, n))
  end
  table.sort(parts)
  io.write("CODES " .. table.concat(parts, " ") .. "\n")
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.0f p50_us=%d p99_us=%d max_us=%d errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
