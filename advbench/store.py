"""Embedded SQLite store of evaluation run records.

A *run record* is the JSON-able dict the evaluation code produces (config, config hash, code and
library versions, metrics, cost, status and per-sample outcomes).  :class:`ResultsStore` keeps one
row per config hash in the ``runs`` table and one row per (sample, eps) in ``samples``:

* the file is an ordinary SQLite database in WAL journal mode with ``synchronous=FULL`` and foreign
  keys on, so a process killed at any point leaves either the whole run or nothing of it;
* every write (:meth:`ResultsStore.write_run`) is one ``BEGIN IMMEDIATE`` transaction that holds
  the single writer lock, so two processes may open the same file; the other one waits up to
  ``busy_timeout`` seconds instead of failing;
* a finished run is "done" (:meth:`ResultsStore.has_run`), so an interrupted sweep can skip it on
  restart; a failed run is retried and replaced;
* :meth:`ResultsStore.save_run` is the race-free write for processes that computed the same config
  at the same time: the first finished record wins and every writer gets its id back;
* files written next to the store (exports, leaderboards) go through :func:`advbench.io.atomic_write_text`,
  which gives them the permissions a plain ``open()`` would (``0o666 & ~umask``).

>>> store = ResultsStore(":memory:")
>>> rid = store.write_run({"config_hash": "ab" * 32, "config": {"attack": "pgd"},
...                        "metrics": {"robust_accuracy": 0.5}})
>>> store.has_run("ab" * 32), store.get_run(rid)["metrics"]
(True, {'robust_accuracy': 0.5})
>>> store.close()
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from advbench.errors import ConfigError, StoreError
from advbench.io import atomic_write_text

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""Stored in ``PRAGMA user_version``; bumped whenever the schema changes (2 added the ``batches`` table; a
version-1 store is upgraded in place when opened, and its records keep their config hashes)."""

STATUSES = ("finished", "failed")
REQUIRED_KEYS = ("config_hash", "config", "metrics")
SAMPLE_COLUMNS = (
    "sample_index",
    "eps",
    "label",
    "clean_pred",
    "clean_correct",
    "robust",
    "adv_pred",
    "broken_by",
    "perturbation_norm",
)
SUMMARY_METRICS = ("clean_accuracy", "robust_accuracy", "attack_success_rate")
EXPORT_FORMATS = ("json", "csv")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_MIN_PREFIX = 6
_LIST_HINT = "run `advbench results list` to see the stored runs and their ids"

_SCHEMA = """
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash   TEXT UNIQUE NOT NULL,
    name          TEXT,
    status        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    config_json   TEXT NOT NULL,
    code_version  TEXT,
    versions_json TEXT,
    device        TEXT,
    metrics_json  TEXT NOT NULL,
    cost_json     TEXT,
    error         TEXT
);
CREATE TABLE samples (
    run_id            INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    sample_index      INTEGER,
    eps               REAL,
    label             INTEGER,
    clean_pred        INTEGER,
    clean_correct     INTEGER,
    robust            INTEGER,
    adv_pred          INTEGER,
    broken_by         TEXT,
    perturbation_norm REAL,
    extra_json        TEXT
);
CREATE INDEX samples_run_id ON samples(run_id);
CREATE INDEX runs_created_at ON runs(created_at);
"""

_BATCHES_SCHEMA = """
CREATE TABLE batches (
    config_hash   TEXT NOT NULL,
    batch_index   INTEGER NOT NULL,
    result_json   TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (config_hash, batch_index)
);
"""

_BOOL_COLUMNS = ("clean_correct", "robust")


def _json_default(value: Any) -> Any:
    """Make numpy/torch scalars and arrays, paths and sets JSON-able; anything else is an error."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any, key: str) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"run record key {key!r} is not JSON-serialisable ({exc}); convert tensors and other objects "
            "to plain numbers, strings, lists and dicts before storing the record"
        ) from exc


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _scalar(value: Any) -> Any:
    """A plain Python scalar for an SQLite column (numpy/torch scalars are unwrapped)."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if hasattr(value, "item"):
        return value.item()
    return value


def _sample_row(run_id: int, index: int, sample: Mapping[str, Any]) -> tuple[Any, ...]:
    """One ``samples`` row: the known columns, then every other key as ``extra_json``."""
    if not isinstance(sample, Mapping):
        raise StoreError(f"samples[{index}] is a {type(sample).__name__}, not a dict; every sample must be a dict")
    values: list[Any] = [run_id]
    for column in SAMPLE_COLUMNS:
        value = _scalar(sample.get(column))
        if column in _BOOL_COLUMNS and value is not None:
            value = int(bool(value))
        elif value is not None and not isinstance(value, (str, int, float)):
            raise StoreError(
                f"samples[{index}][{column!r}] is a {type(value).__name__}; it must be a number, a string or None"
            )
        values.append(value)
    extra = {k: v for k, v in sample.items() if k not in SAMPLE_COLUMNS}
    values.append(_dumps(extra, f"samples[{index}]") if extra else None)
    return tuple(values)


def _sample_dict(row: sqlite3.Row) -> dict[str, Any]:
    sample = {column: row[column] for column in SAMPLE_COLUMNS}
    for column in _BOOL_COLUMNS:
        if sample[column] is not None:
            sample[column] = bool(sample[column])
    if row["extra_json"]:
        sample.update(json.loads(row["extra_json"]))
    return sample


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Flatten nested dicts into ``prefix.key`` columns; a list becomes one JSON-encoded cell."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(inner, f"{prefix}.{key}" if prefix else str(key), out)
    elif value is None or isinstance(value, (str, int, float, bool)):
        out[prefix] = value
    elif isinstance(value, (list, tuple)):
        out[prefix] = json.dumps(value, default=_json_default, separators=(",", ":"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SavedRun:
    """What :meth:`ResultsStore.save_run` did.

    Attributes:
        id: the id of the run stored for the config hash now; the one to report.
        written: True when the caller's record was written; False when another writer's finished
            run of the same config hash was kept instead.
        existing: that kept run's record (without samples) when ``written`` is False, else None.
    """

    id: int
    written: bool
    existing: dict[str, Any] | None = None


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch the store to write-ahead logging and return the journal mode.  Two processes opening a new store at
    once both try the switch, which needs the file to themselves; SQLite answers one of them "database is locked"
    at once, without waiting for the busy timeout.  So the switch is retried until the other one has made it (the
    mode then reads ``wal``) or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return str(mode)
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class ResultsStore:
    """SQLite-backed store of run records, one row per config hash.

    Args:
        path: the database file (parent directories are created), or ``":memory:"``.
        busy_timeout: seconds a write waits for another process holding the writer lock.

    Raises:
        StoreError: ``path`` is a directory, cannot be read, is not an SQLite database, is some
            other SQLite database, or was written by a newer advbench.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = path if path == ":memory:" else Path(path)
        self._conn: sqlite3.Connection | None = None
        if isinstance(self.path, Path):
            self._check_file(self.path)
        try:
            conn = sqlite3.connect(
                os.fspath(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=True
            )
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open results store {self.path}: {exc}; check the path and its permissions"
            ) from exc
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = _enable_wal(conn, busy_timeout)
            if isinstance(self.path, Path) and str(mode).lower() != "wal":
                logger.warning("results store %s: journal_mode is %s, not wal", self.path, mode)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            conn.close()
            self._conn = None
            raise StoreError(
                f"{self.path} is not a readable advbench results store ({exc}); "
                "point to another file or move this one away"
            ) from exc
        except BaseException:
            conn.close()
            self._conn = None
            raise

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _check_file(path: Path) -> None:
        if path.is_dir():
            raise StoreError(
                f"results store path {path} is a directory; give a file path such as {path / 'results.db'}"
            )
        if path.exists():
            try:
                with path.open("rb") as fh:
                    header = fh.read(len(_SQLITE_MAGIC))
            except OSError as exc:
                raise StoreError(f"cannot read results store {path}: {exc}; check its permissions") from exc
            if header and header != _SQLITE_MAGIC:
                raise StoreError(
                    f"{path} is not an SQLite database (corrupt or some other file); "
                    "point to another file or move this one away"
                )
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the directory of results store {path}: {exc}") from exc

    def _init_schema(self) -> None:
        conn = self.conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        with self._transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under the write lock
            if version == 0:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                if tables:
                    raise StoreError(
                        f"{self.path} is an SQLite database but not an advbench results store "
                        f"(tables: {', '.join(sorted(tables))}); use another file"
                    )
                for statement in (_SCHEMA + _BATCHES_SCHEMA).split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == 1:  # a store from before streamed runs: add the batches table, keep every record
                conn.execute(_BATCHES_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this advbench supports "
                    f"({SCHEMA_VERSION}); upgrade advbench"
                )

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection; :class:`StoreError` once the store is closed."""
        if self._conn is None:
            raise StoreError(f"results store {self.path} is closed; open a new ResultsStore")
        return self._conn

    class _Tx:
        def __init__(self, conn: sqlite3.Connection, begin: str) -> None:
            self.conn, self.begin = conn, begin

        def __enter__(self) -> sqlite3.Connection:
            self.conn.execute(self.begin)
            return self.conn

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            if exc_type is None:
                try:
                    self.conn.execute("COMMIT")
                    return
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> ResultsStore._Tx:
        return ResultsStore._Tx(self.conn, begin)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({os.fspath(self.path)!r})"

    # ------------------------------------------------------------------ writes
    def has_run(self, config_hash: str) -> bool:
        """Whether a *finished* run with ``config_hash`` is stored (failed runs are retried)."""
        row = self.conn.execute(
            "SELECT 1 FROM runs WHERE config_hash = ? AND status = 'finished'", (config_hash,)
        ).fetchone()
        return row is not None

    def finished_run_id(self, config_hash: str) -> int | None:
        """The id of the *finished* run stored for ``config_hash``, or None (failed runs count as none).

        Pass it to :meth:`save_run` as ``replaces`` when the run is recomputed on purpose (``--force``).
        """
        row = self.conn.execute(
            "SELECT id FROM runs WHERE config_hash = ? AND status = 'finished'", (config_hash,)
        ).fetchone()
        return None if row is None else int(row[0])

    def write_run(self, record: Mapping[str, Any], *, force: bool = False) -> int:
        """Store ``record`` and all its samples in one transaction; return the new run id.

        An existing *failed* run with the same config hash is replaced; an existing *finished* one
        is replaced only with ``force=True``.  Any error rolls the whole write back.

        Two processes that computed the same config at the same time should use :meth:`save_run`
        instead: with ``force=True`` the second write here deletes the first one's record.

        Raises:
            StoreError: a required key is missing or invalid, the run exists and ``force`` is
                false, or the database could not be written.
        """
        config_hash, row, samples = self._prepare(record)
        try:
            with self._transaction() as conn:
                existing = conn.execute("SELECT id, status FROM runs WHERE config_hash = ?", (config_hash,)).fetchone()
                if existing is not None:
                    if existing["status"] == "finished" and not force:
                        raise StoreError(
                            f"a finished run with config hash {config_hash[:12]} is already stored "
                            f"(id {existing['id']}); pass force=True (CLI: --force) to replace it"
                        )
                    conn.execute("DELETE FROM runs WHERE id = ?", (existing["id"],))
                run_id = self._insert(conn, row, samples)
        except sqlite3.Error as exc:
            raise StoreError(f"could not write run {config_hash[:12]} to {self.path}: {exc}") from exc
        logger.debug("stored run %s (%s) in %s", run_id, config_hash[:12], self.path)
        return run_id

    def save_run(self, record: Mapping[str, Any], *, replaces: int | None = None) -> SavedRun:
        """Store ``record`` unless another writer stored a finished run of its config hash first.

        Race-free for several processes that computed the same config: in one ``BEGIN IMMEDIATE``
        transaction (one writer at a time) the stored run of the config hash is looked up and

        * none, or a *failed* one: ``record`` is written (``written=True``, the new id);
        * the *finished* run with id ``replaces`` (the one the caller saw before it recomputed on
          purpose, from :meth:`finished_run_id`): it is replaced by ``record`` (``written=True``);
        * any other *finished* run: it is kept and ``record`` is dropped; the result carries that
          run's id and record (``written=False``), so every process reports the run that survives.

        Raises:
            StoreError: ``record`` is invalid or the database could not be written.
        """
        config_hash, row, samples = self._prepare(record)
        try:
            with self._transaction() as conn:
                existing = conn.execute("SELECT * FROM runs WHERE config_hash = ?", (config_hash,)).fetchone()
                if existing is not None:
                    if existing["status"] == "finished" and (replaces is None or existing["id"] != replaces):
                        logger.info("run %s is already stored as id %s by another writer; keeping that one",
                                    config_hash[:12], existing["id"])
                        conn.execute("DELETE FROM batches WHERE config_hash = ?", (config_hash,))  # merged there
                        return SavedRun(int(existing["id"]), False, self._record(existing, None))
                    conn.execute("DELETE FROM runs WHERE id = ?", (existing["id"],))
                run_id = self._insert(conn, row, samples)
                conn.execute("DELETE FROM batches WHERE config_hash = ?", (config_hash,))  # merged into the run
        except sqlite3.Error as exc:
            raise StoreError(f"could not write run {config_hash[:12]} to {self.path}: {exc}") from exc
        logger.debug("stored run %s (%s) in %s", run_id, config_hash[:12], self.path)
        return SavedRun(run_id, True, None)

    def forget_failed(self, config_hash: str) -> int:
        """Delete the *failed* record stored under ``config_hash`` (a later success superseded it)."""
        with self._transaction() as conn:
            return conn.execute("DELETE FROM runs WHERE config_hash = ? AND status = 'failed'",
                                (config_hash,)).rowcount

    # ------------------------------------------------------------------ batches of a run in progress
    def commit_batch(self, config_hash: str, batch_index: int, result: Mapping[str, Any]) -> bool:
        """Commit one finished batch of the run ``config_hash`` in one transaction (the resume point).

        A batch already committed (by another shard, or by a worker whose task was recomputed) is kept and
        this one dropped, so no sample is ever counted twice; returns whether ``result`` was written."""
        text = _dumps(dict(result), f"batch {batch_index}")
        try:
            with self._transaction() as conn:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO batches (config_hash, batch_index, result_json, created_at) "
                    "VALUES (?, ?, ?, ?)", (config_hash, int(batch_index), text, _now()))
                return cursor.rowcount == 1
        except sqlite3.Error as exc:
            raise StoreError(f"could not commit batch {batch_index} of run {config_hash[:12]} to {self.path}: "
                             f"{exc}") from exc

    def committed_batches(self, config_hash: str) -> set[int]:
        """The batch indices of the unfinished run ``config_hash`` that are committed."""
        rows = self.conn.execute("SELECT batch_index FROM batches WHERE config_hash = ?", (config_hash,))
        return {int(r[0]) for r in rows}

    def batch_results(self, config_hash: str) -> dict[int, dict[str, Any]]:
        """Every committed batch result of the run ``config_hash``, by batch index."""
        rows = self.conn.execute("SELECT batch_index, result_json FROM batches WHERE config_hash = ? "
                                 "ORDER BY batch_index", (config_hash,))
        return {int(r[0]): json.loads(r[1]) for r in rows}

    def clear_batches(self, config_hash: str) -> int:
        """Drop the committed batches of ``config_hash`` (``--force`` starts the run again); returns how many."""
        with self._transaction() as conn:
            return conn.execute("DELETE FROM batches WHERE config_hash = ?", (config_hash,)).rowcount

    def unfinished_runs(self) -> dict[str, int]:
        """Config hash -> committed batch count of every run that has batches but no finished record."""
        rows = self.conn.execute("SELECT config_hash, COUNT(*) FROM batches GROUP BY config_hash")
        return {str(r[0]): int(r[1]) for r in rows}

    @staticmethod
    def _prepare(record: Mapping[str, Any]) -> tuple[str, tuple[Any, ...], Iterable[Mapping[str, Any]]]:
        """Validate a record; return its config hash, its ``runs`` row and its samples."""
        if not isinstance(record, Mapping):
            raise StoreError(f"a run record must be a dict, got {type(record).__name__}")
        for key in REQUIRED_KEYS:
            if key not in record:
                raise StoreError(
                    f"run record has no {key!r} key (required: {', '.join(REQUIRED_KEYS)}); "
                    "store the dict produced by the evaluation"
                )
        config_hash = record["config_hash"]
        if not isinstance(config_hash, str) or not config_hash:
            raise StoreError(f"run record 'config_hash' must be a non-empty string, got {config_hash!r}")
        for key in ("config", "metrics"):
            if not isinstance(record[key], Mapping):
                raise StoreError(f"run record {key!r} must be a dict, got {type(record[key]).__name__}")
        status = record.get("status") or "finished"
        if status not in STATUSES:
            raise StoreError(f"run record 'status' is {status!r}; use one of {', '.join(STATUSES)}")
        samples = record.get("samples") or []
        if not isinstance(samples, Iterable) or isinstance(samples, (str, bytes, Mapping)):
            raise StoreError(f"run record 'samples' must be a list of dicts, got {type(samples).__name__}")
        config = record["config"]
        name = record.get("name")
        if name is None and isinstance(config.get("name"), str):
            name = config["name"]
        error = record.get("error")
        row = (
            config_hash,
            None if name is None else str(name),
            status,
            record.get("created_at") or _now(),
            _dumps(dict(config), "config"),
            record.get("code_version"),
            _dumps(record.get("versions"), "versions"),
            record.get("device"),
            _dumps(dict(record["metrics"]), "metrics"),
            _dumps(record.get("cost"), "cost"),
            None if error is None else str(error),
        )
        return config_hash, row, samples

    @staticmethod
    def _insert(conn: sqlite3.Connection, row: tuple[Any, ...], samples: Iterable[Mapping[str, Any]]) -> int:
        cursor = conn.execute(
            "INSERT INTO runs (config_hash, name, status, created_at, config_json, code_version, "
            "versions_json, device, metrics_json, cost_json, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            row,
        )
        run_id = int(cursor.lastrowid)
        conn.executemany(
            f"INSERT INTO samples (run_id, {', '.join(SAMPLE_COLUMNS)}, extra_json) "
            f"VALUES ({', '.join('?' * (len(SAMPLE_COLUMNS) + 2))})",
            _iter_sample_rows(run_id, samples),
        )
        return run_id

    # ------------------------------------------------------------------ reads
    def _resolve_id(self, key: int | str) -> int:
        conn = self.conn
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise StoreError(f"a run key must be an integer id or a config hash, got {type(key).__name__}")
        if isinstance(key, int):
            row = conn.execute("SELECT id FROM runs WHERE id = ?", (key,)).fetchone()
            if row is None:
                raise StoreError(f"no run with id {key} in {self.path}; {_LIST_HINT}")
            return int(row[0])
        text = key.strip()
        row = conn.execute("SELECT id FROM runs WHERE config_hash = ?", (text,)).fetchone()
        if row is not None:
            return int(row[0])
        if len(text) >= _MIN_PREFIX and _HEX.match(text):
            rows = conn.execute(
                "SELECT id, config_hash FROM runs WHERE substr(config_hash, 1, ?) = ? ORDER BY id",
                (len(text), text.lower()),
            ).fetchall()
            if len(rows) == 1:
                return int(rows[0]["id"])
            if len(rows) > 1:
                matches = ", ".join(f"{r['id']} ({r['config_hash'][:12]})" for r in rows[:10])
                raise StoreError(
                    f"config hash prefix {text!r} matches {len(rows)} runs: {matches}; give more characters or the id"
                )
        if text.isdigit():
            return self._resolve_id(int(text))
        raise StoreError(
            f"no run with id or config hash {key!r} in {self.path} (hash prefixes need at least "
            f"{_MIN_PREFIX} characters); {_LIST_HINT}"
        )

    def _record(self, row: sqlite3.Row, samples: list[dict[str, Any]] | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": row["id"],
            "config_hash": row["config_hash"],
            "name": row["name"],
            "config": _loads(row["config_json"]),
            "code_version": row["code_version"],
            "versions": _loads(row["versions_json"]),
            "device": row["device"],
            "metrics": _loads(row["metrics_json"]),
            "cost": _loads(row["cost_json"]),
            "status": row["status"],
            "error": row["error"],
            "created_at": row["created_at"],
        }
        if samples is not None:
            record["samples"] = samples
        return record

    def _samples(self, run_id: int) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM samples WHERE run_id = ? ORDER BY rowid", (run_id,))
        return [_sample_dict(r) for r in rows]

    def get_run(self, key: int | str, *, with_samples: bool = False) -> dict[str, Any]:
        """The stored record for an integer id, a config hash or a unique hash prefix (>= 6 chars).

        Raises:
            StoreError: no run (or more than one run) matches ``key``.
        """
        with self._transaction("BEGIN") as conn:  # one snapshot for the run and its samples
            run_id = self._resolve_id(key)
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            return self._record(row, self._samples(run_id) if with_samples else None)

    def get_record(self, key: int | str, *, with_samples: bool = False) -> Any:
        """:meth:`get_run` as a typed :class:`~advbench.pipeline.record.Record` (records of every schema load)."""
        from advbench.pipeline.record import Record

        return Record.from_stored(self.get_run(key, with_samples=with_samples))

    def list_runs(self) -> list[dict[str, Any]]:
        """Summaries of every run, newest first: ids, status and the main metrics.

        ``eps`` is the eps that ``robust_accuracy`` and ``attack_success_rate`` were measured at
        (a multi-eps run's top-level numbers are its largest eps').  ``run_name`` is the readable
        name of the run's config (:func:`advbench.records.run_name`:
        model, data set, attack suite, threat model, eps and defense) for attack evaluation runs,
        and the stored name for task runs (detection, SOD, multi-task) whose config has a ``task``.
        """
        rows = self.conn.execute("SELECT * FROM runs ORDER BY created_at DESC, id DESC").fetchall()
        summaries = []
        for row in rows:
            metrics = _loads(row["metrics_json"]) or {}
            summary = {
                "id": row["id"],
                "config_hash": row["config_hash"],
                "name": row["name"],
                "run_name": _display_name(row),
                "status": row["status"],
                "created_at": row["created_at"],
            }
            summary.update({m: metrics.get(m) for m in SUMMARY_METRICS})
            summary["eps"] = _summary_eps(metrics)
            summary["error"] = row["error"]
            summaries.append(summary)
        return summaries

    def samples(self, run_id: int | str) -> list[dict[str, Any]]:
        """Per-sample outcomes of one run (id, config hash or hash prefix), in insertion order."""
        with self._transaction("BEGIN"):
            return self._samples(self._resolve_id(run_id))

    def count_samples(self, run_id: int | str) -> int:
        """Number of sample rows stored for one run."""
        with self._transaction("BEGIN") as conn:
            rid = self._resolve_id(run_id)
            return int(conn.execute("SELECT COUNT(*) FROM samples WHERE run_id = ?", (rid,)).fetchone()[0])

    def export(self, fmt: str, out_path: str | os.PathLike[str] | None = None) -> str:
        """Every run as ``"json"`` (full records with samples) or ``"csv"`` (one row per run and eps).

        The CSV has ``id, config_hash, name, run_name, status, created_at, code_version, device,
        error, eps``
        and then the leaves of ``config``, ``metrics`` and ``cost`` as ``config.x``,
        ``metrics.robust_accuracy``, ... columns; list values (``config.attacks``, ``config.eps``)
        are JSON-encoded cells.  A multi-eps run gives one row per eps of its curve, with that eps'
        metrics (see :func:`eps_metrics`).  With ``out_path`` the text is also written there
        atomically.

        Raises:
            ConfigError: ``fmt`` is not ``"json"`` or ``"csv"``.
            StoreError: ``out_path`` cannot be written.
        """
        fmt_norm = str(fmt).lower().strip()
        if fmt_norm not in EXPORT_FORMATS:
            raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
        with self._transaction("BEGIN") as conn:
            rows = conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
            with_samples = fmt_norm == "json"
            records = [self._record(r, self._samples(r["id"]) if with_samples else None) for r in rows]
        if fmt_norm == "json":
            text = json.dumps(records, indent=2, sort_keys=False, default=_json_default) + "\n"
        else:
            text = _records_to_csv(records)
        if out_path is not None:
            atomic_write_text(out_path, text)
        return text

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` plus a foreign-key check: ``"ok"`` or the problems found."""
        problems = [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        fk = self.conn.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            problems += [f"foreign key violation in {r[0]} rowid {r[1]}" for r in fk]
            problems = [p for p in problems if p != "ok"]
        return "\n".join(problems)

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def _summary_eps(metrics: Mapping[str, Any]) -> float | None:
    """The eps of a run's top-level metrics: ``metrics.eps``, else the last curve point's."""
    eps = _number_or_none(metrics.get("eps"))
    curve = metrics.get("curve")
    if eps is None and isinstance(curve, list) and curve and isinstance(curve[-1], Mapping):
        eps = _number_or_none(curve[-1].get("eps"))
    return eps


def _display_name(row: sqlite3.Row) -> str | None:
    try:
        config = json.loads(row["config_json"])
    except (TypeError, ValueError):
        return row["name"]
    return display_name(config, row["name"])


def display_name(config: Any, stored_name: str | None) -> str | None:
    """The name to show for a run: :func:`advbench.records.run_name` of its config (model, data,
    attack suite, norm, eps, defense), or ``stored_name`` for a task run (its config has a ``task``)."""
    from advbench.records import run_name

    if not isinstance(config, Mapping) or config.get("task"):
        return stored_name
    return run_name(config)


def _iter_sample_rows(run_id: int, samples: Iterable[Mapping[str, Any]]) -> Iterator[tuple[Any, ...]]:
    for index, sample in enumerate(samples):
        yield _sample_row(run_id, index, sample)


_CSV_FIXED = ("id", "config_hash", "name", "run_name", "status", "created_at", "code_version", "device", "error", "eps")
_LAST_EPS_ONLY = ("per_class_robust_accuracy", "max_perturbation")
"""Top-level metrics of a multi-eps run that hold the last eps' values and have no per-eps copy."""


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def eps_metrics(record: Mapping[str, Any]) -> list[tuple[float | None, dict[str, Any]]]:
    """A run's metrics split by eps: ``[(eps, metrics at that eps), ...]``.

    A multi-eps run (``metrics.curve``) gives one item per curve point: the run-level metrics
    (clean accuracy, n, ...) plus the point's own (robust accuracy, attack success rate, mean
    perturbation, per-attack counts).  The top-level metrics that only exist for the last eps
    (per-class robust accuracy, max perturbation) go with the last point only.  Any other run
    gives one item, at ``metrics.eps`` or at its config's single eps (None when there is none).
    """
    from advbench.records import eps_values

    metrics = dict(record.get("metrics") or {})
    curve = metrics.pop("curve", None)
    if isinstance(curve, list) and curve and all(isinstance(p, Mapping) for p in curve):
        out = []
        for index, point in enumerate(curve):
            dropped = {"eps", *point} if index == len(curve) - 1 else {"eps", *point, *_LAST_EPS_ONLY}
            row = {k: v for k, v in metrics.items() if k not in dropped}
            row.update({k: v for k, v in point.items() if k != "eps"})
            out.append((_number_or_none(point.get("eps")), row))
        return out
    eps = _number_or_none(metrics.pop("eps", None))
    if eps is None:
        config = record.get("config")
        listed = eps_values(config) if isinstance(config, Mapping) else []
        eps = listed[0] if len(listed) == 1 else None
    return [(eps, metrics)]


def _records_to_csv(records: list[dict[str, Any]]) -> str:
    flat_rows: list[dict[str, Any]] = []
    columns: dict[str, list[str]] = {"config": [], "metrics": [], "cost": []}
    seen: set[str] = set()

    def add(group: str, leaves: dict[str, Any]) -> None:
        for key in leaves:
            if key not in seen:
                seen.add(key)
                columns[group].append(key)

    for record in records:
        base = {key: record.get(key) for key in _CSV_FIXED if key not in ("eps", "run_name")}
        base["run_name"] = display_name(record.get("config"), record.get("name"))
        for group in ("config", "cost"):
            leaves: dict[str, Any] = {}
            _flatten(record.get(group) or {}, group, leaves)
            add(group, leaves)
            base.update(leaves)
        for eps, metrics in eps_metrics(record):
            leaves = {}
            _flatten(metrics, "metrics", leaves)
            add("metrics", leaves)
            flat_rows.append({**base, "eps": eps, **leaves})
    header = list(_CSV_FIXED) + [c for group in columns.values() for c in sorted(group)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for flat in flat_rows:
        writer.writerow({k: _csv_value(v) for k, v in flat.items()})
    return buffer.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


__all__ = ["ResultsStore", "SCHEMA_VERSION", "SavedRun", "eps_metrics"]
