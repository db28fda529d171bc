"""The typed run configuration: what the user asked for (:class:`RunConfig`) and what it resolved to
(:class:`ResolvedConfig`, the part that is hashed).

:class:`RunConfig` is built and validated once, where the run enters (the CLI, a sweep spec, the Python API):
eps strings such as ``8/255`` are parsed here and nowhere else, unknown fields are refused, and every
number is checked.  Execution choices that do not change the numbers (store, shard, executor, progress bars,
W&B) are not part of it.

:class:`ResolvedConfig` adds what the run resolved to: the model's identity (weights SHA-256, architecture,
normalization), the data's identity (selection, preprocessing, content fingerprint) and the attacks' full
hyperparameters.  Its hash, :meth:`ResolvedConfig.config_hash`, is computed in this one place: SHA-256 of the
canonical JSON of ``model_dump`` with defaults left out, plus :data:`CONFIG_SCHEMA`.  Adding a field with a
default therefore leaves every existing hash as it was, and no caller writes "only when set" code.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from advbench.errors import ConfigError
from advbench.records import canonical_json

#: Bumped when the meaning of a resolved config changes; part of every hash (records before it keep theirs).
CONFIG_SCHEMA = 2

NORMS_ALLOWED = ("linf", "l2", "l1", "l0")
SELECTIONS = ("balanced", "first")


class ModelFlags(BaseModel):
    """The CLI flags that replace a sidecar (see :class:`advbench.models.resolve.ModelOptions`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_classes: int | None = None
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None
    dtype: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelFlags:
        self.options()  # ModelOptions says what is wrong with a flag, in the flag's own words
        return self

    def options(self):  # -> ModelOptions (imported lazily: resolve imports torch-heavy helpers)
        from advbench.models.resolve import ModelOptions

        return ModelOptions(**self.model_dump())


class RunConfig(BaseModel):
    """One evaluation as the user asked for it.  Validated on construction; immutable afterwards.

    ``experiment`` names the plugin that runs it (``None``: read the checkpoint's task and choose, see
    :func:`advbench.experiments.choose_experiment`).  ``models`` holds one model spec, or several for
    an ensemble recipe or a dense-vs-compressed comparison (dense parent first).  ``options`` carries an
    experiment's own settings (for example the multi-task ``target_task``); each experiment validates them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(min_length=1)
    dataset: str
    attacks: list[str] = Field(min_length=1)
    eps: list[float] = Field(min_length=1)
    experiment: str | None = None
    norm: str = "linf"
    n_samples: int | None = 500
    selection: str = "balanced"
    samples: str | None = None
    class_map: str | None = None
    seed: int = 0
    batch_size: int = 256
    attack_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    model_flags: ModelFlags = Field(default_factory=ModelFlags)
    device: str = "cpu"
    defense: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("eps", mode="before")
    @classmethod
    def _parse_eps(cls, value: Any) -> list[float]:
        from advbench.threat import parse_eps_list

        return sorted(set(parse_eps_list(value)))  # a curve: "8/255,2/255" and "2/255,8/255,8/255" are one run

    @field_validator("models", "attacks", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        from advbench.devices import check_device

        if self.norm not in NORMS_ALLOWED:
            raise ValueError(f"--norm must be one of {', '.join(NORMS_ALLOWED)}, got '{self.norm}'")
        if self.n_samples is not None and self.n_samples < 1:
            raise ValueError(f"--n-samples must be >= 1, got {self.n_samples}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"--selection must be one of {', '.join(SELECTIONS)}, got '{self.selection}'")
        check_device(self.device)
        return self

    @classmethod
    def build(cls, **fields: Any) -> RunConfig:
        """``RunConfig(**fields)``, with a validation failure turned into one :class:`ConfigError` line per
        problem that names the field (the CLI prints it instead of pydantic's report)."""
        try:
            return cls(**fields)
        except ValidationError as err:
            raise ConfigError(describe_validation_error(err)) from None

    @property
    def model(self) -> str:
        """The first (or only) model spec."""
        return self.models[0]

    def params_for(self, attack: str) -> dict[str, Any]:
        return dict(self.attack_params.get(attack, {}))


def describe_validation_error(err: ValidationError) -> str:
    """pydantic's errors as ``field: message`` lines, with pydantic's 'Value error, ' prefix dropped."""
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where not in message else message)
    return "; ".join(lines)


class ResolvedConfig(BaseModel):
    """What a run resolved to: the stored, hashed config of a record.

    The fields every experiment has are typed; an experiment adds its own (``task``, ``models`` of an
    ensemble, ``defense``, ...) as extra fields, which are hashed the same way.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    experiment: str = "classifier"
    model: dict[str, Any]
    arch: str | None = None
    dataset: str
    data: dict[str, Any] = Field(default_factory=dict)
    split: str = "test"
    split_seed: int = 0
    n_samples: int
    norm: str = "linf"
    eps: list[float]
    attacks: list[dict[str, Any]] = Field(default_factory=list)
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"

    def config_hash(self) -> str:
        """SHA-256 over the canonical JSON of the fields that differ from their defaults, plus the schema."""
        body = self.model_dump(mode="json", exclude_defaults=True)
        return hashlib.sha256(canonical_json({"config_schema": CONFIG_SCHEMA, **body}).encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        """The config as the record stores it (every field, defaults included, for readers)."""
        return {"config_schema": CONFIG_SCHEMA, **self.model_dump(mode="json")}
