-- wrk script: POST the real 11 KB package payload, signed, to /hooks/github.
-- BENCH_PAYLOAD is the payload file, BENCH_SIGNATURE its X-Hub-Signature-256
-- (computed by run.sh with openssl), BENCH_RUN a prefix unique per run.
-- It prints a RESULT line (errors_status counts answers other than 2xx and 3xx).
-- Every request carries a new X-GitHub-Delivery, or all but the first would
-- be answered as duplicates.

local f = assert(io.open(os.getenv("BENCH_PAYLOAD"), "rb"))
local body = f:read("*a")
f:close()
local signature = assert(os.getenv("BENCH_SIGNATURE"))
local run = os.getenv("BENCH_RUN") or "run"
local counter = 0
local threads = {}

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

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.0f p50_us=%d p99_us=%d max_us=%d errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
