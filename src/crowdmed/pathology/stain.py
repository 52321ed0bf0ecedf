"""H&E stain normalisation (Macenko et al., ISBI 2009) through ``torchstain``.

The normaliser estimates the two stain vectors of an image from its optical densities and
re-renders the image with the stain vectors and concentration range of a reference image.
It uses the NumPy backend of ``torchstain`` (``pip install 'crowdmed[pathology]'``).

References:
    Macenko et al. (2009). A method for normalizing histology slides for quantitative
    analysis. https://doi.org/10.1109/ISBI.2009.5193250
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["StainNormalizer"]


class StainNormalizer:
    """Macenko H&E stain normalisation fitted on one reference field.

    Args:
        io: Transmitted light intensity (the brightness of the background).
        alpha: Percentile (of stain angles) for robust extreme stain vectors.
        beta: Optical density below which pixels count as background and are ignored.

    Attributes:
        stain_matrix_ (ndarray of shape (3, 2)): Reference optical density vectors of
            hematoxylin and eosin (columns).
        max_concentrations_ (ndarray of shape (2,)): Reference 99th-percentile concentrations.

    Examples:
        >>> from crowdmed.pathology.synthetic import make_synthetic_fields
        >>> f = make_synthetic_fields(2, size=(64, 64), random_state=0)
        >>> norm = StainNormalizer().fit(f.images[0])
        >>> norm.transform(f.images[1]).shape
        (64, 64, 3)
    """

    def __init__(self, *, io: float = 240.0, alpha: float = 1.0, beta: float = 0.15) -> None:
        self.io = io
        self.alpha = alpha
        self.beta = beta

    def _backend(self) -> Any:
        try:
            import torchstain
        except ImportError as exc:
            raise ImportError(
                "Stain normalisation needs torchstain: pip install 'crowdmed[pathology]'."
            ) from exc
        return torchstain.normalizers.MacenkoNormalizer(backend="numpy")

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(
                "Stain normalisation needs a uint8 RGB image (H, W, 3); got "
                f"{arr.dtype} {arr.shape}."
            )
        return arr

    def fit(self, reference: np.ndarray) -> StainNormalizer:
        """Estimate the reference stain vectors and concentrations from a ``uint8`` RGB field."""
        backend = self._backend()
        try:
            backend.fit(self._check(reference), Io=self.io, alpha=self.alpha, beta=self.beta)
        except (np.linalg.LinAlgError, ValueError, IndexError) as exc:
            raise ValueError(
                f"Cannot estimate the stains of the reference image ({exc}); pick a field with "
                "both hematoxylin and eosin."
            ) from exc
        self.stain_matrix_ = np.asarray(backend.HERef, dtype=np.float64)
        self.max_concentrations_ = np.asarray(backend.maxCRef, dtype=np.float64)
        return self

    def transform(self, image: np.ndarray) -> np.ndarray:
        """Re-render a ``uint8`` RGB field ``(H, W, 3)`` with the reference staining."""
        if not hasattr(self, "stain_matrix_"):
            from crowdmed.exceptions import NotFittedError

            raise NotFittedError(
                "This StainNormalizer instance is not fitted yet. Call 'fit' first."
            )
        backend = self._backend()
        backend.HERef = self.stain_matrix_.copy()
        backend.maxCRef = self.max_concentrations_.copy()
        try:
            out, _, _ = backend.normalize(
                self._check(image), Io=self.io, alpha=self.alpha, beta=self.beta, stains=False
            )
        except (np.linalg.LinAlgError, ValueError, IndexError) as exc:
            raise ValueError(
                f"Cannot estimate the stains of an image ({exc}); it may be blank or hold one "
                "stain only. Turn stain normalisation off for it."
            ) from exc
        return np.asarray(out, dtype=np.uint8)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments (for ``sklearn.base.clone``)."""
        return {"io": self.io, "alpha": self.alpha, "beta": self.beta}

    def set_params(self, **params: Any) -> StainNormalizer:
        """Set constructor arguments."""
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"Invalid parameter {k!r} for StainNormalizer.")
            setattr(self, k, v)
        return self
