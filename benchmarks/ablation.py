"""Ablation: which modelling choice buys how much, measured with `evaluate`.

    python benchmarks/ablation.py --data-dir ../shared/datasets/ml100k --split both

Each row is the default model with one thing changed (or the baseline the
change is measured against). The data is loaded and split once per split;
each variant refits only the model tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from engine import ModelParams  # noqa: E402
from engine.evaluate import MOST_POPULAR, Evaluation  # noqa: E402

DEFAULT = ModelParams()


def variants() -> dict[str, ModelParams]:
    """Named model variants: each differs from the default in one way."""
    change = lambda **kw: dataclasses.replace(DEFAULT, **kw)  # noqa: E731
    return {
        "most popular": MOST_POPULAR,
        "default": DEFAULT,
        "plain cosine (alpha 0.5, gamma 0, 50 neighbours)": change(
            similarity_alpha=0.5, user_weight_gamma=0, max_neighbors=50
        ),
        "no user weighting (gamma 0)": change(user_weight_gamma=0),
        "symmetric cosine (alpha 0.5)": change(similarity_alpha=0.5),
        "50 neighbours": change(max_neighbors=50),
        "100 neighbours": change(max_neighbors=100),
        "strength: raw seconds": change(strength_formula="seconds"),
        "strength: log seconds": change(strength_formula="log_seconds"),
        "strength: binary": change(strength_formula="binary"),
        "strength: full views, no log": change(strength_formula="views"),
        "recency: half-life 30 d": change(half_life_days=30),
        "recency in the user's history: half-life 1 d": change(user_half_life_days=1),
        "trending popularity: half-life 14 d": change(trending_half_life_days=14),
        "popularity penalty beta 0.3": change(popularity_beta=0.3),
        "all of each history in similarity (no cap)": change(similarity_history_cap=0),
        "latest 100 items of each history": change(similarity_history_cap=100),
        "latest 50 items of each history": change(similarity_history_cap=50),
        "min support 2": change(min_support=2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--split", choices=["global", "user", "both"], default="both")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--test-frac", type=float, default=0.2)
    parser.add_argument("--only", nargs="*", help="names of variants to run (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    console = Console()
    if not args.data_dir.is_dir():
        console.print(f"No data folder at {args.data_dir}; nothing to evaluate.")
        return
    chosen = {name: params for name, params in variants().items() if not args.only or name in args.only}
    results = []
    for split in (["global", "user"] if args.split == "both" else [args.split]):
        with Evaluation(args.data_dir, split, args.test_frac) as evaluation:
            table = Table(title=f"{args.data_dir.name}, {split} split, k={args.k}: {len(evaluation.relevant)} users")
            for column in ("variant", "NDCG", "Recall", "HR", "coverage", "fit s"):
                table.add_column(column, justify="left" if column == "variant" else "right")
            for name, params in chosen.items():
                scores = evaluation.score(name, params, args.k)
                results.append({"dataset": args.data_dir.name, "split": split, **dataclasses.asdict(scores)})
                table.add_row(
                    name,
                    f"{scores.ndcg:.4f}",
                    f"{scores.recall:.4f}",
                    f"{scores.hit_rate:.3f}",
                    f"{scores.coverage:.1%}",
                    f"{scores.fit_seconds:.2f}",
                )
            console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
