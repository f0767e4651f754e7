-- wrk request script of benchmarks/bench_serving.py: POST /recommend with bodies read from a
-- file (one JSON object a line), each thread starting at its own place, as a closed loop (each
-- connection sends its next request when its answer is in); done() prints one JSON line of
-- results. The fixed-rate points use the open-loop generator benchmarks/loadgen.py instead.
--
--   wrk -t1 -c32 -d10s -s serving_wrk.lua http://127.0.0.1:8000 -- BODIES TOKEN
local bodies = {}
local position = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  if args[2] and args[2] ~= "" then
    headers["Authorization"] = "Bearer " .. args[2]
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  position = math.random(#bodies)
end

function request()
  position = position % #bodies + 1
  return wrk.format("POST", "/recommend", headers, bodies[position])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
