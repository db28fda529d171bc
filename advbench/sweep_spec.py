"""The YAML sweep spec, validated with pydantic; errors name the field and the line.

```yaml
name: digits-robustness            # the sweep (and W&B group) name
store: results.db                  # the results store (relative to the spec file)
models: [cnn.safetensors, mlp.safetensors]
datasets: [digits]
attacks:                           # each item is one cell's attack cascade
  - pgd                            # a name ...
  - {name: apgd-ce, params: {steps: 20}}          # ... a name with hyperparameters ...
  - {cascade: [fgsm, pgd], params: {pgd: {steps: 10}}}   # ... or a cascade
norms: [linf, l2]
eps: {linf: [2/255, 8/255], l2: [0.5, 1.0]}     # one list for every norm, or a list per norm
seeds: [0, 1]
combine: grid                      # grid (every combination) or zip (the axes in lockstep)
defaults: {n_samples: 200, batch_size: 256}
wandb: {project: advbench, group: digits-robustness, mode: offline}
```
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from advbench.errors import ConfigError, MissingPathError
from advbench.threat import NORMS, parse_eps


class AttackItem(BaseModel):
    """One cell's attack suite: a cascade of attack names with per-attack hyperparameters."""

    model_config = ConfigDict(extra="forbid")
    cascade: list[str]
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return "+".join(self.cascade)


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_samples: int = Field(500, ge=1)
    batch_size: int = Field(256, ge=1)
    device: str = "cpu"


class WandbOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = "advbench"
    group: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None


class SweepSpec(BaseModel):
    """A sweep: models × datasets × attacks × norms × seeds, each cell evaluated at its eps list."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    models: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    attacks: list[AttackItem] = Field(min_length=1)
    norms: list[Literal["linf", "l2", "l1", "l0"]] = Field(default_factory=lambda: ["linf"], min_length=1)
    eps: list[float] | dict[str, list[float]]
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    combine: Literal["grid", "zip"] = "grid"
    defaults: Defaults = Field(default_factory=Defaults)
    store: str = "advbench-results.db"
    wandb: WandbOptions | None = None

    @field_validator("attacks", mode="before")
    @classmethod
    def _attack_items(cls, value: Any) -> Any:
        items = []
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                items.append({"cascade": [item]})
            elif isinstance(item, dict) and "name" in item:
                extra = {k: v for k, v in item.items() if k not in ("name", "params")}
                items.append({"cascade": [item["name"]], "params": {item["name"]: item.get("params", {})}, **extra})
            else:
                items.append(item)
        return items

    @field_validator("eps", mode="before")
    @classmethod
    def _eps_values(cls, value: Any) -> Any:
        def parse(values: Any) -> list[float]:
            if not isinstance(values, list) or not values:
                raise ValueError("give a non-empty list of budgets, e.g. [2/255, 8/255]")
            return [parse_eps(v) for v in values]

        if isinstance(value, dict):
            return {norm: parse(v) for norm, v in value.items()}
        return parse(value)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if isinstance(self.eps, dict):
            missing = [n for n in self.norms if n not in self.eps]
            unknown = [n for n in self.eps if n not in NORMS]
            if unknown:
                raise ValueError(f"eps has unknown norms {unknown}; use {', '.join(NORMS)}")
            if missing:
                raise ValueError(f"eps gives no budgets for norm(s) {missing}")
        if self.combine == "zip":
            lengths = {k: len(getattr(self, k)) for k in ("models", "datasets", "attacks", "norms", "seeds")}
            sizes = {v for v in lengths.values() if v != 1}
            if len(sizes) > 1:
                raise ValueError(f"combine: zip needs axes of equal length (or 1); got {lengths}")
        return self

    def eps_for(self, norm: str) -> list[float]:
        return self.eps[norm] if isinstance(self.eps, dict) else list(self.eps)

    def cells(self) -> list[dict[str, Any]]:
        """The sweep's cells, in a stable order: dicts with model, dataset, attack, norm, eps, seed."""
        axes = [self.models, self.datasets, self.attacks, self.norms, self.seeds]
        if self.combine == "grid":
            combos = itertools.product(*axes)
        else:
            size = max(len(a) for a in axes)
            combos = zip(*[a * size if len(a) == 1 else a for a in axes], strict=True)
        return [{"model": m, "dataset": d, "attack": a, "norm": n, "eps": self.eps_for(n), "seed": s}
                for m, d, a, n, s in combos]


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at a pydantic error location (as far down as it exists)."""
    node, line = root, None
    for key in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
    if node is not None:
        line = node.start_mark.line + 1
    return line


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; every problem is reported with its field and line."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"sweep spec not found: {path}")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"{path}: malformed YAML at {where}: {err.problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a sweep spec is a mapping with keys name, models, datasets, attacks, eps, ...")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            synthetic = ("function-", "list[", "dict[")  # pydantic's union-branch labels, not YAML keys
            loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(synthetic)))
            field = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(root, loc)
            message = e["msg"]
            if e["type"] == "extra_forbidden":
                message = f"unknown field '{loc[-1]}'"
            problems.append(f"{path}:{line or '?'}: {field}: {message}")
        raise ConfigError("invalid sweep spec:\n  " + "\n  ".join(problems)) from None
    if not Path(spec.store).is_absolute():
        spec.store = str((path.parent / spec.store).resolve())
    spec.models = [str((path.parent / m).resolve()) if (path.parent / m).exists() else m for m in spec.models]
    return spec
