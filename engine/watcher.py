"""A server's background rebuild: it watches the CSVs and the SQL, and folds in live events.

Every interval seconds the watcher compares the data's fingerprint with the
model's; when they differ (or live events have waited fold_after seconds) it
builds in a child process at a lower CPU priority, with the pins and input
format the server was started with, while the old model answers; then the
server opens the new one before a request needs it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from .build import built_state, fingerprint, reading_format
from .errors import RecsError

REBUILD = (
    "import json, sys; from pathlib import Path; import engine\n"
    "db, data, how = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[4])\n"
    "params = engine.ModelParams(**how['params']) if how['params'] else None\n"
    "form = engine.InputFormat(**how['input_format']) if how['input_format'] else None\n"
    "try:\n"
    "    if sys.argv[3] == 'fold':\n"
    "        engine.build(db, data, params, tune=False, input_format=form)\n"
    "    else:\n"
    "        engine.ensure_built(db, data, params, input_format=form, tune=False)\n"
    "except engine.RecsError as error:\n"
    "    sys.exit(str(error))\n"
)
"""What the watcher runs in a child process: a build beside the server, sharing none of its memory,
with the pins and input format the server was started with, reusing the last tuned parameters
(tune=False: a background rebuild never re-tunes; `recs build` does)."""


def rebuild_settings(recommender) -> str:
    """The settings a background rebuild of recommender's model must keep, as JSON for REBUILD:
    the server's pins, else those the model being served was pinned with (else None: the
    last tuned parameters, as REBUILD never tunes)."""
    form = recommender.input_format
    params = recommender.params.as_dict() if recommender.params is not None else None
    if params is None:
        state = built_state(recommender.db)
        if state is not None and state.params_source == "pinned":
            params = state.params
    return json.dumps({
        "params": params,
        "input_format": dataclasses.asdict(form) if form is not None else None,
    })


class Watcher(threading.Thread):
    """A server's background rebuild: every interval seconds it checks the CSVs' (and SQL's)
    fingerprint against the model's; when they differ it builds in a child process (the
    server answers from the old model meanwhile), then loads the new one before the next
    request needs it. A failed build marks the Recommender stale (one line) and is not
    retried until the files change again."""

    def __init__(self, recommender, interval: float, fold_after: float = 0.0):
        super().__init__(daemon=True, name="recs-watcher")
        self.recommender = recommender
        self.interval = interval
        self.fold_after = fold_after
        """Also rebuild (folding the live events in) once live events have waited this long; 0 = never."""
        self._halt = threading.Event()
        self._failed: str | None = None
        self.builds = 0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        log = logging.getLogger("recs.watcher")
        while not self._halt.wait(self.interval):
            try:
                self.check()
            except Exception as error:  # noqa: BLE001 - the server goes on; the reason is logged
                log.warning("background rebuild check failed: %s", error)

    def check(self) -> bool:
        """Rebuild when the files changed; True when a new model was swapped in."""
        recommender = self.recommender
        if recommender.standalone is not None:
            return False  # a model shipped without its data folder: served as built, never stale
        try:
            state = built_state(recommender.db)
            wanted = fingerprint(recommender.data_dir, reading_format(state, recommender.input_format))
        except RecsError as error:
            recommender.mark_stale(str(error))
            return False
        waited = recommender.live.waiting_seconds()
        fold = bool(self.fold_after) and waited is not None and waited >= self.fold_after
        if not fold and (state is not None and state.fingerprint == wanted or wanted == self._failed):
            return False
        why = f"live events waited {waited:.0f} s" if fold else "the data changed"
        logging.getLogger("recs.watcher").info("%s: rebuilding %s in the background", why, recommender.db)
        result = subprocess.run(
            [sys.executable, "-c", REBUILD, str(recommender.db), str(recommender.data_dir), "fold" if fold else "fresh",
             rebuild_settings(recommender)],
            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
            preexec_fn=lambda: os.nice(10),  # the server's threads come first for the CPU
        )
        if result.returncode != 0:
            self._failed = wanted
            reason = (result.stderr.strip().splitlines() or ["the build failed"])[-1]
            recommender.mark_stale(reason)
            logging.getLogger("recs.watcher").warning("background rebuild failed: %s", reason)
            return False
        self.builds += 1
        if recommender.fast:
            recommender.serving_index()  # load the new model now, not in a request
        else:
            recommender.database.cursor()
        return True
