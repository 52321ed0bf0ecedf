"""A small anchor-free detector for small canvases: one stride-4 output, EARL-weighted losses.

:class:`EarlCenterNet` predicts, on one output grid of stride 4, a heatmap per class whose
peaks are object centres (CenterNet, Zhou et al. 2019) and at every cell the distances from
the cell centre to the four box edges. Its training targets follow TTFNet (Liu et al. 2020),
built for short schedules: every box puts an elliptic Gaussian on its class channel, peaked
at the cell of its centre (value 1, the positive) with standard deviations ``0.54 / 6`` of
the box side in cells; every cell inside a box whose Gaussian there is the largest learns
that box by a GIoU loss weighted by the Gaussian value. The heatmap loss is CenterNet's
penalty-reduced focal loss (``alpha = 2``, ``beta = 4``) divided by the number of positives;
the box loss is divided by the sum of the Gaussian weights.

EARL (Le et al. 2023, eq. 2: ``L = c·L_cls + c·β·I(t)·L_loc``) multiplies the losses of the
positives by the target box's weight ``c`` (the fused confidence, the count of agreeing
readers): a positive cell's heatmap loss, and the box loss of every cell that learns that
box. Background cells keep weight 1 and the normalisers are not weighted, so with all weights
1 (or no ``"weights"`` key) the loss is the plain one.

The network is a plain convolutional backbone (3 × 3 convolutions, batch norm, ReLU, basic
residual blocks) down to stride 16, a top-down path that adds the stride-16 and stride-8
features back onto stride 4 (as an FPN does), and two heads of one 3 × 3 convolution each.
At 64 × 64 input it costs about 25 M multiply-adds per image, so it trains on a CPU at a few
hundred images per second.

The module follows torchvision's detector interface: in training mode ``model(images,
targets)`` returns a dict of losses; in eval mode ``model(images)`` returns one dict of
``boxes`` ``(n, 4)`` (corner mode, absolute pixels), ``scores`` and ``labels`` per image.

References:
    Zhou, Wang, Krähenbühl (2019). Objects as points. https://arxiv.org/abs/1904.07850

    Liu, Zheng, Ding, Shen, Wang, Cai (2020). Training-time-friendly network for real-time
    object detection. AAAI. https://doi.org/10.1609/aaai.v34i07.6823

    Le, Tran, Pham, Nguyen, Le, Nguyen, Nguyen (2023). Learning from multiple expert
    annotators for enhancing anomaly detection in medical image analysis. IEEE Access 11.
    https://doi.org/10.1109/ACCESS.2023.3270451
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crowdmed._validation import check_int

__all__ = ["EarlCenterNet", "centernet_detector", "centernet_targets"]

#: Output stride of the heatmap and box grid.
STRIDE = 4
#: Gaussian radius factor of TTFNet (``alpha = beta = 0.54``): sigma = 0.54 * side / 6.
_GAUSS = 0.54 / 6.0
#: The prior probability of an object in a cell at initialisation (CenterNet's -2.19 bias).
_PRIOR = 0.1


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    """A basic residual block (two 3 × 3 convolutions)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


def centernet_targets(
    targets: Sequence[dict[str, Tensor]],
    n_classes: int,
    grid: tuple[int, int],
    *,
    stride: int = STRIDE,
    device: torch.device | None = None,
) -> dict[str, Tensor]:
    """Heatmap and box targets of a batch (TTFNet's Gaussians), with the EARL weights.

    Args:
        targets: One dict per image with float ``boxes`` ``(n, 4)`` (corner mode, absolute
            pixels), int ``labels`` ``(n,)`` in ``0..n_classes-1`` and optionally float
            ``weights`` ``(n,)`` (1 when absent).
        n_classes: Number of classes.
        grid: ``(height, width)`` of the output grid.
        stride: Pixels per grid cell.
        device: Device of the returned tensors (that of the first target when ``None``).

    Returns:
        ``heatmap`` ``(B, K, H, W)`` (Gaussian targets, 1 at each box's centre cell),
        ``pos_weight`` ``(B, K, H, W)`` (the box weight at the positives, 0 elsewhere),
        ``boxes`` ``(B, H, W, 4)`` (the box each cell learns: of the boxes that cover the
        cell, the one whose Gaussian is largest there; on a tie, such as two boxes with the
        same centre cell, the one listed first, where TTFNet gives the cell to the smaller
        box), ``box_gauss`` ``(B, H, W)``
        (its Gaussian value there, 0 for cells that learn no box) and ``box_weight``
        ``(B, H, W)`` (the weight of that box).
    """
    h, w = grid
    b = len(targets)
    if device is None:
        device = targets[0]["boxes"].device if b else torch.device("cpu")
    m = max([len(t["labels"]) for t in targets] + [1])
    boxes = torch.zeros(b, m, 4, device=device)
    labels = torch.zeros(b, m, dtype=torch.int64, device=device)
    weights = torch.zeros(b, m, device=device)
    valid = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        if n == 0:
            continue
        boxes[i, :n] = t["boxes"].to(device=device, dtype=torch.float32)
        labels[i, :n] = t["labels"].to(device)
        wt = t.get("weights")
        weights[i, :n] = 1.0 if wt is None else wt.to(device=device, dtype=torch.float32)
        valid[i, :n] = True
    # the centre cell of each box and the Gaussian over the grid, peaked (= 1) there
    cx = (boxes[..., 0] + boxes[..., 2]) / 2
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    ci = (cx / stride).floor().clamp(0, w - 1)
    cj = (cy / stride).floor().clamp(0, h - 1)
    sx = ((boxes[..., 2] - boxes[..., 0]) / stride * _GAUSS).clamp(min=0.25)
    sy = ((boxes[..., 3] - boxes[..., 1]) / stride * _GAUSS).clamp(min=0.25)
    xs = torch.arange(w, device=device, dtype=torch.float32)
    ys = torch.arange(h, device=device, dtype=torch.float32)
    gx = torch.exp(-((xs[None, None, :] - ci[..., None]) ** 2) / (2 * sx[..., None] ** 2))
    gy = torch.exp(-((ys[None, None, :] - cj[..., None]) ** 2) / (2 * sy[..., None] ** 2))
    gauss = (gy[..., :, None] * gx[..., None, :]) * valid[..., None, None]  # (B, M, H, W)
    onehot = F.one_hot(labels, n_classes).to(torch.float32) * valid[..., None]  # (B, M, K)
    per_class = gauss[:, :, None] * onehot[..., None, None]  # (B, M, K, H, W)
    heatmap = per_class.amax(dim=1)
    peak = (per_class == 1.0) & (onehot[..., None, None] > 0)
    pos_weight = (peak * weights[:, :, None, None, None]).amax(dim=1)
    # cells inside a box learn the box whose Gaussian is the largest there
    px = (xs + 0.5) * stride
    py = (ys + 0.5) * stride
    inside_x = (px[None, None, :] > boxes[..., 0:1]) & (px[None, None, :] < boxes[..., 2:3])
    inside_y = (py[None, None, :] > boxes[..., 1:2]) & (py[None, None, :] < boxes[..., 3:4])
    inside = inside_y[..., :, None] & inside_x[..., None, :]
    # a box narrower than a cell may hold no cell centre: its centre cell learns it anyway
    centre = (ys[None, None, :, None] == cj[..., None, None]) & (
        xs[None, None, None, :] == ci[..., None, None]
    )
    inside = inside | (centre & valid[..., None, None])
    g_in = gauss * inside
    box_gauss, best = g_in.max(dim=1)  # (B, H, W)
    cell_boxes = torch.gather(boxes, 1, best.reshape(b, -1, 1).expand(-1, -1, 4)).reshape(
        b, h, w, 4
    )
    box_weight = torch.gather(weights, 1, best.reshape(b, -1)).reshape(b, h, w)
    return {
        "heatmap": heatmap,
        "pos_weight": pos_weight,
        "boxes": cell_boxes,
        "box_gauss": box_gauss,
        "box_weight": box_weight,
    }


def _giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Generalised IoU loss ``1 - GIoU`` of matching boxes ``(..., 4)``, elementwise."""
    area_p = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_t = (target[..., 2] - target[..., 0]) * (target[..., 3] - target[..., 1])
    lt = torch.maximum(pred[..., :2], target[..., :2])
    rb = torch.minimum(pred[..., 2:], target[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    union = area_p + area_t - inter
    iou = inter / union.clamp(min=1e-6)
    lt_c = torch.minimum(pred[..., :2], target[..., :2])
    rb_c = torch.maximum(pred[..., 2:], target[..., 2:])
    area_c = (rb_c - lt_c).clamp(min=0).prod(dim=-1)
    return 1.0 - iou + (area_c - union) / area_c.clamp(min=1e-6)


class EarlCenterNet(nn.Module):
    """CenterNet-style detector with one stride-4 output and EARL-weighted losses.

    Args:
        n_classes: Number of object classes (labels ``0..n_classes-1``).
        in_channels: Image channels (1 grey, 3 RGB).
        width: Channels at stride 4 (twice at stride 8, four times at stride 16).
        box_loss_weight: Weight of the GIoU box loss against the heatmap loss.
        score_thresh: Lowest score of a returned box.
        detections_per_img: Most boxes returned per image.
        image_mean: Subtracted from the images before the network.
        image_std: The images are divided by it after the mean is subtracted.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Raises:
        ValueError: For non-positive sizes or thresholds outside ``[0, 1)``.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        in_channels: int = 1,
        width: int = 32,
        box_loss_weight: float = 2.0,
        score_thresh: float = 0.05,
        detections_per_img: int = 100,
        image_mean: float = 0.5,
        image_std: float = 0.25,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_classes", n_classes),
            ("in_channels", in_channels),
            ("width", width),
            ("detections_per_img", detections_per_img),
        ):
            check_int(value, name)
        if not 0 <= score_thresh < 1:
            raise ValueError(f"`score_thresh` must lie in [0, 1); got {score_thresh}.")
        if not box_loss_weight >= 0:
            raise ValueError(f"`box_loss_weight` must be >= 0; got {box_loss_weight}.")
        if not image_std > 0:
            raise ValueError(f"`image_std` must be positive; got {image_std}.")
        self.n_classes = n_classes
        self.box_loss_weight = float(box_loss_weight)
        self.score_thresh = float(score_thresh)
        self.detections_per_img = detections_per_img
        self.image_mean = float(image_mean)
        self.image_std = float(image_std)
        self.architecture: dict[str, Any] | None = None
        c = width
        self.stem = nn.Sequential(_conv_bn(in_channels, c // 2, 2), _conv_bn(c // 2, c, 2))
        self.stage4 = _Residual(c)
        self.stage8 = nn.Sequential(_conv_bn(c, 2 * c, 2), _Residual(2 * c))
        self.stage16 = nn.Sequential(_conv_bn(2 * c, 4 * c, 2), _Residual(4 * c))
        self.lateral16 = nn.Conv2d(4 * c, 2 * c, 1)
        self.smooth8 = _conv_bn(2 * c, 2 * c)
        self.lateral8 = nn.Conv2d(2 * c, c, 1)
        self.smooth4 = _conv_bn(c, c)
        # (created in this order so that a seed gives the same weights as before)
        heat_mid, heat_out = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, n_classes, 1)
        box_mid, box_out = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, 4, 1)
        prior = -float(torch.log(torch.tensor(1 / _PRIOR - 1)))
        nn.init.constant_(heat_out.get_parameter("bias"), prior)
        nn.init.zeros_(box_out.weight)  # every box starts as 8 x 8 pixels around its cell
        nn.init.zeros_(box_out.get_parameter("bias"))
        self.heat_head = nn.Sequential(heat_mid, nn.ReLU(), heat_out)
        self.box_head = nn.Sequential(box_mid, nn.ReLU(), box_out)
        self.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ network
    def _batch(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        x = images if isinstance(images, Tensor) else torch.stack(list(images))
        if x.ndim != 4:
            raise ValueError(
                f"`images` must be (B, C, H, W) or a list of (C, H, W); got {tuple(x.shape)}."
            )
        # the images in the network's dtype (float32 images into a float64 or bfloat16 net)
        x = x.to(dtype=next(self.parameters()).dtype)
        # zero (background) padding on the right and bottom to a multiple of 16 keeps the
        # pixel coordinates of the boxes
        pad_w, pad_h = -x.shape[-1] % 16, -x.shape[-2] % 16
        if pad_w or pad_h:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return (x - self.image_mean) / self.image_std

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Heatmap logits ``(B, K, H/4, W/4)`` and box-edge distances ``(B, 4, H/4, W/4)``.

        Args:
            x: Normalised images ``(B, C, H, W)`` with sides multiples of 16 (as the
                detector's own padding and normalisation in :meth:`forward` make them).

        Returns:
            The logits and the distances (left, top, right, bottom, in pixels from each
            cell's centre), ``4 · exp(raw)`` with ``raw`` clamped to ``[-4, 4]``.
        """
        f4 = self.stage4(self.stem(x))
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        p8 = self.smooth8(f8 + F.interpolate(self.lateral16(f16), scale_factor=2.0))
        p4 = self.smooth4(f4 + F.interpolate(self.lateral8(p8), scale_factor=2.0))
        dist = STRIDE * torch.exp(self.box_head(p4).clamp(-4.0, 4.0))
        return self.heat_head(p4), dist

    @staticmethod
    def _decode_boxes(dist: Tensor) -> Tensor:
        """Boxes ``(B, H, W, 4)`` from edge distances ``(B, 4, H, W)`` around the cell centres."""
        _, _, h, w = dist.shape
        ys = (torch.arange(h, device=dist.device, dtype=dist.dtype) + 0.5) * STRIDE
        xs = (torch.arange(w, device=dist.device, dtype=dist.dtype) + 0.5) * STRIDE
        d = dist.permute(0, 2, 3, 1)
        return torch.stack(
            (
                xs[None, None, :] - d[..., 0],
                ys[None, :, None] - d[..., 1],
                xs[None, None, :] + d[..., 2],
                ys[None, :, None] + d[..., 3],
            ),
            dim=-1,
        )

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self, logits: Tensor, dist: Tensor, targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Heatmap focal loss and GIoU box loss, each positive weighted by its box's weight.

        Args:
            logits: Heatmap logits ``(B, K, H, W)``.
            dist: Box-edge distances ``(B, 4, H, W)`` in pixels.
            targets: One dict per image (``boxes``, ``labels``, optional ``weights``).

        Returns:
            ``heatmap`` (divided by the number of positives) and ``box`` (times
            ``box_loss_weight``, divided by the sum of the Gaussian weights).
        """
        grid = (int(logits.shape[-2]), int(logits.shape[-1]))
        t = centernet_targets(targets, self.n_classes, grid, device=logits.device)
        heat = t["heatmap"]
        pos = heat == 1.0
        # log-sigmoid forms keep the loss finite for confident logits
        log_p = F.logsigmoid(logits)
        log_1p = F.logsigmoid(-logits)
        p = log_p.exp()
        pos_loss = -((1 - p) ** 2) * log_p * t["pos_weight"]
        neg_loss = -((1 - heat) ** 4) * p**2 * log_1p
        n_pos = pos.sum().clamp(min=1)
        loss_heat = (torch.where(pos, pos_loss, neg_loss)).sum() / n_pos
        g = t["box_gauss"]
        cells = g > 0
        pred = self._decode_boxes(dist)[cells]
        giou = _giou_loss(pred, t["boxes"][cells])
        loss_box = (giou * g[cells] * t["box_weight"][cells]).sum() / g.sum().clamp(min=1e-6)
        return {"heatmap": loss_heat, "box": self.box_loss_weight * loss_box}

    # ------------------------------------------------------------------ inference
    def postprocess(self, logits: Tensor, dist: Tensor, size: tuple[int, int]) -> list[dict]:
        """The heatmap's local maxima (3 × 3) as boxes, clipped to the image, best first."""
        heat = torch.sigmoid(logits)
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        b, k, h, w = heat.shape
        # cells of the zero padding (centre outside the image) hold no object
        rows = (torch.arange(h, device=heat.device) + 0.5) * STRIDE < size[0]
        cols = (torch.arange(w, device=heat.device) + 0.5) * STRIDE < size[1]
        peaks = peaks * (rows[:, None] & cols[None, :])
        boxes = self._decode_boxes(dist).reshape(b, h * w, 4)
        top = min(self.detections_per_img, k * h * w)
        scores, idx = peaks.reshape(b, -1).topk(top, dim=1)
        labels = idx // (h * w)
        cell = idx % (h * w)
        height, width = size
        out = []
        for i in range(b):
            keep = scores[i] >= self.score_thresh
            bx = boxes[i, cell[i, keep]]
            bx = torch.stack(
                (
                    bx[:, 0].clamp(0, width),
                    bx[:, 1].clamp(0, height),
                    bx[:, 2].clamp(0, width),
                    bx[:, 3].clamp(0, height),
                ),
                dim=1,
            )
            out.append({"boxes": bx, "scores": scores[i, keep], "labels": labels[i, keep]})
        return out

    def forward(
        self,
        images: Tensor | Sequence[Tensor],
        targets: Sequence[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (training mode, with targets) or detections (eval mode).

        Args:
            images: A ``(B, C, H, W)`` tensor or a list of ``(C, H, W)`` tensors of one size,
                values in ``[0, 1]`` (padded with zeros to sides that are multiples of 16).
            targets: In training mode, one dict per image (see :func:`centernet_targets`).

        Returns:
            The loss dict in training mode; in eval mode one dict of ``boxes`` ``(n, 4)``,
            ``scores`` ``(n,)`` and ``labels`` ``(n,)`` per image.

        Raises:
            ValueError: In training mode without targets, or for images of a bad shape.
        """
        if self.training and targets is None:
            raise ValueError("In training mode the detector needs `targets`.")
        x = self._batch(images)
        first = images[0]
        size = (int(first.shape[-2]), int(first.shape[-1]))
        logits, dist = self.features(x)
        if self.training and targets is not None:
            return self.compute_loss(logits, dist, targets)
        return self.postprocess(logits, dist, size)


def centernet_detector(
    n_classes: int,
    *,
    image_size: int = 64,
    in_channels: int = 1,
    width: int = 32,
    box_loss_weight: float = 2.0,
    score_thresh: float = 0.05,
    detections_per_img: int = 100,
    checkpoint: str | os.PathLike[str] | None = None,
    random_state: int | None = None,
) -> EarlCenterNet:
    """A randomly initialised :class:`EarlCenterNet` (or one loaded from a checkpoint).

    Args:
        n_classes: Number of object classes.
        image_size: Side of the training images (recorded; any size works).
        in_channels: Image channels (1 grey, 3 RGB).
        width: Channels at stride 4.
        box_loss_weight: Weight of the box loss.
        score_thresh: Lowest score of a returned box.
        detections_per_img: Most boxes returned per image.
        checkpoint: Optional model folder or ``.pt`` state dict to start from (see
            :func:`crowdmed.nn.detection.load_detector_weights`).
        random_state: Seed of the weight initialisation; the global torch RNG is untouched.

    Returns:
        The detector; its ``architecture`` attribute holds the arguments that rebuild it.

    Examples:
        >>> net = centernet_detector(3, image_size=32, random_state=0).eval()
        >>> sorted(net([torch.zeros(1, 32, 32)])[0])
        ['boxes', 'labels', 'scores']
    """
    if int(image_size) < 1:
        raise ValueError(f"`image_size` must be a positive integer; got {image_size}.")
    with torch.random.fork_rng(devices=[]):
        if random_state is not None:
            torch.manual_seed(int(random_state))
        model = EarlCenterNet(
            int(n_classes),
            in_channels=int(in_channels),
            width=int(width),
            box_loss_weight=box_loss_weight,
            score_thresh=score_thresh,
            detections_per_img=int(detections_per_img),
        )
    model.architecture = {
        "network": "centernet",
        "n_classes": int(n_classes),
        "image_size": int(image_size),
        "in_channels": int(in_channels),
        "width": int(width),
        "box_loss_weight": float(box_loss_weight),
        "score_thresh": float(score_thresh),
        "detections_per_img": int(detections_per_img),
    }
    if checkpoint is not None:
        from crowdmed.nn.detection import load_detector_weights

        load_detector_weights(model, checkpoint)
    return model
