"""Held-out splits, shared by evaluation (a test split) and tuning (validation splits):
hide the latest events from the model, and read its top k for the users who have some.
"""

from __future__ import annotations

from collections import defaultdict

import duckdb

from . import sqlfiles


def hold_out(con: duckdb.DuckDBPyConnection, split: str, test_frac: float) -> dict[str, set[str]]:
    """Move the held-out events out of `events` (sql/evaluation.sql); return each evaluated
    user's relevant items: held out, and never watched in the events that remain."""
    sqlfiles.run_file(con, sqlfiles.SQL_DIR / "evaluation.sql", {"split": split, "test_frac": test_frac})
    relevant: dict[str, set[str]] = defaultdict(set)
    for user_id, item_id in con.execute("select user_id, item_id from relevant_items").fetchall():
        relevant[user_id].add(item_id)
    return relevant


def top_k_lists(con: duckdb.DuckDBPyConnection, k: int, users: list[str] | None = None) -> dict[str, list[str]]:
    """The current model's top k (recommend_all) for each of users (default: every evaluated
    user, in relevant_items), best first. Only their rows are scored."""
    if users is None:
        users = [row[0] for row in con.execute("select distinct user_id from relevant_items").fetchall()]
    lists: dict[str, list[str]] = defaultdict(list)
    rows = con.execute(
        """
        select user_id, item_id
        from recommend_all($k, for_users := $users::varchar[])
        order by user_id, rank
        """,
        {"k": k, "users": sorted(users)},
    ).fetchall()
    for user_id, item_id in rows:
        lists[user_id].append(item_id)
    return lists
