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
    """A filter or id names something the catalogue does not have."""


class BuildError(RecsError):
    """A SQL file of the model failed while building."""


class BadArgument(RecsError):
    """An argument is out of range (k < 1, for example)."""
