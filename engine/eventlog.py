"""The live event log: accepted batches, framed so that no content can break a record.

<db>.live-events.log is a header line, then one line per accepted batch:

    <crc32 of the JSON, 8 hex digits> <JSON>\\n

The JSON is written ASCII-only (json.dumps' ensure_ascii), so no field can
hold a line break or any other control character however hostile it is, and
it is read back by json, which has no field-size limit:

    {"at": acceptance time (Unix seconds), "key": the Idempotency-Key or null,
     "digest": sha256 of the batch as sent (for the key), "events": [[user_id,
     item_id, event_type, watch_seconds, timestamp], ...]}

<db>.live-events.log.committed holds the log's committed length. A batch is
acknowledged only once its record is fsynced and then the committed length
past it is fsynced too. Bytes past the committed length are a write that a
crash cut short, or one whose commit never landed: never acknowledged, never
read, and overwritten by the next append. Anything else that does not check
out is damage, and every reader and writer refuses it with one line naming
the file, the byte offset and what to run: a record whose checksum fails
before the committed length, a committed length past the end of the log or
off a record's end, a committed file that is garbage or missing beside a
log, a log missing while its committed file says events were accepted.
Nothing is cut that cannot be proved an unacknowledged tail; `recs live
repair` keeps every byte it sets aside in a .damaged file beside the log.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import json
import os
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import IdempotencyConflict, LogDamaged, RecsError, StorageFull

LOG_SUFFIX = ".live-events.log"
OLD_SUFFIX = ".live-events.csv"
"""The log of earlier versions (CSV lines, which a hostile field could split): converted by repair."""
HEADER = b"recs live events, format 2: one accepted batch a line, <crc32> <json>\n"
KEY_RETENTION_SECONDS = 24 * 3600
"""How long an Idempotency-Key is remembered: a retry within it counts once."""
CHECK_BYTES = 4096
"""A build records a digest of the log's last this many bytes before where it stopped reading,
so a log replaced since (a different file) is read from its start."""
WHAT_TO_DO = "run 'recs live check' to see it, 'recs live repair' to set the damage aside"


def log_path(db: Path) -> Path:
    """Where the live events of db are kept: <db>.live-events.log."""
    return db.with_name(db.name + LOG_SUFFIX)


# --- one record ------------------------------------------------------------------------


def encode(events: list[tuple], key: str | None = None, digest: str | None = None, at: float | None = None) -> bytes:
    """One record: the checksum, a space, the JSON (ASCII only), a newline."""
    body = {"at": round(time.time() if at is None else at, 3), "key": key, "digest": digest,
            "events": [list(event) for event in events]}
    text = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(text), text)


@dataclass(frozen=True)
class Record:
    """One accepted batch, at bytes [offset, end) of the log."""

    offset: int
    end: int
    at: float
    key: str | None
    digest: str | None
    events: list[tuple]
    line: int = 0
    """Its line in the log (the header is line 1), when read from the start; else 0."""


def decode(line: bytes, offset: int, line_no: int = 0) -> Record | str | None:
    """The record a line (with its newline) holds, the problem with it as text, or None for
    a blank line (a record repair voided: spaces kept so that offsets stay the same)."""
    end = offset + len(line)
    content = line.rstrip(b"\n")
    if not content.strip(b" "):
        return None
    checksum, _, text = content.partition(b" ")
    try:
        if len(checksum) != 8 or int(checksum, 16) != zlib.crc32(text):
            return "checksum does not match: the record was changed or cut"
        body = json.loads(text)
        events = [tuple(event) for event in body["events"]]
    except (ValueError, KeyError, TypeError):
        return "not a record of this log"
    if not all(len(event) == 5 and all(isinstance(value, str) for value in event) for event in events):
        return "a record whose events are not five text fields"
    return Record(offset, end, float(body.get("at") or 0), body.get("key"), body.get("digest"), events, line_no)


def batch_digest(events: list) -> str:
    """What an Idempotency-Key is checked against: the batch as sent, canonically."""
    return hashlib.sha256(json.dumps(events, sort_keys=True, default=str).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Appended:
    """Where an append put its batch, or the first answer to a replayed Idempotency-Key."""

    start: int
    end: int
    accepted: int
    replayed: bool = False


@dataclass
class LogReport:
    """What `recs live check` says of a log."""

    path: Path
    exists: bool
    size: int = 0
    committed: int | None = None
    records: int = 0
    events: int = 0
    keys: int = 0
    unacknowledged_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "log": str(self.path), "exists": self.exists, "bytes": self.size, "committed_bytes": self.committed,
            "records": self.records, "events": self.events, "idempotency_keys": self.keys,
            "unacknowledged_bytes": self.unacknowledged_bytes, "ok": self.ok, "problems": self.problems,
        }


# --- the log ----------------------------------------------------------------------------------


class EventLog:
    """The append-only log of accepted batches and its committed length."""

    def __init__(self, path: Path):
        self.path = path
        self.committed_path = path.with_name(path.name + ".committed")
        self.old_path = path.with_name(path.name[: -len(LOG_SUFFIX)] + OLD_SUFFIX) if path.name.endswith(LOG_SUFFIX) else None
        self._keys: dict[str, tuple[str | None, int, float]] = {}
        """Idempotency-Key -> (digest, accepted, at), for the records before _keys_to."""
        self._keys_to = 0
        self._keys_lock = threading.Lock()

    # reading the committed length

    def _read_committed(self) -> int | None:
        """The committed file's value; None when there is none; LogDamaged when it is garbage."""
        try:
            raw = self.committed_path.read_bytes()
        except FileNotFoundError:
            return None
        text = raw.decode("ascii", "replace").strip()
        if not text.isdigit():
            raise LogDamaged(f"{self.committed_path}: {text[:20]!r} is not a length in bytes; {WHAT_TO_DO}")
        return int(text)

    def committed(self) -> int:
        """Bytes of the log that were accepted (0: none); LogDamaged when that cannot be told."""
        if self.old_path is not None and self.old_path.exists() and not self.path.exists():
            raise LogDamaged(
                f"{self.old_path}: a live log in the CSV format of an earlier version; "
                "run 'recs live repair' to convert it"
            )
        value = self._read_committed()
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = None
        if value is None:
            if size is None or HEADER.startswith(self._head(size)):
                return 0  # nothing was ever accepted (a first append stopped inside the header)
            raise LogDamaged(
                f"{self.committed_path} is missing beside {self.path} ({size:,} bytes): how much of it was "
                f"accepted cannot be told; {WHAT_TO_DO}"
            )
        if value == 0:
            return 0
        if size is None:
            raise LogDamaged(
                f"{self.path} is missing, but {self.committed_path.name} says {value:,} bytes of accepted events "
                "were in it: restore it from a backup, or run 'recs live repair' to start an empty log "
                "(those events are then lost)"
            )
        if value > size or value < len(HEADER):
            raise LogDamaged(
                f"{self.path} has {size:,} bytes but {self.committed_path.name} says {value:,} were accepted: "
                f"the log was cut or the committed length is wrong; {WHAT_TO_DO}"
            )
        return value

    def _head(self, size: int) -> bytes:
        with open(self.path, "rb") as handle:
            return handle.read(min(size, len(HEADER) + 1))

    def stamp(self) -> tuple[int, int] | None:
        """Changes whenever an append commits (cheap: one stat)."""
        try:
            stat = self.committed_path.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    # reading records

    def records(self, start: int, end: int) -> list[Record]:
        """The records in bytes [start, end) of the log (start at a record's start; 0 reads the
        header first); LogDamaged, naming the byte offset, for anything that does not check out."""
        if end <= start:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
        if len(data) != end - start:
            raise LogDamaged(f"{self.path}: ends at byte {start + len(data):,}, before {end:,}; {WHAT_TO_DO}")
        offset, line_no = start, 0
        if start == 0:
            if not data.startswith(HEADER):
                raise LogDamaged(f"{self.path}, byte 0: not the header of a live event log; {WHAT_TO_DO}")
            offset, line_no = len(HEADER), 1
        found = []
        while offset < end:
            line_no += 1 if line_no else 0
            newline = data.find(b"\n", offset - start)
            if newline < 0:
                raise LogDamaged(
                    f"{self.path}, byte {offset:,}: the committed length ends inside a record; {WHAT_TO_DO}"
                )
            line = data[offset - start: newline + 1]
            record = decode(line, offset, line_no)
            if isinstance(record, str):
                raise LogDamaged(f"{self.path}, byte {offset:,}: {record}; {WHAT_TO_DO}")
            if record is not None:
                found.append(record)
            offset += len(line)
        return found

    def read(self, start: int, end: int) -> list[tuple]:
        """The events in bytes [start, end) of the log, in order."""
        return [event for record in self.records(start, end) for event in record.events]

    def tail_digest(self, end: int) -> str:
        """A digest of the CHECK_BYTES bytes before end: which log a folded length belongs to."""
        if end <= 0:
            return ""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(max(0, end - CHECK_BYTES))
                return hashlib.sha256(handle.read(min(end, CHECK_BYTES))).hexdigest()
        except FileNotFoundError:
            return ""

    # appending

    def append(self, rows: list[tuple], key: str | None = None, digest: str | None = None) -> Appended:
        """Append rows (already checked) as one record and make it durable.

        With key (an Idempotency-Key) seen within KEY_RETENTION_SECONDS, nothing is written:
        the first answer is returned (replayed) when digest matches, IdempotencyConflict when
        it does not. The key is kept in the same record as the batch, in the same fsync.
        StorageFull when the disk is full: nothing of the batch stays in the log.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            committed = self.committed()
            size = os.fstat(fd).st_size
            if committed == 0:
                self._start_log(fd)
                committed = len(HEADER)
            elif os.pread(fd, 1, committed - 1) != b"\n":
                raise LogDamaged(
                    f"{self.path}, byte {committed - 1:,}: the committed length is not at a record's end; {WHAT_TO_DO}"
                )
            if key is not None:
                prior = self._known_key(key, committed)
                if prior is not None:
                    if prior[0] != digest:
                        raise IdempotencyConflict(
                            f"Idempotency-Key {key[:64]!r} was used for a different batch of events: "
                            "send a new key for a new batch"
                        )
                    return Appended(committed, committed, prior[1], replayed=True)
            record = encode(rows, key, digest)
            if size > committed:
                os.ftruncate(fd, committed)  # past the committed length: a write never acknowledged
            self._write(fd, committed, record)
            end = committed + len(record)
            if key is not None:
                with self._keys_lock:
                    if self._keys_to == committed:
                        self._keys[key] = (digest, len(rows), time.time())
                        self._keys_to = end
            return Appended(committed, end, len(rows))
        finally:
            os.close(fd)  # releases the flock

    def _start_log(self, fd: int) -> None:
        """A new log: the header, durable, then its committed length."""
        os.ftruncate(fd, 0)
        self._write(fd, 0, HEADER, committed_before=0)
        _fsync_folder(self.path.parent)

    def _write(self, fd: int, at: int, data: bytes, committed_before: int | None = None) -> None:
        """data at byte at, fsynced, then the committed length past it; on a failure nothing of
        data stays (the log is cut back to at, which was the committed length)."""
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], at + written)
            os.fsync(fd)
            self._write_committed(at + len(data))
        except OSError as error:
            try:
                os.ftruncate(fd, at)
                os.fsync(fd)
            except OSError:
                pass
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"{self.path}: the disk is full; the batch was not kept, send it again later") from None
            raise RecsError(f"{self.path}: cannot write the live log ({error.strerror}); the batch was not kept") from None

    def _write_committed(self, end: int) -> None:
        """The committed length, replaced atomically: a new file, fsynced, renamed over the old."""
        temp = self.committed_path.with_name(f"{self.committed_path.name}.{os.getpid()}-{threading.get_ident()}")
        try:
            with open(temp, "wb") as handle:
                handle.write(f"{end}\n".encode())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.committed_path)
        except OSError:
            temp.unlink(missing_ok=True)
            raise
        _fsync_folder(self.path.parent)

    def _known_key(self, key: str, committed: int) -> tuple | None:
        """The (digest, accepted) a key was first answered with, if within the retention window.
        Reads the records other writers committed since this process last looked (under the flock)."""
        with self._keys_lock:
            if self._keys_to > committed or self._keys_to < len(HEADER):
                self._keys, self._keys_to = {}, 0
            for record in self.records(self._keys_to, committed):
                if record.key is not None:
                    self._keys[record.key] = (record.digest, len(record.events), record.at)
            self._keys_to = committed
            cutoff = time.time() - KEY_RETENTION_SECONDS
            found = self._keys.get(key)
            return found if found is not None and found[2] >= cutoff else None

    def load_keys(self) -> None:
        """Read (and so check) every committed record now: a server's first write then need not."""
        committed = self.committed()
        if committed:
            self._known_key("", committed)

    # checking and repairing

    def _scan(self) -> tuple[list[tuple[int, bytes, Record | str | None]], bytes]:
        """Every line of the log after the header with its offset and what it holds, and the
        bytes after the last newline (a torn tail)."""
        data = self.path.read_bytes()
        lines = []
        offset = len(HEADER) if data.startswith(HEADER) else 0
        while offset < len(data):
            newline = data.find(b"\n", offset)
            if newline < 0:
                break
            line = data[offset: newline + 1]
            lines.append((offset, line, decode(line, offset)))
            offset = newline + 1
        return lines, data[offset:]

    def check(self) -> LogReport:
        """Everything wrong with the log and its committed length, without changing anything."""
        report = LogReport(self.path, self.path.exists())
        if self.old_path is not None and self.old_path.exists() and not report.exists:
            report.problems.append(f"{self.old_path}: a live log in an earlier CSV format: 'recs live repair' converts it")
            return report
        try:
            report.committed = self._read_committed()
        except LogDamaged as error:
            report.problems.append(str(error))
        if not report.exists:
            if report.committed:
                report.problems.append(
                    f"{self.path} is missing, but {self.committed_path.name} says {report.committed:,} bytes were accepted"
                )
            return report
        report.size = self.path.stat().st_size
        data_head = self._head(report.size)
        if report.size and not data_head.startswith(HEADER) and not HEADER.startswith(data_head):
            report.problems.append(f"{self.path}, byte 0: not the header of a live event log")
        lines, tail = self._scan()
        committed = report.committed
        if committed is None and report.size > len(HEADER):
            report.problems.append(f"{self.committed_path} is missing beside a log of {report.size:,} bytes")
        limit = committed if committed is not None else report.size
        ends = {len(HEADER)}
        for offset, line, record in lines:
            if offset >= limit:
                report.unacknowledged_bytes += len(line)
                continue
            ends.add(offset + len(line))
            if isinstance(record, str):
                report.problems.append(f"{self.path}, byte {offset:,}: {record}")
            elif record is not None:
                report.records += 1
                report.events += len(record.events)
                report.keys += record.key is not None
        if committed is not None and committed > report.size:
            report.problems.append(f"{self.path} has {report.size:,} bytes but {committed:,} were committed")
        elif committed and committed not in ends:
            report.problems.append(f"{self.path}, byte {committed:,}: the committed length is not at a record's end")
        if tail:
            if committed is not None and committed <= report.size - len(tail):
                report.unacknowledged_bytes += len(tail)
            else:
                report.problems.append(f"{self.path}, byte {report.size - len(tail):,}: a record cut short")
        return report

    def repair(self) -> list[str]:
        """Make the log readable again, keeping every acknowledged record that checks out.

        Damaged records are blanked in place (offsets stay, so what a build folded stays
        folded), a cut-short tail is removed, and the committed length is set to the end of
        the last good record; every byte taken out is first appended to a .damaged file
        beside the log. Returns what was done, one line each."""
        done: list[str] = []
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.old_path is not None and self.old_path.exists() and os.fstat(fd).st_size == 0:
                return self._convert_old(fd)
            try:
                committed = self._read_committed()
            except LogDamaged:
                committed = None
                done.append(f"{self.committed_path.name} was not a length: set from the log")
            size = os.fstat(fd).st_size
            if size == 0:
                if committed:
                    done.append(
                        f"{self.path.name} was missing ({committed:,} accepted bytes are lost with it): "
                        "started an empty log"
                    )
                self._start_log(fd)
                return done
            if not self._head(size).startswith(HEADER):
                raise LogDamaged(f"{self.path}: the header is damaged; the log cannot be repaired in place")
            lines, tail = self._scan()
            ends = {len(HEADER)} | {offset + len(line) for offset, line, _ in lines}
            # a committed length at a record's end stands; else the log's last whole line is its end
            good_end = committed if committed in ends else max(ends)
            for offset, line, record in lines:
                if isinstance(record, str) and offset < good_end:
                    self._set_aside(line, offset)
                    os.pwrite(fd, b" " * (len(line) - 1) + b"\n", offset)
                    done.append(f"byte {offset:,}: a damaged record ({record}) was set aside and blanked")
            if tail or size > good_end:
                with open(self.path, "rb") as handle:
                    handle.seek(good_end)
                    rest = handle.read()
                self._set_aside(rest, good_end)
                os.ftruncate(fd, good_end)
                done.append(f"byte {good_end:,}: {len(rest):,} bytes that were never a whole accepted record set aside")
            os.fsync(fd)
            if committed != good_end:
                self._write_committed(good_end)
                done.append(f"committed length set to {good_end:,} (was {committed if committed is not None else 'missing'})")
            return done
        finally:
            os.close(fd)

    def _set_aside(self, data: bytes, offset: int) -> None:
        """Append bytes taken out of the log to <log>.damaged, with where they were."""
        if not data:
            return
        with open(self.path.with_name(self.path.name + ".damaged"), "ab") as handle:
            handle.write(b"--- %d bytes from byte %d, set aside at %s\n" % (
                len(data), offset, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()))
            handle.write(data if data.endswith(b"\n") else data + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _convert_old(self, fd: int) -> list[str]:
        """An earlier version's CSV log, as records of this one: its committed part only."""
        old_committed = self.old_path.with_name(self.old_path.name + ".committed")
        try:
            text = old_committed.read_text("ascii").strip()
            end = int(text) if text.isdigit() else self.old_path.stat().st_size
        except (FileNotFoundError, UnicodeDecodeError):
            end = self.old_path.stat().st_size
        with open(self.old_path, "rb") as handle:
            data = handle.read(end)
        limit = csv.field_size_limit()
        csv.field_size_limit(sys.maxsize)  # the old format's fields had no limit
        try:
            rows = list(csv.reader(data.decode("utf-8", "replace").splitlines(keepends=True)))
        finally:
            csv.field_size_limit(limit)
        events = [tuple(row) for row in rows[1:] if len(row) == 5]
        odd = len(rows) - 1 - len(events)
        self._start_log(fd)
        at = len(HEADER)
        for start in range(0, len(events), 10_000):
            record = encode(events[start:start + 10_000])
            self._write(fd, at, record)
            at += len(record)
        kept = self.old_path.with_name(self.old_path.name + ".converted")
        os.replace(self.old_path, kept)
        done = [f"converted {len(events):,} events from {self.old_path.name} (kept as {kept.name})"]
        if odd:
            done.append(f"{odd:,} rows of it without five fields were left in {kept.name}")
        done.append("run 'recs build' so that the converted events are counted once")
        return done


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
