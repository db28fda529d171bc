"""Checked torch devices: a bad ``--device`` stops with a clear error before any work starts.

>>> check_device("cpu")
device(type='cpu')
>>> check_device("gpu")
Traceback (most recent call last):
...
advbench.errors.ConfigError: --device 'gpu' is not a torch device; use cpu, cuda or cuda:N
"""

from __future__ import annotations

import torch

from advbench.errors import ConfigError


def check_device(name: str | torch.device, param: str = "--device") -> torch.device:
    """``name`` as a :class:`torch.device`, refused with a :class:`ConfigError` naming ``param`` when it is
    not a device string or names a CUDA device this machine does not have."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{param} {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{param} {name!r}: CUDA is not available on this machine (torch "
                              f"{torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{param} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered from 0")
    elif dev.type != "cpu":
        raise ConfigError(f"{param} {name!r}: advbench runs on cpu or cuda, not {dev.type}")
    return dev


def module_device(module: torch.nn.Module, default: torch.device | None = None) -> torch.device:
    """The device of ``module``'s first parameter (``default``, else the CPU, for a module without any)."""
    return next((p.device for p in module.parameters()), default or torch.device("cpu"))
