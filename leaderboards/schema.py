"""The leaderboard entry schema: one validated record per comparable measurement.

An entry is one model's robustness at **one** threat model and eps, behind **one** defense (or
none), under **one** attack suite, measured in **one** run on one sample set.  Those are its
identity (:attr:`LeaderboardEntry.key`): a JPEG-defended model is another entry than the bare
model, an APGD-CE + Square evaluation another entry than a PGD one, eps 0.031 another entry than
eps 0.1.  Its clean and robust accuracy both come from the run ``config_hash`` on the sample set
``sample_set`` (``n_samples`` samples), so they are always measured on the same images.

Numbers must be JSON numbers: a string such as ``"0.5"`` where a number belongs is rejected (strict
mode), as are NaN and infinities.

>>> entry = LeaderboardEntry(model="cnn", dataset="digits", norm="linf", eps=0.1, attacks=["pgd"],
...     clean_accuracy=0.9, robust_accuracy=0.4, n_samples=100, sample_set="0123456789abcdef",
...     config_hash="ab" * 32, code_version="0.1.0", date="2024-01-01T00:00:00+00:00")
>>> entry.key
('digits', 'linf', 0.1, 'cnn', 'none', 'pgd')
>>> entry.defense_label
'none'
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from advbench.records import canonical_json, defense_label, format_eps
from advbench.threat import NORMS

SCHEMA_VERSION = 2
"""Stored in every entry file; bumped whenever the schema changes incompatibly (1: one entry per model
merged over eps, attack suites and defenses)."""

EPS_DIGITS = 10
"""Eps values are rounded to this many decimals before they are compared or stored."""

Accuracy = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
"""A fraction in [0, 1]; a JSON number, never a string."""

Epsilon = Annotated[float, Field(strict=True, ge=0.0, allow_inf_nan=False)]
"""A perturbation budget (>= 0); a JSON number, never a string."""

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
"""A lowercase hex SHA-256 digest of a checkpoint file."""


class DefenseInfo(BaseModel):
    """The defense the model was evaluated behind (the run's ``config.defense``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    differentiable: bool | None = Field(None, description="whether gradients flow through the defense")
    bpda: bool | None = Field(None, description="whether attacks used BPDA (identity gradient) through it")

    @property
    def label(self) -> str:
        """``jpeg:quality=60``."""
        return defense_label(self.model_dump()) or self.name


class CurvePoint(BaseModel):
    """Robust accuracy at one eps (a point of a plotted series)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eps: Epsilon
    robust_accuracy: Accuracy


class LeaderboardEntry(BaseModel):
    """One leaderboard row: a model (behind a defense) under one attack suite at one (norm, eps).

    Entries are ranked only against entries of the same data set, norm and eps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[2] = SCHEMA_VERSION
    # identity
    model: str = Field(min_length=1, description="model name (checkpoint file stem or architecture name)")
    model_sha256: Sha256 | None = Field(None, description="SHA-256 of the checkpoint file; null for a named model")
    parent_sha256: Sha256 | None = Field(None, description="SHA-256 of the dense parent of a compressed checkpoint")
    compression_ratio: Annotated[float, Field(strict=True, gt=0.0, allow_inf_nan=False)] | None = Field(
        None, description="total / nonzero weights of a compressed checkpoint"
    )
    compression_family: str | None = Field(
        None, description="how a compressed checkpoint was made: method, structure, quantization (e.g. 'admm nm 2:4')"
    )
    defense: DefenseInfo | None = Field(None, description="the defense in front of the model; null: none")
    dataset: str = Field(min_length=1)
    norm: str = Field(description=f"the threat model's norm: one of {', '.join(NORMS)}")
    eps: Epsilon = Field(description="the threat model's budget")
    attacks: list[str] = Field(min_length=1, description="the attack suite, in cascade order")
    # numbers: all from the run ``config_hash`` on the sample set ``sample_set``
    clean_accuracy: Accuracy
    robust_accuracy: Accuracy = Field(description="accuracy under the attack suite at ``eps``")
    attack_success_rate: Accuracy | None = Field(None, description="broken / clean-correct samples at ``eps``")
    n_samples: Annotated[int, Field(strict=True, ge=1)]
    sample_set: str = Field(min_length=1, description="digest of the evaluated samples (data, split, selection)")
    # provenance
    config_hash: str = Field(min_length=1, description="config hash of the stored run the numbers come from")
    code_version: str | None = Field(None, description="advbench version of that run")
    date: str = Field(description="ISO 8601 creation time of that run")

    @field_validator("norm")
    @classmethod
    def _known_norm(cls, value: str) -> str:
        if value not in NORMS:
            raise ValueError(f"unknown norm {value!r}; use one of {', '.join(NORMS)}")
        return value

    @field_validator("eps")
    @classmethod
    def _rounded_eps(cls, value: float) -> float:
        return round(value, EPS_DIGITS)

    @field_validator("attacks")
    @classmethod
    def _attack_names(cls, value: list[str]) -> list[str]:
        if any(not isinstance(name, str) or not name.strip() for name in value):
            raise ValueError("attack names must be non-empty strings")
        return value

    @field_validator("date")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an ISO 8601 date such as 2024-01-31T12:00:00+00:00") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LeaderboardEntry:
        if self.compression_ratio is not None and self.parent_sha256 is None:
            raise ValueError("compression_ratio is only meaningful for a compressed checkpoint: set parent_sha256")
        if self.compression_family is not None and self.parent_sha256 is None:
            raise ValueError("compression_family is only meaningful for a compressed checkpoint: set parent_sha256")
        if self.parent_sha256 is not None and self.parent_sha256 == self.model_sha256:
            raise ValueError("parent_sha256 equals model_sha256: a checkpoint cannot be its own parent")
        return self

    # ------------------------------------------------------------------ identity
    @property
    def identity(self) -> str:
        """The model's identity: its file hash, or its name for a named model."""
        return self.model_sha256 or self.model

    @property
    def defense_key(self) -> str:
        """The defense as canonical JSON (``"none"`` without one): part of the entry's identity."""
        return "none" if self.defense is None else canonical_json(self.defense.model_dump())

    @property
    def defense_label(self) -> str:
        """A readable defense name: ``jpeg:quality=60``, or ``none``."""
        return "none" if self.defense is None else self.defense.label

    @property
    def suite(self) -> str:
        """The attack suite as one name: ``apgd-ce+square``."""
        return "+".join(self.attacks)

    @property
    def key(self) -> tuple[str, str, float, str, str, str]:
        """(dataset, norm, eps, model identity, defense, attack suite): at most one entry per key."""
        return (self.dataset, self.norm, self.eps, self.identity, self.defense_key, self.suite)

    @property
    def board_key(self) -> tuple[str, str, float]:
        """(dataset, norm, eps): entries are ranked only against entries with the same board key."""
        return (self.dataset, self.norm, self.eps)

    @property
    def series_key(self) -> tuple[str, str, str, str, str, str]:
        """(dataset, norm, identity, defense, suite, sample set): the entries one plotted line joins."""
        return (self.dataset, self.norm, self.identity, self.defense_key, self.suite, self.sample_set)

    @property
    def eps_text(self) -> str:
        """The eps as short text (``0.1``)."""
        return format_eps(self.eps)

    @property
    def is_compressed(self) -> bool:
        """Whether this is a compressed child of another checkpoint."""
        return self.parent_sha256 is not None


def sort_key(entry: LeaderboardEntry) -> tuple[str, str, float, str, str, str, str]:
    """A total, stable order for entries: dataset, norm, eps, model name, identity, defense, suite."""
    return (entry.dataset, entry.norm, entry.eps, entry.model, entry.identity, entry.defense_key, entry.suite)


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


__all__ = [
    "EPS_DIGITS",
    "SCHEMA_VERSION",
    "CurvePoint",
    "DefenseInfo",
    "LeaderboardEntry",
    "describe_validation_error",
    "sort_key",
]
