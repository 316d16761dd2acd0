"""A batch of live events is all-or-nothing for readers: no reader ever sees half of one."""

from __future__ import annotations

import threading

import pytest

import engine


def play(user: str, item: str, seconds: int) -> dict:
    return {"user_id": user, "item_id": item, "event_type": "play", "watch_seconds": seconds,
            "timestamp": "2024-01-05T10:00:00Z"}


@pytest.mark.parametrize("fast", [False, True], ids=["sql", "index"])
def test_readers_never_see_a_play_count_go_down_while_plays_are_posted(built, tiny_dir, fast):
    recommender = engine.Recommender(built, tiny_dir, fast=fast)
    users = [f"w{n}" for n in range(6)]
    for user in users:
        recommender.add_events([play(user, "i1", 10)])
    done = threading.Event()
    went_down: list[tuple[str, int, int]] = []
    reads = [0]

    def write() -> None:
        try:
            for round_ in range(6):  # bounded: 6 rounds of one play for each user
                for user in users:
                    recommender.add_events([play(user, ("i1", "i2", "i3", "i4")[round_ % 4], 10)])
        finally:
            done.set()

    def read(offset: int) -> None:
        seen = {user: 0 for user in users}
        while not done.is_set():
            for user in users[offset::2]:
                count = sum(row.count_plays for row in recommender.history(user).items)
                if fast:  # the index: the user's rows must be whole too
                    recommender.recommend(user, 3)
                if count < seen[user]:
                    went_down.append((user, seen[user], count))
                seen[user] = max(seen[user], count)
                reads[0] += 1

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert reads[0] > 20
    assert went_down == []
    assert sum(row.count_plays for row in recommender.history("w0").items) == 7
