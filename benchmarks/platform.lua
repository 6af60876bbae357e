-- wrk script of benchmarks/bench_platform.py: the requests of one scenario, and a report.
--
-- Arguments (after `--`): mode, a file of author ids (one a line), name tag.
--   hot   GET /authors/<the first id>, every request
--   walk  GET /authors/<id n>, n = 1, 2... (each id once while n <= the number of ids)
--   mix   like walk, but every tenth request is a PUT of that author with a name
--         never used before (<tag>-<n>)
-- Environment: BENCH_TOKEN (the bearer token), BENCH_REPORT (where done() writes JSON:
-- requests, duration_us, socket errors, responses by status, latency percentiles in µs).

local token = os.getenv("BENCH_TOKEN")
local mode, ids, tag
local fixed
local n = 0
local threads = {}
-- Per thread: responses by status code.
statuses = {}

wrk.headers["Authorization"] = "Bearer " .. token

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  mode, tag = args[1], args[3]
  ids = {}
  for line in io.lines(args[2]) do
    ids[#ids + 1] = line
  end
  fixed = wrk.format("GET", "/authors/" .. ids[1])
end

function request()
  if mode == "hot" then
    return fixed
  end
  local id = ids[n % #ids + 1]
  n = n + 1
  if mode == "mix" and n % 10 == 0 then
    local headers = { Authorization = "Bearer " .. token, ["Content-Type"] = "application/json" }
    return wrk.format("PUT", "/authors/" .. id, headers, '{"name":"' .. tag .. "-" .. n .. '"}')
  end
  return wrk.format("GET", "/authors/" .. id)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  local by_status = {}
  for status, count in pairs(counts) do
    by_status[#by_status + 1] = string.format('"%d":%d', status, count)
  end
  local quantiles = {}
  for q = 1, 99 do
    quantiles[#quantiles + 1] = string.format('"%d":%d', q, latency:percentile(q))
  end
  quantiles[#quantiles + 1] = string.format('"99.9":%d', latency:percentile(99.9))
  local e = summary.errors
  local report = io.open(os.getenv("BENCH_REPORT"), "w")
  report:write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":{"connect":%d,"read":%d,"write":%d,'
      .. '"timeout":%d},"statuses":{%s},"latency_us":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    table.concat(by_status, ","), table.concat(quantiles, ",")))
  report:close()
end
