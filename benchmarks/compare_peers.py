"""Compare our recommender with eight peers, on several datasets and splits in one run.

The peers, the same in every run: most-popular (the app's popular fill,
engine.evaluate.MOST_POPULAR), the two trend lists (most watched over the
training part's last 7 and 30 days, engine.evaluate.TRENDS), the `implicit`
library's item cosine and BM25 (K=100) and ALS (64 factors), EASE (lambda
500) and RP3beta (alpha 1, beta 0.5, K=100) from benchmarks/peers.py. Our
models come from our_models().

Every model is scored on the same split and by the same metric code
(engine.metrics.score with the Evaluation's relevant items and catalogue
size), so no model is measured differently. The implicit peers see the user x
item matrix of summed training watch seconds (raw for cosine and BM25, log1p
for ALS); EASE and RP3beta the binary matrix (1 for any training event). All
of them exclude every item the user watched in training, as our model does by
default. Items never watched in training cannot be recommended by the
matrix peers.

BLAS is limited to one thread while the implicit peers run (threadpoolctl), as
implicit recommends; implicit's own loops use every core (num_threads=0).
EASE's matrix inverse uses every BLAS thread.

    python benchmarks/compare_peers.py --data-dir ../shared/datasets/ml100k --data-dir data \\
        --lookalikes --split both --json out/peers.json
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
from implicit.utils import ParameterWarning
from rich.console import Console
from rich.table import Table
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for common, peers, lookalikes
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for engine/

import lookalikes  # noqa: E402
import peers  # noqa: E402
from common import ROOT, environment  # noqa: E402

from engine import ModelParams  # noqa: E402
from engine.errors import RecsError  # noqa: E402
from engine.evaluate import MOST_POPULAR, TRENDS, TUNED, Evaluation  # noqa: E402
from engine.metrics import Scores, score  # noqa: E402

SPLIT_CHOICES = {"global": ("global",), "user": ("user",), "both": ("global", "user")}
DEFAULT_K = 10
DEFAULT_TEST_FRAC = 0.2
NEIGHBOURS = 100
ALS_FACTORS = 64
ALS_REGULARIZATION = 0.01  # implicit's default
ALS_ITERATIONS = 15  # implicit's default
SEED = 42
PADDING_SCORE = -np.finfo(np.float32).max
"""implicit pads short lists with id -1 and this score."""
TRAIN_SECONDS = "select user_id, item_id, sum(watch_seconds) from events group by all"
DEFAULT_ML100K = ROOT.parent / "shared" / "datasets" / "ml100k"
REPORT_WIDTH = 140
"""Table width when stdout is no terminal (Rich would use 80 and wrap every cell)."""

console = Console(width=None if sys.stdout.isatty() else REPORT_WIDTH)
log = Console(stderr=True).log

OurModel = ModelParams | None | Callable[[Evaluation, int], Scores]
"""ModelParams or TUNED (scored by Evaluation.score) or a function (evaluation, k) -> Scores."""


def our_models() -> dict[str, OurModel]:
    """Our models, by name; every one is compared with every peer. The first is 'ours' in the summary.

    'recs (tuned)' is what a plain build makes: parameters tuned on a
    validation split of the training part (the test part is never seen).
    """
    return {"recs (tuned)": TUNED, "recs (defaults)": ModelParams()}


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


@dataclass(frozen=True)
class ImplicitPeer:
    """An implicit model and the confidence it is fitted on."""

    name: str
    make: Callable[[], object]
    log_confidence: bool = False

    def fit_recommend(self, train: TrainMatrix, rows: np.ndarray, k: int) -> tuple[list[list[int]], float]:
        user_items = train.seconds.copy()
        if self.log_confidence:
            user_items.data = np.log1p(user_items.data)
        # A watch of 0 seconds (a rating of 0) is no confidence: fitted without it (implicit's cosine
        # would divide 0 by 0 for an item with only such watches), but still filtered as watched.
        confidence = user_items.copy()
        confidence.eliminate_zeros()
        with threadpool_limits(limits=1, user_api="blas"):
            model = self.make()  # ALS checks the BLAS threads when it is made
            started = time.perf_counter()
            model.fit(confidence, show_progress=False)
            fit_seconds = time.perf_counter() - started
            ids, scores = model.recommend(rows, user_items[rows], N=k, filter_already_liked_items=True)
        lists = [[i for i, s in zip(user_ids, user_scores) if i >= 0 and s > PADDING_SCORE]
                 for user_ids, user_scores in zip(ids, scores)]
        return lists, fit_seconds


@dataclass(frozen=True)
class MatrixPeer:
    """A peer of benchmarks/peers.py: item x item weights fitted on the binary training matrix."""

    name: str
    weights: Callable[[csr_matrix], object]

    def fit_recommend(self, train: TrainMatrix, rows: np.ndarray, k: int) -> tuple[list[list[int]], float]:
        x = peers.binary(train.seconds)
        started = time.perf_counter()
        weights = self.weights(x)
        fit_seconds = time.perf_counter() - started
        return [list(items) for items in peers.recommend(x, weights, rows, k)], fit_seconds


MOST_POPULAR_NAME = "most popular"
MATRIX_PEERS = (
    ImplicitPeer(f"implicit cosine K={NEIGHBOURS}", lambda: CosineRecommender(K=NEIGHBOURS)),
    ImplicitPeer(f"implicit bm25 K={NEIGHBOURS}", lambda: BM25Recommender(K=NEIGHBOURS)),
    ImplicitPeer(
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
    MatrixPeer(f"EASE lambda={peers.EASE_LAMBDA:g}", peers.ease_weights),
    MatrixPeer(
        f"RP3beta a={peers.RP3_ALPHA:g} b={peers.RP3_BETA:g} K={peers.RP3_NEIGHBOURS}", peers.rp3beta_weights
    ),
)
PEER_NAMES = (MOST_POPULAR_NAME, *(trend.name for trend in TRENDS), *(peer.name for peer in MATRIX_PEERS))


def score_matrix_peer(peer, train: TrainMatrix, evaluation: Evaluation, k: int) -> Scores:
    """Fit one matrix peer and score its top k for every evaluated user."""
    users = sorted(evaluation.relevant)
    rows = np.array([train.row_of(user) for user in users], dtype=np.int64)
    started = time.perf_counter()
    lists, fit_seconds = peer.fit_recommend(train, rows, k)
    log(f"  {peer.name}: fit {fit_seconds:.1f} s, fit + recommend {time.perf_counter() - started:.1f} s")
    recommendations = {user: [train.item_ids[i] for i in items] for user, items in zip(users, lists)}
    return score(peer.name, recommendations, evaluation.relevant, k, evaluation.catalogue_size, fit_seconds)


def score_ours(name: str, model: OurModel, evaluation: Evaluation, k: int) -> Scores:
    if model is TUNED or isinstance(model, ModelParams):
        return evaluation.score(name, model, k)
    return model(evaluation, k)


@dataclass
class SplitResult:
    dataset: str
    split: str
    caption: str
    figures: dict
    scores: list[Scores]


def run_split(dataset: str, folder: Path, split: str, k: int, test_frac: float) -> SplitResult:
    """Score our models and every peer on one split of one dataset."""
    def progress(step: str) -> None:
        log(f"{dataset} {split}: {step}")

    with Evaluation(folder, split, test_frac, progress=progress) as evaluation:
        results = []
        for name, model in our_models().items():
            progress(f"scoring {name}")
            results.append(score_ours(name, model, evaluation, k))
        progress(f"scoring {MOST_POPULAR_NAME}")
        results.append(evaluation.score(MOST_POPULAR_NAME, MOST_POPULAR, k))
        for trend in TRENDS:
            progress(f"scoring {trend.name}")
            results.append(evaluation.score(trend.name, trend, k))
        train = train_matrix(evaluation)
        for peer in MATRIX_PEERS:
            progress(f"scoring {peer.name}")
            results.append(score_matrix_peer(peer, train, evaluation, k))
        relevant_pairs = sum(len(items) for items in evaluation.relevant.values())
        trained = set(train.item_ids)
        cold = sum(item not in trained for items in evaluation.relevant.values() for item in items)
        figures = {
            "train_events": evaluation.train_events,
            "test_events": evaluation.test_events,
            "train_users": int(train.seconds.shape[0]),
            "train_items": int(train.seconds.shape[1]),
            "catalogue": evaluation.catalogue_size,
            "evaluated_users": len(evaluation.relevant),
            "relevant_pairs": relevant_pairs,
            "relevant_cold_share": cold / relevant_pairs if relevant_pairs else 0.0,
            # what 'recs (tuned)' chose on the training part, as changes from the defaults
            "tuned_changes": (
                ModelParams().changes_to(evaluation.tuned.params) if evaluation.tuned is not None else None
            ),
            "tuned_trials": len(evaluation.tuned.trials) if evaluation.tuned is not None else None,
            "tuning_skipped": evaluation.tuned.skipped if evaluation.tuned is not None else None,
        }
    caption = (
        f"{figures['train_events']:,} train / {figures['test_events']:,} test events; "
        f"{figures['train_users']:,} x {figures['train_items']:,} train matrix, catalogue {figures['catalogue']:,}; "
        f"{figures['evaluated_users']:,} users with {relevant_pairs:,} held-out items, "
        f"{figures['relevant_cold_share']:.1%} never seen in training"
    )
    if figures["tuned_changes"] is not None:
        chosen = ", ".join(f"{name}={value}" for name, value in figures["tuned_changes"].items()) or "the defaults"
        caption += f"; tuned on the training part: {figures['tuning_skipped'] or chosen}"
    return SplitResult(dataset, split, caption, figures, results)


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


def summary_rows(result: SplitResult) -> list[dict]:
    """Per our model: its NDCG, the best peer by NDCG, the ratio, and both coverages."""
    by_name = {r.model: r for r in result.scores}
    best = max((by_name[name] for name in PEER_NAMES), key=lambda r: r.ndcg)
    rows = []
    for name in our_models():
        ours = by_name[name]
        rows.append({
            "dataset": result.dataset,
            "split": result.split,
            "ours": name,
            "users": ours.users,
            "ours_ndcg": ours.ndcg,
            "ours_ndcg_se": ours.ndcg_se,
            "best_peer": best.model,
            "best_peer_ndcg": best.ndcg,
            "best_peer_ndcg_se": best.ndcg_se,
            "ratio": ours.ndcg / best.ndcg if best.ndcg else None,
            "ours_coverage": ours.coverage,
            "best_peer_coverage": best.coverage,
        })
    return rows


def summary_table(rows: list[dict], k: int) -> Table:
    table = Table(title=f"Summary: ours against the best peer by NDCG@{k}")
    for column in ("dataset", "split", "users", "ours", f"ours NDCG@{k}", "best peer", f"peer NDCG@{k}",
                   "ratio", "ours cov", "peer cov"):
        table.add_column(column, justify="left" if column in ("dataset", "split", "ours", "best peer") else "right")
    for row in rows:
        table.add_row(
            row["dataset"], row["split"], f"{row['users']:,}", row["ours"],
            with_error(row["ours_ndcg"], row["ours_ndcg_se"]), row["best_peer"],
            with_error(row["best_peer_ndcg"], row["best_peer_ndcg_se"]),
            "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}",
            f"{row['ours_coverage']:.1%}", f"{row['best_peer_coverage']:.1%}",
        )
    return table


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, action="append", default=[],
                        help="folder with users.csv, items.csv, events.csv (may be given several times)")
    parser.add_argument("--lookalikes", action="store_true",
                        help="add the look-alike datasets of benchmarks/lookalikes.py (written once into the cache)")
    parser.add_argument("--ml100k", type=Path,
                        help="MovieLens 100K folder for the a-ml look-alike (default: a --data-dir named ml100k, "
                             "else ../shared/datasets/ml100k beside the repo)")
    parser.add_argument("--split", choices=SPLIT_CHOICES, default="global")
    parser.add_argument("--k", type=positive_int, default=DEFAULT_K)
    parser.add_argument("--test-frac", type=float, default=DEFAULT_TEST_FRAC)
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = parser.parse_args()
    if not args.data_dir and not args.lookalikes:
        parser.error("give at least one --data-dir, or --lookalikes")
    return args


def datasets(args: argparse.Namespace) -> dict[str, Path]:
    """name -> folder of every dataset to compare on; missing folders are skipped with a message."""
    found: dict[str, Path] = {}

    def add(name: str, folder: Path) -> None:
        unique, n = name, 2
        while unique in found:
            unique, n = f"{name}-{n}", n + 1
        found[unique] = folder

    for folder in args.data_dir:
        missing = [name for name in ("users.csv", "items.csv", "events.csv") if not (folder / name).is_file()]
        if missing:
            print(f"{folder}: no {', '.join(missing)}; skipped")
            continue
        add(folder.resolve().name, folder)
    if args.lookalikes:
        ml100k = args.ml100k or next((d for d in args.data_dir if d.resolve().name == "ml100k"), DEFAULT_ML100K)
        for name, folder in lookalikes.ensure_all(ml100k).items():
            add(name, folder)
    return found


def main() -> None:
    # Cosine and BM25 hand their own normalised matrix to implicit's CSR check, which then warns.
    warnings.filterwarnings("ignore", category=ParameterWarning)
    args = parse_args()
    folders = datasets(args)
    if not folders:
        print("no data folder found: nothing to compare")
        return
    started = time.perf_counter()
    results: list[SplitResult] = []
    for dataset, folder in folders.items():
        for split in SPLIT_CHOICES[args.split]:
            split_started = time.perf_counter()
            try:
                result = run_split(dataset, folder, split, args.k, args.test_frac)
            except RecsError as error:
                print(f"{dataset} {split}: error: {error}; skipped")
                continue
            result.figures["seconds"] = time.perf_counter() - split_started
            results.append(result)
            title = f"{dataset}: {split} split, k={args.k}, test_frac={args.test_frac}"
            console.print(results_table(title, result.caption, result.scores))
    if not results:
        print("no dataset could be evaluated")
        return
    summary = [row for result in results for row in summary_rows(result)]
    console.print(summary_table(summary, args.k))
    console.print(f"{len(results)} dataset splits in {time.perf_counter() - started:.0f} s")
    if args.json:
        records = [
            {**asdict(r), "dataset": result.dataset, "split": result.split, "test_frac": args.test_frac,
             "ours": r.model in our_models()}
            for result in results for r in result.scores
        ]
        document = {
            "environment": environment(),
            "k": args.k,
            "test_frac": args.test_frac,
            "datasets": {name: lookalikes.shape(folder, args.test_frac) for name, folder in folders.items()},
            "splits": [{"dataset": r.dataset, "split": r.split, **r.figures} for r in results],
            "results": records,
            "summary": summary,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        console.print(f"wrote {len(records)} results to {args.json}")


if __name__ == "__main__":
    main()
