"""The leaderboard entry schema: one validated record per (model, dataset, threat model).

An entry is what a leaderboard shows about one model: its clean accuracy, its robust accuracy at the
largest eps evaluated and the whole robust-accuracy-vs-eps curve, who it is (name, file hash, and
for compressed checkpoints the parent's hash and the compression ratio) and where the numbers come
from (the config hashes of the stored runs, code version, date, attack suite).

Numbers must be JSON numbers: a string such as ``"0.5"`` where a number belongs is rejected (strict
mode), as are NaN and infinities.

>>> entry = LeaderboardEntry(model="cnn", dataset="digits", norm="linf", clean_accuracy=0.9,
...     robust_accuracy=0.4, eps=0.1, curve=[{"eps": 0.05, "robust_accuracy": 0.7},
...     {"eps": 0.1, "robust_accuracy": 0.4}], n_samples=100, config_hashes=["ab" * 32],
...     code_version="0.1.0", date="2024-01-01T00:00:00+00:00", attacks=["pgd"])
>>> entry.key
('digits', 'linf', 'cnn')
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from advbench.threat import NORMS

SCHEMA_VERSION = 1
"""Stored in every entry file; bumped whenever the schema changes incompatibly."""

Accuracy = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
"""A fraction in [0, 1]; a JSON number, never a string."""

Epsilon = Annotated[float, Field(strict=True, ge=0.0, allow_inf_nan=False)]
"""A perturbation budget (>= 0); a JSON number, never a string."""

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
"""A lowercase hex SHA-256 digest of a checkpoint file."""

_ATOL = 1e-9


class CurvePoint(BaseModel):
    """Robust accuracy at one eps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eps: Epsilon
    robust_accuracy: Accuracy


class LeaderboardEntry(BaseModel):
    """One leaderboard row: a model's robustness on one dataset under one threat model (norm).

    When several stored runs evaluated the same (model, dataset, norm), ``curve`` holds, for each
    eps, the lowest robust accuracy over those runs (the strongest attack wins) and
    ``config_hashes`` lists every run used.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    # identity
    model: str = Field(min_length=1, description="model name (checkpoint file stem or architecture name)")
    model_sha256: Sha256 | None = Field(None, description="SHA-256 of the checkpoint file; null for a named model")
    parent_sha256: Sha256 | None = Field(None, description="SHA-256 of the dense parent of a compressed checkpoint")
    compression_ratio: Annotated[float, Field(strict=True, gt=0.0, allow_inf_nan=False)] | None = Field(
        None, description="total / nonzero weights of a compressed checkpoint"
    )
    dataset: str = Field(min_length=1)
    norm: str = Field(description=f"the threat model: one of {', '.join(NORMS)}")
    # numbers
    clean_accuracy: Accuracy
    robust_accuracy: Accuracy = Field(description="robust accuracy at the largest eps evaluated (``eps``)")
    eps: Epsilon = Field(description="the largest eps evaluated")
    curve: list[CurvePoint] = Field(min_length=1, description="robust accuracy per eps, sorted by eps")
    n_samples: Annotated[int, Field(strict=True, ge=1)]
    # provenance
    config_hashes: list[str] = Field(min_length=1, description="config hashes of the stored runs used")
    code_version: str | None = Field(None, description="advbench version of the newest run used")
    date: str = Field(description="ISO 8601 creation time of the newest run used")
    attacks: list[str] = Field(min_length=1, description="attack names of the runs used, in cascade order")

    @field_validator("norm")
    @classmethod
    def _known_norm(cls, value: str) -> str:
        if value not in NORMS:
            raise ValueError(f"unknown norm {value!r}; use one of {', '.join(NORMS)}")
        return value

    @field_validator("date")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an ISO 8601 date such as 2024-01-31T12:00:00+00:00") from exc
        return value

    @field_validator("config_hashes")
    @classmethod
    def _unique_hashes(cls, value: list[str]) -> list[str]:
        if any(not h for h in value):
            raise ValueError("config hashes must be non-empty strings")
        if len(set(value)) != len(value):
            raise ValueError("config hashes must be unique")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LeaderboardEntry:
        eps_values = [p.eps for p in self.curve]
        if any(b <= a for a, b in zip(eps_values, eps_values[1:], strict=False)):
            raise ValueError(f"curve must be sorted by strictly increasing eps, got eps {eps_values}")
        last = self.curve[-1]
        if not math.isclose(self.eps, last.eps, rel_tol=0.0, abs_tol=_ATOL):
            raise ValueError(f"eps ({self.eps}) must be the largest eps of the curve ({last.eps})")
        if not math.isclose(self.robust_accuracy, last.robust_accuracy, rel_tol=0.0, abs_tol=_ATOL):
            raise ValueError(
                f"robust_accuracy ({self.robust_accuracy}) must equal the curve's value at the largest eps "
                f"({last.robust_accuracy})"
            )
        if self.compression_ratio is not None and self.parent_sha256 is None:
            raise ValueError("compression_ratio is only meaningful for a compressed checkpoint: set parent_sha256")
        if self.parent_sha256 is not None and self.parent_sha256 == self.model_sha256:
            raise ValueError("parent_sha256 equals model_sha256: a checkpoint cannot be its own parent")
        return self

    @property
    def identity(self) -> str:
        """The model's identity within a table: its file hash, or its name for a named model."""
        return self.model_sha256 or self.model

    @property
    def key(self) -> tuple[str, str, str]:
        """(dataset, norm, identity): at most one entry per key."""
        return (self.dataset, self.norm, self.identity)

    @property
    def is_compressed(self) -> bool:
        """Whether this is a compressed child of another checkpoint."""
        return self.parent_sha256 is not None


def sort_key(entry: LeaderboardEntry) -> tuple[str, str, str, str]:
    """A total, stable order for entries: dataset, norm, model name, identity."""
    return (entry.dataset, entry.norm, entry.model, entry.identity)


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line summary of a pydantic error: ``field.path: message`` for each problem.

    >>> try:
    ...     CurvePoint(eps="0.1", robust_accuracy=0.5)
    ... except ValidationError as exc:
    ...     describe_validation_error(exc)
    "eps: Input should be a valid number (got '0.1')"
    """
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "entry"
        got = ""
        if error["type"] not in ("value_error", "missing"):
            shown = repr(error["input"])
            got = f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        parts.append(f"{where}: {error['msg']}{got}")
    return "; ".join(parts)


__all__ = ["SCHEMA_VERSION", "CurvePoint", "LeaderboardEntry", "describe_validation_error", "sort_key"]
