"""Load test of the web API: throughput and latency of /recommendations, with and
without a rebuild of recs.db halfway through.

    python benchmarks/load_test.py --data-dir DIR --seconds 10
    python benchmarks/load_test.py                      # generates the 1m data into a cache folder first

It starts the server itself (`api.serve` under uvicorn, in a subprocess on a
free port of 127.0.0.1: loopback only), waits for /health, then runs
--clients threads (16) that each keep one HTTP/1.1 connection open and ask
/recommendations?user_id=...&k=10 for random user ids, known (from
users.csv) and unknown ones (--unknown-share), for --seconds (30).

Modes (--mode, default both, one after the other on the same server):
  steady   no rebuild.
  rebuild  at half time, events.csv is touched and `python cli.py --db DB
           --data-dir DIR build` runs in a subprocess; the load goes on until
           the build has finished and the server answers from the new file
           (its /health built_at changed), so the swap is always covered.

--serving index|sql|both (default both): the server answers from the in-memory
serving index (what `python cli.py serve` does) or from the SQL macros (the
baseline, as before the index); both runs the whole test on each, sql first.
--events-per-second N (default 0) adds a client that POSTs N events a second
to /events (a batch every 0.1 s, bigger when a POST took longer) for the whole run: the figures then
include the cost of taking live events in; its own latency and errors are
reported on a line of their own. --workers runs that many server processes.

It reports requests per second, p50 / p99 / max latency and the error count
(any non-200 answer, a body that is not the expected JSON, or a connection
failure), and for rebuild the same split before / during / after the build.
Bounded: every request has a --timeout, each client stops after
--max-requests, and the whole run is cut at 3 x seconds plus the build.

The database is built before the server starts, next to a cache folder
(--db to choose), never on the project's own recs.db.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"  # loopback only, by design


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "recs-loadtest"


def ensure_data(data_dir: Path | None, preset: str) -> Path:
    """The data folder: the one given, else the preset generated once into the cache."""
    if data_dir is not None:
        if not (data_dir / "events.csv").is_file():
            sys.exit(f"no events.csv in {data_dir}")
        return data_dir
    folder = cache_dir() / f"data-{preset}"
    if not (folder / "events.csv").is_file():
        print(f"generating the {preset} data into {folder} ...", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "data" / "generate.py"), "--preset", preset, "--out", str(folder)],
            check=True,
        )
    return folder


def default_db(data_dir: Path) -> Path:
    key = hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:10]
    return cache_dir() / f"recs-{key}.db"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def known_users(data_dir: Path) -> list[str]:
    import csv

    with (data_dir / "users.csv").open(newline="", encoding="utf-8") as handle:
        return [row["user_id"] for row in csv.DictReader(handle) if row.get("user_id")]


def get_json(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


# --- the server -------------------------------------------------------------------


class Server:
    """uvicorn serving api.create_app on db and data_dir, in a subprocess."""

    def __init__(self, db: Path, data_dir: Path, log_path: Path, serving: str = "index", workers: int = 1):
        self.port = free_port()
        self.log_path = log_path
        code = (
            "import sys, api, engine; "
            "r = engine.Recommender(sys.argv[1], sys.argv[2], fast=sys.argv[5] == 'index'); "
            "api.serve(r, sys.argv[3], int(sys.argv[4]), log_level='warning', workers=int(sys.argv[6]))"
        )
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(db), str(data_dir), HOST, str(self.port), serving, str(workers)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 300.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"the server exited with {self.process.returncode}; see {self.log_path}")
            try:
                status, body = get_json(self.port, "/health", timeout=2)
                if status == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"the server did not answer /health within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# --- the clients ---------------------------------------------------------------------


@dataclass
class Sample:
    start: float  # monotonic
    seconds: float
    ok: bool
    fallback: bool = False
    error: str = ""


@dataclass(eq=False)  # threads must stay hashable
class Client(threading.Thread):
    port: int
    users: list[str]
    unknown_share: float
    k: int
    stop_at: list  # [deadline]: mutable, the rebuild mode may push it back
    hard_stop: float
    max_requests: int
    timeout: float
    seed: int
    endpoint: str = "recommendations"
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        rng = random.Random(self.seed)
        conn = None
        while len(self.samples) < self.max_requests:
            now = time.monotonic()
            if now >= min(self.stop_at[0], self.hard_stop):
                break
            if rng.random() < self.unknown_share:
                user = f"nobody-{rng.randrange(10**9)}"
            else:
                user = rng.choice(self.users)
            if self.endpoint == "popular":
                user, path = None, "/popular?" + urllib.parse.urlencode({"k": self.k})
            else:
                path = "/recommendations?" + urllib.parse.urlencode({"user_id": user, "k": self.k})
            start = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                seconds = time.monotonic() - start
                if response.status != 200:
                    self.samples.append(Sample(start, seconds, False, error=f"HTTP {response.status}: {body[:200]!r}"))
                    continue
                payload = json.loads(body)
                if payload.get("user_id") != user or not isinstance(payload.get("items"), list) or not payload["items"]:
                    self.samples.append(Sample(start, seconds, False, error=f"unexpected body {body[:200]!r}"))
                    continue
                self.samples.append(Sample(start, seconds, True, fallback=bool(payload.get("fallback_used"))))
            except (OSError, http.client.HTTPException, ValueError) as error:
                self.samples.append(Sample(start, time.monotonic() - start, False, error=f"{type(error).__name__}: {error}"))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


@dataclass(eq=False)
class Poster(threading.Thread):
    """POSTs rate events a second to /events until stopped: every 0.1 s, or as soon as the last
    POST answered if it took longer, one batch with every event due since the last one (so the
    rate holds when a POST is slow; a client of a live feed batches the same way)."""

    port: int
    users: list[str]
    items: list[str]
    rate: int
    seed: int
    timeout: float
    samples: list[Sample] = field(default_factory=list)
    accepted: int = 0

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.halt = threading.Event()

    def run(self) -> None:
        rng = random.Random(self.seed)
        conn = None
        next_at = time.monotonic()
        sent_until = time.monotonic()
        while not self.halt.is_set():
            now = time.monotonic()
            batch = max(1, min(10_000, round(self.rate * (now - sent_until))))
            sent_until = now
            events = [
                {"user_id": rng.choice(self.users), "item_id": rng.choice(self.items), "event_type": "play",
                 "watch_seconds": rng.randint(30, 3600),
                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                for _ in range(batch)
            ]
            start = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
                conn.request("POST", "/events", body=json.dumps({"events": events}),
                             headers={"content-type": "application/json"})
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200 and json.loads(body) == {"accepted": batch}
                self.accepted += batch if ok else 0
                self.samples.append(Sample(start, time.monotonic() - start, ok,
                                           error="" if ok else f"HTTP {response.status}: {body[:200]!r}"))
            except (OSError, http.client.HTTPException, ValueError) as error:
                self.samples.append(Sample(start, time.monotonic() - start, False, error=f"{type(error).__name__}: {error}"))
                if conn is not None:
                    conn.close()
                conn = None
            next_at = max(next_at + 0.1, time.monotonic())
            self.halt.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()


def known_items(data_dir: Path) -> list[str]:
    import csv

    with (data_dir / "items.csv").open(newline="", encoding="utf-8") as handle:
        return [row["item_id"] for row in csv.DictReader(handle) if row.get("item_id")]


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def summarise(samples: list[Sample], seconds: float) -> dict:
    latencies = [sample.seconds for sample in samples]
    errors = [sample for sample in samples if not sample.ok]
    return {
        "requests": len(samples),
        "seconds": round(seconds, 1),
        "rps": round(len(samples) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "errors": len(errors),
        "fallback_share": round(sum(s.fallback for s in samples) / len(samples), 3) if samples else 0.0,
        "first_errors": sorted({e.error for e in errors})[:5],
    }


def run_load(
    args: argparse.Namespace, port: int, users: list[str], rebuild: bool, db: Path, data_dir: Path
) -> dict:
    started = time.monotonic()
    stop_at = [started + args.seconds]
    hard_stop = started + 3 * args.seconds + args.build_timeout
    clients = [
        Client(
            port, users, args.unknown_share, args.k, stop_at, hard_stop, args.max_requests, args.timeout,
            args.seed + n, args.endpoint,
        )
        for n in range(args.clients)
    ]
    for client in clients:
        client.start()
    poster = None
    if args.events_per_second:
        poster = Poster(port, users, args.items, args.events_per_second, args.seed + 1000, args.timeout)
        poster.start()
    build_window = None
    swapped = None
    if rebuild:
        time.sleep(args.seconds / 2)
        before = get_json(port, "/health")[1].get("built_at")
        stop_at[0] = hard_stop  # keep loading until the new file is answering
        events = data_dir / "events.csv"
        os.utime(events)  # a new mtime: the fingerprint changes, as a new export would
        build_start = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "--db", str(db), "--data-dir", str(data_dir), "build"],
            cwd=ROOT, capture_output=True, text=True, timeout=args.build_timeout,
        )
        build_end = time.monotonic()
        if result.returncode != 0:
            print(result.stdout, result.stderr, file=sys.stderr)
            sys.exit("the rebuild failed")
        # keep the load on until the server answers from the new file, then a little longer
        while time.monotonic() < hard_stop:
            after = get_json(port, "/health")[1].get("built_at")
            if after != before:
                break
            time.sleep(0.1)
        swapped = {"built_at_before": before, "built_at_after": after, "build_seconds": round(build_end - build_start, 1)}
        stop_at[0] = max(started + args.seconds, time.monotonic() + 2.0)
        build_window = (build_start, build_end)
    for client in clients:
        client.join()
    ended = time.monotonic()
    if poster is not None:
        poster.halt.set()
        poster.join()
    samples = [sample for client in clients for sample in client.samples]
    report = {"mode": "rebuild" if rebuild else "steady", **summarise(samples, ended - started)}
    if poster is not None:
        report["events"] = {**summarise(poster.samples, ended - started), "accepted": poster.accepted}
    if build_window:
        start, end = build_window
        phases = {
            "before": ([s for s in samples if s.start < start], start - started),
            "during": ([s for s in samples if start <= s.start < end], end - start),
            "after": ([s for s in samples if s.start >= end], ended - end),
        }
        report["phases"] = {name: summarise(part, secs) for name, (part, secs) in phases.items()}
        report["swap"] = swapped
    return report


def print_report(report: dict) -> None:
    def line(name: str, r: dict) -> str:
        return (
            f"{name:<16} {r['requests']:>8,} req in {r['seconds']:>5.1f} s  {r['rps']:>7.1f} rps  "
            f"p50 {r['p50_ms']:>7.1f} ms  p99 {r['p99_ms']:>7.1f} ms  max {r['max_ms']:>7.1f} ms  "
            f"errors {r['errors']}"
        )

    print(line(report["mode"], report))
    for name, part in report.get("phases", {}).items():
        print(line(f"  {name} build", part))
    if report.get("events"):
        events = report["events"]
        print(line("  POST /events", events) + f"  ({events['accepted']:,} events accepted)")
        for error in events["first_errors"]:
            print(f"  POST error: {error}")
    if report.get("swap"):
        swap = report["swap"]
        print(
            f"  rebuild took {swap['build_seconds']} s; built_at {swap['built_at_before']} -> {swap['built_at_after']}"
        )
    for error in report["first_errors"]:
        print(f"  error: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="folder of users/items/events.csv [default: generate --preset]")
    parser.add_argument("--preset", default="1m", help="data/generate.py preset when --data-dir is absent [1m]")
    parser.add_argument("--db", type=Path, help="database file to build and serve [default: in ~/.cache/recs-loadtest]")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of each mode [30]")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients [16]")
    parser.add_argument("--mode", choices=("steady", "rebuild", "both"), default="both")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--endpoint", choices=("recommendations", "popular"), default="recommendations",
        help="what to ask: /recommendations (the point) or /popular (a cheap query: the HTTP layer's cost)",
    )
    parser.add_argument("--unknown-share", type=float, default=0.2, help="share of requests for unknown users [0.2]")
    parser.add_argument("--max-requests", type=int, default=200_000, help="per client, a safety bound [200000]")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds [30]")
    parser.add_argument("--build-timeout", type=float, default=600.0, help="for the rebuild, seconds [600]")
    parser.add_argument("--serving", choices=("index", "sql", "both"), default="both",
                        help="the server answers from the serving index, the SQL macros, or one then the other [both]")
    parser.add_argument("--events-per-second", type=int, default=0, help="POST this many events a second meanwhile [0]")
    parser.add_argument("--workers", type=int, default=1, help="server processes [1]")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the reports to this JSON file")
    args = parser.parse_args()
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 3600:
        parser.error("--clients must be 1..256 and --seconds 0..3600")

    import engine

    data_dir = ensure_data(args.data_dir, args.preset)
    db = args.db or default_db(data_dir)
    db.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = engine.ensure_built(db, data_dir, engine.ModelParams())
    if report is not None:
        print(f"built {db} in {time.monotonic() - started:.1f} s", flush=True)
    users = known_users(data_dir)
    args.items = known_items(data_dir)

    reports = []
    for serving in (["sql", "index"] if args.serving == "both" else [args.serving]):
        server = Server(db, data_dir, db.with_name(db.name + f".server-{serving}.log"), serving, args.workers)
        try:
            health = server.wait_ready()
            print(
                f"{serving}: server on http://{HOST}:{server.port} ({args.workers} worker(s)): {health['rows']} "
                f"built_at {health['built_at']}; {args.clients} clients on /{args.endpoint}, {args.seconds:.0f} s "
                f"per mode, {args.unknown_share:.0%} unknown users, {args.events_per_second} events/s posted",
                flush=True,
            )
            # warm up: the first queries of each thread open cursors and fill caches
            for user in users[:20]:
                get_json(server.port, "/recommendations?" + urllib.parse.urlencode({"user_id": user, "k": args.k}), 60)
            modes = ["steady", "rebuild"] if args.mode == "both" else [args.mode]
            for mode in modes:
                result = {"serving": serving, **run_load(args, server.port, users, mode == "rebuild", db, data_dir)}
                print_report(result)
                reports.append(result)
        finally:
            server.stop()
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    if any(r["errors"] or r.get("events", {}).get("errors") for r in reports):
        sys.exit(1)


if __name__ == "__main__":
    main()
