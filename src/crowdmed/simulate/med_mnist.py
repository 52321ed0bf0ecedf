"""MED-MNIST: canvases of handwritten digits boxed by several simulated readers.

The simulation follows the *text* of Le et al. (2023), section on MED-MNIST:

- Each canvas holds a few real handwritten digits (scikit-learn's bundled 8 x 8 digits,
  upscaled by linear interpolation) at random, non-overlapping positions; the true box of a
  digit is the tight box of its ink (pixels above ``ink_threshold``).
- Each reader ``r`` has a class transition matrix ``T[r]`` of shape ``(K, K + 1)``: row ``i``
  is the distribution of the class the reader gives to an object of true class ``i``, and the
  extra last column ``no_obj`` is the probability of missing the object (no box at all). The
  diagonal is ``a_ii = min(max(floor, alpha_i), 1)`` with ``alpha_i ~ N(p, sigma)``; the
  off-diagonal mass ``1 - a_ii`` is spread **uniformly** over the other ``K`` outcomes
  (the ``K - 1`` wrong classes and ``no_obj``). The floor is ``max(zeta, 1 / (K + 1))``: the
  paper's ``zeta = 0.05`` is below ``1 / (K + 1)`` for ten classes, and the larger floor is
  what keeps every row diagonally dominant (``a_ii >= a_ij``) under a uniform spread.
- Each box a reader keeps is the true box with every edge moved by Gaussian noise of standard
  deviation ``box_noise`` times the box side; draws are rejected until the IoU with the true
  box exceeds the reader's proficiency ``p`` (rejection sampling, at most ``max_tries`` rounds;
  a box still rejected then is the true box itself, whose IoU is 1).
- Readers add no false-positive boxes.

The paper's public code differs from its text (Gaussian coordinate noise with standard
deviation ``(1 - skill) * 32`` pixels and no IoU acceptance); this module implements the text.

References:
    Le, Tran, Pham, Nguyen, Le, Nguyen, Nguyen (2023). Learning from multiple expert
    annotators for enhancing anomaly detection in medical image analysis. IEEE Access 11.
    https://doi.org/10.1109/ACCESS.2023.3270451; preprint https://arxiv.org/abs/2203.10611
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed._validation import check_random_state
from crowdmed.typing import RandomState

__all__ = ["MedMnist", "box_iou_pairs", "load_digit_images", "make_med_mnist", "reader_transitions"]

_SPLITS = ("train", "val", "test")
_BOX_COLUMNS = ["xmin", "ymin", "xmax", "ymax"]


@dataclasses.dataclass(frozen=True)
class MedMnist:
    """A simulated MED-MNIST data set.

    Attributes:
        images: Float32 array of shape ``(n_images, size, size)`` with values in ``[0, 1]``;
            image ``i`` has the id ``i``.
        truth: Frame with columns ``image, class, xmin, ymin, xmax, ymax`` (absolute pixels,
            ``xmax - xmin = width``): the true boxes.
        readers: Frame with columns ``image, reader, class, xmin, ymin, xmax, ymax, iou``: the
            boxes of every reader (``iou`` is the IoU with the true box it came from) plus
            ``truth_index``, the row of ``truth`` it came from.
        transitions: Float array of shape ``(n_readers, n_classes, n_classes + 1)``; rows sum
            to 1, the last column is ``no_obj`` (the object is missed).
        proficiency: Float array of shape ``(n_readers,)``: the IoU every kept box exceeds.
        split: String array of shape ``(n_images,)`` with ``"train"``, ``"val"`` or ``"test"``.
        n_classes: Number of object classes (digits ``0..n_classes-1``).
    """

    images: np.ndarray
    truth: pd.DataFrame
    readers: pd.DataFrame
    transitions: np.ndarray
    proficiency: np.ndarray
    split: np.ndarray
    n_classes: int

    def image_ids(self, split: str) -> np.ndarray:
        """Ids of the images of one split (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in _SPLITS:
            raise ValueError(f"`split` must be one of {list(_SPLITS)}; got {split!r}.")
        return np.flatnonzero(self.split == split)


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """Scikit-learn's bundled 8 x 8 handwritten digits (1,797 images, no download).

    Returns:
        ``(images, labels)``: float array ``(1797, 8, 8)`` in ``[0, 1]`` and int array
        ``(1797,)`` with digits ``0..9``.

    Raises:
        ImportError: When scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "MED-MNIST needs scikit-learn's bundled digits: pip install scikit-learn."
        ) from exc
    bunch: Any = load_digits()
    return np.asarray(bunch.images, dtype=np.float64) / 16.0, np.asarray(bunch.target, np.int64)


def reader_transitions(
    n_readers: int,
    n_classes: int,
    *,
    proficiency: float | npt.ArrayLike = 0.8,
    sigma: float = 0.5,
    zeta: float = 0.05,
    random_state: RandomState = None,
) -> np.ndarray:
    """Class transition matrices of simulated readers, with a ``no_obj`` column for misses.

    Args:
        n_readers: Number of readers ``R``.
        n_classes: Number of object classes ``K``.
        proficiency: Mean ``p`` of the diagonal, one value or one per reader.
        sigma: Standard deviation of the diagonal draws ``alpha ~ N(p, sigma)``.
        zeta: Lower clip of the diagonal; raised to ``1 / (K + 1)`` when smaller so the rows
            stay diagonally dominant.
        random_state: Seed or Generator.

    Returns:
        Float array of shape ``(n_readers, n_classes, n_classes + 1)``; row ``[r, i]`` is the
        distribution of reader ``r``'s class for a true ``i``, column ``K`` is ``no_obj``.
        Rows sum to 1 and ``T[r, i, i] >= T[r, i, j]`` for every ``j``.

    Raises:
        ValueError: For a non-positive count or a parameter out of range.
    """
    if n_readers < 1 or n_classes < 1:
        raise ValueError(
            f"`n_readers` and `n_classes` must be positive; got {n_readers} and {n_classes}."
        )
    p = np.broadcast_to(np.asarray(proficiency, dtype=np.float64), (n_readers,))
    if not np.all((p > 0) & (p <= 1)):
        raise ValueError(f"`proficiency` must lie in (0, 1]; got {p.tolist()}.")
    if not (sigma >= 0 and 0 <= zeta <= 1):
        raise ValueError(f"`sigma` must be >= 0 and `zeta` in [0, 1]; got {sigma}, {zeta}.")
    rng = check_random_state(random_state)
    floor = max(zeta, 1.0 / (n_classes + 1))
    alpha = rng.normal(p[:, None], sigma, size=(n_readers, n_classes))
    diag = np.clip(alpha, floor, 1.0)
    t = np.empty((n_readers, n_classes, n_classes + 1))
    t[:] = ((1.0 - diag) / n_classes)[:, :, None]
    idx = np.arange(n_classes)
    t[:, idx, idx] = diag
    return t


def box_iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired boxes ``a[i]`` and ``b[i]``, both of shape ``(n, 4)`` in corner mode."""
    from crowdmed._box_table import paired_iou

    return paired_iou(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _perturb_boxes(
    boxes: np.ndarray,
    min_iou: np.ndarray,
    *,
    noise: float,
    size: int,
    max_tries: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Rejection-sample noisy copies of ``boxes`` whose IoU with them exceeds ``min_iou``."""
    out = boxes.copy()
    todo = np.arange(len(boxes))
    side = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)[
        :, [0, 1, 2, 3]
    ]
    for _ in range(max_tries):
        if todo.size == 0:
            break
        cand = boxes[todo] + rng.normal(0.0, noise, size=(todo.size, 4)) * side[todo]
        cand = np.clip(cand, 0.0, float(size))
        ok = (
            (cand[:, 2] > cand[:, 0])
            & (cand[:, 3] > cand[:, 1])
            & (box_iou_pairs(cand, boxes[todo]) > min_iou[todo])
        )
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
    return out, box_iou_pairs(out, boxes)


def _check_sizes(
    counts: tuple[int, int, int],
    n_objects: tuple[int, int],
    digit_size: tuple[int, int],
    size: int,
    n_classes: int,
) -> None:
    if min(counts) < 0 or sum(counts) == 0:
        raise ValueError(f"Split sizes must be >= 0 and not all 0; got {counts}.")
    lo, hi = n_objects
    dlo, dhi = digit_size
    if not (1 <= lo <= hi):
        raise ValueError(f"`n_objects` must be (low, high) with 1 <= low <= high; got {n_objects}.")
    if not (4 <= dlo <= dhi <= size):
        raise ValueError(
            f"`digit_size` must be (low, high) with 4 <= low <= high <= size ({size}); "
            f"got {digit_size}."
        )
    if not (1 <= n_classes <= 10):
        raise ValueError(f"`n_classes` must be in 1..10; got {n_classes}.")


def _draw_canvases(
    digits: np.ndarray,
    labels: np.ndarray,
    pools: list[np.ndarray],
    *,
    size: int,
    n_objects: tuple[int, int],
    digit_size: tuple[int, int],
    ink_threshold: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Canvases ``(n_images, size, size)`` and their true boxes, one digit pool per canvas.

    Each canvas gets ``n_objects`` digits of ``digit_size`` pixels drawn from its pool, placed
    where their ink boxes keep a one-pixel gap to the digits already placed (50 tries each;
    a digit that finds no room is left out).
    """
    from scipy import ndimage

    lo, hi = n_objects
    dlo, dhi = digit_size
    images = np.zeros((len(pools), size, size), dtype=np.float32)
    rows: list[tuple[Any, ...]] = []
    cache: dict[tuple[int, int], tuple[np.ndarray, tuple[int, int, int, int]]] = {}
    for img, pool in enumerate(pools):
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(lo, hi + 1))):
            d = int(pool[rng.integers(len(pool))])
            s = int(rng.integers(dlo, dhi + 1))
            if (d, s) not in cache:
                patch = np.clip(ndimage.zoom(digits[d], s / 8.0, order=1), 0.0, 1.0)
                ys, xs = np.nonzero(patch > ink_threshold)
                cache[(d, s)] = (
                    patch.astype(np.float32),
                    (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                )
            patch, (bx0, by0, bx1, by1) = cache[(d, s)]
            h, w = patch.shape
            for _try in range(50):
                x0 = int(rng.integers(0, size - w + 1))
                y0 = int(rng.integers(0, size - h + 1))
                box = (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1)
                if all(
                    box[2] + 1 <= q[0]
                    or q[2] + 1 <= box[0]
                    or box[3] + 1 <= q[1]
                    or q[3] + 1 <= box[1]
                    for q in placed
                ):
                    break
            else:
                continue  # no room left on this canvas
            np.maximum(
                images[img, y0 : y0 + h, x0 : x0 + w],
                patch,
                out=images[img, y0 : y0 + h, x0 : x0 + w],
            )
            placed.append(box)
            rows.append((img, int(labels[d]), *(float(v) for v in box)))
    return images, pd.DataFrame(rows, columns=["image", "class", *_BOX_COLUMNS])


def _reader_boxes(
    truth: pd.DataFrame,
    transitions: np.ndarray,
    p: np.ndarray,
    *,
    noise: float,
    size: int,
    max_tries: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Each reader's boxes: a class (or a miss) from the transition row, a box with IoU > p."""
    truth_boxes = truth[_BOX_COLUMNS].to_numpy(np.float64)
    n_classes = transitions.shape[1]
    frames = []
    n_obj = len(truth)
    true_cls = truth["class"].to_numpy()
    for r in range(len(transitions)):
        cum = np.cumsum(transitions[r, true_cls], axis=1)
        u = rng.random(n_obj)[:, None]
        outcome = np.minimum((u > cum).sum(axis=1), n_classes)
        kept = np.flatnonzero(outcome < n_classes)
        boxes, iou = _perturb_boxes(
            truth_boxes[kept],
            np.full(kept.size, p[r]),
            noise=noise,
            size=size,
            max_tries=max_tries,
            rng=rng,
        )
        frames.append(
            pd.DataFrame(
                {
                    "image": truth["image"].to_numpy()[kept],
                    "reader": f"reader_{r}",
                    "class": outcome[kept],
                    **{c: boxes[:, j] for j, c in enumerate(_BOX_COLUMNS)},
                    "iou": iou,
                    "truth_index": kept,
                }
            )
        )
    return pd.concat(frames, ignore_index=True).sort_values(
        ["image", "reader"], kind="stable", ignore_index=True
    )


def make_med_mnist(
    n_train: int = 5000,
    n_val: int = 1000,
    n_test: int = 1000,
    *,
    size: int = 64,
    n_objects: tuple[int, int] = (1, 3),
    digit_size: tuple[int, int] = (14, 22),
    n_classes: int = 10,
    n_readers: int = 3,
    proficiency: float | npt.ArrayLike = 0.8,
    sigma: float = 0.5,
    zeta: float = 0.05,
    box_noise: float | None = None,
    ink_threshold: float = 0.2,
    max_tries: int = 100,
    random_state: RandomState = None,
) -> MedMnist:
    """Simulate MED-MNIST: digits on canvases, boxed and classified by noisy readers.

    The paper uses 5,000 / 1,000 / 1,000 canvases; smaller sizes train faster. Digits are
    split 60 / 20 / 20 % between train, val and test canvases, so no handwritten sample
    appears in two splits. See the module docstring for the reader model.

    Args:
        n_train: Number of training canvases.
        n_val: Number of validation canvases.
        n_test: Number of test canvases.
        size: Canvas side in pixels.
        n_objects: Inclusive range of the number of digits per canvas.
        digit_size: Inclusive range of the side of an upscaled digit, pixels.
        n_classes: Digits ``0..n_classes-1`` are used (at most 10).
        n_readers: Number of readers ``R``.
        proficiency: ``p``, one value or one per reader: the mean of the diagonal of the
            transition matrix and the IoU every kept box exceeds.
        sigma: Standard deviation of the diagonal draws.
        zeta: Lower clip of the diagonal (see :func:`reader_transitions`).
        box_noise: Standard deviation of each edge shift as a fraction of the box side;
            ``(1 - p) / 2`` of the mean proficiency when ``None``.
        ink_threshold: Pixels above it form a digit's true box.
        max_tries: Rounds of rejection sampling per box.
        random_state: Seed or Generator; the only source of randomness.

    Returns:
        A :class:`MedMnist`.

    Raises:
        ValueError: For bad sizes or ranges.
        ImportError: When scikit-learn (source of the digits) is not installed.
    """
    counts = (n_train, n_val, n_test)
    _check_sizes(counts, n_objects, digit_size, size, n_classes)
    rng = check_random_state(random_state)
    transitions = reader_transitions(
        n_readers, n_classes, proficiency=proficiency, sigma=sigma, zeta=zeta, random_state=rng
    )
    p = np.broadcast_to(np.asarray(proficiency, dtype=np.float64), (n_readers,)).copy()
    noise = (1.0 - float(p.mean())) / 2.0 if box_noise is None else float(box_noise)

    digits, labels = load_digit_images()
    keep = labels < n_classes
    digits, labels = digits[keep], labels[keep]
    order = rng.permutation(len(labels))
    cuts = np.round(np.array([0.0, 0.6, 0.8, 1.0]) * len(order)).astype(int)
    pools = [order[cuts[i] : cuts[i + 1]] for i in range(3)]
    split = np.repeat(np.array(_SPLITS), counts)
    images, truth = _draw_canvases(
        digits,
        labels,
        [pools[_SPLITS.index(str(s))] for s in split],
        size=size,
        n_objects=n_objects,
        digit_size=digit_size,
        ink_threshold=ink_threshold,
        rng=rng,
    )
    readers = _reader_boxes(
        truth, transitions, p, noise=noise, size=size, max_tries=max_tries, rng=rng
    )
    return MedMnist(
        images=images,
        truth=truth,
        readers=readers,
        transitions=transitions,
        proficiency=p,
        split=split,
        n_classes=n_classes,
    )
