"""PyTorch layers and losses for learning from many annotators.

This is the only subpackage that imports torch; install it with ``pip install 'crowdmed[torch]'``.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("crowdmed.nn needs PyTorch: pip install 'crowdmed[torch]'.") from exc

from crowdmed.nn.aggnet import AggNetCNN, dense_logits
from crowdmed.nn.backbones import segmentation_network, size_multiple
from crowdmed.nn.centernet import EarlCenterNet, centernet_detector
from crowdmed.nn.confusion import GlobalConfusion, PixelConfusion, confusion_loss
from crowdmed.nn.detection import (
    EarlFCOSHead,
    build_detector,
    fcos_detector,
    load_detector_weights,
)
from crowdmed.nn.layers import (
    AggNetEM,
    CrowdLayer,
    CrowdMode,
    CrowdRegressionLayer,
    DawidSkeneEM,
    DoctorNetHeads,
    GaussianReadersEM,
    RegressionMode,
)
from crowdmed.nn.losses import crowd_cross_entropy, crowd_mse
from crowdmed.nn.models import mlp_head, small_cnn, split_last_linear, zero_last_linear
from crowdmed.nn.registry import build_network, network_names, network_spec, register_network
from crowdmed.nn.segmentation import (
    GaussianAttentionFocalLoss,
    LabelReweightingLoss,
    WeightingNetwork,
    gaussian_attention,
    masked_rater_softmax,
    pixel_loss,
    reweight_lambdas,
)

__all__ = [
    "AggNetCNN",
    "AggNetEM",
    "CrowdLayer",
    "CrowdMode",
    "CrowdRegressionLayer",
    "DawidSkeneEM",
    "DoctorNetHeads",
    "EarlCenterNet",
    "EarlFCOSHead",
    "GaussianAttentionFocalLoss",
    "GaussianReadersEM",
    "GlobalConfusion",
    "LabelReweightingLoss",
    "PixelConfusion",
    "RegressionMode",
    "WeightingNetwork",
    "build_detector",
    "build_network",
    "centernet_detector",
    "confusion_loss",
    "crowd_cross_entropy",
    "crowd_mse",
    "dense_logits",
    "fcos_detector",
    "gaussian_attention",
    "load_detector_weights",
    "masked_rater_softmax",
    "mlp_head",
    "network_names",
    "network_spec",
    "pixel_loss",
    "register_network",
    "reweight_lambdas",
    "segmentation_network",
    "size_multiple",
    "small_cnn",
    "split_last_linear",
    "zero_last_linear",
]
