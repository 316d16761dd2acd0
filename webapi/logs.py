"""What the app writes to its logs is escaped: a request cannot forge a log line."""

from __future__ import annotations

def printable(text: str) -> str:
    """text with every control character escaped (a newline as \\n): a logged path or value
    cannot start a forged log line."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)
