#!/usr/bin/env python3
"""The client side of the "http" benchmark (bench/DEFINITIONS.md): wrk
against a running keep-alive "Hello, World!" server, reported as one
bench= line.

    http_load.py --port PORT [--host 127.0.0.1] [-c CONNS] [-t THREADS]
                 [-W SECONDS] [-d SECONDS] [-r RUNS] [-i IMPL] [-w WORKERS]
                 [--wrk PATH]

First one GET checks that the server answers 200 with the body
"Hello, World!" and keeps the connection open for a second one; then wrk
runs once for -W seconds (warm-up, not counted) and -r times for -d
seconds each (`wrk -t THREADS -c CONNS -d SECONDS`, bench/wrk_report.lua
printing its totals). Output, one line:

    bench=http impl=IMPL workers=N value=<req/s, best run> unit=req/s
      median=<req/s, median run> p50_us=.. p99_us=.. errors=E conns=C

p50/p99 are wrk's percentiles of the median run. errors counts wrk's
connect, read, write and timeout errors and non-2xx/3xx answers in every
run (warm-up included), plus a failed first check. Exit status 1 when
errors is not 0 or wrk fails. Without wrk (--wrk, else `wrk` in PATH) the
line says skipped=wrk-not-installed and the exit status is 0.
"""

import argparse
import http.client
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BODY = b"Hello, World!"


def log(msg):
    print(f"http_load: {msg}", file=sys.stderr, flush=True)


def check_server(host, port):
    """Two GETs on one connection; True when both are right."""
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        for path in ("/", "/again"):
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200 or body != BODY or resp.will_close:
                log(f"GET {path}: status {resp.status}, body {body[:40]!r}, "
                    f"{'closes' if resp.will_close else 'keeps'} the connection")
                return False
        conn.close()
        return True
    except (OSError, http.client.HTTPException) as e:
        log(f"GET: {e}")
        return False


def run_wrk(wrk, url, threads, conns, seconds):
    """One wrk run; its wrk-report fields as a dict of numbers."""
    argv = [wrk, "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s",
            "--timeout", "5s", "-s", os.path.join(HERE, "wrk_report.lua"), url]
    out = subprocess.run(argv, capture_output=True, text=True)
    for text in out.stdout.splitlines():
        if text.startswith("wrk-report "):
            return {k: float(v) for k, v in
                    (tok.split("=", 1) for tok in text.split()[1:])}
    raise RuntimeError(f"wrk exited {out.returncode} without a report:\n"
                       f"{out.stdout}{out.stderr}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-c", "--conns", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-W", "--warmup", type=int, default=1)
    ap.add_argument("-d", "--duration", type=int, default=1)
    ap.add_argument("-r", "--runs", type=int, default=5)
    ap.add_argument("-i", "--impl", default="unknown")
    ap.add_argument("-w", "--workers", type=int, default=1)
    ap.add_argument("--wrk", default=shutil.which("wrk"))
    a = ap.parse_args()
    if a.runs < 1 or a.duration < 1 or a.conns < 1 or a.threads < 1:
        ap.error("-r, -d, -c and -t must be at least 1")
    threads = min(a.threads, a.conns)  # wrk wants a connection per thread
    head = f"bench=http impl={a.impl} workers={a.workers}"
    if not a.wrk or not os.access(a.wrk, os.X_OK):
        print(f"{head} skipped=wrk-not-installed conns={a.conns}", flush=True)
        return 0

    url = f"http://{a.host}:{a.port}/"
    errors = 0 if check_server(a.host, a.port) else 1
    runs = []
    try:
        if a.warmup > 0:
            r = run_wrk(a.wrk, url, threads, a.conns, a.warmup)
            errors += int(r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"])
        for _ in range(a.runs):
            r = run_wrk(a.wrk, url, threads, a.conns, a.duration)
            errors += int(r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"])
            r["rate"] = r["requests"] / (r["duration_us"] / 1e6)
            runs.append(r)
    except (OSError, RuntimeError) as e:
        log(str(e))
        print(f"{head} failed=wrk conns={a.conns}", flush=True)
        return 1
    runs.sort(key=lambda r: r["rate"])
    med = runs[len(runs) // 2]
    print(f"{head} value={runs[-1]['rate']:.0f} unit=req/s median={med['rate']:.0f} "
          f"p50_us={med['p50_us']:.1f} p99_us={med['p99_us']:.1f} errors={errors} "
          f"conns={a.conns}", flush=True)
    if errors:
        log(f"{errors} errors (see wrk's counts, or the first check above)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
