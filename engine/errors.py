"""Errors the engine raises. Each message is one line that says what to do next."""


class RecsError(Exception):
    """Base class: anything the command line shows as a one-line error."""


class DataFileError(RecsError):
    """A data file or folder is missing, empty, or has the wrong header."""


class DatabaseLocked(RecsError):
    """Another process holds recs.db open for writing."""


class DatabaseMissing(RecsError):
    """recs.db does not exist and cannot be built from here."""


class UnknownValue(RecsError):
    """An id or a filter names something the data does not have."""


class UnknownUser(UnknownValue):
    """A user id that is neither in users.csv nor in the events."""


class UnknownItem(UnknownValue):
    """An item id that is not in the catalogue."""


class UnknownFilter(UnknownValue):
    """A genre or content type that no item of the catalogue has."""


class BuildError(RecsError):
    """A SQL file of the model failed while building."""


class BadArgument(RecsError):
    """An argument is out of range (k < 1, for example) or of the wrong kind."""


class NotOurDatabase(RecsError):
    """The --db path holds a file this app did not build; a build refuses to replace it."""


class DiskFull(RecsError):
    """A build ran out of disk space; the old recs.db was left as it was."""


class InvalidEvents(BadArgument):
    """A batch of live events with invalid rows; none of the batch was kept."""

    def __init__(self, problems: list):
        self.problems = problems
        """Every problem of every bad event (index, field, problem), several per event at times."""
        first = problems[0]
        events = len({problem.index for problem in problems})
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(
            f"{events} invalid event(s), none of the batch was kept: "
            f"event {first.index}, {first.field}: {first.problem}{more}"
        )


class LogDamaged(RecsError):
    """The live event log or its committed length is damaged: refused rather than guessed at."""


class StorageFull(RecsError):
    """The disk filled while a batch of live events was written; nothing of it was kept."""


class IdempotencyConflict(BadArgument):
    """An Idempotency-Key already used for a different batch of events."""
