"""Physically remove pruned filters: turn structured zeros in dense tensors into a smaller, faster model.

Filter pruning zeroes whole output filters of a ``Conv2d`` (``weight[o] == 0`` and ``bias[o] == 0``) but leaves
the tensor dense, so the pruned model costs as much as the dense one.  :func:`shrink_model` rebuilds the
layers with those filters removed, and every layer that reads them adjusted, so the saving is real.

How a conv is found safe to shrink: the model is traced with ``torch.fx`` and, for every ``Conv2d``, its
output is followed through channel-wise operations only (``ReLU``/``torch.relu`` and other element-wise
activations, ``BatchNorm2d``, ``MaxPool2d``/``AvgPool2d`` and their adaptive forms, ``Identity``,
``Dropout``) into exactly one consumer: another ``Conv2d`` (its input channels are dropped) or a flatten
followed by a ``Linear`` (the matching ``H*W`` blocks of input features are dropped).  A conv whose output
is used by anything else, such as the residual add of a ResNet block, is left as it is.

A channel of the producer conv is removed when its contribution to the consumer is known exactly:

* its filter's weights are zero, so the conv outputs the constant ``bias[o]`` there (0 without a bias, and
  after filter pruning, which zeroes the bias too) and after the BatchNorm/activation chain the channel is
  still a constant ``c`` (in eval mode a BatchNorm turns a zero channel into
  ``beta - mean * gamma / sqrt(var + eps)``).  ``c == 0``
  contributes nothing; ``c != 0`` is folded into the consumer's bias (``c * sum`` of the consumer's weights
  on that channel), which is exact for a ``Linear`` and for a ``Conv2d`` without zero padding.  A zero-padded
  conv sees ``0`` instead of ``c`` at the borders, so there the channel is kept;
* or the consumer's weights on that channel are all zero (channel pruning), whatever the channel holds.

The shrunk model computes the same function as the pruned one **in eval mode** (BatchNorm running
statistics, no dropout); it is meant for inference.  In train mode BatchNorm uses batch statistics and
the folded constants no longer apply.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from advbench.errors import ConfigError, InputError

__all__ = ["count_flops", "count_params", "shrink_model", "shrinkable_convs"]

SUPPORTED = (
    "Conv2d -> [BatchNorm2d | ReLU/torch.relu (or another element-wise activation) | MaxPool2d/AvgPool2d | "
    "Identity | Dropout]* -> Conv2d, or -> flatten -> Linear, with the conv's output used by nothing else"
)

# Element-wise activations: a constant channel stays a constant, computed by applying the op to it.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
)
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d)  # identities in eval mode
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh,
}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
_FLATTEN_FUNCTIONS = {torch.flatten}


@dataclass
class _Edge:
    """One shrinkable producer conv, the channel-wise chain after it and its single consumer."""

    producer: str
    consumer: str
    norms: list[str] = field(default_factory=list)
    chain: list[fx.Node] = field(default_factory=list)
    flatten_node: fx.Node | None = None  # set when the consumer is a Linear


# --- small helpers ------------------------------------------------------------------------------------------


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the block, then restore each one's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _other_inputs(node: fx.Node) -> list[fx.Node]:
    """Nodes ``node`` reads besides its first positional argument."""
    found: list[fx.Node] = []
    fx.node.map_arg((node.args[1:], node.kwargs), found.append)
    return found


def _reads_only_first(user: fx.Node, src: fx.Node) -> bool:
    """True when ``user`` reads ``src`` as its first positional argument and nowhere else."""
    return bool(user.args) and user.args[0] is src and src not in _other_inputs(user)


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """``nn.Flatten()`` / ``torch.flatten(x, 1)`` / ``x.flatten(1)``, i.e. flatten everything but the batch."""
    if node.op == "call_module":
        m = modules.get(str(node.target))
        return type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1
    if (node.op == "call_function" and node.target in _FLATTEN_FUNCTIONS) or (
        node.op == "call_method" and node.target == "flatten"
    ):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return False


def _is_channelwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Ops that act on each channel separately and keep the channel count."""
    if node.op == "call_module":
        m = modules.get(str(node.target))
        if type(m) is nn.BatchNorm2d:
            return m.running_mean is not None and m.running_var is not None
        if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) and m.return_indices:
            return False
        return isinstance(m, (*_ELEMENTWISE_MODULES, *_IDENTITY_MODULES, nn.MaxPool2d, nn.AvgPool2d,
                              nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS and not _other_inputs(node)
    if node.op == "call_method":
        return node.target in _ELEMENTWISE_METHODS and not _other_inputs(node)
    return False


def _padding_is_zero(conv: nn.Conv2d) -> bool:
    if isinstance(conv.padding, str):
        return conv.padding == "valid"
    return all(int(p) == 0 for p in conv.padding)


def _has_mask(module: nn.Module) -> bool:
    """A ``torch.nn.utils.prune`` reparametrisation or a ``torch.nn.utils.parametrize`` parametrisation."""
    return hasattr(module, "weight_orig") or hasattr(module, "bias_orig") or hasattr(module, "parametrizations")


# --- analysis -----------------------------------------------------------------------------------------------


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ... on untraceable code
        raise ConfigError(
            f"shrink_model cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}). "
            f"It needs a forward without data-dependent control flow; supported structures: {SUPPORTED}. "
            "Rewrite the forward to be traceable, or shrink a traceable submodule (e.g. model.net) instead."
        ) from exc


def _aliased(model: nn.Module) -> set[int]:
    """ids of the modules registered under more than one name (replacing one name would leave the other stale)."""
    seen: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        seen[id(m)] = seen.get(id(m), 0) + 1
    return {k for k, n in seen.items() if n > 1}


def _find_edges(graph: fx.Graph, modules: dict[str, nn.Module], aliased: set[int]) -> list[_Edge]:
    """Every Conv2d whose output reaches exactly one Conv2d / flatten->Linear through channel-wise ops."""
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1

    def rewritable(name: str, kind: type[nn.Module]) -> bool:
        m = modules.get(name)
        return type(m) is kind and calls.get(name) == 1 and id(m) not in aliased

    edges = []
    for node in graph.nodes:
        if node.op != "call_module" or not rewritable(str(node.target), nn.Conv2d):
            continue
        if modules[str(node.target)].groups != 1:
            continue
        edge = _Edge(producer=str(node.target), consumer="")
        cur = node
        while True:
            users = list(cur.users)
            if len(users) != 1 or not _reads_only_first(users[0], cur):
                break
            user = users[0]
            target = str(user.target)
            if user.op == "call_module" and rewritable(target, nn.Conv2d):
                if modules[target].groups == 1:
                    edge.consumer = target
                break
            if _is_flatten(user, modules):
                nxt = list(user.users)
                if len(nxt) == 1 and nxt[0].op == "call_module" and rewritable(str(nxt[0].target), nn.Linear) \
                        and _reads_only_first(nxt[0], user):
                    edge.consumer, edge.flatten_node = str(nxt[0].target), user
                break
            if not _is_channelwise(user, modules):
                break
            if user.op == "call_module" and type(modules[target]) is nn.BatchNorm2d:
                if calls.get(target) != 1 or id(modules[target]) in aliased:
                    break
                edge.norms.append(target)
            edge.chain.append(user)
            cur = user
        if edge.consumer:
            edges.append(edge)
    return edges


def _constant_through_chain(edge: _Edge, modules: dict[str, nn.Module],
                            c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode value after the chain of channels that are the constants ``c`` at the producer's output.

    Returns ``(c, ok)``, both of length ``channels``: ``c`` in float64, ``ok`` False where an average pool
    with zero padding would make a non-zero constant vary at the borders.
    """
    ok = torch.ones(c.shape[0], dtype=torch.bool)
    for node in edge.chain:
        if node.op == "call_module":
            m = modules[str(node.target)]
            if type(m) is nn.BatchNorm2d:
                mean = m.running_mean.detach().double().cpu()
                var = m.running_var.detach().double().cpu()
                gamma = m.weight.detach().double().cpu() if m.weight is not None else torch.ones_like(mean)
                beta = m.bias.detach().double().cpu() if m.bias is not None else torch.zeros_like(mean)
                c = (c - mean) / torch.sqrt(var + m.eps) * gamma + beta
            elif isinstance(m, nn.AvgPool2d):
                pad = m.padding if isinstance(m.padding, tuple) else (m.padding,)
                if m.divisor_override is not None or m.ceil_mode or (m.count_include_pad and any(int(p) for p in pad)):
                    ok &= c == 0
            elif isinstance(m, _ELEMENTWISE_MODULES):
                c = m(c.clone().view(1, -1, 1, 1)).flatten()
            # max pools, adaptive pools, identities and (eval-mode) dropout keep a constant as it is
        elif node.op == "call_function":
            fn = F.relu if node.target in (torch.relu_, F.relu_) else node.target
            kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
            c = fn(c.clone().view(1, -1, 1, 1), *node.args[1:], **kwargs).flatten()
        else:  # call_method
            c = getattr(c.clone().view(1, -1, 1, 1), str(node.target).rstrip("_"))().flatten()
    return c, ok


# --- rebuilding ---------------------------------------------------------------------------------------------


def _param(t: torch.Tensor, like: nn.Parameter | None) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=like.requires_grad if like is not None else True)


def _new_conv(old: nn.Conv2d, out_keep: torch.Tensor, in_keep: torch.Tensor, bias_delta: torch.Tensor | None):
    weight = old.weight.detach()[out_keep][:, in_keep]
    bias = old.bias.detach() if old.bias is not None else None
    if bias_delta is not None and bool((bias_delta != 0).any()):
        delta = bias_delta.to(weight.device)
        base = bias.double() if bias is not None else torch.zeros_like(delta)
        bias = (base + delta).to(weight.dtype)
    new = nn.Conv2d(int(in_keep.sum()), int(out_keep.sum()), old.kernel_size, stride=old.stride,
                    padding=old.padding, dilation=old.dilation, groups=1, bias=bias is not None,
                    padding_mode=old.padding_mode, device=weight.device, dtype=weight.dtype)
    new.weight = _param(weight, old.weight)
    if bias is not None:
        new.bias = _param(bias[out_keep], old.bias if old.bias is not None else old.weight)
    return new


def _new_linear(old: nn.Linear, in_keep: torch.Tensor, bias_delta: torch.Tensor | None) -> nn.Linear:
    weight = old.weight.detach()[:, in_keep]
    bias = old.bias.detach() if old.bias is not None else None
    if bias_delta is not None and bool((bias_delta != 0).any()):
        delta = bias_delta.to(weight.device)
        base = bias.double() if bias is not None else torch.zeros_like(delta)
        bias = (base + delta).to(weight.dtype)
    new = nn.Linear(int(in_keep.sum()), old.out_features, bias=bias is not None, device=weight.device,
                    dtype=weight.dtype)
    new.weight = _param(weight, old.weight)
    if bias is not None:
        new.bias = _param(bias, old.bias if old.bias is not None else old.weight)
    return new


def _new_norm(old: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(int(keep.sum()), eps=old.eps, momentum=old.momentum, affine=old.affine,
                         track_running_stats=old.track_running_stats, device=old.running_mean.device,
                         dtype=old.running_mean.dtype)
    if old.affine:
        new.weight = _param(old.weight.detach()[keep], old.weight)
        new.bias = _param(old.bias.detach()[keep], old.bias)
    new.running_mean = old.running_mean.detach()[keep].clone()
    new.running_var = old.running_var.detach()[keep].clone()
    if old.num_batches_tracked is not None:
        new.num_batches_tracked = old.num_batches_tracked.detach().clone()
    return new


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


# --- public API ---------------------------------------------------------------------------------------------


def shrink_model(model: nn.Module, *, example_input_shape: Sequence[int] | None = None) -> nn.Module:
    """A smaller copy of ``model`` with the all-zero filters of its ``Conv2d`` layers physically removed.

    Every ``Conv2d`` whose output passes through channel-wise ops only (BatchNorm2d, ReLU / torch.relu and
    other element-wise activations, max / average pooling, Identity, Dropout) into exactly one ``Conv2d`` or a
    flatten followed by a ``Linear``, and is used by nothing else, loses its zero filters (``weight[o] == 0``
    and ``bias[o] == 0`` or no bias; with ``bias[o] != 0`` the filter outputs a constant and is treated like
    one that BatchNorm makes constant, below); the BatchNorm2d layers on the way lose the same channels and the
    consumer loses the matching input channels (for a ``Linear``, the matching blocks of ``H*W`` features).
    A zero filter that BatchNorm (or an activation) turns into a non-zero constant is folded into the
    consumer's bias where that is exact (a ``Linear``, or a ``Conv2d`` without zero padding) and kept
    otherwise.  Input channels whose consumer weights are all zero (channel pruning) are removed as well.
    Convs that feed a residual add or several layers are left whole.

    The shrunk model gives the same outputs as ``model`` in eval mode (up to float rounding); it is meant for
    inference.  ``model`` itself is not modified: the result is a deep copy whose changed layers are replaced
    by new ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` modules under the same names, so the model's own
    ``forward`` and attributes (e.g. a ``NormalizedModel``'s ``input_shape``) are kept.  Hooks registered
    on replaced layers are not carried over.  A model with no ``Conv2d`` to shrink (none at all, none with a
    zero filter, or none in a supported position) is returned as an unchanged copy.

    Args:
        model: the pruned model (typically a ``NormalizedModel`` from ``advbench.models.create_model``).
        example_input_shape: ``(C, H, W)`` of one input, used to check the flatten sizes; defaults to
            ``model.input_shape`` when the model has one, otherwise the ``H*W`` block of each Linear is
            inferred from its ``in_features``.

    Raises:
        ConfigError: ``model`` cannot be traced with ``torch.fx``, or a layer to rewrite still carries a
            ``torch.nn.utils.prune`` mask or a parametrisation.
        InputError: ``example_input_shape`` does not fit the model.
    """
    new_model = copy.deepcopy(model)
    if not any(isinstance(m, nn.Conv2d) for m in new_model.modules()):
        return new_model
    gm = _trace(new_model)
    modules = dict(gm.named_modules())
    edges = _find_edges(gm.graph, modules, _aliased(new_model))
    if not edges:
        return new_model

    shape = example_input_shape if example_input_shape is not None else getattr(model, "input_shape", None)
    if shape is not None and any(e.flatten_node is not None for e in edges):
        _propagate_shapes(gm, new_model, shape)

    out_keep: dict[str, torch.Tensor] = {}
    in_keep: dict[str, torch.Tensor] = {}
    norm_keep: dict[str, torch.Tensor] = {}
    bias_delta: dict[str, torch.Tensor] = {}
    for edge in edges:
        for name in (edge.producer, edge.consumer, *edge.norms):
            if _has_mask(modules[name]):
                raise ConfigError(
                    f"layer '{name}' still carries a pruning mask or parametrisation; make it permanent first "
                    f"(torch.nn.utils.prune.remove(layer, 'weight') / parametrize.remove_parametrizations) "
                    "and call shrink_model again"
                )
        plan = _plan_edge(edge, modules)
        if plan is None:
            continue
        keep, consumer_keep, delta = plan
        out_keep[edge.producer] = keep
        for n in edge.norms:
            norm_keep[n] = keep
        in_keep[edge.consumer] = consumer_keep
        if delta is not None:
            bias_delta[edge.consumer] = delta

    for name in sorted(set(out_keep) | set(in_keep)):
        old = modules[name]
        if isinstance(old, nn.Conv2d):
            o_keep = out_keep.get(name, torch.ones(old.out_channels, dtype=torch.bool))
            i_keep = in_keep.get(name, torch.ones(old.in_channels, dtype=torch.bool))
            new = _new_conv(old, o_keep.to(old.weight.device), i_keep.to(old.weight.device), bias_delta.get(name))
        else:
            new = _new_linear(old, in_keep[name].to(old.weight.device), bias_delta.get(name))
        new.train(old.training)
        _set_submodule(new_model, name, new)
    for name, keep in norm_keep.items():
        old = modules[name]
        new = _new_norm(old, keep.to(old.running_mean.device))
        new.train(old.training)
        _set_submodule(new_model, name, new)
    return new_model


def shrinkable_convs(model: nn.Module) -> dict[str, str]:
    """The ``Conv2d`` layers :func:`shrink_model` can take filters out of, each mapped to the layer reading it.

    Keys and values are qualified module names (e.g. ``{'net.layers.0.conv1': 'net.layers.0.conv2'}``); a
    conv is listed when its output reaches exactly one ``Conv2d`` or flatten->``Linear`` through channel-wise
    ops and nothing else uses it (so a conv feeding a residual add is not).  Whether filters are actually
    removed also depends on the weights (see :func:`shrink_model`).  ``model`` is not modified.

    Raises:
        ConfigError: ``model`` cannot be traced with ``torch.fx``.
    """
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return {}
    gm = _trace(model)
    return {e.producer: e.consumer for e in _find_edges(gm.graph, dict(gm.named_modules()), _aliased(model))}


def _propagate_shapes(gm: fx.GraphModule, model: nn.Module, shape: Sequence[int]) -> None:
    """Record each node's output shape (``node.meta['tensor_meta']``) for one example input of ``shape``."""
    shape = tuple(int(v) for v in shape)
    ref = next(iter(model.parameters()), None)
    x = torch.zeros((1, *shape), device=ref.device if ref is not None else None,
                    dtype=ref.dtype if ref is not None and ref.is_floating_point() else torch.float32)
    try:
        with _eval_mode(model), torch.no_grad():
            ShapeProp(gm).propagate(x)
    except Exception as exc:
        raise InputError(
            f"example_input_shape {shape} does not fit {type(model).__name__} ({type(exc).__name__}: {exc}); "
            "pass the (C, H, W) of one input the model accepts"
        ) from exc


def _plan_edge(edge: _Edge, modules: dict[str, nn.Module]):
    """``(producer keep mask, consumer input keep mask, consumer bias delta or None)``, or None to skip."""
    producer: nn.Conv2d = modules[edge.producer]
    consumer = modules[edge.consumer]
    channels = producer.out_channels
    weight = producer.weight.detach()
    zero = (weight.flatten(1) == 0).all(1).cpu()  # such a filter outputs the constant bias[o] (0 without bias)
    c0 = producer.bias.detach().double().cpu() if producer.bias is not None else torch.zeros(channels,
                                                                                            dtype=torch.float64)

    cw = consumer.weight.detach().double().cpu()
    if isinstance(consumer, nn.Conv2d):
        if consumer.in_channels != channels:
            return None
        block = 1
        col_sums = cw.sum((2, 3))  # (out, C)
        unused = (cw == 0).all(3).all(2).all(0)
        fold_ok = consumer.padding_mode != "zeros" or _padding_is_zero(consumer)
    else:
        if consumer.in_features % channels:
            return None
        block = consumer.in_features // channels
        meta = edge.flatten_node.args[0].meta.get("tensor_meta") if edge.flatten_node is not None else None
        meta_shape = tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None
        if meta_shape is not None and (meta_shape[1] != channels or _prod(meta_shape[2:]) != block):
            return None
        per_channel = cw.view(cw.shape[0], channels, block)
        col_sums = per_channel.sum(2)
        unused = (per_channel == 0).all(2).all(0)
        fold_ok = True

    c, const_ok = _constant_through_chain(edge, modules, c0)
    foldable = zero & const_ok & torch.isfinite(c) & ((c == 0) | fold_ok)
    remove = unused | foldable
    if bool(remove.all()):
        remove[0] = False  # a layer needs at least one channel
    if not bool(remove.any()):
        return None
    keep = ~remove
    folded = remove & ~unused & (c != 0)
    delta = None
    if bool(folded.any()):
        delta = col_sums @ torch.where(folded, c, torch.zeros_like(c))
    consumer_keep = keep.repeat_interleave(block) if block > 1 else keep
    return keep, consumer_keep, delta


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def count_params(model: nn.Module) -> int:
    """Number of parameter elements of ``model`` (each shared parameter once; buffers not included)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of every ``Conv2d`` and ``Linear`` call for one input of ``input_shape`` ``(C, H, W)``.

    Measured with forward hooks on a zero input of batch size 1, in eval mode (each module's own train/eval
    flag is restored afterwards) and without gradients.  A conv costs ``out.numel() * in_channels / groups *
    kh * kw`` MACs, a linear ``out.numel() * in_features``; other ops (activations, norms, pooling, adds) are
    not counted.

    Raises:
        InputError: the model cannot run on an input of ``input_shape``.
    """
    shape = tuple(int(v) for v in input_shape)
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ref = next(iter(model.parameters()), None)
    x = torch.zeros((1, *shape), device=ref.device if ref is not None else None,
                    dtype=ref.dtype if ref is not None and ref.is_floating_point() else torch.float32)
    try:
        with _eval_mode(model), torch.no_grad():
            model(x)
    except RuntimeError as exc:
        raise InputError(
            f"count_flops: {type(model).__name__} cannot run on an input of shape {shape} ({exc}); "
            "pass the (C, H, W) of one input the model accepts"
        ) from exc
    finally:
        for h in handles:
            h.remove()
    return int(total)
