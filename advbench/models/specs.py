"""Model specs: ``scheme:name?key=value&...`` strings that say where a victim comes from.

One parser for every model spec the CLI, sweeps and the Python API accept:

* ``path/to/model.safetensors`` (or ``.pt``, ``.pth``, ``.pth.tar``): a checkpoint with an advbench sidecar;
* ``ARCH?weights=PATH``: a registered architecture (``resnet20``, ``wrn-28-10``, ...) with a bare state dict;
* ``timm:NAME[?weights=PATH&ema=true]``, ``torchvision:NAME[?weights=PATH]``;
* ``robustbench:NAME[?dataset=cifar10&threat=Linf&model_dir=./models]``: a RobustBench zoo entry;
* ``py:path/to/file.py:factory[?weights=PATH&key=value]``: a user's own module (this runs the user's code);
* ``torchscript:PATH``: a TorchScript archive (int8 models exported with ``torch.jit.save``).

Options common to the architecture-based schemes: ``weights=PATH`` (a local file, never a download),
``quantized=dynamic|static`` (the weights are a ``torch.ao`` int8 state dict of that architecture),
``surrogate=PATH`` (a float checkpoint whose gradients stand in for a non-differentiable model) and
``num_classes=N``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from advbench.errors import ConfigError
from advbench.spec_query import query_pairs, split_path_query

SCHEMES = ("timm", "torchvision", "robustbench", "py", "torchscript")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: ``scheme`` ('' for a path or a registered name), ``name`` and its options."""

    text: str
    scheme: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


def parse_query(query: str, *, where: str) -> dict[str, Any]:
    """``"a=1&b=x"`` (or with commas) → ``{"a": 1, "b": "x"}``; values are JSON when they parse as JSON.

    >>> parse_query("weights=m.pth&ema=true&num_classes=10", where="model")
    {'weights': 'm.pth', 'ema': True, 'num_classes': 10}
    """
    out: dict[str, Any] = {}
    for key, raw in query_pairs(query, where=where):
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def parse_model_spec(text: str) -> ModelSpec:
    """Split a model spec into scheme, name and options (see the module docstring).

    >>> spec = parse_model_spec("timm:resnet18?weights=ck.pth.tar")
    >>> spec.scheme, spec.name, spec.options
    ('timm', 'resnet18', {'weights': 'ck.pth.tar'})
    >>> parse_model_spec("py:nets/my.py:build?width=2").name
    'nets/my.py:build'
    >>> parse_model_spec("cnn.safetensors").scheme
    ''
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("--model needs a checkpoint path or a model spec such as 'timm:resnet18?weights=PATH'")
    text = text.strip()
    body, query = split_path_query(text, at="first")
    options = parse_query(query, where=f"model spec '{text}'")
    scheme, colon, rest = body.partition(":")
    if colon and scheme in SCHEMES:
        if not rest:
            raise ConfigError(f"model spec '{text}' names no model after '{scheme}:'")
        return ModelSpec(text, scheme, rest, options)
    return ModelSpec(text, "", body, options)
