"""Run records: the resolved config, its hash, provenance (code and package versions, device)."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("torch", "torchvision", "timm", "torchattacks", "numpy", "advbench")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that gets hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a resolved config.

    >>> config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    True
    """
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version plus the git commit of the source tree when there is one."""
    version = metadata.version("advbench") if _installed("advbench") else "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{version}+git{sha}" if sha else version


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a result, plus Python and the platform."""
    out = {name: metadata.version(name) for name in _PACKAGES if _installed(name)}
    out["python"] = platform.python_version()
    out["platform"] = platform.platform()
    return out


def device_name(device: Any) -> str:
    """A readable device description (the GPU model on CUDA); a description passes through unchanged."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        if isinstance(device, str) and device.startswith("cuda:"):
            return device  # already "cuda:<GPU model>"
        raise
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return dev.type


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
