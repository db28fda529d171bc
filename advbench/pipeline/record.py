"""The typed run record that the store, W&B, ``--json``, the tables and the leaderboards read.

A record is what one finished run measured: the resolved config and its hash, provenance (code and package
versions, device), metrics, cost and per-sample outcomes.  Records written before :class:`Record` existed
(plain dicts in an older store) load through :meth:`Record.from_stored`, with the hash they were stored under.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """One run's record.  ``metrics`` and ``config`` are per-experiment; the rest is common to every run."""

    model_config = ConfigDict(extra="allow")

    config: dict[str, Any]
    config_hash: str
    name: str | None = None
    code_version: str | None = None
    versions: dict[str, Any] | None = None
    device: str | None = None
    metrics: dict[str, Any]
    cost: dict[str, Any] = Field(default_factory=dict)
    status: str = "finished"
    error: str | None = None
    created_at: str | None = None
    samples: list[dict[str, Any]] = Field(default_factory=list)
    id: int | None = None

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> Record:
        """A record read back from the store (any schema version advbench wrote)."""
        return cls.model_validate(dict(stored))

    @property
    def experiment(self) -> str:
        return str(self.config.get("experiment") or self.config.get("task") or "classifier")

    def as_dict(self, *, samples: bool = True) -> dict[str, Any]:
        """The record as the JSON-able dict the store writes and the sinks read."""
        out = self.model_dump(mode="json", exclude_none=False)
        if not samples:
            out.pop("samples", None)
        if out.get("id") is None:
            out.pop("id", None)
        return out
