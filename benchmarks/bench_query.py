"""Query benchmark: latency of Recommender.recommend / popular in-process, the
one-shot CLI's wall time, and the batch export.

    python benchmarks/bench_query.py --size 100k
    python benchmarks/bench_query.py --size 1m --json out/query-1m.json
    python benchmarks/bench_query.py --data-dir DIR --json out/query-10m.json

What it measures (all on one built database, built first by
engine.Recommender(db, data_dir) when missing or stale; the default --db is the
one bench_build.py builds for the same data, so a build is shared):

* recommend: Recommender.recommend(user, k=10) for --users (1,000) users drawn
  with --seed: the 20 heaviest users (most rows in user_item_strength), ~5%
  unknown ids, the rest known users at random; after a warm-up of 50 other
  users. Latency per call (perf_counter around the Python call, so including
  the conversion to dicts and the history/known check). p50 / p95 / p99 / max
  in ms, repeated --reps (3) times in a fresh shuffled order; the medians of
  the repetitions are reported (a repetition does not start after
  --budget-seconds, 300, of one measurement; at least one runs). The same with genre='drama' and with
  content_type='microdrama'. The 20 heaviest users' median and max are shown
  apart.
* popular: Recommender.popular(k=10), 1,000 calls, p50 / p95 (also filtered),
  --reps times, medians.
* one-shot CLI: `python cli.py --db DB --data-dir data recommend --user_id u1
  --k 10` as a subprocess on the bundled data (data/; the database in the
  cache folder, never the project's recs.db), 1 warm-up then --cli-runs (10);
  median and min wall seconds. PYTHONDONTWRITEBYTECODE is removed from the
  child's environment (a user's machine writes bytecode caches). Whether pandas
  is importable is reported: duckdb's import cost depends on it.
* --check N: before timing, the index's answers against the macros' for the
  first N sample users with each filter, and popular (exit 1 on a difference).
* --serving index|sql|both (default both): the above through the SQL macros
  (Recommender(db), what a one-shot command does) and through the in-memory
  serving index (Recommender(db, fast=True), what the web API does), in the
  same process on the same sample; for the index also the seconds to load it
  and the resident memory it added (VmRSS before and after).
* export: Recommender.export(out.csv, k=20) for all users: wall seconds (1 run
  when events > 5M, else 3; median) and rows written.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import ROOT, fmt, median, percentile  # noqa: E402

HEAVIEST = 20
FILTERS = {"none": {}, "genre=drama": {"genre": "drama"}, "content_type=microdrama": {"content_type": "microdrama"}}


def summarise(latencies_ms: list[float]) -> dict:
    return {
        "p50": percentile(latencies_ms, 50),
        "p95": percentile(latencies_ms, 95),
        "p99": percentile(latencies_ms, 99),
        "max": max(latencies_ms) if latencies_ms else float("nan"),
        "calls": len(latencies_ms),
    }


def median_of(reps: list[dict]) -> dict:
    keys = ["p50", "p95", "p99", "max"]
    return {**{k: median([r[k] for r in reps]) for k in keys}, "calls": reps[0]["calls"], "reps": len(reps),
            "p50_each_rep": [r["p50"] for r in reps]}


def built_at(recommender) -> str | None:
    try:
        row = recommender.database.cursor().execute("select value from build_info where key = 'built_at'").fetchone()
        return row[0] if row else None
    except Exception:  # noqa: BLE001 - a figure to show, never a reason to stop
        return None


def pick_users(recommender, count: int, seed: int) -> tuple[list[str], list[str], list[str], list[str]]:
    """(sample, heaviest, unknown, warm-up users): the sample includes the heaviest and the unknown ones."""
    cursor = recommender.database.cursor()
    heaviest = [row[0] for row in cursor.execute(
        f"""
        select user_id from user_item_strength group by user_id
        order by count(*) desc, user_id limit {HEAVIEST}
        """
    ).fetchall()]
    known = [row[0] for row in cursor.execute(
        "select user_id from users union select user_id from user_item_strength order by 1"
    ).fetchall()]
    rng = random.Random(seed)
    n_unknown = round(count * 0.05)
    unknown = [f"unknown-{seed}-{k}" for k in range(n_unknown)]
    others = sorted(set(known) - set(heaviest))
    n_random = max(0, min(len(others), count - len(heaviest) - n_unknown))
    drawn = rng.sample(others, n_random + min(50, len(others) - n_random))
    sample, warmup = drawn[:n_random], drawn[n_random:]
    users = heaviest + unknown + sample
    rng.shuffle(users)
    return users, heaviest, unknown, warmup


def time_calls(call, arguments: list, reps: int, seed: int, budget: float) -> tuple[list[list[float]], dict]:
    """Latencies (ms) of call(argument) for each argument, reps times in shuffled orders.

    A repetition is not started once budget seconds have gone by (at least one always runs).
    """
    per_rep: list[list[float]] = []
    per_argument: dict = {}
    rng = random.Random(seed)
    began = time.perf_counter()
    for _ in range(reps):
        if per_rep and time.perf_counter() - began > budget:
            print(f"  budget of {budget:.0f} s spent: {len(per_rep)} of {reps} repetitions", file=sys.stderr)
            break
        order = list(arguments)
        rng.shuffle(order)
        latencies = []
        for argument in order:
            started = time.perf_counter()
            call(argument)
            elapsed = (time.perf_counter() - started) * 1000
            latencies.append(elapsed)
            per_argument.setdefault(argument, []).append(elapsed)
        per_rep.append(latencies)
    return per_rep, per_argument


def bench_recommend(recommender, users, heaviest, warmup, reps, seed, budget) -> dict:
    results = {}
    for label, filters in FILTERS.items():
        for user in warmup:
            recommender.recommend(user, k=10, **filters)
        per_rep, per_user = time_calls(lambda u: recommender.recommend(u, k=10, **filters), users, reps, seed, budget)
        heavy = [median(per_user[u]) for u in heaviest]
        results[label] = {
            **median_of([summarise(latencies) for latencies in per_rep]),
            "heaviest_median_ms": median(heavy),
            "heaviest_max_ms": max(heavy) if heavy else float("nan"),
        }
        print(f"recommend {label}: p50 {results[label]['p50']:.2f} ms, p95 {results[label]['p95']:.2f} ms",
              file=sys.stderr)
    return results


def bench_popular(recommender, calls, reps, seed, budget) -> dict:
    results = {}
    for label, filters in FILTERS.items():
        for _ in range(20):
            recommender.popular(k=10, **filters)
        per_rep, _ = time_calls(lambda _i: recommender.popular(k=10, **filters), list(range(calls)), reps, seed,
                                 budget)
        results[label] = median_of([summarise(latencies) for latencies in per_rep])
    return results


def bench_cli(runs: int) -> dict:
    """Wall seconds of the one-shot CLI on the bundled data; the database lives in the cache folder."""
    data_dir = ROOT / "data"
    db = common.default_db(data_dir, "cli")
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    command = [sys.executable, "cli.py", "--db", str(db), "--data-dir", str(data_dir),
               "recommend", "--user_id", "u1", "--k", "10"]
    times = []
    for run in range(runs + 1):  # the first is the warm-up (it may build the database, write .pyc files)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if done.returncode != 0 or "u1" not in done.stdout:
            raise SystemExit(f"cli failed ({done.returncode}): {done.stderr.strip()[:500]}")
        if run:
            times.append(elapsed)
    return {
        "command": " ".join(["python", *command[1:]]),
        "runs": runs,
        "median_seconds": median(times),
        "min_seconds": min(times),
        "max_seconds": max(times),
        "pandas_installed": importlib.util.find_spec("pandas") is not None,
        "pyarrow_installed": importlib.util.find_spec("pyarrow") is not None,
    }


def bench_export(recommender, runs: int, suffix: str) -> dict:
    times, rows = [], None
    with tempfile.TemporaryDirectory(prefix="bench-export-") as scratch:
        for run in range(runs):
            out = Path(scratch) / f"recs-{run}{suffix}"
            started = time.perf_counter()
            rows = recommender.export(out, k=20)
            times.append(time.perf_counter() - started)
            size = out.stat().st_size
            out.unlink()
            print(f"export run {run + 1}: {times[-1]:.2f} s, {rows:,} rows", file=sys.stderr)
    return {"runs": runs, "median_seconds": median(times), "seconds": times, "rows": rows,
            "bytes": size, "format": suffix.lstrip(".")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(common.SIZES), default="1m",
                        help="generated data size when --data-dir is not given (cached)")
    parser.add_argument("--data-dir", type=Path, help="a folder with users.csv, items.csv, events.csv")
    parser.add_argument("--db", type=Path, help="database (default: the one bench_build.py builds, in the cache)")
    parser.add_argument("--users", type=int, default=1000, help="users per measurement (default 1000)")
    parser.add_argument("--popular-calls", type=int, default=1000, help="popular() calls per measurement")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each measurement (default 3)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--budget-seconds", type=float, default=300,
                        help="no further repetition of a measurement starts after this long (default 300)")
    parser.add_argument("--cli-runs", type=int, default=10, help="timed CLI runs after 1 warm-up (0 = skip)")
    parser.add_argument("--export-runs", type=int, help="export runs (default 3; 1 when events > 5M; 0 = skip)")
    parser.add_argument("--export-format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--no-rebuild", action="store_true",
                        help="use --db as it is when it exists, even if older than the SQL or the data "
                        "(the serving queries are the ones stored in it at its build)")
    parser.add_argument("--cli-only", action="store_true", help="only the one-shot CLI measurement (no data needed)")
    parser.add_argument("--check", type=int, default=0, metavar="N",
                        help="first compare the index's answers with the macros' for N sample users, "
                        "each filter (exits 1 on a difference)")
    parser.add_argument("--serving", choices=["index", "sql", "both"], default="both",
                        help="answer from the in-memory serving index, the SQL macros, or both (default)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args(argv)

    if args.cli_only:
        figures = {"environment": common.environment(), "cli": bench_cli(args.cli_runs)}
        cli = figures["cli"]
        print(f"one-shot CLI ({cli['command']}): median {cli['median_seconds']:.3f} s, min {cli['min_seconds']:.3f} s "
              f"over {cli['runs']} runs; pandas installed: {cli['pandas_installed']}")
        common.write_json(args.json, figures)
        return 0

    import engine

    data_dir = common.ensure_data(args.data_dir, args.size)
    shape = common.data_shape(data_dir)
    db = args.db or common.default_db(data_dir, "bench-build")
    env = common.environment()
    print(f"data {data_dir} ({shape['users']:,} users, {shape['items']:,} items, {shape['events']:,} events); "
          f"db {db}; commit {env['commit']}", file=sys.stderr)

    started = time.perf_counter()
    recommender = engine.Recommender(db, data_dir, auto_build=not (args.no_rebuild and db.exists()))
    open_seconds = time.perf_counter() - started
    built = recommender.build_report is not None
    if built:
        print(f"built {db} in {recommender.build_report.seconds:.1f} s", file=sys.stderr)
    threads = recommender.database.cursor().execute("select current_setting('threads')").fetchone()[0]
    users, heaviest, unknown, warmup = pick_users(recommender, args.users, args.seed)
    heaviest_rows = recommender.database.cursor().execute(
        "select max(n) from (select count(*) as n from user_item_strength group by user_id)"
    ).fetchone()[0]

    figures = {
        "environment": env,
        "data_dir": str(data_dir),
        "data": shape,
        "db": str(db),
        "duckdb_threads": threads,
        "built_now_seconds": recommender.build_report.seconds if built else None,
        "db_built_at": built_at(recommender),
        "open_seconds": open_seconds,
        "sample": {"users": len(users), "heaviest": len(heaviest), "unknown": len(unknown),
                   "heaviest_history_rows": heaviest_rows, "seed": args.seed},
    }
    if args.check:
        figures["check"] = check_index(recommender, engine.Recommender(db, data_dir, auto_build=False, fast=True),
                                       users[: args.check])
        check = figures["check"]
        print(f"index against the macros: {check['same']:,} of {check['answers']:,} answers equal "
              f"({check['live_events']:,} live events overlaid)", file=sys.stderr)
        if check["same"] != check["answers"]:
            print(f"first difference: {check['first_difference']}", file=sys.stderr)
            return 1
    if args.serving in ("sql", "both"):
        figures["recommend_ms"] = bench_recommend(recommender, users, heaviest, warmup, args.reps, args.seed,
                                                   args.budget_seconds)
        figures["popular_ms"] = bench_popular(recommender, args.popular_calls, args.reps, args.seed,
                                               args.budget_seconds)
    if args.serving in ("index", "both"):
        fast = engine.Recommender(db, data_dir, auto_build=False, fast=True)
        rss_before = resident_mb()
        started = time.perf_counter()
        fast.serving_index()
        figures["index"] = {
            "load_seconds": time.perf_counter() - started,
            "rss_added_mb": resident_mb() - rss_before,
            "rss_mb": resident_mb(),
            "recommend_ms": bench_recommend(fast, users, heaviest, warmup, args.reps, args.seed, args.budget_seconds),
            "popular_ms": bench_popular(fast, args.popular_calls, args.reps, args.seed, args.budget_seconds),
        }
        print(f"serving index: loaded in {figures['index']['load_seconds']:.2f} s, "
              f"{figures['index']['rss_added_mb']:.0f} MB resident added", file=sys.stderr)
        fast.close()
    export_runs = args.export_runs if args.export_runs is not None else (1 if shape["events"] > 5_000_000 else 3)
    if export_runs:
        figures["export"] = bench_export(recommender, export_runs, f".{args.export_format}")
    recommender.close()
    if args.cli_runs:
        figures["cli"] = bench_cli(args.cli_runs)

    figures["code_fingerprint_at_end"] = common.code_fingerprint()
    print_summary(figures)
    common.write_json(args.json, figures)
    return 0


def check_index(slow, fast, users: list[str]) -> dict:
    """Whether the serving index answers exactly what the SQL macros answer (to_dict), for these
    users with each filter, and popular with each filter."""
    answers = same = 0
    first = None
    for filters in FILTERS.values():
        pairs = [(slow.recommend(u, k=10, **filters).to_dict(), fast.recommend(u, k=10, **filters).to_dict()) for u in users]
        pairs.append((slow.popular(k=10, **filters).to_dict(), fast.popular(k=10, **filters).to_dict()))
        for expected, got in pairs:
            answers += 1
            same += expected == got
            if expected != got and first is None:
                first = {"filters": filters, "macros": expected, "index": got}
    return {"answers": answers, "same": same, "live_events": slow.info()["live_events"], "first_difference": first}


def resident_mb() -> float:
    """This process's resident memory (VmRSS), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def print_summary(figures: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 110)
    data = figures["data"]
    title = (f"Queries: {data['users']:,} users, {data['items']:,} items, {data['events']:,} events — "
             f"{figures['duckdb_threads']} threads, commit {figures['environment']['commit']} "
             f"(code {figures['environment']['code_fingerprint']})")
    table = Table(title=title)
    for column in ("call", "p50 ms", "p95 ms", "p99 ms", "max ms", "20 heaviest: median / max ms", "reps"):
        table.add_column(column, justify="left" if column == "call" else "right")
    sample = figures["sample"]
    paths = [("sql", figures)] if "recommend_ms" in figures else []
    if "index" in figures:
        paths.append(("index", figures["index"]))
    for path, measured in paths:
        for label, row in measured["recommend_ms"].items():
            table.add_row(f"{path}: recommend k=10, {label}", fmt(row["p50"]), fmt(row["p95"]), fmt(row["p99"]),
                          fmt(row["max"]), f"{fmt(row['heaviest_median_ms'])} / {fmt(row['heaviest_max_ms'])}",
                          str(row["reps"]))
        for label, row in measured["popular_ms"].items():
            table.add_row(f"{path}: popular k=10, {label}", fmt(row["p50"]), fmt(row["p95"]), fmt(row["p99"]),
                          fmt(row["max"]), "", str(row["reps"]))
    console.print(table)
    if "index" in figures:
        index = figures["index"]
        console.print(f"serving index: loaded in {index['load_seconds']:.2f} s, "
                      f"{index['rss_added_mb']:.0f} MB resident added ({index['rss_mb']:.0f} MB in all)")
    if figures["code_fingerprint_at_end"] != figures["environment"]["code_fingerprint"]:
        console.print("WARNING: sql/, engine/ or cli.py changed during the measurement")
    console.print(f"recommend: {sample['users']:,} users ({sample['heaviest']} heaviest, longest history "
                  f"{sample['heaviest_history_rows']:,} items; {sample['unknown']} unknown); figures are medians over the repetitions")
    if "export" in figures:
        export = figures["export"]
        console.print(f"export k=20, all users ({export['format']}): {fmt(export['median_seconds'])} s median of "
                      f"{export['runs']}, {export['rows']:,} rows, {export['bytes'] / 1e6:,.1f} MB")
    if "cli" in figures:
        cli = figures["cli"]
        console.print(f"one-shot CLI ({cli['command']}): median {cli['median_seconds']:.3f} s, "
                      f"min {cli['min_seconds']:.3f} s over {cli['runs']} runs; pandas installed: "
                      f"{cli['pandas_installed']}")


if __name__ == "__main__":
    sys.exit(main())
