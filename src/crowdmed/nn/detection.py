"""EARL-weighted FCOS: torchvision's FCOS detector whose losses are weighted per target box.

EARL (Le et al., 2023, eq. 2: ``L = c·L_cls + c·β·I(t)·L_loc``) trains a detector on boxes
fused from several readers and multiplies the loss of each fused box by its fused confidence
``c``, the number of boxes in its cluster (Algorithm 1, step 6: 1 to the number of readers),
so a box that only one reader drew teaches the network less than a box every reader drew.

:class:`EarlFCOSHead` is torchvision's :class:`~torchvision.models.detection.fcos.FCOSHead`
with one change in ``compute_loss``: every location matched to a target box (a positive)
has its classification (sigmoid focal), box-regression (GIoU) and centerness loss
multiplied by that box's weight, read from the optional per-image target key ``"weights"``
(shape ``(n_boxes,)``; torchvision passes extra target keys through to the head).
Negative locations (background) keep weight 1, the weight of a box one reader drew, and the
normaliser stays the number of positive locations, so with all weights equal to 1 (or no
``"weights"`` key) the loss is exactly torchvision's. With the count ``c >= 1`` a positive
never weighs less than background; a share in ``(0, 1]`` would weigh it down against the
background.

:func:`fcos_detector` builds a light FCOS for small grey canvases that trains on CPU in
minutes: a randomly initialised torchvision ResNet (ResNet-18, or by default a ResNet-10 with
one basic block per stage, about half the compute) truncated after ``layer3`` with a
64-channel FPN on strides 8 and 16 (plus a max-pooled stride-32 level), and a head of two
convolutions per branch. Nothing is downloaded (``weights=None``); a user checkpoint can be
loaded instead.

References:
    Le, Tran, Pham, Nguyen, Le, Nguyen, Nguyen (2023). Learning from multiple expert
    annotators for enhancing anomaly detection in medical image analysis. IEEE Access 11.
    https://doi.org/10.1109/ACCESS.2023.3270451; preprint https://arxiv.org/abs/2203.10611

    Tian, Zhi et al. (2019). FCOS: Fully convolutional one-stage object detection. ICCV.
    https://doi.org/10.1109/ICCV.2019.00972
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import Tensor, nn

try:
    import torchvision
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.models.resnet import BasicBlock, ResNet
    from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "crowdmed.nn.detection needs torchvision: pip install 'crowdmed[torch]'."
    ) from exc

__all__ = [
    "DETECTORS",
    "EarlFCOSHead",
    "build_detector",
    "fcos_detector",
    "load_detector_weights",
]

#: The detector networks :func:`build_detector` builds, by ``architecture["network"]``.
DETECTORS = ("centernet", "fcos")


class EarlFCOSHead(FCOSHead):
    """FCOS head whose positive locations are weighted by their target box's ``"weights"``.

    It takes the arguments of torchvision's ``FCOSHead``: ``in_channels`` (channels of the
    FPN features), ``num_anchors`` (anchors per location, 1 for FCOS), ``num_classes``
    (number of object classes) and ``num_convs`` (convolutions per branch).
    """

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """Classification, box-regression and centerness losses with per-box weights.

        Args:
            targets: One dict per image with ``boxes`` ``(n, 4)``, ``labels`` ``(n,)`` and
                optionally ``weights`` ``(n,)`` (the fused confidence of each box; 1 when
                absent).
            head_outputs: ``cls_logits`` ``(N, HWA, K)``, ``bbox_regression`` ``(N, HWA, 4)``
                and ``bbox_ctrness`` ``(N, HWA, 1)``.
            anchors: One ``(HWA, 4)`` tensor per image.
            matched_idxs: Per image, the matched box of every location, ``-1`` for background.

        Returns:
            ``classification``, ``bbox_regression`` and ``bbox_ctrness`` losses, each divided
            by the number of positive locations (as torchvision does).
        """
        cls_logits = head_outputs["cls_logits"]
        bbox_regression = head_outputs["bbox_regression"]
        bbox_ctrness = head_outputs["bbox_ctrness"]

        all_classes, all_boxes, all_weights = [], [], []
        for tgt, matched in zip(targets, matched_idxs, strict=True):
            n = len(tgt["labels"])
            weights = tgt.get("weights")
            if weights is None:
                weights = torch.ones(n, dtype=cls_logits.dtype, device=cls_logits.device)
            if n == 0:
                classes = tgt["labels"].new_zeros((len(matched),))
                boxes = tgt["boxes"].new_zeros((len(matched), 4))
                w = cls_logits.new_ones((len(matched),))
            else:
                classes = tgt["labels"][matched.clip(min=0)]
                boxes = tgt["boxes"][matched.clip(min=0)]
                w = weights.to(cls_logits.dtype)[matched.clip(min=0)]
            classes = classes.clone()
            classes[matched < 0] = -1  # background
            w = torch.where(matched < 0, torch.ones_like(w), w)  # negatives keep weight 1
            all_classes.append(classes)
            all_boxes.append(boxes)
            all_weights.append(w)
        gt_boxes = torch.stack(all_boxes)
        gt_classes = torch.stack(all_classes)
        loc_weights = torch.stack(all_weights)
        anchors_t = torch.stack(anchors)

        foreground = gt_classes >= 0
        num_foreground = max(1, int(foreground.sum().item()))

        target_onehot = torch.zeros_like(cls_logits)
        target_onehot[foreground, gt_classes[foreground]] = 1.0
        focal = sigmoid_focal_loss(cls_logits, target_onehot, reduction="none").sum(dim=-1)
        loss_cls = (focal * loc_weights).sum()

        pred_boxes = self.box_coder.decode(bbox_regression, anchors_t)
        fg_weights = loc_weights[foreground]
        giou = generalized_box_iou_loss(
            pred_boxes[foreground], gt_boxes[foreground], reduction="none"
        )
        loss_reg = (giou * fg_weights).sum()

        reg_targets = self.box_coder.encode(anchors_t, gt_boxes)
        if len(reg_targets) == 0:
            ctr_targets = reg_targets.new_zeros(reg_targets.size()[:-1])
        else:
            lr = reg_targets[:, :, [0, 2]]
            tb = reg_targets[:, :, [1, 3]]
            ctr_targets = torch.sqrt(
                (lr.min(dim=-1)[0] / lr.max(dim=-1)[0]) * (tb.min(dim=-1)[0] / tb.max(dim=-1)[0])
            )
        ctr = nn.functional.binary_cross_entropy_with_logits(
            bbox_ctrness.squeeze(dim=2)[foreground], ctr_targets[foreground], reduction="none"
        )
        loss_ctr = (ctr * fg_weights).sum()
        return {
            "classification": loss_cls / num_foreground,
            "bbox_regression": loss_reg / num_foreground,
            "bbox_ctrness": loss_ctr / num_foreground,
        }


def _folder_weights(folder: str) -> dict[str, torch.Tensor]:
    """The weights of a detector model folder (its ``config.json`` must say ``task: detect``).

    The full checks of a model folder live in :mod:`crowdmed.training.persistence`; ``nn`` sits
    below ``training`` and reads only what it needs here, never a pickle.
    """
    config_path = os.path.join(folder, "config.json")
    weights_path = os.path.join(folder, "model.safetensors")
    try:
        with open(config_path, encoding="utf-8") as fh:
            task = json.load(fh).get("task")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"Cannot read '{config_path}': {exc}; pass a folder written by CrowdDetector.save."
        ) from exc
    if task != "detect":
        raise ValueError(
            f"'{config_path}' is a {task!r} model folder, not a detector; pass a folder written "
            "by CrowdDetector.save."
        )
    from safetensors.torch import load_file

    try:
        return load_file(weights_path)
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise ValueError(f"Cannot read '{weights_path}': {exc}".splitlines()[0]) from exc


def load_detector_weights(model: nn.Module, checkpoint: str | os.PathLike[str]) -> nn.Module:
    """Load the weights of a detector model folder or a ``.pt`` state dict into ``model``.

    Args:
        model: The detector built with the same settings as the checkpoint.
        checkpoint: A model folder written by :meth:`crowdmed.training.CrowdDetector.save`
            (its ``model.safetensors`` is read), or a ``.pt`` file holding a state dict or a
            ``{"state_dict": ...}`` dict (read with ``weights_only=True``: no code runs).

    Returns:
        ``model``, with the loaded weights.

    Raises:
        FileNotFoundError: When the file or folder does not exist.
        ValueError: When it holds no state dict of this architecture.
    """
    path = os.fspath(checkpoint)
    state: Any
    if os.path.isdir(path):
        state = _folder_weights(path)
        path = os.path.join(path, "model.safetensors")
    elif not os.path.isfile(path):
        raise FileNotFoundError(
            f"Checkpoint '{path}' does not exist; pass a detector model folder or a .pt file."
        )
    else:
        try:
            payload: Any = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a corrupt or foreign file
            raise ValueError(f"Cannot read checkpoint '{path}': {exc}".splitlines()[0]) from exc
        state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"Checkpoint '{path}' holds no state dict.")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"Checkpoint '{path}' does not fit this detector (other classes, channels or "
            "widths?); build the detector with the checkpoint's settings."
        ) from exc
    return model


def _resnet_fpn(backbone: str, in_channels: int, fpn_channels: int) -> BackboneWithFPN:
    """A ResNet cut after ``layer3`` with an FPN on ``layer2`` and ``layer3`` (global torch RNG)."""
    if backbone == "resnet18":
        body = torchvision.models.resnet18(weights=None)
    else:
        body = ResNet(BasicBlock, [1, 1, 1, 1])
    if in_channels != 3:
        body.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")
    return BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1"},
        in_channels_list=[128, 256],
        out_channels=fpn_channels,
    )


def fcos_detector(
    n_classes: int,
    *,
    image_size: int = 64,
    in_channels: int = 1,
    backbone: str = "resnet10",
    fpn_channels: int = 64,
    head_convs: int = 2,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    checkpoint: str | os.PathLike[str] | None = None,
    random_state: int | None = None,
) -> FCOS:
    """A light torchvision FCOS with an EARL head, randomly initialised or from a checkpoint.

    Args:
        n_classes: Number of object classes (labels ``0..n_classes-1``; FCOS has no
            background class).
        image_size: Side of the (square) input images; they are not resized.
        in_channels: Image channels (1 grey, 3 RGB).
        backbone: ``"resnet10"`` (torchvision's ``ResNet`` with one basic block per stage)
            or ``"resnet18"``; both are cut after ``layer3``.
        fpn_channels: Channels of the FPN and head.
        head_convs: Convolutions per head branch (torchvision uses 4).
        score_thresh: Lowest score of a returned box (low for mAP evaluation).
        nms_thresh: IoU of the per-class non-maximum suppression.
        detections_per_img: Most boxes returned per image.
        checkpoint: Optional model folder or ``.pt`` state dict to start from (see
            :func:`load_detector_weights`).
        random_state: Seed of the weight initialisation; the global torch RNG is untouched.

    Returns:
        A :class:`torchvision.models.detection.FCOS`. In training mode it takes
        ``(images, targets)`` (targets may hold ``weights``) and returns the loss dict; in
        eval mode it returns one dict of ``boxes``, ``scores``, ``labels`` per image. Its
        ``architecture`` attribute holds the arguments that rebuild it (``checkpoint`` and
        ``random_state`` aside), which :meth:`crowdmed.training.CrowdDetector.save` stores.

    Raises:
        ValueError: For non-positive sizes or an unknown backbone.

    Examples:
        >>> net = fcos_detector(3, image_size=32, random_state=0).eval()
        >>> sorted(net([torch.zeros(1, 32, 32)])[0])
        ['boxes', 'labels', 'scores']
    """
    for name, value in (
        ("n_classes", n_classes),
        ("image_size", image_size),
        ("in_channels", in_channels),
        ("fpn_channels", fpn_channels),
        ("head_convs", head_convs),
    ):
        if int(value) < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {value}.")
    if backbone not in ("resnet10", "resnet18"):
        raise ValueError(f"`backbone` must be 'resnet10' or 'resnet18'; got {backbone!r}.")
    with torch.random.fork_rng(devices=[]):
        if random_state is not None:
            torch.manual_seed(int(random_state))
        features = _resnet_fpn(backbone, in_channels, fpn_channels)
        # One anchor per location whose size is the stride: FCOS uses it for centre
        # sampling (radius 1.5 strides) and the per-level size ranges.
        anchors = AnchorGenerator(sizes=((8,), (16,), (32,)), aspect_ratios=((1.0,),) * 3)
        head = EarlFCOSHead(fpn_channels, 1, n_classes, num_convs=head_convs)
        model = FCOS(
            features,
            num_classes=n_classes,
            min_size=image_size,
            max_size=image_size,
            image_mean=[0.5] * in_channels,
            image_std=[0.25] * in_channels,
            anchor_generator=anchors,
            head=head,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
    # The settings that rebuild this network (read by CrowdDetector.save / load).
    model.architecture = {
        "network": "fcos",
        "n_classes": int(n_classes),
        "image_size": int(image_size),
        "in_channels": int(in_channels),
        "backbone": backbone,
        "fpn_channels": int(fpn_channels),
        "head_convs": int(head_convs),
        "score_thresh": float(score_thresh),
        "nms_thresh": float(nms_thresh),
        "detections_per_img": int(detections_per_img),
    }
    if checkpoint is not None:
        load_detector_weights(model, checkpoint)
    return model


def build_detector(network: str = "centernet", **kwargs: Any) -> nn.Module:
    """Build a detector by name: ``"centernet"`` or ``"fcos"``.

    Args:
        network: ``"centernet"`` (:func:`crowdmed.nn.centernet.centernet_detector`, the
            default: one stride-4 output, learns fastest on small canvases) or ``"fcos"``
            (:func:`fcos_detector`).
        **kwargs: The arguments of that function (a saved ``architecture`` without its
            ``network`` key).

    Returns:
        The detector, with its ``architecture`` attribute.

    Raises:
        ValueError: For an unknown network.
    """
    if network == "fcos":
        return fcos_detector(**kwargs)
    if network == "centernet":
        from crowdmed.nn.centernet import centernet_detector

        return centernet_detector(**kwargs)
    raise ValueError(f"`network` must be one of {list(DETECTORS)}; got {network!r}.")
