"""Mitosis detection in H&E high-power fields (AggNet, Albarqouni et al., IEEE TMI 2016).

The NumPy parts (synthetic fields, point I/O, patches, candidates, evaluation, stain
normalisation) import without torch. The network, training and dense detection
(:class:`AggNetCNN`, :func:`train_detector`, :class:`MultiScaleDetector`, :func:`detect`,
:func:`load_detector`) need ``pip install 'crowdmed[torch]'`` and are imported on first use.

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

from crowdmed.mitosis.candidates import find_candidates
from crowdmed.mitosis.evaluation import DuplicatePolicy, MatchResult, choose_threshold, match_points
from crowdmed.mitosis.io import check_points, load_field, read_points, write_points
from crowdmed.mitosis.patches import extract_patches, rescale_image
from crowdmed.mitosis.stain import StainNormalizer
from crowdmed.mitosis.synthetic import SyntheticFields, make_synthetic_fields

if TYPE_CHECKING:
    from crowdmed.mitosis.inference import (
        MultiScaleDetector,
        detect,
        geometric_mean,
        load_detector,
        train_detector,
    )
    from crowdmed.mitosis.model import AggNetCNN, dense_logits

_LAZY = {
    "AggNetCNN": "crowdmed.mitosis.model",
    "dense_logits": "crowdmed.mitosis.model",
    "MultiScaleDetector": "crowdmed.mitosis.inference",
    "detect": "crowdmed.mitosis.inference",
    "geometric_mean": "crowdmed.mitosis.inference",
    "load_detector": "crowdmed.mitosis.inference",
    "train_detector": "crowdmed.mitosis.inference",
}

__all__ = [
    "AggNetCNN",
    "DuplicatePolicy",
    "MatchResult",
    "MultiScaleDetector",
    "StainNormalizer",
    "SyntheticFields",
    "check_points",
    "choose_threshold",
    "dense_logits",
    "detect",
    "extract_patches",
    "find_candidates",
    "geometric_mean",
    "load_detector",
    "load_field",
    "make_synthetic_fields",
    "match_points",
    "read_points",
    "rescale_image",
    "train_detector",
    "write_points",
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
                f"crowdmed.mitosis.{name} needs PyTorch: pip install 'crowdmed[torch]'."
            ) from exc
        return getattr(module, name)
    raise AttributeError(f"module 'crowdmed.mitosis' has no attribute {name!r}")
