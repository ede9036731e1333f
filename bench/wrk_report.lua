-- wrk script for bench/http_load.py: at the end of a run, print wrk's
-- totals and latency percentiles as one machine-readable line (wrk's own
-- report is for people, with units that change with the magnitude).
-- Latencies are in microseconds, duration too.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "wrk-report requests=%d duration_us=%d connect=%d read=%d write=%d " ..
    "status=%d timeout=%d p50_us=%.1f p99_us=%.1f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
