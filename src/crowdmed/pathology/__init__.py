"""Pathology: mitosis detection in H&E high-power fields (AggNet, Albarqouni et al., IEEE TMI 2016).

The NumPy parts (synthetic fields, patches, candidates, stain normalisation) import without
torch; point tables are read and written by :mod:`crowdmed.data.points` and matched by
:mod:`crowdmed.metrics.points`. The network, dense detection and model folders
(:class:`AggNetCNN`, :class:`MultiScaleDetector`, :func:`detect`, :func:`load_detector`)
need ``pip install 'crowdmed[torch]'`` and are imported on first use; so is
:func:`train_detector`, which lives in :mod:`crowdmed.training.patch_detector` (re-exported
here).

Coordinates: ``x`` is the column and ``y`` the row, in pixels of the full-scale field, with
pixel centres at integer coordinates. Point tables are ``DataFrame`` objects with the columns
``image, x, y`` (detections add ``score``).

References:
    Albarqouni et al. (2016). AggNet: Deep learning from crowds for mitosis detection in
    breast cancer histology images. IEEE TMI 35(5). https://doi.org/10.1109/TMI.2016.2528120
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from crowdmed.pathology.candidates import find_candidates
from crowdmed.pathology.patches import extract_patches, rescale_image
from crowdmed.pathology.stain import StainNormalizer
from crowdmed.pathology.synthetic import SyntheticFields, make_synthetic_fields

if TYPE_CHECKING:
    from crowdmed.nn.aggnet import AggNetCNN, dense_logits
    from crowdmed.pathology.detector import (
        MultiScaleDetector,
        detect,
        geometric_mean,
        load_detector,
    )
    from crowdmed.training.patch_detector import train_detector

_LAZY = {
    "AggNetCNN": "crowdmed.nn.aggnet",
    "dense_logits": "crowdmed.nn.aggnet",
    "MultiScaleDetector": "crowdmed.pathology.detector",
    "detect": "crowdmed.pathology.detector",
    "geometric_mean": "crowdmed.pathology.detector",
    "load_detector": "crowdmed.pathology.detector",
    "train_detector": "crowdmed.training.patch_detector",
}

__all__ = [
    "AggNetCNN",
    "MultiScaleDetector",
    "StainNormalizer",
    "SyntheticFields",
    "dense_logits",
    "detect",
    "extract_patches",
    "find_candidates",
    "geometric_mean",
    "load_detector",
    "make_synthetic_fields",
    "rescale_image",
    "train_detector",
]


def __getattr__(name: str) -> Any:
    """Import the torch-based names on first use."""
    if name in _LAZY:
        try:
            module = importlib.import_module(_LAZY[name])
        except ImportError as exc:
            if "torch" not in str(exc):
                raise
            raise ImportError(
                f"crowdmed.pathology.{name} needs PyTorch: pip install 'crowdmed[torch]'."
            ) from exc
        return getattr(module, name)
    raise AttributeError(f"module 'crowdmed.pathology' has no attribute {name!r}")
