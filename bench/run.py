#!/usr/bin/env python3
"""Run the weft benchmark suite and its peers; write a report.

    bench/run.py --build DIR [--workers 1,2,4] [--quick] [--out DIR]
                 [--only NAME[,NAME...]] [--timeout SECONDS]

Every program in SUITE (below) runs once per worker count (once, with
workers=1, for a benchmark that does not scale over workers; at its own
fixed counts for one defined at particular counts). Each program
prints lines as bench/DEFINITIONS.md describes:

    bench=<name> impl=<impl> workers=<N> value=<number> unit=<unit> [k=v ...]

or, for something it could not measure, the same without value/unit and
with skipped=<why> (or failed=<why>). The runner adds such lines itself for
a program that was not built (its peer is not installed: skipped=not-built),
that exited non-zero or ran out of time (failed=...), or that exited
cleanly without reporting an impl it is registered for (failed=no-output).
A program that exits non-zero without marking any of its lines failed has
failed=<why> added to every line it printed: its figures are not trusted.

Output, in --out (default bench/results/, git-ignored):
    results.txt  every line collected, as printed, after a few '#' lines
                 describing the machine and the run
    results.md   one table per benchmark: rows = impl, columns = worker
                 counts; then how many times faster weft is than each peer
                 measured in the same run
    results.png  one plot per benchmark, value against workers, one line per
                 impl (a bar chart for benchmarks measured at one worker
                 count); log scale when values span more than 20x

Exit status: 0 when every program ran and verified its result, 1 when any
failed (the report is written either way), 2 on a usage error.

Environment given to every program: WEFT_WORKERS and GOMAXPROCS set to the
worker count, so a Go peer or a program reading WEFT_WORKERS needs no
special casing.

Network benchmarks (echo, http, idle-conns) run a server and a client
against it. There the worker count is the number of CPUs the server gets:
the server is pinned to the first N CPUs this process may use and the
client to the next N (2 CPUs: server cpu0, client cpu1; 16: 8 and 8), so
they never compete for a CPU. Counts that would leave the client fewer
than N CPUs are left out (when that is all of them, the rows say
skipped=needs-2N-cpus). RLIMIT_NOFILE's soft limit is raised to the hard
limit for every program, for the many connections.

--rounds R runs the whole selection R times over, so that every
implementation's runs are interleaved with its peers' (on a shared machine
a single run of each can land in a noisy minute that the others missed),
and reports for each row the median over the rounds of each number
(value, median, p50_us, p99_us), with rounds=R and the lowest and highest
value as min= and max=. A row that failed in any round stays failed.
"""

import argparse
import collections
import math
import os
import platform
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import time

# ---------------------------------------------------------------------------
# The suite. One entry per program; adding a benchmark or a peer is one line.
#
#   name    the bench= name the program reports
#   impls   the impl= values it reports, comma-separated when one program
#           measures several; used to name the rows of a program that is
#           missing or fails, and to notice an impl it forgot to report
#   argv    command line; {build} is the (absolute) build directory and
#           {workers} the worker count
#   scales  True: run at every worker count; False: once, with workers=1;
#           a tuple of counts: at exactly those, whatever --workers says
#           (for a benchmark its definition fixes at particular counts)
#   quick   extra arguments for --quick (smaller sizes for a smoke run)
#
#   server  for a network benchmark: the command line of the server to
#           start first ({build}, {workers}); it must print a line ending
#           in "HOST:PORT ..." (its first line) once it listens. argv then
#           may use {port}, {server_pid}, {client_cpus} (e.g. "1" or
#           "8-15") and {client_threads} (how many CPUs that is)
#
# A program that is not in the build directory (not built because its peer
# is not installed) gives skipped rows, never an error. Go peers are
# prebuilt binaries in the build directory like everything else.
# ---------------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Bench = collections.namedtuple("Bench", "name impls argv scales quick server",
                               defaults=((), None))

# --quick sizes (-n) of the scaling benchmarks, shared by weft and its peers.
QUICK = {
    "skynet": ["-n", "10000"],
    "fib": ["-n", "20"],
    "spawn": ["-n", "10000"],
    "yield": ["-n", "100000"],
    "chan-pingpong": ["-n", "10000"],
    "mutex": ["-n", "64000"],
}


def weft(name, scales):
    """bench-sched's entry for one of its benchmarks."""
    return Bench(name, "weft", ["{build}/bench/bench-sched", name, "-w", "{workers}"],
                 scales, QUICK[name])


def peer(impl, name, scales):
    """The entry of bench/peers/peer-<impl> for one benchmark."""
    return Bench(name, impl, ["{build}/bench/peers/peer-" + impl, name, "-w", "{workers}"],
                 scales, QUICK[name])


# The servers of the network benchmarks. Each listens on a free port (-p 0)
# on loopback and runs on {workers} CPUs: weft's examples (echo_server in
# its default mode, one shared listener, and in its other mode as
# "weft-reuseport"), the hand-written epoll server, and Go.
ECHO_SERVERS = {
    "weft": ["{build}/examples/echo_server", "-h", "127.0.0.1", "-p", "0", "-w", "{workers}"],
    "weft-reuseport": ["{build}/examples/echo_server", "-h", "127.0.0.1", "-p", "0",
                       "-w", "{workers}", "-m", "reuseport"],
    "epoll": ["{build}/bench/peers/peer-echo-epoll", "-h", "127.0.0.1", "-p", "0",
              "-w", "{workers}"],
    "go": ["{build}/bench/peers/peer-go-net", "echo", "-h", "127.0.0.1", "-p", "0",
           "-w", "{workers}"],
}
HTTP_SERVERS = {
    "weft": ["{build}/examples/http_hello", "-h", "127.0.0.1", "-p", "0", "-w", "{workers}"],
    "go": ["{build}/bench/peers/peer-go-net", "http", "-h", "127.0.0.1", "-p", "0",
           "-w", "{workers}"],
}


def echo(impl, conns):
    """echo-load (1 s warm-up, best and median of five 1 s windows) against
    one echo server."""
    return Bench("echo", impl,
                 ["{build}/bench/echo-load", "-p", "{port}", "-c", str(conns),
                  "-a", "{client_cpus}", "-i", impl, "-w", "{workers}"],
                 True, ["-W", "0.2", "-d", "0.2", "-r", "2"], ECHO_SERVERS[impl])


def http(impl, conns):
    """wrk through bench/http_load.py (1 s warm-up, best and median of five
    1 s runs) against one hello-world server."""
    return Bench("http", impl,
                 [sys.executable, os.path.join(REPO, "bench", "http_load.py"),
                  "--port", "{port}", "-c", str(conns), "-t", "{client_threads}",
                  "-i", impl, "-w", "{workers}"],
                 True, ["-W", "0", "-r", "1"], HTTP_SERVERS[impl])


def idle_conns(impl):
    """The server's resident memory per idle connection, at 100,000
    connections or as many as RLIMIT_NOFILE allows (bench/idle_conns.c)."""
    return Bench("idle-conns", impl,
                 ["{build}/bench/idle-conns", "-p", "{port}", "-P", "{server_pid}",
                  "-i", impl, "-w", "{workers}"],
                 False, ["-n", "2000"], ECHO_SERVERS[impl])


SUITE = [
    Bench("switch-cost",
          "weft,ucontext,boost-context,thread-futex,thread-condvar,process-pipe",
          ["{build}/bench/bench-switch", "-w", "{workers}"], False, ["-n", "20000"]),
    weft("skynet", True),
    peer("go", "skynet", True),
    peer("boost-fiber", "skynet", True),
    peer("tbb", "skynet", True),
    peer("openmp", "skynet", True),
    weft("fib", True),
    peer("go", "fib", True),
    peer("boost-fiber", "fib", True),
    peer("tbb", "fib", True),
    peer("openmp", "fib", True),
    weft("spawn", True),
    peer("go", "spawn", True),
    peer("boost-fiber", "spawn", True),
    peer("tbb", "spawn", True),
    weft("yield", False),
    peer("go", "yield", False),
    peer("boost-fiber", "yield", False),
    weft("chan-pingpong", (1, 2)),
    peer("go", "chan-pingpong", (1, 2)),
    peer("boost-fiber", "chan-pingpong", (1, 2)),
    weft("mutex", True),
    peer("go", "mutex", True),
    peer("boost-fiber", "mutex", True),
    echo("weft", 64),
    echo("weft-reuseport", 64),
    echo("epoll", 64),
    echo("go", 64),
    echo("weft", 1000),
    echo("weft-reuseport", 1000),
    echo("epoll", 1000),
    echo("go", 1000),
    http("weft", 64),
    http("go", 64),
    http("weft", 1000),
    http("go", 1000),
    idle_conns("weft"),
    idle_conns("epoll"),
    idle_conns("go"),
]

# Keys that name a configuration of an impl (its own row in the tables),
# as opposed to keys that carry a measurement.
VARIANT_KEYS = ("cpus", "conns")
# Measurement keys shown as extra columns for benchmarks measured at a
# single worker count, with their column titles.
EXTRA_KEYS = (("median", "median"), ("cycles", "tsc cycles"),
              ("p50_us", "p50 us"), ("p99_us", "p99 us"), ("errors", "errors"),
              ("n", "n"))
# Units where a smaller value is better (times, memory); any other unit
# (msg/s, req/s) counts as a rate, where bigger is better.
SMALLER_IS_BETTER = ("ns", "us", "ms", "s", "B/conn")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_line(text):
    """A bench= line as a dict, or None for any other line."""
    fields = {}
    for tok in text.split():
        key, sep, val = tok.partition("=")
        if not sep:
            return None
        fields[key] = val
    if "bench" not in fields or "impl" not in fields:
        return None
    return fields


def format_line(fields):
    return " ".join(f"{k}={v}" for k, v in fields.items())


def synthetic(bench, impl, workers, **why):
    return dict(bench=bench, impl=impl, workers=str(workers), **why)


def default_workers():
    ncpu = len(os.sched_getaffinity(0))
    counts, w = [], 1
    while w < ncpu:
        counts.append(w)
        w *= 2
    counts.append(ncpu)
    return counts


def pinned(cpus):
    """A preexec_fn that pins the child to cpus (None: leave it as is)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def cpu_list(cpus):
    """[8, 9, 10, 12] -> "8-10,12", the form echo-load and taskset take."""
    out, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


def split_cpus(workers):
    """(server CPUs, client CPUs) for a network benchmark at this worker
    count, or None when there are fewer than 2 * workers CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if 2 * workers > len(cpus):
        return None
    return cpus[:workers], cpus[workers:2 * workers]


def start_server(argv, workers, cpus, timeout=30):
    """Start a benchmark server pinned to cpus and wait for the line that
    says where it listens. Returns (process, port), or (None, why)."""
    env = dict(os.environ, WEFT_WORKERS=str(workers), GOMAXPROCS=str(workers))
    log(f"== server on cpus {cpu_list(cpus)}: {' '.join(argv)}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=pinned(cpus))
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    log(line.rstrip())
    m = re.search(r":(\d+)\b", line)
    if m:
        # It prints nothing more; its stdout stays open, unread, until it
        # is stopped.
        return proc, int(m.group(1))
    stop_server(proc)
    return None, "server-did-not-start"


def stop_server(proc):
    """SIGTERM the server's process group, SIGKILL after 5 s. Returns why
    it had failed if it exited on its own before (else None)."""
    died = proc.poll()
    if died is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    proc.stdout.close()
    if died is None:
        return None
    return f"server-signal-{-died}" if died < 0 else f"server-exit-{died}"


def run_program(entry, argv, workers, timeout, cpus=None):
    """Run one program (pinned to cpus, if given); return (lines it
    reported, why it failed or None)."""
    env = dict(os.environ, WEFT_WORKERS=str(workers), GOMAXPROCS=str(workers))
    log(f"== {entry.name} workers={workers}: {' '.join(argv)}")
    lines, failure = [], None
    # Its own process group, so a timeout also ends whatever it started.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=pinned(cpus))
    deadline = time.monotonic() + timeout

    def on_timeout(*_):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        for text in proc.stdout:
            print(text, end="", flush=True)
            fields = parse_line(text)
            if fields:
                lines.append(fields)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except (TimeoutError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        failure = f"timeout-{int(timeout)}s"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        proc.stdout.close()
    if failure is None and proc.returncode != 0:
        failure = (f"signal-{-proc.returncode}" if proc.returncode < 0
                   else f"exit-{proc.returncode}")
    return lines, failure


def variant_of(entry):
    """{"conns": C} for a network benchmark entry run with -c C, else {}:
    the variant given to the rows of a missing or failed program, so they
    land in the right row of the table."""
    if "-c" in entry.argv:
        return {"conns": entry.argv[entry.argv.index("-c") + 1]}
    return {}


def run_suite(build, worker_counts, quick, only, timeout):
    """Run every selected entry; return (all lines, whether any failed)."""
    collected, any_failed = [], False
    for entry in SUITE:
        if only and entry.name not in only:
            continue
        impls = entry.impls.split(",")
        if isinstance(entry.scales, tuple):
            counts = list(entry.scales)
        else:
            counts = worker_counts if entry.scales else [1]
        if entry.server:
            # A network benchmark runs at the counts that leave the client
            # as many CPUs as the server; if none does, its rows say so.
            fit = [w for w in counts if split_cpus(w)]
            if not fit:
                w = min(counts)
                log(f"== {entry.name}: needs {2 * w} CPUs, skipped")
                collected += [synthetic(entry.name, i, w, skipped=f"needs-{2 * w}-cpus",
                                        **variant_of(entry))
                              for i in impls]
            counts = fit
        for workers in counts:
            fields = dict(build=build, workers=workers)
            variant = variant_of(entry)
            server_argv = [a.format(**fields) for a in entry.server or ()]
            program = entry.argv[0].format(**fields)
            if not all(os.path.isfile(p) and os.access(p, os.X_OK)
                       for p in [program] + server_argv[:1]):
                log(f"== {entry.name}: {program} or its server not built, skipped")
                collected += [synthetic(entry.name, i, workers, skipped="not-built", **variant)
                              for i in impls]
                continue
            server = client_cpus = None
            if entry.server:
                server_cpus, client_cpus = split_cpus(workers)
                server, port = start_server(server_argv, workers, server_cpus)
                if server is None:
                    collected += [synthetic(entry.name, i, workers, failed=port, **variant)
                                  for i in impls]
                    any_failed = True
                    continue
                fields.update(port=port, server_pid=server.pid,
                              client_cpus=cpu_list(client_cpus),
                              client_threads=len(client_cpus))
            argv = [a.format(**fields) for a in entry.argv]
            if quick:
                argv += list(entry.quick)
            lines, failure = run_program(entry, argv, workers, timeout, client_cpus)
            if server is not None:
                failure = stop_server(server) or failure
            if any("failed" in l for l in lines):
                any_failed = True
            elif failure:
                # It exited non-zero without saying which row was wrong:
                # none of its figures can be trusted.
                for l in lines:
                    l["failed"] = failure
            collected += lines
            reported = {l["impl"] for l in lines}
            for impl in impls:
                if impl not in reported:
                    why = failure or "no-output"
                    collected.append(synthetic(entry.name, impl, workers, failed=why,
                                               **variant))
                    any_failed = True
            if failure:
                log(f"== {entry.name} workers={workers}: {failure}")
                any_failed = True
    return collected, any_failed


def plain_number(v):
    """v as a bench= line writes numbers: no separators, at most 2 decimals."""
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return text or "0"


def combine_rounds(rounds):
    """One line per (bench, impl, workers, variant) out of R rounds' lines:
    the median of each numeric field, rounds=, min= and max= of value."""
    groups, order = {}, []
    for lines in rounds:
        for l in lines:
            key = (l["bench"], l["impl"], l.get("workers"), l.get("conns"), l.get("n"))
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(l)
    out = []
    for key in order:
        ls = groups[key]
        bad = [l for l in ls if "failed" in l or "skipped" in l]
        if bad:
            out.append(bad[0])
            continue
        merged = dict(ls[0])
        for field in ("value", "median", "p50_us", "p99_us"):
            vals = sorted(number(l[field]) for l in ls
                          if field in l and number(l[field]) is not None)
            if vals:
                merged[field] = plain_number(statistics.median(vals))
        vals = sorted(number(l["value"]) for l in ls if number(l.get("value", "")) is not None)
        if vals:
            merged["min"], merged["max"] = plain_number(vals[0]), plain_number(vals[-1])
        merged["rounds"] = str(len(ls))
        out.append(merged)
    return out


# ---- the report --------------------------------------------------------------

def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def fmt_value(v):
    if v is None:
        return ""
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.1f}"
    return f"{v:.3g}" if v < 1 else f"{v:.2f}"


class Table:
    """The lines of one benchmark, arranged as rows (impl + variant) by
    worker count."""

    def __init__(self, name, lines):
        self.name = name
        self.cells = {}                  # (row, workers) -> line
        self.rows, self.workers, units = [], set(), []
        self.variant_keys = [k for k in VARIANT_KEYS if any(k in l for l in lines)]
        for l in lines:
            row = (l["impl"],) + tuple(l.get(k, "") for k in self.variant_keys)
            w = int(l.get("workers", "1"))
            if row not in self.rows:
                self.rows.append(row)
            self.workers.add(w)
            # A real measurement wins over a synthetic line for the same cell.
            if (row, w) not in self.cells or "value" in l:
                self.cells[(row, w)] = l
            if "unit" in l and l["unit"] not in units:
                units.append(l["unit"])
        self.workers = sorted(self.workers)
        self.unit = units[0] if units else ""
        # weft's rows first, then the peers in the order they ran.
        self.rows.sort(key=lambda r: (0 if r[0] == "weft" else 1 if r[0].startswith("weft") else 2))

    def value(self, row, w):
        l = self.cells.get((row, w))
        return number(l.get("value")) if l and "failed" not in l else None

    def cell_text(self, row, w, key="value"):
        l = self.cells.get((row, w))
        if l is None:
            return ""
        if "failed" in l:
            return f"**failed** ({l['failed']})"
        if "value" not in l:
            return f"skipped ({l['skipped']})" if "skipped" in l else ""
        return fmt_value(number(l.get(key)))

    def weft_row_for(self, row):
        """The weft row a peer row is compared with: the one with the same
        variant when there is one, else the first weft row."""
        weft_rows = [r for r in self.rows if r[0] == "weft"]
        for r in weft_rows:
            if r[1:] == row[1:]:
                return r
        return weft_rows[0] if weft_rows else None

    def speedup(self, row, w):
        """How many times faster weft is than the peer in `row`."""
        base = self.weft_row_for(row)
        if base is None:
            return None
        mine, theirs = self.value(base, w), self.value(row, w)
        if not mine or not theirs:
            return None
        return theirs / mine if self.unit in SMALLER_IS_BETTER else mine / theirs

    def markdown(self):
        out = [f"## {self.name} ({self.unit or 'no unit'})", ""]
        single = len(self.workers) == 1
        extras = []
        if single:
            w = self.workers[0]
            extras = [(k, title) for k, title in EXTRA_KEYS
                      if any(k in l for (r, ww), l in self.cells.items() if ww == w)]
        head = ["impl"] + self.variant_keys + [f"workers={w}" for w in self.workers] \
            + [title for _, title in extras]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for row in self.rows:
            cols = list(row) + [self.cell_text(row, w) for w in self.workers]
            cols += [self.cell_text(row, self.workers[0], k) for k, _ in extras]
            out.append("| " + " | ".join(cols) + " |")
        peers = [r for r in self.rows if r[0] != "weft"]
        if any(self.speedup(r, w) for r in peers for w in self.workers):
            better = "smaller is better" if self.unit in SMALLER_IS_BETTER else "bigger is better"
            what = ("less memory weft uses: > 1 means weft uses less" if self.unit == "B/conn"
                    else "faster weft is: > 1 means weft is faster")
            out += ["", f"weft vs each peer, same run ({better}; the figure is how many "
                        f"times {what}):", ""]
            head = ["peer"] + self.variant_keys + [f"workers={w}" for w in self.workers]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            for row in peers:
                ratios = [self.speedup(row, w) for w in self.workers]
                cols = list(row) + [f"{r:.2f}x" if r else "" for r in ratios]
                out.append("| " + " | ".join(cols) + " |")
        out.append("")
        return "\n".join(out)


def row_label(table, row):
    parts = [f"{k}={v}" for k, v in zip(table.variant_keys, row[1:]) if v]
    return row[0] + (f" ({', '.join(parts)})" if parts else "")


def plot(tables, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("run.py: matplotlib not installed, no results.png")
        return
    ncols = min(2, len(tables))
    nrows = math.ceil(len(tables) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 4.5 * nrows), squeeze=False)
    for ax in axes.flat[len(tables):]:
        ax.set_visible(False)
    for ax, t in zip(axes.flat, tables):
        series = []
        for row in t.rows:
            pts = [(w, t.value(row, w)) for w in t.workers if t.value(row, w)]
            if pts:
                series.append((row_label(t, row), pts))
        values = [v for _, pts in series for _, v in pts]
        wide = bool(values) and max(values) / min(values) > 20
        ax.set_title(f"{t.name} ({t.unit})")
        if len(t.workers) > 1:
            for label, pts in series:
                ax.plot([w for w, _ in pts], [v for _, v in pts], marker="o", label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(t.workers)
            ax.set_xticklabels([str(w) for w in t.workers])
            ax.set_xlabel("workers")
            ax.set_ylabel(t.unit)
            if wide:
                ax.set_yscale("log")
            if series:
                ax.legend(fontsize="small")
        else:
            # One worker count: a value-by-impl bar chart says more than a
            # plot of single points.
            labels = [label for label, _ in series]
            vals = [pts[0][1] for _, pts in series]
            ax.barh(range(len(vals)), vals, color="tab:blue")
            ax.set_yticks(range(len(vals)))
            ax.set_yticklabels(labels, fontsize="small")
            ax.invert_yaxis()
            ax.set_xlabel(f"{t.unit} (workers={t.workers[0]})")
            if wide:
                ax.set_xscale("log")
            for i, v in enumerate(vals):
                ax.annotate(fmt_value(v), (v, i), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize="x-small")
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_info(build, worker_counts, quick):
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for text in f:
                if text.startswith("model name"):
                    model = text.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return [
        ("date", time.strftime("%Y-%m-%d %H:%M:%S %z")),
        ("host", f"{platform.node()} ({platform.system()} {platform.release()})"),
        ("cpu", f"{model or platform.machine()}; {os.cpu_count()} online, "
                f"{len(os.sched_getaffinity(0))} usable by this run"),
        ("commit", commit or "unknown"),
        ("build", build),
        ("workers", ",".join(map(str, worker_counts)) + (" (quick run)" if quick else "")),
    ]


def write_report(out, lines, info):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.txt"), "w") as f:
        for k, v in info:
            f.write(f"# {k}: {v}\n")
        for l in lines:
            f.write(format_line(l) + "\n")
    by_bench = collections.OrderedDict()
    for l in lines:
        by_bench.setdefault(l["bench"], []).append(l)
    tables = [Table(name, ls) for name, ls in by_bench.items()]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("# weft benchmark results\n\n")
        for k, v in info:
            f.write(f"- {k}: {v}\n")
        f.write("\nDefinitions: bench/DEFINITIONS.md. Each value is the best of 5 runs "
                "after a warm-up; raw lines with medians in results.txt.\n\n")
        for t in tables:
            f.write(t.markdown() + "\n")
    if tables:
        plot(tables, os.path.join(out, "results.png"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True, help="Meson build directory")
    ap.add_argument("--workers", help="worker counts, e.g. 1,2,4 "
                    "(default: 1, 2, 4, ... up to the CPUs this process may use)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    ap.add_argument("--only", help="run only these benchmarks (comma-separated names)")
    ap.add_argument("--timeout", type=float, default=3600,
                    help="seconds one program may run (default 3600)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the selection this many times, interleaved, "
                    "and report medians (default 1)")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    if not os.path.isdir(build):
        ap.error(f"no build directory {args.build}")
    try:
        worker_counts = (sorted({int(w) for w in args.workers.split(",")})
                         if args.workers else default_workers())
    except ValueError:
        ap.error("--workers takes numbers separated by commas")
    if not worker_counts or worker_counts[0] < 1:
        ap.error("worker counts must be at least 1")
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= {b.name for b in SUITE}:
        ap.error("unknown benchmark in --only: " +
                 ", ".join(sorted(only - {b.name for b in SUITE})))

    # Connections are descriptors: let every program have as many as the
    # hard limit allows (idle-conns wants 100,000).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    info = machine_info(build, worker_counts, args.quick)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    rounds, failed = [], False
    for r in range(args.rounds):
        if args.rounds > 1:
            log(f"== round {r + 1} of {args.rounds}")
        lines, round_failed = run_suite(build, worker_counts, args.quick, only, args.timeout)
        rounds.append(lines)
        failed = failed or round_failed
    lines = rounds[0] if args.rounds == 1 else combine_rounds(rounds)
    write_report(args.out, lines, info)
    log(f"run.py: results in {args.out}/results.{{txt,md,png}}"
        + (" (some benchmarks FAILED)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
