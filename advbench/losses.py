"""Per-sample attack losses, written so that an attack always *maximises* them.

* ``ce``: cross-entropy of the true label (untargeted) or minus the cross-entropy of the target
  (targeted).
* ``cw``: the Carlini & Wagner margin (Carlini & Wagner, S&P 2017), as used by the min-max attack of
  Wang et al. (NeurIPS 2021, arXiv 1906.03563).  The untargeted margin that an attacker *minimises* is
  ``relu(Z_y - max_{j != y} Z_j + kappa)``; this module returns its negation so all losses are
  maximised.  Note the released TF code of the min-max paper computes the "other" logit wrongly
  (always 0); here the maximum is taken over the real logits of every other class.

>>> z = torch.tensor([[2.0, 5.0, 1.0]])
>>> cw_margin(z, torch.tensor([1]), kappa=0.0)    # 5 - max(2, 1) = 3
tensor([3.])
>>> cw_margin(z, torch.tensor([0]), kappa=0.0)    # 2 - 5 is negative -> 0
tensor([0.])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from advbench.errors import ConfigError, InputError
from advbench.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("loss")


def cw_margin(logits: torch.Tensor, labels: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """``relu(Z_y - max_{j != y} Z_j + kappa)`` per sample: zero once the label is beaten by kappa."""
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return (true_logit - others.amax(dim=1) + kappa).clamp_min(0)


def cw_targeted_margin(logits: torch.Tensor, target: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """``relu(max_{j != t} Z_j - Z_t + kappa)``: zero once the target class wins by kappa."""
    target_logit = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(target, logits.shape[1]).bool(), float("-inf"))
    return (others.amax(dim=1) - target_logit + kappa).clamp_min(0)


@LOSSES.register("ce")
def ce_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-sample objective to maximise: CE of the label, or -CE of the target when targeted."""
    loss = F.cross_entropy(logits, labels, reduction="none")
    return -loss if targeted else loss


def make_cw_loss(kappa: float) -> LossFn:
    """The negated C&W margin with confidence ``kappa`` as an objective to maximise."""
    if kappa < 0:
        raise ConfigError(f"kappa must be >= 0, got {kappa}")

    def loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
        if targeted:
            return -cw_targeted_margin(logits, labels, kappa)
        return -cw_margin(logits, labels, kappa)

    return loss


LOSSES.add("cw", make_cw_loss(0.0))


def get_loss(name: str, kappa: float = 0.0) -> LossFn:
    """Look up a loss by name; ``cw`` takes its confidence ``kappa``."""
    if name == "cw":
        return make_cw_loss(kappa)
    return LOSSES.get(name)


@LOSSES.register("dlr")
def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Difference-of-logits-ratio loss (Croce & Hein, ICML 2020), to maximise.

    Untargeted: ``-(Z_y - max_{j != y} Z_j) / (Z_(1) - Z_(3))`` with ``Z_(k)`` the k-th largest logit.
    Targeted (``labels`` are the targets): ``-(max_{j != t} Z_j - Z_t) / (Z_(1) - (Z_(3) + Z_(4)) / 2)``.
    The paper's targeted numerator uses the true class' logit; this form uses the best other class, which
    is the same while the true class leads and needs no second label tensor.  Needs at least 4 classes
    when targeted (3 untargeted).
    """
    needed = 4 if targeted else 3
    if logits.shape[1] < needed:
        raise InputError(f"the DLR loss needs at least {needed} classes ({'targeted' if targeted else 'untargeted'}); "
                         f"this model has {logits.shape[1]}: use loss='ce'")
    ordered = logits.sort(dim=1, descending=True).values
    label_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    if targeted:
        scale = ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2 + 1e-12
        return -(others - label_logit) / scale
    return -(label_logit - others) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
