"""Batch benchmark: Recommender.recommend_batch (one set-based query, what
POST /recommendations/batch runs) against the same users asked one at a time.

    python data/generate.py --preset 1m --out DIR
    python cli.py --db DIR/recs.db --data-dir DIR build --no-tune
    python benchmarks/bench_batch.py --db DIR/recs.db

Users u1..uN for N in 10, 100, 1,000: the batch's wall seconds (one run,
after a warm-up batch of 10 other users), and the one-at-a-time cost
estimated from the first min(N, 100) users' recommend() calls. Both answer
the same lists (tests/test_filters.py checks it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a built recs.db")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    recommender = engine.Recommender(args.db, auto_build=False)
    info = recommender.info()
    print(f"{args.db}: {info['events']:,} events, {info['users']:,} users, k={args.k}")
    recommender.recommend_batch([f"u{n}" for n in range(2001, 2011)], args.k)  # warm-up
    for size in (10, 100, 1000):
        users = [f"u{n}" for n in range(1, size + 1)]
        started = time.perf_counter()
        recommender.recommend_batch(users, args.k)
        batch = time.perf_counter() - started
        sample = users[:100]
        started = time.perf_counter()
        for user in sample:
            recommender.recommend(user, args.k)
        each = (time.perf_counter() - started) / len(sample)
        print(f"{size:>5} users: batch {batch:6.2f} s; one at a time {each * size:6.2f} s ({each * 1000:.1f} ms per user)")


if __name__ == "__main__":
    main()
