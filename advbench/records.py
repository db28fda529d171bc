"""Run records: the resolved config, its hash, provenance (code and package versions, device), a readable name."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = ("torch", "torchvision", "timm", "torchattacks", "pyautoattack", "robustbench", "numpy", "advbench")


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


# --------------------------------------------------------------------------------------------- names
def format_eps(value: Any) -> str:
    """An eps as short text: ``0.1`` -> ``'0.1'``, ``8/255`` -> ``'0.0313725'``.

    >>> format_eps(0.1), format_eps(8 / 255), format_eps(1)
    ('0.1', '0.0313725', '1')
    """
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def eps_values(config: Mapping[str, Any]) -> list[float]:
    """The eps list of a run config (a scalar ``eps`` is a list of one; non-numbers are left out)."""
    raw = config.get("eps")
    items = raw if isinstance(raw, (list, tuple)) else [] if raw is None else [raw]
    out = []
    for item in items:
        if isinstance(item, bool):
            continue
        try:
            out.append(float(item))
        except (TypeError, ValueError):
            continue
    return out


def attack_suite(config: Mapping[str, Any]) -> list[str]:
    """The attack names of a run config, in cascade order (``attacks``: dicts with a ``name`` or
    plain names; otherwise a single ``attack``).

    >>> attack_suite({"attacks": [{"name": "apgd-ce", "steps": 20}, {"name": "square"}]})
    ['apgd-ce', 'square']
    """
    attacks = config.get("attacks")
    if attacks is None and config.get("attack") is not None:
        attacks = [config["attack"]]
    if isinstance(attacks, (str, Mapping)):
        attacks = [attacks]
    names = []
    for attack in attacks or []:
        name = attack.get("name") if isinstance(attack, Mapping) else attack
        if isinstance(name, str) and name:
            names.append(name)
    return names


def _param_text(value: Any) -> str:
    if isinstance(value, float):
        return format_eps(value)
    if isinstance(value, (list, tuple)):
        return "/".join(_param_text(v) for v in value)
    return str(value)


def defense_label(defense: Mapping[str, Any] | None) -> str | None:
    """A short name of a run's defense entry (``config['defense']``), or None without a defense.

    >>> defense_label({"name": "jpeg", "params": {"quality": 60}, "differentiable": False, "bpda": True})
    'jpeg:quality=60'
    >>> defense_label(None) is None
    True
    """
    if not isinstance(defense, Mapping) or not defense.get("name"):
        return None
    params = defense.get("params")
    if not isinstance(params, Mapping) or not params:
        return str(defense["name"])
    text = ",".join(f"{key}={_param_text(params[key])}" for key in sorted(params))
    return f"{defense['name']}:{text}"


def run_name(config: Mapping[str, Any]) -> str:
    """A readable name of a run config: model, data set, attack suite, threat model, eps and defense.

    It names what makes two runs differ for a reader (the config hash stays the identity): a PGD
    run and an APGD-CE + Square run of the same model are told apart, and so are a defended and an
    undefended run.  Missing parts are left out.

    >>> run_name({"model": {"name": "cnn"}, "dataset": "digits", "norm": "linf", "eps": [0.1],
    ...           "attacks": [{"name": "pgd"}]})
    'cnn|digits|pgd|linf|eps=0.1'
    >>> run_name({"model": {"name": "cnn"}, "dataset": "digits", "norm": "linf", "eps": [0.05, 0.1],
    ...           "attacks": [{"name": "apgd-ce"}, {"name": "square"}],
    ...           "defense": {"name": "jpeg", "params": {"quality": 60}}})
    'cnn|digits|apgd-ce+square|linf|eps=0.05,0.1|jpeg:quality=60'
    """
    model = config.get("model")
    model_name = model.get("name") if isinstance(model, Mapping) else model
    parts = [str(model_name) if model_name else "?"]
    for key in ("dataset", "task"):
        if config.get(key):
            parts.append(str(config[key]))
    suite = attack_suite(config)
    if suite:
        parts.append("+".join(suite))
    if config.get("norm"):
        parts.append(str(config["norm"]))
    eps = eps_values(config)
    if eps:
        parts.append("eps=" + ",".join(format_eps(e) for e in eps))
    defense = defense_label(config.get("defense"))
    if defense:
        parts.append(defense)
    return "|".join(parts)
