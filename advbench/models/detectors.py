"""Small torchvision detectors for aerial vehicles, and the wrapper the patch attacks talk to.

Two architectures are registered in :data:`~advbench.models.registry.MODELS`, both built from scratch (random init,
never a download) on a MobileNetV3-Small feature pyramid whose finest level has stride 8, so 6-40 px vehicles of
UAV imagery at 50-90 m (EVD4UAV, Sun, Guo et al., arXiv 2403.05422) are reachable:

* ``fasterrcnn-mnv3`` -- two-stage Faster R-CNN (Ren et al., NeurIPS 2015) with a MobileNetV3
  (Howard et al., ICCV 2019) FPN (Lin et al., CVPR 2017) backbone.
* ``fcos-mnv3`` -- single-stage, anchor-free FCOS (Tian et al., ICCV 2019) on the same backbone.

:class:`Detector` wraps either one.  Its labels are the data set's 0-based class indices (Faster R-CNN's
background slot is hidden), :meth:`Detector.detect` returns torchvision-style detections, and
:meth:`Detector.candidates` returns every scored candidate box *with gradients*: the class score of
each candidate and the objectness (RPN objectness for Faster R-CNN, centerness for FCOS) that the
patch attacks of Thys et al. (CVPRW 2019) minimise.

>>> det = create_detector("fcos-mnv3", class_names=("Car", "Bus", "Truck"), image_size=(128, 96))
>>> [d["boxes"].shape[1] for d in det.detect(torch.rand(2, 3, 96, 128))]
[4, 4]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small
from torchvision.models.detection import FCOS, FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from advbench.devices import module_device
from advbench.errors import ConfigError, InputError
from advbench.models.registry import MODELS
from advbench.task_names import DETECTION

#: The stride-8/16/32 MobileNetV3-Small blocks feeding the pyramid, and their channel counts.
_RETURN_LAYERS = {"2": "0", "4": "1", "9": "2"}
_IN_CHANNELS = [24, 40, 96]
#: Anchor side per pyramid level (strides 8, 16, 32 and the max-pooled 64).
_ANCHOR_SIZES = ((8, 12), (16, 24), (32, 48), (64, 96))


def mobilenet_fpn(out_channels: int = 64) -> BackboneWithFPN:
    """A randomly initialised MobileNetV3-Small FPN with levels at strides 8, 16, 32 and 64."""
    features = mobilenet_v3_small(weights=None, norm_layer=nn.BatchNorm2d).features
    return BackboneWithFPN(features, _RETURN_LAYERS, _IN_CHANNELS, out_channels, extra_blocks=LastLevelMaxPool())


def _sizes(image_size: tuple[int, int]) -> dict[str, int]:
    """Keep images at their own scale: torchvision's transform resizes the short side to ``min_size``."""
    w, h = image_size
    return {"min_size": min(w, h), "max_size": max(w, h)}


#: A factory: ``factory(num_classes, image_size, **options) -> nn.Module`` (a torchvision detector).
DetectorFactory = Callable[..., nn.Module]
#: Architectures register in the one model registry, :data:`advbench.models.registry.MODELS`, with task DETECTION.


@MODELS.register("fasterrcnn-mnv3", task=DETECTION)
def fasterrcnn_mnv3(num_classes: int, image_size: tuple[int, int], width: int = 64) -> nn.Module:
    """Faster R-CNN with a MobileNetV3-Small FPN; ``num_classes`` excludes the background."""
    anchors = AnchorGenerator(_ANCHOR_SIZES, ((0.5, 1.0, 2.0),) * len(_ANCHOR_SIZES))
    roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2)
    return FasterRCNN(
        mobilenet_fpn(width), num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
        box_head=TwoMLPHead(width * 49, 256), box_predictor=FastRCNNPredictor(256, num_classes + 1),
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=600,
        rpn_post_nms_top_n_test=300, box_batch_size_per_image=128, box_detections_per_img=100,
        box_score_thresh=0.05, **_sizes(image_size),
    )


@MODELS.register("fcos-mnv3", task=DETECTION)
def fcos_mnv3(num_classes: int, image_size: tuple[int, int], width: int = 64) -> nn.Module:
    """FCOS with a MobileNetV3-Small FPN (``width`` must be a multiple of 32 for its GroupNorm head)."""
    if width % 32:
        raise ConfigError(f"fcos-mnv3 width must be a multiple of 32 (GroupNorm), got {width}")
    anchors = AnchorGenerator(tuple((s[0],) for s in _ANCHOR_SIZES), ((1.0,),) * len(_ANCHOR_SIZES))
    return FCOS(mobilenet_fpn(width), num_classes=num_classes, anchor_generator=anchors,
                score_thresh=0.05, detections_per_img=100, topk_candidates=300, **_sizes(image_size))


@dataclass
class Candidates:
    """Every scored candidate box of one image, before thresholding and NMS.

    ``boxes`` (M, 4) xyxy in input pixels (detached); ``scores`` (M,) the best vehicle-class score of each
    candidate, differentiable w.r.t. the input image; ``objectness_boxes`` (A, 4) and ``objectness`` (A,)
    the detector's class-agnostic "something is here" score: RPN anchors for Faster R-CNN, FCOS locations
    (centerness) for FCOS.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    objectness_boxes: torch.Tensor
    objectness: torch.Tensor


class _Capture:
    """Forward hooks that keep the tensors a candidate read-out needs, for one forward pass."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.values: dict[str, Any] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str):
        def hook(_module: nn.Module, args: tuple, output: Any) -> None:
            self.values[name] = (args, output)

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()


class Detector(nn.Module):
    """A torchvision detector with 0-based data-set labels and differentiable candidate scores.

    ``model`` is a Faster R-CNN or FCOS instance; ``class_names`` names the data set's classes in label order.
    Inputs are float (B, 3, H, W) batches in [0, 1] (the detector normalises internally).
    """

    def __init__(self, model: nn.Module, *, arch: str, class_names: Sequence[str], image_size: tuple[int, int],
                 options: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(model, FasterRCNN | FCOS):
            raise ConfigError(f"Detector wraps torchvision FasterRCNN or FCOS models, got {type(model).__name__}")
        self.model = model
        self.arch = arch
        self.class_names = tuple(class_names)
        self.image_size = tuple(image_size)
        self.options = dict(options or {})
        self.two_stage = isinstance(model, FasterRCNN)

    @property
    def device(self) -> torch.device:
        """Where the detector's weights live; inputs on another device are moved here."""
        return module_device(self.model)

    @property
    def label_offset(self) -> int:
        """Faster R-CNN reserves label 0 for the background; FCOS does not."""
        return 1 if self.two_stage else 0

    def metadata(self) -> dict[str, Any]:
        """What :func:`advbench.detection.checkpoints.load_detector` needs to rebuild this detector."""
        return {"task": "detection", "arch": self.arch, "class_names": list(self.class_names),
                "image_size": list(self.image_size), "options": self.options}

    def _as_list(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """A (B, 3, H, W) batch or a list of (3, H_i, W_i) images -> a list of images on :attr:`device`, checked.

        Moving keeps the autograd graph, so gradients still reach inputs that live on another device."""
        items = list(images.unbind(0)) if isinstance(images, torch.Tensor) and images.dim() == 4 else images
        if isinstance(items, torch.Tensor) or not all(
                isinstance(t, torch.Tensor) and t.dim() == 3 and t.shape[0] == 3 for t in items):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"detector input must be a float (B, 3, H, W) batch in [0, 1] or a list of "
                             f"(3, H, W) images, got {got}")
        dev = self.device
        return [t.to(dev) for t in items]

    def training_losses(self, images: torch.Tensor | list[torch.Tensor],
                        targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The detector's own training losses; ``targets`` hold ``boxes`` (xyxy) and 0-based ``labels``."""
        dev = self.device
        shifted = [{"boxes": t["boxes"].to(dev), "labels": t["labels"].to(dev) + self.label_offset} for t in targets]
        return self.model(self._as_list(images), shifted)

    def _unshift(self, dets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - self.label_offset}
                for d in dets]

    @torch.no_grad()
    def detect(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Post-processed detections per image (``boxes`` xyxy, ``scores``, 0-based ``labels``), eval mode."""
        items = self._as_list(images)
        was_training = self.model.training
        self.model.eval()
        try:
            return self._unshift(self.model(items))
        finally:
            self.model.train(was_training)

    def candidates(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[Candidates]:
        """Every scored candidate per image (see :class:`Candidates`); gradients flow to ``images``."""
        items = self._as_list(images)
        was_training = self.model.training
        self.model.eval()
        try:
            return self._faster_rcnn_candidates(items) if self.two_stage else self._fcos_candidates(items)
        finally:
            self.model.train(was_training)

    @staticmethod
    def _rescale(boxes: torch.Tensor, inner: tuple[int, int], outer: tuple[int, int]) -> torch.Tensor:
        """Map boxes from the detector's resized frame (h, w) back to input pixels."""
        sy, sx = outer[0] / inner[0], outer[1] / inner[1]
        return boxes * boxes.new_tensor([sx, sy, sx, sy])

    def _faster_rcnn_candidates(self, images: list[torch.Tensor]) -> list[Candidates]:
        m = self.model
        cap = _Capture({"rpn_head": m.rpn.head, "anchors": m.rpn.anchor_generator, "roi": m.roi_heads,
                        "predictor": m.roi_heads.box_predictor, "transform": m.transform})
        try:
            m(images)
        finally:
            cap.close()
        image_list = cap.values["transform"][1][0]
        objectness_levels = cap.values["rpn_head"][1][0]
        anchors = cap.values["anchors"][1]
        proposals = cap.values["roi"][0][1]
        class_logits = cap.values["predictor"][1][0]
        n = len(images)
        # (B, A, H, W) per level -> (B, H*W*A): torchvision orders anchors location-major, anchor-minor.
        obj = torch.cat([o.permute(0, 2, 3, 1).reshape(n, -1) for o in objectness_levels], dim=1).sigmoid()
        cls = class_logits.softmax(dim=-1)[:, 1:].amax(dim=-1).split([len(p) for p in proposals])
        out = []
        for i in range(n):
            inner, outer = tuple(image_list.image_sizes[i]), tuple(images[i].shape[-2:])
            out.append(Candidates(boxes=self._rescale(proposals[i].detach(), inner, outer), scores=cls[i],
                                  objectness_boxes=self._rescale(anchors[i].detach(), inner, outer),
                                  objectness=obj[i]))
        return out

    def _fcos_candidates(self, images: list[torch.Tensor]) -> list[Candidates]:
        m = self.model
        cap = _Capture({"head": m.head, "anchors": m.anchor_generator, "transform": m.transform})
        try:
            m(images)
        finally:
            cap.close()
        image_list = cap.values["transform"][1][0]
        head = cap.values["head"][1]
        anchors = cap.values["anchors"][1]
        ctr = head["bbox_ctrness"].sigmoid().squeeze(-1)
        cls = (head["cls_logits"].sigmoid().amax(dim=-1) * ctr).sqrt()
        out = []
        for i in range(len(images)):
            inner, outer = tuple(image_list.image_sizes[i]), tuple(images[i].shape[-2:])
            boxes = m.box_coder.decode(head["bbox_regression"][i].detach(), anchors[i])
            boxes = self._rescale(boxes, inner, outer)
            out.append(Candidates(boxes=boxes, scores=cls[i], objectness_boxes=boxes, objectness=ctr[i]))
        return out


def create_detector(arch: str, *, class_names: Sequence[str], image_size: tuple[int, int],
                    seed: int = 0, **options: Any) -> Detector:
    """A randomly initialised (seeded) detector of architecture ``arch`` for ``class_names``.

    ``image_size`` is the ``(width, height)`` the detector works at; other sizes are rescaled internally.
    Weights are never downloaded: train with :func:`advbench.training.detection.train_detector` or load
    your own with :func:`advbench.detection.checkpoints.load_detector`.
    """
    factory = MODELS.get(arch, task=DETECTION)
    if not class_names:
        raise ConfigError("class_names is empty; a detector needs at least one class")
    w, h = image_size
    if min(w, h) < 32:
        raise ConfigError(f"image_size {w}x{h} is too small for a stride-64 pyramid; use at least 32 px per side")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory(len(class_names), (int(w), int(h)), **options)
    return Detector(model, arch=arch, class_names=class_names, image_size=(int(w), int(h)), options=options)
