"""Look-alike datasets: stand-ins with the shapes of two real datasets we hold
back (and never try to obtain), to compare models on data like them.

- A: 16,554 users, 10,506 movies, 100,000 ratings 0-10 (watch_seconds =
  rating x 600), one per user and item, no demographics; very sparse, and
  new releases drive popularity.
- B: 610 users, 9,742 movies, 100,836 ratings 0.5-5 (x 1200), long
  heavy-tailed histories (at least about 20), a long tail of items.

Look-alikes (each a folder with users.csv, items.csv, events.csv in the app's
schema; deterministic, seeded):

- a-gen: A's shape, `python data/generate.py --preset sparse`.
- a-ml:  MovieLens 100K thinned like A: each user keeps a seeded random subset
  of their ratings (lognormal size, median about 4), ratings 1-5 rescaled to
  0-10 (x 600), demographics blanked. Only with --ml100k.
- b-gen: B's shape, `python data/generate.py --preset longtail`.

They are written to --out/<name> (default: the benchmarks cache,
$XDG_CACHE_HOME/recs-bench/lookalikes/<name>) and rebuilt only when the
generator code changes. The shape figures printed are the ones to compare
with the targets: users, items, events, median events per user, share of
items with <= 2 events, and under a global 20% time split (the app's
`sql/evaluation.sql` rule) the evaluated users, their median held-out items
and the share of held-out items never seen in training.

    python benchmarks/lookalikes.py --ml100k ../shared/datasets/ml100k
    python benchmarks/lookalikes.py --ml100k ../shared/datasets/ml100k --out DIR --only a-gen b-gen
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path
from random import Random

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for common.py

from common import ROOT, cache_dir  # noqa: E402

GENERATE = ROOT / "data" / "generate.py"
NAMES = ("a-gen", "a-ml", "b-gen")
GENERATED = {"a-gen": "sparse", "b-gen": "longtail"}  # name: data/generate.py preset
THIN_SEED = 100
THIN_MEDIAN = 4  # median ratings a MovieLens user keeps
THIN_SIGMA = 1.0  # spread of the lognormal number kept
ML_POINT_SECONDS = 1200  # MovieLens: watch_seconds = stars x 1200
A_POINT_SECONDS = 600  # A: watch_seconds = rating (0-10) x 600
TEST_FRAC = 0.2
MARKER = ".complete"
TARGETS = {
    "A": {"users": 16_554, "items": 10_506, "events": 100_000, "evaluated_users": 3_900,
          "median_heldout_per_user": 2, "heldout_cold_share": 0.15},
    "B": {"users": 610, "items": 9_742, "events": 100_836, "min_events_per_user": 20},
}


def default_root() -> Path:
    return cache_dir() / "lookalikes"


def code_digest() -> str:
    """A digest of the code that writes the look-alikes: a change rebuilds them."""
    digest = hashlib.sha256()
    for path in (GENERATE, Path(__file__).resolve()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def write_generated(preset: str, folder: Path) -> None:
    subprocess.run([sys.executable, str(GENERATE), "--preset", preset, "--out", str(folder)], check=True)


def write_thinned_ml(ml100k: Path, folder: Path) -> None:
    """MovieLens 100K thinned to A's sparsity: a random subset per user, ratings on A's 0-10 scale."""
    rng = Random(THIN_SEED)
    folder.mkdir(parents=True, exist_ok=True)
    with (ml100k / "events.csv").open(newline="", encoding="utf-8") as handle:
        events = list(csv.DictReader(handle))
    by_user: dict[str, list[dict]] = {}
    for event in events:
        by_user.setdefault(event["user_id"], []).append(event)
    kept = []
    for user in sorted(by_user, key=lambda u: int(u.lstrip("u")) if u.lstrip("u").isdigit() else u):
        history = by_user[user]
        n = max(1, min(len(history), round(rng.lognormvariate(math.log(THIN_MEDIAN), THIN_SIGMA))))
        kept += rng.sample(history, n)
    rows = []
    for event in kept:
        stars = int(event["watch_seconds"]) / ML_POINT_SECONDS  # 1-5
        rating = (stars - 1) * 2.5  # 0-10
        stamp = event["timestamp"] if event["timestamp"].endswith("Z") else event["timestamp"] + "Z"
        rows.append((stamp, event["user_id"], event["item_id"], round(rating * A_POINT_SECONDS)))
    rows.sort()
    with (folder / "events.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "item_id", "event_type", "watch_seconds", "timestamp"])
        writer.writerows((user, item, "play", seconds, stamp) for stamp, user, item, seconds in rows)
    with (ml100k / "users.csv").open(newline="", encoding="utf-8") as handle:
        users = [row["user_id"] for row in csv.DictReader(handle)]
    with (folder / "users.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["user_id", "age", "gender", "region"])
        writer.writerows((user, "", "", "") for user in users)
    with (ml100k / "items.csv").open(newline="", encoding="utf-8") as handle:
        items = list(csv.DictReader(handle))
    with (folder / "items.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["item_id", "title", "content_type", "genre"])
        writer.writerows((item["item_id"], item["title"], "movie", item["genre"]) for item in items)


def ensure(name: str, root: Path, ml100k: Path | None, force: bool = False) -> Path | None:
    """The folder of one look-alike, written when missing or stale; None when it cannot be made."""
    folder = root / name
    digest = code_digest()
    marker = folder / MARKER
    if not force and marker.is_file() and marker.read_text().strip() == digest:
        return folder
    if name in GENERATED:
        write_generated(GENERATED[name], folder)
    elif name == "a-ml":
        if ml100k is None or not (ml100k / "events.csv").is_file():
            print(f"a-ml: no MovieLens 100K at {ml100k}; skipped", file=sys.stderr)
            return None
        write_thinned_ml(ml100k, folder)
    else:
        raise ValueError(f"unknown look-alike {name!r}")
    marker.write_text(digest + "\n")
    return folder


def ensure_all(ml100k: Path | None, root: Path | None = None, names=NAMES, force: bool = False) -> dict[str, Path]:
    """Every look-alike that can be made: name -> folder."""
    root = root or default_root()
    folders = {name: ensure(name, root, ml100k, force) for name in names}
    return {name: folder for name, folder in folders.items() if folder is not None}


def shape(folder: Path, test_frac: float = TEST_FRAC) -> dict:
    """Shape figures of a data folder; the split follows sql/evaluation.sql's global rule."""
    con = duckdb.connect()
    con.execute(
        "create table e as select user_id, item_id, cast(timestamp as timestamptz) as t "
        f"from read_csv('{folder / 'events.csv'}', header = true, all_varchar = true)"
    )
    users, items = (
        con.execute(f"select count(*) from read_csv('{folder / name}', header = true, all_varchar = true)").fetchone()[0]
        for name in ("users.csv", "items.csv")
    )
    figures = con.execute(
        f"""
        with per_user as (select user_id, count(*) as n from e group by 1),
        per_item as (select item_id, count(*) as n from e group by 1),
        catalogue as (
            select i.item_id, coalesce(p.n, 0) as n
            from read_csv('{folder / 'items.csv'}', header = true, all_varchar = true) as i
            left join per_item as p using (item_id)
        ),
        cutoff as (select percentile_disc(1 - {test_frac}) within group (order by t) as cut_at from e),
        split as (select e.*, e.t > cutoff.cut_at as is_test from e, cutoff),
        train as (select * from split where not is_test),
        relevant as (
            select distinct s.user_id, s.item_id from split as s
            where s.is_test and s.user_id in (select user_id from train)
                and not exists (select 1 from train where train.user_id = s.user_id and train.item_id = s.item_id)
        ),
        per_evaluated as (select user_id, count(*) as n from relevant group by 1)
        select
            (select count(*) from e),
            (select count(*) from per_user),
            (select median(n) from per_user),
            (select min(n) from per_user),
            (select max(n) from per_user),
            (select avg((n <= 2)::int) from catalogue),
            (select count(*) from per_evaluated),
            (select median(n) from per_evaluated),
            (select avg((item_id not in (select item_id from train))::int) from relevant),
            (select count(distinct item_id) filter (where item_id not in (select item_id from train))
                / count(distinct item_id) from relevant),
            (select min(t) from e)::varchar,
            (select max(t) from e)::varchar,
            (select cut_at from cutoff)::varchar
        """
    ).fetchone()
    con.close()
    keys = ("events", "users_with_events", "median_events_per_user", "min_events_per_user",
            "max_events_per_user", "items_le2_share", "evaluated_users", "median_heldout_per_user",
            "heldout_cold_share", "heldout_cold_item_share", "first_event", "last_event", "cutoff")
    return {"users": users, "items": items, **dict(zip(keys, figures))}


def shape_line(name: str, figures: dict) -> str:
    f = figures
    return (
        f"{name}: {f['users']:,} users, {f['items']:,} items, {f['events']:,} events; "
        f"events/user median {f['median_events_per_user']:g} (min {f['min_events_per_user']}, max {f['max_events_per_user']:,}); "
        f"items with <=2 events {f['items_le2_share']:.1%}; global {TEST_FRAC:.0%} split: "
        f"{f['evaluated_users']:,} evaluated users, median {f['median_heldout_per_user']:g} held-out items, "
        f"{f['heldout_cold_share']:.1%} of held-out items never seen in training "
        f"({f['heldout_cold_item_share']:.1%} of distinct held-out items)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ml100k", type=Path, help="MovieLens 100K folder in the app's schema (for a-ml)")
    parser.add_argument("--out", type=Path, help=f"parent folder of the look-alikes (default {default_root()})")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    parser.add_argument("--force", action="store_true", help="rewrite even when up to date")
    parser.add_argument("--ready", type=Path, help="append 'READY <name> <folder>' lines to this file")
    parser.add_argument("--json", type=Path, help="write the shape figures to this JSON file")
    args = parser.parse_args()
    folders = ensure_all(args.ml100k, args.out, args.only, args.force)
    figures = {}
    for name, folder in folders.items():
        if args.ready:
            with args.ready.open("a") as handle:
                handle.write(f"READY {name} {folder.resolve()}\n")
        figures[name] = shape(folder)
        print(shape_line(name, figures[name]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"targets": TARGETS, "lookalikes": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
