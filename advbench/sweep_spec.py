"""The YAML sweep spec, validated with pydantic; errors name the file, the field and the line.

Loading also checks what would otherwise fail only in a cell: every attack name against the registry, every
hyperparameter name and type against its attack, each attack built at every norm and budget its cells use,
and every eps against its norm's threat model (a linf eps above 1 is refused: did you mean 8/255?).

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
    located = sorted(((_line_of(root, loc) or 0, ".".join(str(p) for p in loc), message)
                      for loc, message in check_attacks_and_budgets(spec, data)), key=lambda p: p[0])
    problems = [f"{path}:{line or '?'}: {field}: {message}" for line, field, message in located]
    if problems:
        raise ConfigError("invalid sweep spec:\n  " + "\n  ".join(problems))
    if not Path(spec.store).is_absolute():
        spec.store = str((path.parent / spec.store).resolve())
    spec.models = [str((path.parent / m).resolve()) if (path.parent / m).exists() else m for m in spec.models]
    return spec



def check_attacks_and_budgets(spec: SweepSpec, data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Every eps against its norm's threat model, and every attack name, hyperparameter and value against the
    attack registry, as (YAML location, problem) pairs: a typo fails when the spec is loaded, not in a cell.

    ``data`` is the spec as read from YAML, before validation: it tells in which form each attack item was
    written, so that a problem points at the line that holds it.
    """
    from advbench import list_attacks
    from advbench.attack import ATTACKS, checked_hyperparameters
    from advbench.errors import AdvbenchError
    from advbench.threat import ThreatModel

    problems: list[tuple[tuple[Any, ...], str]] = []
    valid_eps: dict[str, list[float]] = {}
    for norm in spec.norms:
        valid_eps[norm] = []
        for k, eps in enumerate(spec.eps_for(norm)):
            try:
                ThreatModel(norm, eps)
            except AdvbenchError as err:
                if isinstance(spec.eps, dict):
                    problems.append((("eps", norm, k), str(err)))
                else:
                    problems.append((("eps", k), f"{err} (for norm {norm})"))
            else:
                valid_eps[norm].append(eps)

    raw_items = data.get("attacks")
    raw_items = raw_items if isinstance(raw_items, list) else [raw_items]
    known = list_attacks(task="classification")  # a sweep runs classifiers
    buildable = []
    for i, item in enumerate(spec.attacks):
        raw = raw_items[i] if i < len(raw_items) else None
        ok = True
        for name in item.params:
            if name not in item.cascade:
                problems.append((("attacks", i, "params", name),
                                 f"params for '{name}', which is not in this cascade ({', '.join(item.cascade)})"))
                ok = False
        for name in item.cascade:
            if name not in known:
                problems.append((_where(raw, i, item, name), f"unknown attack '{name}'; known attacks: "
                                 f"{', '.join(known)}"))
                ok = False
                continue
            for key, value in item.params.get(name, {}).items():
                if key in ("norm", "eps"):
                    axis = "norms" if key == "norm" else "eps"
                    problems.append((_where(raw, i, item, name, key),
                                     f"{name}.{key} is set by the sweep's '{axis}' field, not per attack"))
                    ok = False
                    continue
                try:
                    checked_hyperparameters(ATTACKS.get(name), {key: value})
                except AdvbenchError as err:
                    problems.append((_where(raw, i, item, name, key), str(err)))
                    ok = False
        buildable.append(ok)

    # Build each attack as its cells will, at every norm and budget it meets: value errors (steps: 0) and
    # norms an attack does not support fail here too, instead of in every cell that uses them.
    index = {id(item): i for i, item in enumerate(spec.attacks)}
    seen: set[tuple[int, str]] = set()
    failed: set[tuple[int, str]] = set()  # one problem per attack of an item, not one per norm and budget
    for cell in spec.cells():
        i, norm, item = index[id(cell["attack"])], cell["norm"], cell["attack"]
        if not buildable[i] or (i, norm) in seen:
            continue
        seen.add((i, norm))
        raw = raw_items[i] if i < len(raw_items) else None
        for name in item.cascade:
            for eps in valid_eps[norm]:
                if (i, name) in failed:
                    break
                try:
                    ATTACKS.get(name)(norm=norm, eps=eps, **item.params.get(name, {}))
                except (AdvbenchError, TypeError, ValueError) as err:
                    failed.add((i, name))
                    message = str(err) if f"'{name}'" in str(err) else f"{name}: {err}"
                    if f"'{norm}'" not in message:
                        message += f" (at norm {norm}, eps {eps:g})"
                    problems.append((_where(raw, i, item, name), message))
    return problems


def _where(raw: Any, i: int, item: AttackItem, name: str, key: str | None = None) -> tuple[Any, ...]:
    """The YAML location of attack ``name`` of attack item ``i`` (or of its hyperparameter ``key``), for the
    form the item was written in: ``pgd``, ``{name: pgd, params: ...}`` or ``{cascade: [...], params: ...}``."""
    single = isinstance(raw, str) or (isinstance(raw, dict) and "name" in raw)
    if key is not None:
        return ("attacks", i, "params", key) if single else ("attacks", i, "params", name, key)
    if isinstance(raw, str):
        return ("attacks", i)
    return ("attacks", i, "name") if single else ("attacks", i, "cascade", item.cascade.index(name))
