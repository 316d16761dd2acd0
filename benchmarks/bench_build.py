"""Build benchmark: wall time per step and peak memory of a full build of recs.db,
and a scipy.sparse reference for the item-item similarity step.

    python benchmarks/bench_build.py --size 100k
    python benchmarks/bench_build.py --size 1m --runs 3 --json out/build-1m.json
    python benchmarks/bench_build.py --data-dir DIR --runs 1 --json out/build-10m.json
    python benchmarks/bench_build.py --size 1m --engine spark --spark-master local[2]

Each run is `engine.build(db, data_dir, engine.ModelParams())` in a fresh child
process (this script re-run with --child), so its peak RSS is its own
(getrusage(RUSAGE_SELF).ru_maxrss, reported by the child; the parent also
samples /proc/<pid>/status as a watchdog). DuckDB gets --threads threads (2):
the child runs with RECS_THREADS=N and wraps duckdb.connect to pass
config={"threads": N}, unless the engine sets another number itself. Step durations come from the build's progress callback: the
time from one step's start to the next; "setup" is the time before the first
step (fingerprint, connecting, schema), "saving" runs to the end of build().
Importing the engine is not counted.

The scipy reference (another child process, for its own peak RSS) reads the
strengths the model uses from the built database (`user_item_strength where
strength > 0`, via duckdb .fetchnumpy(); load time reported apart) and the
parameters from `model_params`, and computes the similarity of
sql/40_item_neighbors.sql:

    w(u,i) = s(u,i) / n(u)^user_weight_gamma     n(u): items with strength > 0
    sq(i)  = sum_u w(u,i)^2
    sim(a->b) = (W^T W)[a,b] / (sq(a)^alpha * sq(b)^(1-alpha)) / viewers(b)^popularity_beta

diagonal removed, then the top max_neighbors per item by (similarity desc,
support desc, neighbour item_id asc), support = users who watched both. When
model_params.similarity_history_cap > 0, only each user's that many latest
items (last watched desc, strength desc, item key asc; --cap-order strength:
strength desc, item key) enter W^T W and the support, as in the SQL
(n(u), sq(i) and viewers still count whole histories). Both are computed
when a history is over the cap: "exact" (whole histories: the reference for
speed and for the agreement target) and "model" (with the cap, which checks
that the SQL computes what it means to). W^T W
is computed in blocks of items (dense rows of a block, so memory stays
bounded), single-threaded (scipy's sparse product has no threads). Timed
apart: "prep" (weights, CSR matrices), "X^T X + top-N" (the block products
and the per-row selection, keeping ties at the boundary), and "support" (the
co-viewer count of the kept candidates, a binary block product). The ratio
reported is the SQL similarity step / (X^T X + top-N); the ratio against
prep + product + top-N + support is given too.

Agreement: the top-10 neighbour sets of item_neighbors (neighbor_rank <= 10)
and of scipy, per item, |intersection| / min(10, longer list), averaged over
items that have neighbours in either; also the same for the full
max_neighbors lists, the share of identical ordered top-10 lists, and the
largest relative difference of similarity and any support mismatch on the
pairs both kept.

Limits: a run that goes over --max-seconds (600) or --max-rss-gb (12) is
killed and reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import ROOT, fmt, median  # noqa: E402

KNOWN_PARAMS = {
    "heavy_threshold", "min_plays_for_length", "max_full_views", "half_life_days", "strength_formula",
    "similarity_alpha", "user_weight_gamma", "popularity_beta",
    "trending_half_life_days", "user_half_life_days", "max_neighbors", "min_support", "resurface_light",
    "similarity_history_cap",
}  # the parameters this reference knows; any other one is reported (it may change item_neighbors)


# --------------------------------------------------------------------------- child: one build


def child_build(db: Path, data_dir: Path, threads: int, engine_name: str = "duckdb", master: str = "local[2]") -> dict:
    import duckdb

    original_connect = duckdb.connect

    def connect(database=":memory:", *args, **kwargs):
        config = dict(kwargs.pop("config", None) or {})
        config.setdefault("threads", threads)
        return original_connect(database, *args, config=config, **kwargs)

    duckdb.connect = connect
    started_import = time.perf_counter()
    import engine

    import_seconds = time.perf_counter() - started_import
    stamps: list[tuple[str, float]] = []

    def progress(name: str) -> None:
        stamps.append((name, time.perf_counter()))

    started = time.perf_counter()
    if engine_name == "spark":  # the same pinned defaults, computed on Spark, recs.db assembled from its Parquet
        from engine.spark import build_with_spark

        report = build_with_spark(db, data_dir, engine.ModelParams(), progress=progress, master=master)
    else:
        report = engine.build(db, data_dir, engine.ModelParams(), progress=progress)
    ended = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    steps: list[list] = []
    if stamps:
        steps.append(["setup", stamps[0][1] - started])
        for (name, at), (_, following) in zip(stamps, [*stamps[1:], ("end", ended)]):
            steps.append([name, following - at])
    return {
        "wall_seconds": ended - started,
        "import_seconds": import_seconds,
        "steps": steps,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,  # includes the engine import
        "rows": report.rows,
        "threads": threads,
        "engine": engine_name,
        "code_fingerprint": common.code_fingerprint(),
    }


# --------------------------------------------------------------------------- child: scipy reference


def child_reference(db: Path, threads: int, which: str, cap_order: str) -> dict:
    import duckdb
    import numpy as np
    import scipy

    started = time.perf_counter()
    con = duckdb.connect(str(db), read_only=True, config={"threads": threads})
    cursor = con.execute("select * from model_params")
    params = dict(zip([c[0] for c in cursor.description], cursor.fetchone()))
    item_ids = con.execute("select item_id from items order by item_id").fetchnumpy()["item_id"]
    recency = "epoch_us(s.last_watched_at)" if cap_order == "recency" else "0"
    data = con.execute(
        f"""
        with item_keys as (
            select item_id, (row_number() over (order by item_id) - 1)::integer as item_key from items
        ),
        user_keys as (
            select user_id, (row_number() over (order by user_id) - 1)::integer as user_key
            from (select distinct user_id from user_item_strength where strength > 0)
        )
        select user_keys.user_key, item_keys.item_key, s.strength::double as strength,
               {recency}::bigint as watched_us
        from user_item_strength as s
        join user_keys using (user_id)
        join item_keys using (item_id)
        where s.strength > 0
        """
    ).fetchnumpy()
    neighbors = con.execute(
        """
        with item_keys as (
            select item_id, (row_number() over (order by item_id) - 1)::integer as item_key from items
        )
        select a.item_key, b.item_key as neighbor_key, n.neighbor_rank::integer as neighbor_rank,
               n.similarity::double as similarity, n.support::bigint as support
        from item_neighbors as n
        join item_keys as a on a.item_id = n.item_id
        join item_keys as b on b.item_id = n.neighbor_id
        """
    ).fetchnumpy()
    con.close()
    users = np.asarray(data["user_key"], dtype=np.int64)
    items = np.asarray(data["item_key"], dtype=np.int64)
    strength = np.asarray(data["strength"], dtype=np.float64)
    watched_us = np.asarray(data["watched_us"], dtype=np.int64)
    del data
    n_items = len(item_ids)
    n_users = int(users.max()) + 1 if len(users) else 0
    db_pairs = {k: np.asarray(v) for k, v in neighbors.items()}
    load_seconds = time.perf_counter() - started

    model_cap = int(params.get("similarity_history_cap") or 0)
    n_u = np.bincount(users, minlength=n_users)
    users_over_cap = int(np.count_nonzero(n_u > model_cap)) if model_cap else 0
    modes = {"model": model_cap, "exact": 0}
    if which != "both":
        modes = {which: modes[which]}
    elif not users_over_cap:
        modes = {"exact": 0}  # the cap, if any, changes nothing: one computation serves both
    results = {}
    for mode, cap in modes.items():
        ref = scipy_similarity(users, items, strength, watched_us, n_users, n_items, params, cap)
        ref.update(compare(db_pairs, ref.pop("pairs"), n_items, int(params["max_neighbors"])))
        ref["history_cap"] = cap
        results[mode] = ref

    return {
        "scipy_version": scipy.__version__,
        "params": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in params.items()},
        "unknown_params": sorted(set(params) - KNOWN_PARAMS),
        "history_cap_in_model": model_cap,
        "cap_order": cap_order,
        "users_over_cap": users_over_cap,
        "longest_history": int(n_u.max()) if len(n_u) else 0,
        "users": n_users,
        "items": n_items,
        "nonzeros": int(len(users)),
        "db_pairs": int(len(db_pairs["item_key"])),
        "load_seconds": load_seconds,
        "references": results,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def scipy_similarity(users, items, strength, watched_us, n_users, n_items, params, cap) -> dict:
    """sql/40_item_neighbors.sql in scipy.sparse: timings and the kept pairs (item, neighbour, sim, support, rank)."""
    import numpy as np
    import scipy.sparse as sp

    gamma = float(params["user_weight_gamma"])
    alpha = float(params["similarity_alpha"])
    beta = float(params.get("popularity_beta") or 0.0)
    top_n = int(params["max_neighbors"])
    min_support = int(params.get("min_support") or 1)

    # ---- prep: weights and the two CSR matrices
    t0 = time.perf_counter()
    n_u = np.bincount(users, minlength=n_users).astype(np.float64)
    w = strength * n_u[users] ** -gamma
    sq = np.bincount(items, weights=w * w, minlength=n_items)
    viewers = np.bincount(items, minlength=n_items).astype(np.float64)
    pair_users, pair_items, pair_w = users, items, w
    if cap > 0:
        # only each user's cap first items enter the pairs, by (last watched desc, strength desc,
        # item key asc) as in sql/40 (--cap-order strength: strength desc, item key asc)
        order = np.lexsort((items, -strength, -watched_us, users))
        sorted_users = users[order]
        rank_in_user = np.arange(len(order)) - np.searchsorted(sorted_users, sorted_users, side="left") + 1
        kept = order[rank_in_user <= cap]
        pair_users, pair_items, pair_w = users[kept], items[kept], w[kept]
    W = sp.csr_matrix((pair_w, (pair_users, pair_items)), shape=(n_users, n_items))
    Wt = W.T.tocsr()
    B = sp.csr_matrix((np.ones_like(pair_w), (pair_users, pair_items)), shape=(n_users, n_items))
    Bt = B.T.tocsr()
    with np.errstate(divide="ignore"):
        inv_a = np.where(sq > 0, sq ** -alpha, 0.0)
        inv_b = np.where(sq > 0, sq ** -(1 - alpha) * viewers ** -beta, 0.0)
    prep_seconds = time.perf_counter() - t0

    # ---- X^T X + top-N per row (ties at the boundary kept), and support for those candidates
    block = max(1, min(n_items, 8_000_000 // max(1, n_items)))
    product_seconds = 0.0
    support_seconds = 0.0
    pair_count = 0  # co-viewed ordered pairs (a != b)
    kept_rows, kept_cols, kept_sims, kept_support = [], [], [], []
    for start in range(0, n_items, block):
        stop = min(n_items, start + block)
        t1 = time.perf_counter()
        P = Wt[start:stop] @ W
        D = P.toarray()
        D *= inv_a[start:stop, None]
        D *= inv_b[None, :]
        local = np.arange(stop - start)
        D[local, start + local] = 0.0
        if min_support > 1:  # pairs seen together by fewer users are dropped before ranking
            S_full = (Bt[start:stop] @ B).toarray()
            D[S_full < min_support] = 0.0
        kth = n_items - top_n
        if kth > 0:
            threshold = np.partition(D, kth, axis=1)[:, kth]
            mask = (D > 0) & (D >= threshold[:, None])
        else:
            mask = D > 0
        rows, cols = np.nonzero(mask)
        sims = D[rows, cols]
        t2 = time.perf_counter()
        pair_count += P.nnz - int(np.count_nonzero(P.diagonal(k=start)))
        if min_support > 1:
            support = S_full[rows, cols]
        else:
            support = np.asarray((Bt[start:stop] @ B)[rows, cols]).ravel()
        t3 = time.perf_counter()
        product_seconds += t2 - t1
        support_seconds += t3 - t2
        kept_rows.append(rows + start)
        kept_cols.append(cols)
        kept_sims.append(sims)
        kept_support.append(support)
        del P, D, mask
    t4 = time.perf_counter()
    rows = np.concatenate(kept_rows) if kept_rows else np.zeros(0, np.int64)
    cols = np.concatenate(kept_cols) if kept_cols else np.zeros(0, np.int64)
    sims = np.concatenate(kept_sims) if kept_sims else np.zeros(0)
    support = np.concatenate(kept_support) if kept_support else np.zeros(0)
    order = np.lexsort((cols, -support, -sims, rows))
    rows, cols, sims, support = rows[order], cols[order], sims[order], support[order]
    first = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - first + 1
    keep = rank <= top_n
    pairs = (rows[keep], cols[keep], sims[keep], support[keep], rank[keep])
    final_sort_seconds = time.perf_counter() - t4
    return {
        "pairs": pairs,
        "coviewed_pairs": int(pair_count),
        "block_rows": block,
        "prep_seconds": prep_seconds,
        "product_topn_seconds": product_seconds,
        "support_seconds": support_seconds,
        "final_sort_seconds": final_sort_seconds,
        "total_seconds": prep_seconds + product_seconds + support_seconds + final_sort_seconds,
        "kept_pairs": int(keep.sum()),
    }


def compare(db_pairs: dict, pairs: tuple, n_items: int, top_n: int) -> dict:
    """Agreement of item_neighbors with the reference's kept pairs."""
    import numpy as np

    rows, cols, sims, support, rank = pairs
    db_rows = db_pairs["item_key"].astype(np.int64)
    db_cols = db_pairs["neighbor_key"].astype(np.int64)
    db_rank = db_pairs["neighbor_rank"].astype(np.int64)
    db_sims = db_pairs["similarity"].astype(np.float64)
    db_support = db_pairs["support"].astype(np.int64)

    def overlap(limit: int) -> tuple[float, float, int]:
        """Mean |db ∩ scipy| / min(limit, longer list) over items with any neighbour; share identical."""
        a_sel, b_sel = db_rank <= limit, rank <= limit
        a_key = db_rows[a_sel] * n_items + db_cols[a_sel]
        b_key = rows[b_sel] * n_items + cols[b_sel]
        common_pairs = np.isin(a_key, b_key)
        inter = np.bincount(db_rows[a_sel][common_pairs], minlength=n_items)
        len_a = np.bincount(db_rows[a_sel], minlength=n_items)
        len_b = np.bincount(rows[b_sel], minlength=n_items)
        denominator = np.minimum(limit, np.maximum(len_a, len_b))
        has = denominator > 0
        per_item = inter[has] / denominator[has]
        # identical ordered lists: same (item, rank) -> neighbour everywhere
        a_ranked = db_rows[a_sel] * (limit + 1) + db_rank[a_sel]
        b_ranked = rows[b_sel] * (limit + 1) + rank[b_sel]
        a_map = dict(zip(a_ranked.tolist(), db_cols[a_sel].tolist()))
        b_map = dict(zip(b_ranked.tolist(), cols[b_sel].tolist()))
        differing = {key // (limit + 1) for key in set(a_map) | set(b_map) if a_map.get(key) != b_map.get(key)}
        n_has = int(has.sum())
        return (float(per_item.mean()) if n_has else float("nan"),
                (n_has - len(differing)) / max(1, n_has), n_has)

    top10, identical10, items_with_neighbors = overlap(10)
    top_all, _, _ = overlap(top_n)
    _, a_idx, b_idx = np.intersect1d(db_rows * n_items + db_cols, rows * n_items + cols, return_indices=True)
    rel = np.abs(db_sims[a_idx] - sims[b_idx]) / np.maximum(np.abs(sims[b_idx]), 1e-300)
    return {
        "top10_overlap": top10,
        "topN_overlap": top_all,
        "identical_top10_share": identical10,
        "items_with_neighbors": items_with_neighbors,
        "common_pairs": int(len(a_idx)),
        "max_rel_similarity_diff": float(rel.max()) if len(rel) else 0.0,
        "support_mismatches": int(np.count_nonzero(db_support[a_idx] != support[b_idx])),
    }


# --------------------------------------------------------------------------- parent


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """RSS in MB of pid, and the sum of its descendants' (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[int(entry.name)] = int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            continue
    descendants, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - descendants
        descendants |= frontier
    return rss.get(pid, 0.0), sum(rss.get(child, 0.0) for child in descendants)


def run_child(args: list[str], max_seconds: float, max_rss_mb: float) -> dict:
    """Run this script with --child ...; watch its RSS and time; return its JSON result."""
    with tempfile.NamedTemporaryFile(prefix="bench-build-", suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args, "--result", str(result_path)]
    started = time.perf_counter()
    # the engine reads $RECS_THREADS for builds (where it does not, the connect wrapper sets it)
    env = {**os.environ, "RECS_THREADS": args[args.index("--threads") + 1]} if "--threads" in args else None
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    sampled_max_mb = 0.0
    tree_max_mb = 0.0  # the child and its descendants (a Spark build's JVM: driver and executor in local mode)
    aborted = None
    while proc.poll() is None:
        own, others = tree_rss_mb(proc.pid)
        sampled_max_mb = max(sampled_max_mb, own)
        tree_max_mb = max(tree_max_mb, own + others)
        elapsed = time.perf_counter() - started
        if own + others > max_rss_mb:
            aborted = f"RSS {sampled_max_mb:,.0f} MB over the limit of {max_rss_mb:,.0f} MB after {elapsed:.0f} s"
        elif elapsed > max_seconds:
            aborted = f"still running after {max_seconds:.0f} s (RSS so far {sampled_max_mb:,.0f} MB)"
        if aborted:
            proc.kill()
            proc.wait()
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    try:
        if aborted:
            return {"aborted": aborted, "elapsed_seconds": elapsed, "sampled_peak_rss_mb": sampled_max_mb}
        if proc.returncode != 0:
            return {"aborted": f"child exited with {proc.returncode}", "elapsed_seconds": elapsed}
        result = json.loads(result_path.read_text())
        result["sampled_peak_rss_mb"] = sampled_max_mb
        result["sampled_peak_tree_rss_mb"] = tree_max_mb
        return result
    finally:
        result_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(common.SIZES), default="1m",
                        help="generated data size when --data-dir is not given (cached)")
    parser.add_argument("--data-dir", type=Path, help="a folder with users.csv, items.csv, events.csv")
    parser.add_argument("--db", type=Path, help="database file to build (default: in the cache folder)")
    parser.add_argument("--runs", type=int, help="builds to time (default 3; 1 when events > 5M)")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    parser.add_argument("--no-reference", action="store_true", help="skip the scipy reference")
    parser.add_argument("--reference", choices=["both", "exact", "model"], default="both",
                        help="exact: whole histories; model: with the model's similarity_history_cap; "
                        "both (default; one computation when no history is over the cap)")
    parser.add_argument("--cap-order", choices=["recency", "strength"], default="recency",
                        help="which items of a long history the cap keeps, as sql/40 does (default recency: "
                        "last watched desc, strength desc, item key)")
    parser.add_argument("--max-seconds", type=float, default=600, help="kill a child after this long")
    parser.add_argument("--max-rss-gb", type=float, default=12, help="kill a child above this RSS")
    parser.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb",
                        help="spark: each run builds with DuckDB, then on Spark (the same pinned defaults), and "
                        "checks that both export the same top 10 for every user")
    parser.add_argument("--spark-master", default="local[2]", help="Spark master for --engine spark (default local[2])")
    parser.add_argument("--spark-driver-memory", default="4g",
                        help="the Spark driver's JVM heap (local mode: driver and executor), default 4g")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--child", choices=["build", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.child == "build":
            result = child_build(args.db, args.data_dir, args.threads, args.engine, args.spark_master)
        else:
            result = child_reference(args.db, args.threads, args.reference, args.cap_order)
        args.result.write_text(json.dumps(result))
        return 0

    data_dir = common.ensure_data(args.data_dir, args.size)
    if args.engine == "spark":
        return main_spark(args, data_dir)
    shape = common.data_shape(data_dir)
    runs = args.runs or (1 if shape["events"] > 5_000_000 else 3)
    db = args.db or common.default_db(data_dir, "bench-build")
    env = common.environment()
    print(f"data {data_dir} ({shape['users']:,} users, {shape['items']:,} items, {shape['events']:,} events); "
          f"db {db}; {runs} run(s), {args.threads} DuckDB threads; commit {env['commit']}", file=sys.stderr)

    max_rss_mb = args.max_rss_gb * 1024
    builds = []
    for run in range(runs):
        load_before = os.getloadavg()[0]
        result = run_child(["build", "--db", str(db), "--data-dir", str(data_dir), "--threads", str(args.threads)],
                           args.max_seconds, max_rss_mb)
        result["load_average_before"] = load_before
        builds.append(result)
        if "aborted" in result:
            print(f"run {run + 1}: ABORTED: {result['aborted']}", file=sys.stderr)
            for leftover in db.parent.glob(f"{db.name}.building-*"):
                leftover.unlink(missing_ok=True)
            break
        print(f"run {run + 1}: {result['wall_seconds']:.2f} s, peak RSS {result['peak_rss_mb']:,.0f} MB, "
              f"CPU {result['cpu_seconds']:.1f} s, load average before {load_before:.2f}", file=sys.stderr)

    done = [b for b in builds if "aborted" not in b]
    step_names: list[str] = []
    for b in done:
        for name, _ in b["steps"]:
            if name not in step_names:
                step_names.append(name)
    steps = {name: median([dict(b["steps"]).get(name) for b in done]) for name in step_names}
    steps_min = {name: min((dict(b["steps"]).get(name, float("inf")) for b in done), default=None)
                 for name in step_names}
    similarity_step = next((name for name in step_names if "similarity" in name), None)
    summary = {
        "environment": env,
        "data_dir": str(data_dir),
        "data": shape,
        "threads": args.threads,
        "runs": len(done),
        "aborted": next((b["aborted"] for b in builds if "aborted" in b), None),
        "wall_seconds_median": median([b["wall_seconds"] for b in done]),
        "wall_seconds_min": min((b["wall_seconds"] for b in done), default=None),
        "wall_seconds_runs": [b["wall_seconds"] for b in done],
        "cpu_seconds_runs": [b["cpu_seconds"] for b in done],
        "load_average_before_runs": [b["load_average_before"] for b in builds],
        "peak_rss_mb_max": max((b["peak_rss_mb"] for b in done), default=None),
        "peak_rss_mb_runs": [b["peak_rss_mb"] for b in done],
        "steps_median_seconds": steps,
        "steps_min_seconds": steps_min,
        "rows": done[-1]["rows"] if done else None,
        "code_fingerprints": sorted({b["code_fingerprint"] for b in done}),
        "builds": builds,
    }

    reference = None
    if done and not args.no_reference:
        reference = run_child(["reference", "--db", str(db), "--threads", str(args.threads),
                               "--reference", args.reference, "--cap-order", args.cap_order],
                              args.max_seconds, max_rss_mb)
        if "aborted" not in reference and similarity_step:
            sql_seconds = steps[similarity_step]
            reference["sql_similarity_seconds"] = sql_seconds
            for ref in reference["references"].values():
                ref["ratio_sql_to_scipy"] = sql_seconds / ref["product_topn_seconds"]
                ref["ratio_sql_to_scipy_total"] = sql_seconds / ref["total_seconds"]
        summary["scipy_reference"] = reference

    print_summary(summary, similarity_step)
    common.write_json(args.json, summary)
    return 0


def main_spark(args, data_dir: Path) -> int:
    """--engine spark: per run, a DuckDB build and a Spark build of the same data and parameters,
    timed and measured alike, then the two recs.db compared by their export --k 10."""
    shape = common.data_shape(data_dir)
    runs = args.runs or 1
    env = common.environment()
    os.environ["RECS_SPARK_DRIVER_MEMORY"] = args.spark_driver_memory
    print(f"data {data_dir} ({shape['users']:,} users, {shape['items']:,} items, {shape['events']:,} events); "
          f"{runs} run(s); DuckDB {args.threads} threads, Spark {args.spark_master} with a "
          f"{args.spark_driver_memory} driver; commit {env['commit']}", file=sys.stderr)
    max_rss_mb = args.max_rss_gb * 1024
    dbs = {name: common.default_db(data_dir, f"bench-build-{name}") for name in ("duckdb", "spark")}
    results: dict[str, list[dict]] = {"duckdb": [], "spark": []}
    for run in range(runs):
        for name, db in dbs.items():
            load_before = os.getloadavg()[0]
            result = run_child(["build", "--db", str(db), "--data-dir", str(data_dir), "--threads",
                                str(args.threads), "--engine", name, "--spark-master", args.spark_master],
                               args.max_seconds, max_rss_mb)
            result["load_average_before"] = load_before
            results[name].append(result)
            if "aborted" in result:
                print(f"run {run + 1} {name}: ABORTED: {result['aborted']}", file=sys.stderr)
                continue
            print(f"run {run + 1} {name}: {result['wall_seconds']:.1f} s, peak RSS {result['peak_rss_mb']:,.0f} MB "
                  f"(with child processes {result['sampled_peak_tree_rss_mb']:,.0f} MB), load average before "
                  f"{load_before:.2f}", file=sys.stderr)
    same = None
    if all(results[name] and "aborted" not in results[name][-1] for name in dbs):
        same = same_exports(dbs["duckdb"], dbs["spark"])
    summary = {
        "environment": env,
        "data_dir": str(data_dir),
        "data": shape,
        "threads": args.threads,
        "spark_master": args.spark_master,
        "spark_driver_memory": args.spark_driver_memory,
        "exports_equal": same,
        "builds": results,
    }
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Build on DuckDB and on Spark ({args.spark_master}): {shape['events']:,} events, "
                  f"commit {env['commit']}")
    for column in ("engine", "wall s (each run)", "python peak RSS MB", "with JVM (driver+executor) MB", "steps (last run)"):
        table.add_column(column)
    for name, runs_of in results.items():
        done = [r for r in runs_of if "aborted" not in r]
        if not done:
            table.add_row(name, "ABORTED: " + runs_of[-1]["aborted"] if runs_of else "-", "", "", "")
            continue
        steps = ", ".join(f"{step} {seconds:.1f}" for step, seconds in done[-1]["steps"])
        table.add_row(name, ", ".join(f"{r['wall_seconds']:.1f}" for r in done),
                      f"{max(r['peak_rss_mb'] for r in done):,.0f}",
                      f"{max(r['sampled_peak_tree_rss_mb'] for r in done):,.0f}", steps)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if same is not None:
        print(f"export --k 10: {same['rows']:,} rows; identical lists (user, rank, item, source, reason): "
              f"{same['identical_lists']}; largest relative score difference {same['max_rel_score_diff']:.1e}")
    common.write_json(args.json, summary)
    return 0


def same_exports(duck_db: Path, spark_db: Path) -> dict:
    """Both databases' top 10 for every user (engine.Recommender.export), compared row by row."""
    import csv

    import engine

    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as scratch:
        for name, db in (("duckdb", duck_db), ("spark", spark_db)):
            out = Path(scratch) / f"{name}.csv"
            engine.Recommender(db, auto_build=False).export(out, 10, None)
            with out.open(encoding="utf-8", newline="") as handle:
                rows[name] = list(csv.reader(handle))[1:]
    duck, spark = rows["duckdb"], rows["spark"]
    identical = len(duck) == len(spark) and all(a[:3] + a[4:] == b[:3] + b[4:] for a, b in zip(duck, spark))
    diffs = [abs(float(a[3]) - float(b[3])) / max(abs(float(a[3])), 1e-300) for a, b in zip(duck, spark)]
    return {"rows": len(duck), "identical_lists": identical, "max_rel_score_diff": max(diffs, default=0.0)}


def print_summary(summary: dict, similarity_step: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 110)
    data = summary["data"]
    title = (f"Build: {data['users']:,} users, {data['items']:,} items, {data['events']:,} events — "
             f"{summary['runs']} run(s), {summary['threads']} threads, commit {summary['environment']['commit']} "
             f"(code {summary['environment']['code_fingerprint']})")
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    if summary["aborted"]:
        table.add_row("ABORTED", summary["aborted"])
    if len(summary["code_fingerprints"]) > 1:
        table.add_row("WARNING", "the code changed between runs: " + ", ".join(summary["code_fingerprints"]))
    table.add_row("full build, median / min wall s",
                  f"{fmt(summary['wall_seconds_median'])} / {fmt(summary['wall_seconds_min'])}")
    table.add_row("full build, each run s", ", ".join(fmt(s) for s in summary["wall_seconds_runs"]))
    table.add_row("  CPU s (user+sys) / load average before, each run",
                  ", ".join(f"{c:.1f} / {la:.1f}" for c, la in
                            zip(summary["cpu_seconds_runs"], summary["load_average_before_runs"])))
    table.add_row("peak RSS, MB (max of runs)", fmt(summary["peak_rss_mb_max"], 0))
    for name, seconds in summary["steps_median_seconds"].items():
        table.add_row(f"  step: {name} (median / min)", f"{fmt(seconds)} / {fmt(summary['steps_min_seconds'][name])}")
    if summary["rows"]:
        table.add_row("rows", ", ".join(f"{k} {v:,}" for k, v in summary["rows"].items()))
    console.print(table)
    reference = summary.get("scipy_reference")
    if not reference:
        return
    if "aborted" in reference:
        console.print(f"scipy reference ABORTED: {reference['aborted']}")
        return
    references = reference["references"]
    modes = [m for m in ("exact", "model") if m in references]
    same = not reference["users_over_cap"]
    labels = {"exact": "exact (whole histories)" + (" = model's" if same else ""),
              "model": f"model's cap ({reference['history_cap_in_model']}, {reference['cap_order']})"}
    ref_table = Table(title=f"scipy.sparse reference of '{similarity_step}' (single-threaded, scipy "
                      f"{reference['scipy_version']})")
    ref_table.add_column("figure")
    for mode in modes:
        ref_table.add_column(labels[mode], justify="right")

    def row(label: str, key: str, digits: int = 2, fmt_value=None) -> None:
        ref_table.add_row(label, *[(fmt_value or (lambda v: fmt(v, digits)))(references[m].get(key)) for m in modes])

    row("prep (weights, CSR) s", "prep_seconds")
    row("X^T X + top-N s", "product_topn_seconds")
    row("support of kept pairs s", "support_seconds")
    row("total s", "total_seconds")
    row("co-viewed item pairs (ordered)", "coviewed_pairs")
    if similarity_step:
        ref_table.add_row("SQL step s (median of runs)", *[fmt(reference["sql_similarity_seconds"])] * len(modes))
        row("ratio SQL / (X^T X + top-N)", "ratio_sql_to_scipy")
        row("ratio SQL / total", "ratio_sql_to_scipy_total")
    row("top-10 overlap, mean over items", "top10_overlap", 4)
    row(f"top-{reference['params']['max_neighbors']} overlap", "topN_overlap", 4)
    row("identical ordered top-10 lists", "identical_top10_share", 4)
    row("max rel. similarity diff (common pairs)", "max_rel_similarity_diff", fmt_value=lambda v: f"{v:.2e}")
    row("support mismatches (common pairs)", "support_mismatches")
    console.print(ref_table)
    notes = [f"load from DuckDB {reference['load_seconds']:.2f} s (not counted); reference peak RSS "
             f"{reference['peak_rss_mb']:,.0f} MB; {reference['nonzeros']:,} user-item strengths > 0; "
             f"longest history {reference['longest_history']:,} items"]
    if reference["history_cap_in_model"]:
        notes.append(f"similarity_history_cap = {reference['history_cap_in_model']}: "
                     f"{reference['users_over_cap']:,} users over it")
    if reference["unknown_params"]:  # parameters added to the model since this script was written
        notes.append("WARNING: model_params the reference ignores: " + ", ".join(reference["unknown_params"]))
    for note in notes:
        console.print(note)


if __name__ == "__main__":
    sys.exit(main())
