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
"""

import argparse
import collections
import math
import os
import platform
import signal
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
# A program that is not in the build directory (not built because its peer
# is not installed) gives skipped rows, never an error. Go peers are
# prebuilt binaries in the build directory like everything else.
# ---------------------------------------------------------------------------
Bench = collections.namedtuple("Bench", "name impls argv scales quick", defaults=((),))

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
]

# Keys that name a configuration of an impl (its own row in the tables),
# as opposed to keys that carry a measurement.
VARIANT_KEYS = ("cpus", "conns")
# Measurement keys shown as extra columns for benchmarks measured at a
# single worker count, with their column titles.
EXTRA_KEYS = (("median", "median"), ("cycles", "tsc cycles"),
              ("p50_us", "p50 us"), ("p99_us", "p99 us"), ("errors", "errors"))
# Units where a smaller value is better; any other unit (msg/s, req/s)
# counts as a rate, where bigger is better.
TIME_UNITS = ("ns", "us", "ms", "s")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def run_program(entry, argv, workers, timeout):
    """Run one program; return (lines it reported, why it failed or None)."""
    env = dict(os.environ, WEFT_WORKERS=str(workers), GOMAXPROCS=str(workers))
    log(f"== {entry.name} workers={workers}: {' '.join(argv)}")
    lines, failure = [], None
    # Its own process group, so a timeout also ends whatever it started.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
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
        for workers in counts:
            argv = [a.format(build=build, workers=workers) for a in entry.argv]
            if quick:
                argv += list(entry.quick)
            if not (os.path.isfile(argv[0]) and os.access(argv[0], os.X_OK)):
                log(f"== {entry.name}: {argv[0]} not built, skipped")
                collected += [synthetic(entry.name, i, workers, skipped="not-built")
                              for i in impls]
                continue
            lines, failure = run_program(entry, argv, workers, timeout)
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
                    collected.append(synthetic(entry.name, impl, workers, failed=why))
                    any_failed = True
            if failure:
                log(f"== {entry.name} workers={workers}: {failure}")
                any_failed = True
    return collected, any_failed


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
        return theirs / mine if self.unit in TIME_UNITS else mine / theirs

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
            better = "smaller is better" if self.unit in TIME_UNITS else "bigger is better"
            out += ["", f"weft vs each peer, same run ({better}; the figure is how many "
                        "times faster weft is: > 1 means weft is faster):", ""]
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

    info = machine_info(build, worker_counts, args.quick)
    lines, failed = run_suite(build, worker_counts, args.quick, only, args.timeout)
    write_report(args.out, lines, info)
    log(f"run.py: results in {args.out}/results.{{txt,md,png}}"
        + (" (some benchmarks FAILED)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
