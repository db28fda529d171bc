"""``timm:<name>`` models: any timm architecture, randomly initialised or from a *local* weights file.

timm's hub download is never used (``pretrained`` stays False): on an offline machine it would
stall on the network.  Pass ``weights=PATH`` to load a local state dict through the safe loader.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from advbench.errors import CheckpointError, ConfigError, UnknownNameError


def create_timm_model(
    name: str, *, input_shape: Sequence[int], num_classes: int, weights: str | None = None
) -> nn.Module:
    """Build timm model ``name`` with ``num_classes`` outputs and ``in_chans`` from the input shape."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:10]
        raise UnknownNameError(
            f"unknown timm model '{name}'" + (f"; close matches: {', '.join(close)}" if close else "")
        )
    channels, height, _ = (int(v) for v in input_shape)
    kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": channels}
    try:
        net = timm.create_model(name, img_size=height, **kwargs)
    except TypeError:  # most CNNs take no img_size
        net = timm.create_model(name, **kwargs)
    if weights:
        from advbench.checkpoints import read_state_dict

        state = read_state_dict(weights)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{weights} does not match timm model '{name}': missing {list(missing)[:5]}, "
                f"unexpected {list(unexpected)[:5]}"
            )
    elif weights is not None:
        raise ConfigError("weights must be a path to a local weights file")
    return net
