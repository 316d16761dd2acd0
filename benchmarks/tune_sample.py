"""How close tuning on a sample of users comes to tuning on all of them, as the sample shrinks.

For each dataset and split, nested (the test part is never seen by any
tuning): the training part is tuned on every event (what a build below
500,000 events does), then on samples of users holding about N events
(`build --tune-sample N`), each sample's choice scored twice on the test
part: as the sample chose it ("raw", what a build ships) and with the
parameters weighed against sums over users (SCALED_WITH_USERS) divided by
the sample's share of users ("rescaled", the alternative measured and
not shipped). Each score is NDCG@10 by the same metric code as every other
comparison (engine.metrics); the paired difference with the full tuning
(per user, the same users) is given with its standard error.

    python benchmarks/tune_sample.py --data-dir ../shared/datasets/ml100k --data-dir data --lookalikes \\
        --samples 50000 20000 10000 --json out/tune-sample.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for common, lookalikes
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for engine/

import lookalikes  # noqa: E402
from common import environment  # noqa: E402

from engine import tune  # noqa: E402
from engine.config import ModelParams  # noqa: E402
from engine.evaluate import Evaluation  # noqa: E402
from engine.metrics import mean_and_standard_error, ndcg_at_k  # noqa: E402

K = 10
SCALED_WITH_USERS = ("support_shrinkage", "ease_lambda")
"""Parameters weighed against sums over users: support_shrinkage against a pair's support (the users
who watched both), ease_lambda against the Gram matrix X'X. On a sample holding a share s of the
users those sums are about s times the full data's, so in theory the sample's choice / s fits the
full data."""


def rescaled(params: ModelParams, share: float) -> ModelParams:
    """params with SCALED_WITH_USERS divided by share (the sample's share of the users)."""
    return params.replace(**{name: getattr(params, name) / share for name in SCALED_WITH_USERS})
DEFAULT_ML100K = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml100k"


def per_user_ndcg(evaluation: Evaluation, params: ModelParams) -> dict[str, float]:
    """NDCG@K of each evaluated user for a model fitted with params on the training part."""
    evaluation.fit(params)
    lists = evaluation.recommendations(K)
    return {user: ndcg_at_k(lists.get(user, [])[:K], items, K) for user, items in evaluation.relevant.items()}


def paired(full: dict[str, float], other: dict[str, float]) -> tuple[float, float, float]:
    """(mean of other, mean of other - full, its standard error) over the same users."""
    users = sorted(full)
    mean, _ = mean_and_standard_error([other[u] for u in users])
    difference, error = mean_and_standard_error([other[u] - full[u] for u in users])
    return mean, difference, error


def changed(params: ModelParams, reference: ModelParams) -> dict:
    """The parameters of params that differ from reference."""
    base = reference.as_dict()
    return {name: value for name, value in params.as_dict().items() if base[name] != value}


def run(name: str, folder: Path, split: str, samples: list[int]) -> list[dict]:
    rows = []
    with Evaluation(folder, split) as evaluation:
        events = evaluation.train_events
        started = time.process_time()
        full = tune.tune(evaluation.con)
        full_cpu = time.process_time() - started
        full_scores = per_user_ndcg(evaluation, full.params)
        mean, _, _ = paired(full_scores, full_scores)
        rows.append({
            "dataset": name, "split": split, "train_events": events, "sample": None, "sampled_events": events,
            "cpu_seconds": round(full_cpu, 1), "trials": len(full.trials), "ndcg": mean,
            "params": changed(full.params, ModelParams()),
        })
        print(f"{name} {split}: full tuning, {len(full.trials)} trials, {full_cpu:.0f} s CPU, NDCG@10 {mean:.4f}, "
              f"{changed(full.params, ModelParams())}", flush=True)
        for sample in samples:
            if sample >= events:
                continue
            started = time.process_time()
            result = tune.tune(evaluation.con, sample_events=sample)
            cpu = time.process_time() - started
            row = {
                "dataset": name, "split": split, "train_events": events, "sample": sample,
                "sampled_events": result.sampled_events, "sample_share": result.sample_share,
                "cpu_seconds": round(cpu, 1), "trials": len(result.trials), "skipped": result.skipped,
            }
            scaled = rescaled(result.params, result.sample_share) if result.sample_share else result.params
            for variant, params in (("raw", result.params), ("rescaled", scaled)):
                scores = full_scores if params == full.params else per_user_ndcg(evaluation, params)
                mean, difference, error = paired(full_scores, scores)
                row[variant] = {
                    "ndcg": mean, "difference": difference, "se": error, "same_as_full": params == full.params,
                    "params": changed(params, full.params),
                }
            rows.append(row)
            print(
                f"{name} {split}: sample {sample:,} ({result.sampled_events or 0:,} events, "
                f"{len(result.trials)} trials, {cpu:.0f} s CPU): raw {row['raw']['ndcg']:.4f} "
                f"({row['raw']['difference']:+.4f} ± {row['raw']['se']:.4f}), rescaled {row['rescaled']['ndcg']:.4f} "
                f"({row['rescaled']['difference']:+.4f} ± {row['rescaled']['se']:.4f}); "
                f"differs from full in {row['rescaled']['params']}",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, action="append", default=[])
    parser.add_argument("--lookalikes", action="store_true", help="add a-gen, a-ml and b-gen (benchmarks/lookalikes.py)")
    parser.add_argument("--ml100k", type=Path, default=None)
    parser.add_argument("--split", choices=("global", "user", "both"), default="global")
    parser.add_argument("--samples", type=int, nargs="+", default=[50_000, 20_000, 10_000])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folders = {folder.resolve().name: folder for folder in args.data_dir if (folder / "events.csv").is_file()}
    if args.lookalikes:
        ml100k = args.ml100k or next((d for d in args.data_dir if d.resolve().name == "ml100k"), DEFAULT_ML100K)
        folders.update(lookalikes.ensure_all(ml100k))
    if not folders:
        print("no data folder found: nothing to measure")
        return
    splits = ("global", "user") if args.split == "both" else (args.split,)
    rows = [row for name, folder in folders.items() for split in splits for row in run(name, folder, split, args.samples)]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": environment(), "k": K, "rows": rows}, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
