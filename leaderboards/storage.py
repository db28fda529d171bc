"""Entry files: build them from a results store, write them deterministically, load and validate them.

One JSON file per entry, named ``<dataset>__<norm>__eps-<eps>__<model>__<defense>__<attacks>__<id>.json``
(``id``: the first 12 hex digits of the SHA-256 of the entry's identity, see :func:`entry_id`).  Files
are written with sorted keys and two-space indentation, so building twice from the same store gives
identical bytes; they get the permissions a plain ``open()`` would (``0o666 & ~umask``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from advbench.errors import ConfigError, MissingPathError, StoreError
from advbench.leaderboards.collect import entries_from_runs
from advbench.leaderboards.schema import SCHEMA_VERSION, LeaderboardEntry, describe_validation_error, sort_key
from advbench.records import canonical_json

logger = logging.getLogger(__name__)

_SLUG = re.compile(r"[^a-z0-9._-]+")


def slugify(text: str) -> str:
    """A file-name-safe lowercase slug (``"ResNet 18/v2"`` -> ``"resnet-18-v2"``).

    >>> slugify("ResNet 18/v2")
    'resnet-18-v2'
    """
    return _SLUG.sub("-", text.lower()).strip("-.") or "x"


def entry_id(entry: LeaderboardEntry) -> str:
    """12 hex digits that name an entry's identity (data set, norm, eps, model, defense, attack suite)."""
    return hashlib.sha256(canonical_json(list(entry.key)).encode("utf-8")).hexdigest()[:12]


def entry_filename(entry: LeaderboardEntry) -> str:
    """The file name of an entry: data set, norm, eps, model, defense and attack suite slugs, and its id."""
    defense = entry.defense.name if entry.defense is not None else "none"
    parts = [entry.dataset, entry.norm, f"eps-{entry.eps_text}", entry.model, defense, entry.suite]
    return "__".join(slugify(part) for part in parts) + f"__{entry_id(entry)}.json"


def dump_entry(entry: LeaderboardEntry) -> str:
    """The entry as canonical JSON text (sorted keys, indent 2, trailing newline)."""
    return json.dumps(entry.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def parse_entry(data: Any, source: str | os.PathLike[str]) -> LeaderboardEntry:
    """Validate one decoded entry; ``source`` (a file name) goes into the error message.

    Raises:
        ConfigError: the data breaks the schema (or is an older schema); the message names the file
            and each bad field.
    """
    if isinstance(data, dict) and data.get("schema_version") not in (None, SCHEMA_VERSION):
        raise ConfigError(
            f"{os.fspath(source)} is a leaderboard entry of schema version {data.get('schema_version')!r}; this "
            f"advbench reads version {SCHEMA_VERSION} (one entry per model, defense, attack suite and eps): "
            "rebuild the entries with `advbench leaderboard build`"
        )
    try:
        return LeaderboardEntry.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{os.fspath(source)} is not a valid leaderboard entry: {describe_validation_error(exc)}; "
            "fix the file or rebuild it with `advbench leaderboard build`"
        ) from exc


def read_runs(store_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every finished run record of an existing results store (failed runs are left out).

    Raises:
        MissingPathError: the store file does not exist.
        StoreError: it is not a readable results store.
    """
    from advbench.store import ResultsStore

    path = Path(store_path)
    if not path.is_file():
        raise MissingPathError(
            f"results store {path} does not exist; run `advbench run ... --store {path}` (or `advbench demo`) first"
        )
    with ResultsStore(path) as store:
        return [store.get_record(row["id"]).as_dict() for row in store.list_runs() if row.get("status") == "finished"]


def build_leaderboard(store_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write one validated JSON entry per (dataset, norm, eps, model, defense, attack suite) to ``out_dir``.

    Entry files of an earlier build (of any schema version) that no longer correspond to an entry
    are removed; other files in ``out_dir`` are left alone.  Returns the written paths in a stable
    order (dataset, norm, eps, model, defense, attack suite).

    Raises:
        MissingPathError: ``store_path`` does not exist.
        StoreError: the store cannot be read, its runs do not make valid entries, or two entries
            would share a file name, or ``out_dir`` cannot be written.
    """
    from advbench.io import atomic_write_text

    entries = entries_from_runs(read_runs(store_path))
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise StoreError(f"leaderboard output {target} is a file; give a directory such as {target.parent / 'entries'}")
    names: dict[str, LeaderboardEntry] = {}
    for entry in entries:
        name = entry_filename(entry)
        if name in names:
            raise StoreError(
                f"models {names[name].model!r} and {entry.model!r} on {entry.dataset} ({entry.norm}, eps "
                f"{entry.eps_text}) map to the same entry file {name}; rename one of the checkpoints"
            )
        names[name] = entry
    if not entries:
        logger.warning("results store %s has no finished single-model runs: no leaderboard entries", store_path)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, entry in names.items():
        path = target / name
        text = dump_entry(entry)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
        written.append(path)
    for stale in sorted(target.glob("*.json")):
        if stale.name not in names and _is_entry_file(stale):
            logger.info("removing stale leaderboard entry %s", stale)
            stale.unlink()
    return written


def _is_entry_file(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and "schema_version" in data and ("config_hash" in data or "config_hashes" in data)


def load_entries(directory: str | os.PathLike[str]) -> list[LeaderboardEntry]:
    """Load and validate every ``*.json`` entry file of ``directory``, in a stable order.

    Raises:
        MissingPathError: ``directory`` does not exist.
        ConfigError: it is not a directory, a file is not valid JSON or breaks the schema (the
            message names the file and the field), or two files hold the same entry identity.
    """
    folder = Path(directory)
    if not folder.exists():
        raise MissingPathError(
            f"leaderboard directory {folder} does not exist; create it with "
            f"`advbench leaderboard build --store STORE --out {folder}`"
        )
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a directory; give the directory that holds the entry JSON files")
    entries: list[LeaderboardEntry] = []
    seen: dict[tuple[Any, ...], Path] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text ({exc}); it is not a leaderboard entry") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                "fix the file or rebuild it with `advbench leaderboard build`"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        entry = parse_entry(data, path)
        if entry.key in seen:
            raise ConfigError(
                f"{path} and {seen[entry.key]} both hold model {entry.model!r} on {entry.dataset} ({entry.norm}, "
                f"eps {entry.eps_text}, defense {entry.defense_label}, attacks {entry.suite}); remove one of them"
            )
        seen[entry.key] = path
        entries.append(entry)
    return sorted(entries, key=sort_key)


__all__ = [
    "build_leaderboard",
    "dump_entry",
    "entry_filename",
    "entry_id",
    "load_entries",
    "parse_entry",
    "read_runs",
    "slugify",
]
