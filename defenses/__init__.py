"""Defenses: preprocessing modules put in front of a victim model, looked up by name.

Registered now: the input transforms ``jpeg``, ``bitdepth`` and ``median`` (:mod:`advbench.defenses.input_transforms`,
evaluated adaptively with BPDA, Athalye, Carlini & Wagner, ICML 2018).  DefenseNet (Sun, Fu, Li et al.,
arXiv 2306.17431) and the adversarial-training recipes join the same registry (issue 7).

**Factory contract.**  :data:`DEFENSES` maps a name to a factory.  A factory is called with keyword
parameters, ``factory(**params)``, or, for a checkpoint-based defense whose first parameter is named ``path``,
``factory(path, **params)``.  It returns an :class:`torch.nn.Module` that

* maps (B,C,H,W) images in [0,1] to (B,C,H,W) images in [0,1] (it preprocesses; it does not classify);
* has the attributes ``name`` (str, the registry name), ``params`` (a JSON-ready dict of the parameters that
  define it, for run records), ``differentiable`` (True only if its forward pass gives true input gradients)
  and ``bpda`` (True if its backward pass is a BPDA approximation instead of its true gradient);
* validates its parameters when built and raises :class:`~advbench.errors.ConfigError` naming the bad one.

A spec string names a defense and its parameters (see :func:`parse_defense`): ``jpeg``, ``jpeg:quality=60``,
``bitdepth:bits=3``, ``median:k=5,bpda=true``, or ``defensenet:/path/to/ckpt.safetensors,lam=0.1`` for a
factory that takes a ``path``.  :class:`DefendedModel` runs ``victim(defense(x))`` and reports the defense for
the run record through :meth:`DefendedModel.defense_info`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from advbench.defenses.registry import DEFENSES
from advbench.errors import ConfigError, InputError

#: Attributes of the victim that :class:`DefendedModel` exposes as its own (the shape contract and provenance).
PASSTHROUGH_ATTRIBUTES: tuple[str, ...] = ("input_shape", "num_classes", "arch", "checkpoint_meta")


def list_defenses(pattern: str | None = None) -> list[str]:
    """Registered defense names, optionally filtered by a wildcard such as ``'j*'``."""
    return DEFENSES.names(pattern)


def _parse_value(raw: str) -> Any:
    """``'true'`` -> True, ``'60'`` -> 60, ``'0.5'`` -> 0.5, anything else stays a string."""
    text = raw.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_defense(spec: str) -> nn.Module:
    """Build a defense from a spec ``NAME[:[PATH,]KEY=VALUE,...]`` using the :data:`DEFENSES` registry.

    Values are read as booleans (``true``/``false``), integers, floats or strings.  A piece without ``=`` is the
    checkpoint path, allowed only first and only for factories whose first parameter is ``path``; a path
    cannot contain a comma.

    >>> parse_defense("jpeg:quality=60").params
    {'quality': 60}
    >>> parse_defense("jpg")
    Traceback (most recent call last):
    ...
    advbench.errors.UnknownNameError: unknown defense 'jpg'; known defenses: bitdepth, ...jpeg, median...
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a defense spec must be a non-empty string such as 'jpeg:quality=60', got {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    factory = DEFENSES.get(name)
    parameters = inspect.signature(factory).parameters
    takes_path = next(iter(parameters), None) == "path"
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    known = [k for k, p in parameters.items() if k != "path" and p.kind is not inspect.Parameter.VAR_KEYWORD]
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    pieces = [piece.strip() for piece in rest.split(",")] if rest.strip() else []
    for index, piece in enumerate(pieces):
        key, eq, raw = piece.partition("=")
        key = key.strip()
        if not eq:
            if index == 0 and takes_path and piece:
                args.append(piece)
                continue
            if takes_path:
                hint = f"'{name}:PATH,KEY=VALUE' (the path first)"
            elif known:
                hint = f"KEY=VALUE, e.g. '{name}:{known[0]}=...'"
            else:
                hint = f"nothing: '{name}' takes no parameters"
            raise ConfigError(f"cannot read '{piece}' in defense spec '{spec}': give parameters as {hint}")
        if not key or (key not in known and not open_kwargs):
            accepted = ", ".join(known) or "none"
            raise ConfigError(f"defense '{name}' has no parameter '{key}' (in spec '{spec}'); its parameters: "
                              f"{accepted}")
        if key in kwargs:
            raise ConfigError(f"parameter '{key}' is given twice in defense spec '{spec}'; give it once")
        if not raw.strip():
            raise ConfigError(f"parameter '{key}' has no value in defense spec '{spec}'; write {key}=VALUE")
        kwargs[key] = _parse_value(raw)
    if takes_path and not args and parameters["path"].default is inspect.Parameter.empty:
        raise ConfigError(f"defense '{name}' needs a checkpoint: write '{name}:/path/to/checkpoint'")
    return factory(*args, **kwargs)


class DefendedModel(nn.Module):
    """``victim(preprocess(x))``: a defended model that attacks can run through, end to end.

    The victim's ``input_shape``, ``num_classes``, ``arch`` and ``checkpoint_meta`` (when it has them) are exposed
    as the defended model's own, so the engine treats it like the victim.  Whether white-box attacks see true
    gradients, BPDA approximations or zero gradients is the preprocessing module's business (see
    :mod:`advbench.defenses.input_transforms`); :meth:`defense_info` says which, for the run record.
    """

    def __init__(self, preprocess: nn.Module, victim: nn.Module) -> None:
        super().__init__()
        for role, module in (("preprocess", preprocess), ("victim", victim)):
            if not isinstance(module, nn.Module):
                raise ConfigError(f"DefendedModel needs an nn.Module as {role}, got {type(module).__name__}; "
                                  "build the defense with parse_defense('jpeg') or a DEFENSES factory")
        pre_shape, victim_shape = getattr(preprocess, "input_shape", None), getattr(victim, "input_shape", None)
        if pre_shape is not None and victim_shape is not None and tuple(pre_shape) != tuple(victim_shape):
            raise InputError(f"defense '{getattr(preprocess, 'name', type(preprocess).__name__)}' was built for inputs "
                             f"of shape {tuple(pre_shape)} but the victim takes {tuple(victim_shape)}; train the "
                             "defense for this victim")
        self.preprocess = preprocess
        self.victim = victim
        for attr in PASSTHROUGH_ATTRIBUTES:
            if hasattr(victim, attr):
                setattr(self, attr, getattr(victim, attr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.victim(self.preprocess(x))

    def defense_info(self) -> dict[str, Any]:
        """``{name, params, differentiable, bpda}`` of the preprocessing module, JSON-ready for run records.

        A module without these attributes is reported by its class name, with no params, as differentiable
        (it is an ordinary network) and without BPDA.
        """
        pre = self.preprocess
        return {
            "name": str(getattr(pre, "name", type(pre).__name__.lower())),
            "params": dict(getattr(pre, "params", {})),
            "differentiable": bool(getattr(pre, "differentiable", True)),
            "bpda": bool(getattr(pre, "bpda", False)),
        }


# Registers jpeg, bitdepth, median and defensenet (the modules import DEFENSES from here, defined above).
from advbench.defenses import defensenet, input_transforms  # noqa: E402,F401
