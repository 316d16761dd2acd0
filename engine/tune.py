"""Self-tuning: the model finds its own parameters on the data it is given.

Validation splits are carved out of the events at hand (in a build: all of
them; in `evaluate`: the training part only, never the test part), each in
its own in-memory catalog attached to the same DuckDB connection, so the
CSVs are read and validated once. Real use is "predict the next period", so
the splits that decide are global ones: the latest VALIDATION_FRAC of the
events, at GLOBAL_ORIGINS cut points (rolling origin); only when none of
them has MIN_VALIDATION_USERS users does a per-user split (each user's
latest events) decide instead. A fixed plan then tries one parameter at a
time (coordinate search), keeping a value when it beats the best so far on
the NDCG@k of the deciding splits (pooled over their users) by more than
MIN_GAIN. A trial re-runs only the sql/ files that read what it
changed (ModelParams.layer_of), so most trials reuse the item-pair
self-join. Every trial is kept: the build stores them as `tuning_trials`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import duckdb

from . import sqlfiles
from .layers import Milestone, Progress, layers_after, model_into
from .holdout import hold_out, top_k_lists
from .config import ModelParams
from .metrics import score

SPLITS = ("global", "user")
"""Validation split kinds, like evaluate's: the future of everyone, and each user's latest."""
GLOBAL_ORIGINS = (0.0, 0.05, 0.1)
"""Rolling origin: each global validation split first drops this share of the latest events, then
holds out the latest VALIDATION_FRAC of the rest. Why global decides: on MovieLens 100K's global
test split the global validation ranked ten candidate models in the test's order, while the per-user
validation (each user's latest events, months before the data's end for most users) ranked them
the other way, and the mean of the two chose a model 0.77x of a 30-day trend list
(docs/evaluation.md). Several cut points: one cut of that training part has 76 users."""
VALIDATION_FRAC = 0.1
"""Share held out for validation. 0.1 rather than the test's 0.2: the model tuned on 90% of the
training part is closer to the one shipped (MovieLens 100K user split: NDCG@10 0.1919 tuned with 0.2,
0.1979 with 0.1; the B look-alike 0.2919 and 0.3041)."""
K = 10
MIN_VALIDATION_USERS = 50
"""Fewer evaluated users than this in a split: too little to tell parameters apart; the split is
left out, and with no split left the defaults stay."""
MAX_VALIDATION_USERS = 4_000
"""A split with more evaluated users than this scores a fixed sample of them (by a hash of the
user id): a trial's cost is the users it scores. On the A look-alike (user split: 14,483 users)
the full plan with 4,000 made every choice it made with all of them, each trial's NDCG within 0.001,
and its trials took 40% less time."""
MIN_GAIN = 0.005
"""A value is kept only when it beats the best NDCG by this share (0.5%): noise is not chased."""
COVERAGE_FLOOR = 0.5
"""A value is kept only while the validation coverage@k stays at least this share of the starting
point's: a strong popularity prior wins a little NDCG by showing everyone the same few items (A
look-alike, global split: without this floor the tuned model scored NDCG@10 0.1055 with coverage
5.6% on the test part; with it 0.1078 / 10.7% and 0.1063 / 23.4% in two runs, whose CPU budgets
reached different trials; the defaults' coverage there is 22.7%)."""
MAX_EVENTS = 500_000
"""Above this many events the tuner works on a sample of users (SAMPLE_EVENTS, or the build's
--tune-sample): every trial's pair join grows with the data (at 1M events a trial took 2.5-5.6 s,
and the budget ran out after 9)."""
SAMPLE_EVENTS = 100_000
"""The default sample: users holding about this many events (by a hash of the user id), the size
of data at which the full plan fits the budget (MovieLens 100K: 25 trials). Popularity and the trend
still come from every event; the sample is the pair join and the users scored. (At 10M events the
first trial, which builds strength and popularity over every event in each validation split, alone
overruns the budget: docs/performance.md.)"""
BUDGET_SECONDS = 60.0
"""After this much CPU time (of this process, every DuckDB thread included) a tuning run starts no
more trials but the last step's; what it found is kept. CPU time, not wall time: on a machine busy
with other work the run takes longer but tries the same trials, so the same data gets the same
model."""


def sample_for(events: int, tune_sample: int | None = None) -> int | None:
    """The sample a tuning run of events events works on (None: all of them): tune_sample when
    given (0: never sample), else SAMPLE_EVENTS above MAX_EVENTS; never a sample of everything."""
    wanted = tune_sample if tune_sample is not None else (SAMPLE_EVENTS if events > MAX_EVENTS else None)
    return wanted if wanted and events > wanted else None


EASE_MIN_NEIGHBORS = 200
"""EASE trials keep at least this many neighbours: its weights, negative ones included, spread over
more items than cosine's (MovieLens 100K user split: 0.1950 with 100, 0.1985 with 300)."""

# The plan: (what a step tries, the values tried), in order. Each value is a
# dict of parameter changes. The popularity prior and trending popularity
# come first (on sparse data they matter most, and their trials reuse every
# table but popularity), then the scoring of pairs (reusing the pair join),
# then EASE, then the user's own recency (it re-runs only the scoring), then
# the join's own weighting and the signal (the dearest trials on long
# histories, as they redo the join); the prior is tried again last, as the
# best weight of popularity depends on the rest. Fixed, so a build on the
# same data makes the same choice.
PRIORS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
"""Up to 300 pseudo-items: with a short trend half-life, what is watched now can then outweigh a long
history (MovieLens 100K global split: EASE with prior 300 and a 7-day trend 0.2259 on the test part,
the 30-day trend list 0.2208)."""
PLAN: list[tuple[str, list[dict]]] = [
    ("popularity_prior", [{"popularity_prior": v} for v in PRIORS]),
    ("trending_half_life_days", [{"trending_half_life_days": v} for v in (0.0, 1.0, 3.0, 7.0, 90.0)]),
    # prior_floor is not tried: after the trend, over 0.2, 0.4 and 0.6, it won
    # 0.008 NDCG@10 on MovieLens 100K's global test (SE 0.021) and lost 0.004
    # on the A look-alike's user split and 0.025 on a-ml's global one, and on
    # both global splits it took the coverage under half of EASE's
    # (docs/evaluation.md).
    ("support_shrinkage", [{"support_shrinkage": v} for v in (0.0, 5.0, 20.0, 100.0)]),
    ("similarity_normalisation", [{"similarity_normalisation": v} for v in (1.0, 0.5, 0.0)]),
    ("similarity_alpha", [{"similarity_alpha": v} for v in (0.5, 0.6, 0.8)]),
    ("popularity_beta", [{"popularity_beta": v} for v in (0.0, 0.1, 0.25)]),
    # EASE carries all-time popularity in its weights, but not what is
    # watched now: it is tried with the prior chosen so far (the trend comes
    # through it), then without it (nor its floor); the last step tries the
    # prior again.
    # Before the join's weighting: on long histories (the B look-alike)
    # those trials spent the budget first, and EASE is what wins there.
    ("neighbor_model", [
        {"neighbor_model": "cosine"},
        {"neighbor_model": "ease", "ease_lambda": 500.0},
        {"neighbor_model": "ease", "ease_lambda": 500.0, "popularity_prior": 0.0, "prior_floor": 0.0},
    ] + [{"neighbor_model": "ease", "ease_lambda": v} for v in (100.0, 2000.0)]),
    # After the neighbour model, not before: a half-life chosen for cosine
    # blocked EASE (B look-alike, user split, on validation: cosine 0.1168,
    # with a 90-day half-life 0.1184, EASE 0.1208 without it, 0.1182 with it).
    ("user_half_life_days", [{"user_half_life_days": v} for v in (7.0, 30.0, 90.0)]),
    ("user_weight_gamma", [{"user_weight_gamma": v} for v in (0.0, 0.25, 0.5, 1.0)]),
    ("max_neighbors", [{"max_neighbors": v} for v in (20, 50, 100)]),
    ("strength_formula", [{"strength_formula": v} for v in ("log_views", "binary")]),
    ("popularity_prior", [{"popularity_prior": v} for v in PRIORS]),
]
EASE_GIVE_UP = 0.95
"""An EASE trial below this share of the best NDCG so far ends the EASE trials: its other penalties
will not close such a gap (A look-alike: 0.0887-0.0934 against cosine's 0.0999), and on a large
catalogue each EASE trial is the dearest of the plan."""
COSINE_ONLY = frozenset(
    {"support_shrinkage", "similarity_normalisation", "similarity_alpha", "popularity_beta",
     "user_weight_gamma", "similarity_history_cap"}
)
"""Parameters only the cosine neighbours read (sql/40-45): with EASE chosen, trying them would
score the same model again."""


@dataclass
class Trial:
    """One set of parameters scored on the validation splits."""

    number: int
    step: str
    changes: dict
    params: dict
    ndcg: float
    recall: float
    coverage: float
    ndcg_by_split: dict
    seconds: float
    kept: bool = False


@dataclass
class TuneResult:
    """The chosen parameters and how they were found (skipped: why no tuning happened)."""

    params: ModelParams
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None
    stopped_early: bool = False
    events: int = 0
    """The events tuned on (all of them, sample or not)."""
    sample_events: int | None = None
    """The sample asked for (None: every user's events were tuned on)."""
    sampled_events: int | None = None
    """Events the sampled users of the first deciding split hold (about sample_events, or more
    where the sample grew to keep MIN_VALIDATION_USERS evaluated users)."""
    sample_share: float | None = None
    """The share of users the sample holds (the first deciding split's)."""

    @property
    def source(self) -> str:
        """What a build's params_source says of these parameters."""
        if self.skipped:
            return f"defaults ({self.skipped})"
        if self.sample_events is not None:
            return f"tuned on a sample of {self.sampled_events:,} events (of {self.events:,})"
        return "tuned"

    @property
    def best(self) -> Trial | None:
        kept = [trial for trial in self.trials if trial.kept]
        return kept[-1] if kept else None


class Validation:
    """One validation split of the current catalog's events, in its own in-memory catalog."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        source: str,
        split: str,
        number: int,
        drop_frac: float = 0.0,
        sample_events: int | None = None,
    ):
        self.con, self.split, self.drop_frac = con, split, drop_frac
        self.sampled_events: int | None = None
        """With sample_events: how many events the sampled users hold (before the hold-out)."""
        self.catalog = f"tuning_{split}_{number}"
        self.name = split if drop_frac == 0 else f"{split} (latest {drop_frac:.0%} dropped)"
        con.execute(f'attach \':memory:\' as "{self.catalog}"')
        con.execute(f'use "{self.catalog}"')
        con.execute("set preserve_insertion_order = false")
        for path in sqlfiles.build_files(layer="schema"):
            sqlfiles.run_file(con, path)
        for table in ("users", "items", "events"):
            con.execute(f'create table {table} as select * from "{source}".main.{table}')
        if drop_frac > 0:  # an earlier origin: the data as it was before its latest drop_frac
            con.execute(
                "delete from events where watched_at > "
                "(select percentile_disc(1 - $drop) within group (order by watched_at) from events)",
                {"drop": drop_frac},
            )
        relevant = hold_out(con, split, VALIDATION_FRAC)
        if sample_events is not None:
            relevant = self._sample(relevant, sample_events)
        if len(relevant) > MAX_VALIDATION_USERS:
            sample = sorted(relevant, key=lambda user: hashlib.md5(user.encode()).hexdigest())
            relevant = {user: relevant[user] for user in sample[:MAX_VALIDATION_USERS]}
        self.relevant = relevant
        self.catalogue_size = con.execute("select count(*) from items").fetchone()[0]

    def _sample(self, relevant: dict[str, set[str]], sample_events: int) -> dict[str, set[str]]:
        """Keep a sample of users (table tuning_sample): the first by a hash of their id until
        they hold sample_events events and MIN_VALIDATION_USERS of them are evaluated (when the
        split has that many), so a sample never leaves a split too few users to decide.
        Returns the relevant items of the sampled users."""
        counts = self.con.execute("select user_id, count(*) from all_events group by user_id").fetchall()
        counts.sort(key=lambda row: (hashlib.md5(row[0].encode()).hexdigest(), row[0]))
        chosen, held, evaluated = [], 0, 0
        for user_id, events in counts:
            if held >= sample_events and evaluated >= min(MIN_VALIDATION_USERS, len(relevant)):
                break
            chosen.append(user_id)
            held += events
            evaluated += user_id in relevant
        self.con.execute(
            "create or replace table tuning_sample as select unnest($users::varchar[]) as user_id", {"users": chosen}
        )
        # the hold-out's working copies are not read again: at 10M events they are most of the memory
        self.con.execute("drop table all_events")
        self.con.execute("drop table event_split")
        self.sampled_events = held
        self.sample_share = len(chosen) / max(len(counts), 1)
        self.pair_users = "tuning_sample"
        return {user_id: relevant[user_id] for user_id in chosen if user_id in relevant}

    pair_users: str | None = None
    """The table of the sampled users whose rows the pair join reads (None: every user)."""
    sample_share: float | None = None
    """With a sample: the share of the split's users it holds."""

    def fit_and_score(self, params: ModelParams, layers: set[str] | None) -> tuple[float, float, float]:
        """(NDCG, recall, coverage) at K of params, re-running only the given sql/ layers (None = all)."""
        self.con.execute(f'use "{self.catalog}"')
        model_into(self.con, params, only=layers, pair_users=self.pair_users)
        lists = top_k_lists(self.con, K, list(self.relevant))
        result = score(self.split, lists, self.relevant, K, self.catalogue_size)
        return result.ndcg, result.recall, result.coverage

    def close(self, source: str) -> None:
        self.con.execute(f'use "{source}"')
        self.con.execute(f'detach "{self.catalog}"')


def tune(
    con: duckdb.DuckDBPyConnection,
    start: ModelParams | None = None,
    budget_seconds: float | None = None,
    progress: Progress | None = None,
    ease_items_limit: int | None = None,
    sample_events: int | None = None,
) -> TuneResult:
    """Choose model parameters for the users, items and events of con's current catalog.

    budget_seconds: CPU seconds the plan may spend (default BUDGET_SECONDS, read at the call).
    sample_events: tune on a sample of users holding about this many events
    (Validation._sample) when there are more; popularity and the trend are
    still computed from every event. Returns start (default: the defaults)
    unchanged, with the reason in .skipped, when a validation split has
    fewer than MIN_VALIDATION_USERS users to score.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    budget_seconds = BUDGET_SECONDS if budget_seconds is None else budget_seconds
    step = progress or (lambda name: None)
    current = start or ModelParams()
    source = con.execute("select current_database()").fetchone()[0]
    events = con.execute("select count(*) from events").fetchone()[0]
    if sample_events is not None and events <= sample_events:
        sample_events = None  # the sample would be all of it
    step("tuning: carving validation splits" + (f" (a sample of {sample_events:,} events)" if sample_events else ""))
    validations: list[Validation] = []
    try:
        for number, drop_frac in enumerate(GLOBAL_ORIGINS):
            validations.append(Validation(con, source, "global", number, drop_frac, sample_events))
        usable = [v for v in validations if len(v.relevant) >= MIN_VALIDATION_USERS]
        if not usable:
            # no cut point has enough users active after it (on MovieLens 100K: a
            # training part from a per-user split, 25): each user's latest decide
            validations.append(Validation(con, source, "user", len(validations), sample_events=sample_events))
            usable = validations[-1:] if len(validations[-1].relevant) >= MIN_VALIDATION_USERS else []
        if not usable:
            counts = ", ".join(f"{v.split} split {len(v.relevant)}" for v in (validations[0], validations[-1]))
            return TuneResult(
                current, seconds=time.perf_counter() - started, events=events,
                skipped=f"too little data to tune: validation users {counts} (at least {MIN_VALIDATION_USERS} in one)",
            )
        for validation in validations:
            if validation not in usable:
                validation.close(source)
        validations = usable
        deciding_users = sum(len(v.relevant) for v in validations)
        if ease_items_limit is None:
            from .ease import MAX_EASE_ITEMS as ease_items_limit
        catalogue = validations[0].catalogue_size
        result = TuneResult(
            current, events=events, sample_events=sample_events, sampled_events=validations[0].sampled_events,
            sample_share=validations[0].sample_share,
        )

        def run(step_name: str, changes: dict, params: ModelParams, layers: set[str] | None) -> Trial:
            trial_started = time.perf_counter()
            scores = [validation.fit_and_score(params, layers) for validation in validations]
            weights = [len(validation.relevant) / deciding_users for validation in validations]
            ndcg = sum(w * s[0] for w, s in zip(weights, scores))  # pooled: every (origin, user) counts once
            trial = Trial(
                number=len(result.trials) + 1,
                step=step_name,
                changes=changes,
                params=params.as_dict(),
                ndcg=ndcg,
                recall=sum(w * s[1] for w, s in zip(weights, scores)),
                coverage=sum(s[2] for s in scores) / len(scores),
                # by kind (what decided), then by validation split
                ndcg_by_split={validations[0].split: ndcg, **{v.name: s[0] for v, s in zip(validations, scores)}},
                seconds=time.perf_counter() - trial_started,
            )
            result.trials.append(trial)
            return trial

        plan = [(position, name, changes) for position, (name, options) in enumerate(PLAN) for changes in options]
        last_step = len(PLAN) - 1  # the prior's re-check is cheap: it always runs

        def would_run(changes: dict, current: ModelParams, ease_given_up: bool) -> ModelParams | None:
            """The trial's parameters, or None when the plan skips it from here."""
            candidate = _apply(current, changes)
            if candidate == current or candidate.as_dict() in [t.params for t in result.trials]:
                return None
            if candidate.neighbor_model == "ease" and (catalogue > ease_items_limit or ease_given_up):
                return None
            if current.neighbor_model == "ease" and set(changes) <= COSINE_ONLY:
                return None
            return candidate

        def announce(trial: Trial, upcoming: int, best: Trial) -> None:
            """One line for the trial just scored: a Milestone, which a log shows as a line."""
            cpu = time.process_time() - cpu_started
            wall_per_cpu = (time.perf_counter() - started) / max(cpu, 1e-9)
            last = sum(1 for position, _, changes in plan if position == last_step)
            left = _time_left(result.trials, upcoming, budget_seconds - cpu, wall_per_cpu, last)
            kept = " (kept)" if trial.kept else ""
            step(Milestone(
                f"tuning: trial {trial.number} of {trial.number + upcoming}: "
                f"{_describe(trial.changes) or 'the starting point'}, NDCG@10 {trial.ndcg:.4f}{kept}; "
                f"best so far {best.ndcg:.4f}; {left} left"
            ))

        def upcoming_after(index: int) -> int:
            """How many trials of the plan after index would run from here (if nothing more is kept)."""
            over = time.process_time() - cpu_started > budget_seconds
            return sum(
                1 for position, _, changes in plan[index:]
                if (position == last_step or not over) and would_run(changes, current, ease_given_up) is not None
            )

        step("tuning: trial 1 (the starting point)")
        best = run("start", {}, current, None)
        best.kept = True
        start_coverage = best.coverage
        fitted = current  # what the validation catalogs' tables were last built with
        ease_given_up = False
        announce(best, upcoming_after(0), best)
        for index, (position, step_name, changes) in enumerate(plan):
            if time.process_time() - cpu_started > budget_seconds and position != last_step:
                result.stopped_early = True
                continue
            candidate = would_run(changes, current, ease_given_up)
            if candidate is None:
                continue
            step(
                f"tuning: trial {len(result.trials) + 1} of {len(result.trials) + upcoming_after(index)}: "
                f"{_describe(changes)}; best NDCG@10 so far {best.ndcg:.4f}"
            )
            trial = run(step_name, changes, candidate, _layers_between(fitted, candidate))
            fitted = candidate
            if trial.ndcg > best.ndcg * (1 + MIN_GAIN) and trial.coverage >= COVERAGE_FLOOR * start_coverage:
                trial.kept, best, current = True, trial, candidate
            elif candidate.neighbor_model == "ease" and trial.ndcg < best.ndcg * EASE_GIVE_UP:
                ease_given_up = True
            announce(trial, upcoming_after(index + 1), best)
        # What the sample chose is shipped as it is, parameters weighed against sums over users
        # (support_shrinkage, ease_lambda) included: scaled by the share of users, they scored
        # below the sample's own choice on every dataset measured (docs/evaluation.md).
        result.params = current
        result.seconds = time.perf_counter() - started
        return result
    finally:
        for validation in validations:
            validation.close(source)


PLAN_RULES = (
    "PLAN", "PRIORS", "GLOBAL_ORIGINS", "VALIDATION_FRAC", "K", "MIN_VALIDATION_USERS", "MAX_VALIDATION_USERS",
    "MIN_GAIN", "COVERAGE_FLOOR", "BUDGET_SECONDS", "EASE_MIN_NEIGHBORS", "EASE_GIVE_UP", "COSINE_ONLY",
)
"""The names of this module a tuning run's choice depends on (besides the data, the SQL and the start)."""


def plan_digest(start: ModelParams | None = None) -> str:
    """A digest of the tuning plan: its steps and values, its rules (PLAN_RULES) and the
    parameters it starts from (the defaults, unless start). A change to any of them makes
    tuned parameters kept from before stale."""
    rules = {name: repr(sorted(value) if isinstance(value, frozenset) else value) for name, value in
             ((name, globals()[name]) for name in PLAN_RULES)}
    rules["start"] = json.dumps((start or ModelParams()).as_dict(), sort_keys=True)
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()


def _time_left(trials: list[Trial], upcoming: int, cpu_left: float, wall_per_cpu: float, last_step: int) -> str:
    """About how long the rest of a run takes: the upcoming trials at the mean time of the
    trials after the first (which builds every table), but no more than what the CPU budget
    left allows (in wall time, at the rate so far) plus the last step, which always runs."""
    timed = trials[1:] or trials
    mean = sum(t.seconds for t in timed) / len(timed)
    seconds = min(upcoming * mean, max(cpu_left, 0.0) * wall_per_cpu + min(last_step, upcoming) * mean)
    return f"about {seconds:.0f} s" if seconds >= 1 else "under a second"


def _apply(params: ModelParams, changes: dict) -> ModelParams:
    """params with changes; EASE keeps at least EASE_MIN_NEIGHBORS neighbours."""
    candidate = params.replace(**changes)
    if candidate.neighbor_model == "ease" and candidate.max_neighbors < EASE_MIN_NEIGHBORS:
        candidate = candidate.replace(max_neighbors=EASE_MIN_NEIGHBORS)
    return candidate


def _layers_between(before: ModelParams, after: ModelParams) -> set[str]:
    """The sql/ layers to re-run to go from a model built with before to one with after."""
    old, new = before.as_dict(), after.as_dict()
    changed = [name for name in new if new[name] != old[name]]
    return layers_after({ModelParams.layer_of(name) for name in changed})


def _describe(changes: dict) -> str:
    return ", ".join(f"{name}={value}" for name, value in changes.items())


def store_trials(con: duckdb.DuckDBPyConnection, result: TuneResult) -> None:
    """Write tuning_trials (one row per trial) into con's current catalog."""
    con.execute(
        """
        create or replace table tuning_trials (
            trial integer primary key,
            step varchar not null,
            changes varchar not null,      -- JSON: what this trial changed from the best so far
            params varchar not null,       -- JSON: every parameter of the trial
            ndcg double not null,          -- NDCG@10 of the deciding validation splits, pooled over their users
            recall double not null,
            coverage double not null,
            ndcg_global double,
            ndcg_user double,
            seconds double not null,
            kept boolean not null          -- became the best so far
        )
        """
    )
    if not result.trials:  # tuning skipped: the table stays, empty
        return
    con.executemany(
        "insert into tuning_trials values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                t.number, t.step, json.dumps(t.changes), json.dumps(t.params, sort_keys=True), t.ndcg, t.recall,
                t.coverage, t.ndcg_by_split.get("global"), t.ndcg_by_split.get("user"), t.seconds, t.kept,
            )
            for t in result.trials
        ],
    )
