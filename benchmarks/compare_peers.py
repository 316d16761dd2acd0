"""Compare our recommender with peers from the `implicit` library.

Every model is scored on the same split and by the same metric code
(engine.metrics.score with the Evaluation's relevant items and catalogue
size). The peers see the user x item matrix of summed training watch
seconds: raw for the nearest-neighbour models, log1p for ALS. Items never
watched in training cannot be recommended by them.

BLAS is limited to one thread while the peers run (threadpoolctl), as
implicit recommends; implicit's own loops use every core (num_threads=0).

    python benchmarks/compare_peers.py --data-dir ../shared/datasets/ml100k --split both
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from implicit.als import AlternatingLeastSquares
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
from implicit.recommender_base import RecommenderBase
from implicit.utils import ParameterWarning
from rich.console import Console
from rich.table import Table
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for engine/

from engine import ModelParams  # noqa: E402
from engine.errors import RecsError  # noqa: E402
from engine.evaluate import MOST_POPULAR, Evaluation  # noqa: E402
from engine.metrics import Scores, score  # noqa: E402

SPLIT_CHOICES = {"global": ("global",), "user": ("user",), "both": ("global", "user")}
DEFAULT_K = 10
DEFAULT_TEST_FRAC = 0.2
NEIGHBOURS = 100
ALS_FACTORS = 64
ALS_REGULARIZATION = 0.01  # implicit's default
ALS_ITERATIONS = 15  # implicit's default
SEED = 42
OURS = {"recs (default)": ModelParams(), "most popular": MOST_POPULAR}
PADDING_SCORE = -np.finfo(np.float32).max
"""implicit pads short lists with id -1 and this score."""
TRAIN_SECONDS = "select user_id, item_id, sum(watch_seconds) from events group by all"
REPORT_WIDTH = 120
"""Table width when stdout is no terminal (Rich would use 80 and wrap every cell)."""

console = Console(width=None if sys.stdout.isatty() else REPORT_WIDTH)
log = Console(stderr=True).log


@dataclass(frozen=True)
class Peer:
    """An implicit model and the confidence it is fitted on."""

    name: str
    make: Callable[[], RecommenderBase]
    log_confidence: bool = False


PEERS = (
    Peer(f"implicit cosine K={NEIGHBOURS}", lambda: CosineRecommender(K=NEIGHBOURS)),
    Peer(f"implicit bm25 K={NEIGHBOURS}", lambda: BM25Recommender(K=NEIGHBOURS)),
    Peer(
        f"implicit als f={ALS_FACTORS}",
        lambda: AlternatingLeastSquares(
            factors=ALS_FACTORS,
            regularization=ALS_REGULARIZATION,
            iterations=ALS_ITERATIONS,
            use_gpu=False,
            random_state=SEED,
        ),
        log_confidence=True,
    ),
)


@dataclass
class TrainMatrix:
    """Summed training seconds as a CSR user x item matrix, with the ids of its rows and columns."""

    seconds: csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray

    def row_of(self, user_id: str) -> int:
        return int(np.searchsorted(self.user_ids, user_id))


def train_matrix(evaluation: Evaluation) -> TrainMatrix:
    """Read the training events of the evaluation's database into a TrainMatrix."""
    users, items, seconds = zip(*evaluation.con.execute(TRAIN_SECONDS).fetchall())
    user_ids, rows = np.unique(np.array(users, dtype=object), return_inverse=True)
    item_ids, columns = np.unique(np.array(items, dtype=object), return_inverse=True)
    shape = (len(user_ids), len(item_ids))
    matrix = csr_matrix((np.array(seconds, dtype=np.float32), (rows, columns)), shape=shape)
    return TrainMatrix(matrix, user_ids, item_ids)


def score_peer(peer: Peer, train: TrainMatrix, evaluation: Evaluation, k: int) -> Scores:
    """Fit one peer on the training matrix and score its top k for every evaluated user."""
    user_items = train.seconds.copy()
    if peer.log_confidence:
        user_items.data = np.log1p(user_items.data)
    model = peer.make()
    started = time.perf_counter()
    model.fit(user_items, show_progress=False)
    fit_seconds = time.perf_counter() - started
    users = sorted(evaluation.relevant)
    rows = np.array([train.row_of(user) for user in users])
    ids, scores = model.recommend(rows, user_items[rows], N=k, filter_already_liked_items=True)
    recommendations = {
        user: [train.item_ids[i] for i, s in zip(user_ids, user_scores) if i >= 0 and s > PADDING_SCORE]
        for user, user_ids, user_scores in zip(users, ids, scores)
    }
    return score(peer.name, recommendations, evaluation.relevant, k, evaluation.catalogue_size, fit_seconds)


def run_split(folder: Path, split: str, k: int, test_frac: float) -> tuple[list[Scores], str]:
    """Score ours, most-popular and every peer on one split; returns the scores and a caption."""
    with Evaluation(folder, split, test_frac, progress=lambda step: log(f"{split}: {step}")) as evaluation:
        results = []
        for name, params in OURS.items():
            log(f"{split}: scoring {name}")
            results.append(evaluation.score(name, params, k))
        train = train_matrix(evaluation)
        for peer in PEERS:
            log(f"{split}: scoring {peer.name}")
            results.append(score_peer(peer, train, evaluation, k))
        caption = (
            f"{evaluation.train_events:,} train / {evaluation.test_events:,} test events; "
            f"{train.seconds.shape[0]:,} x {train.seconds.shape[1]:,} train matrix, "
            f"catalogue {evaluation.catalogue_size:,}"
        )
    return results, caption


def with_error(mean: float, error: float) -> str:
    """A mean with its standard error."""
    return f"{mean:.4f} ± {error:.4f}"


def results_table(title: str, caption: str, results: list[Scores]) -> Table:
    """One row per model: users, NDCG, recall, hit rate, coverage and fit time."""
    k = results[0].k
    table = Table(title=title, caption=caption)
    table.add_column("model")
    for column in ("users", f"NDCG@{k}", f"Recall@{k}", f"HR@{k}", f"coverage@{k}", "fit s"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r.model,
            f"{r.users:,}",
            with_error(r.ndcg, r.ndcg_se),
            with_error(r.recall, r.recall_se),
            with_error(r.hit_rate, r.hit_rate_se),
            f"{r.coverage:.1%}",
            f"{r.fit_seconds:.2f}",
        )
    return table


def ratio_line(results: list[Scores]) -> str:
    """Our NDCG (the first result) against the best peer's."""
    ours = results[0]
    peers = {peer.name for peer in PEERS}
    best = max((r for r in results if r.model in peers), key=lambda r: r.ndcg)
    ratio = f"{ours.ndcg / best.ndcg:.2f}" if best.ndcg else "n/a"
    return f"best peer: {best.model}, NDCG@{best.k} {best.ndcg:.4f}; ours {ours.ndcg:.4f} = {ratio} x the best peer"


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with users.csv, items.csv, events.csv")
    parser.add_argument("--split", choices=SPLIT_CHOICES, default="global")
    parser.add_argument("--k", type=positive_int, default=DEFAULT_K)
    parser.add_argument("--test-frac", type=float, default=DEFAULT_TEST_FRAC)
    parser.add_argument("--json", type=Path, help="write every result to this JSON file")
    return parser.parse_args()


def main() -> None:
    # Cosine and BM25 hand their own normalised matrix to implicit's CSR check, which then warns.
    warnings.filterwarnings("ignore", category=ParameterWarning)
    args = parse_args()
    if not args.data_dir.is_dir():
        print(f"no data folder at {args.data_dir}: nothing to compare")
        return
    dataset = args.data_dir.resolve().name
    records = []
    with threadpool_limits(limits=1, user_api="blas"):
        for split in SPLIT_CHOICES[args.split]:
            try:
                results, caption = run_split(args.data_dir, split, args.k, args.test_frac)
            except RecsError as error:
                sys.exit(f"error: {error}")
            title = f"{dataset}: {split} split, k={args.k}, test_frac={args.test_frac}"
            console.print(results_table(title, caption, results))
            console.print(ratio_line(results))
            records += [{**asdict(r), "split": split, "dataset": dataset, "test_frac": args.test_frac} for r in results]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2) + "\n")
        console.print(f"wrote {len(records)} results to {args.json}")


if __name__ == "__main__":
    main()
