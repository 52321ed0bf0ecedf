"""Input checks shared by all estimators: labels, options, hyperparameters, seeds."""

from __future__ import annotations

import difflib
import numbers
import sys
import warnings
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

import numpy as np

from crowdmed._text import short_list
from crowdmed.data.labels import CrowdLabels

__all__ = [
    "check_int",
    "check_labels",
    "check_option",
    "check_params",
    "check_random_state",
    "interval",
    "is_frame",
]

E = TypeVar("E", bound=Enum)


def is_frame(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame (without importing pandas: none exists before)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.DataFrame)


def check_labels(labels: Any, *, n_classes: int | None = None, min_classes: int = 2) -> CrowdLabels:
    """Turn any accepted label input into validated :class:`CrowdLabels`.

    Args:
        labels: A :class:`CrowdLabels`, an integer array of shape ``(n_items, n_annotators)``
            with ``-1`` marking a missing annotation, or a long ``DataFrame``.
        n_classes: Number of classes ``K``; inferred when omitted.
        min_classes: Smallest acceptable ``K``.

    Returns:
        The labels as :class:`CrowdLabels`.

    Raises:
        ValueError: Empty input, labels outside ``0..K-1``, NaN, duplicated pairs, items with
            no label, or fewer than ``min_classes`` classes.
        TypeError: Input of an unsupported type.
    """
    if isinstance(labels, CrowdLabels):
        cl = labels
        if n_classes is not None and n_classes != cl.n_classes:
            if n_classes < cl.n_classes:
                raise ValueError(
                    f"`n_classes` must be at least {cl.n_classes} (the classes of the labels); "
                    f"got {n_classes}."
                )
            if not np.array_equal(cl.classes, np.arange(cl.n_classes)):
                raise ValueError(
                    f"`n_classes`={n_classes} conflicts with the named classes "
                    f"{short_list(list(cl.classes))}; list every class with `classes=` when "
                    "reading the labels instead."
                )
            cl = CrowdLabels.from_triplets(
                cl.items,
                cl.annotators,
                cl.labels,
                n_items=cl.n_items,
                n_annotators=cl.n_annotators,
                n_classes=n_classes,
                item_ids=cl.item_ids,
                annotator_ids=cl.annotator_ids,
                gold=cl.gold,
                quiz_accuracy=cl.quiz_accuracy,
            )
    elif is_frame(labels):
        from crowdmed.data.io import from_long_frame

        cl = from_long_frame(labels)
        if n_classes is not None:
            cl = check_labels(cl, n_classes=n_classes, min_classes=min_classes)
    elif isinstance(labels, (np.ndarray, list, tuple)):
        cl = CrowdLabels.from_dense(labels, n_classes=n_classes)
    else:
        raise TypeError(
            "`labels` must be a CrowdLabels, an integer array of shape (n_items, n_annotators) "
            f"or a long DataFrame; got {type(labels).__name__}."
        )
    if n_classes is not None and n_classes < min_classes:
        raise ValueError(f"`n_classes` must be at least {min_classes}; got {n_classes}.")
    if cl.n_classes < min_classes:
        raise ValueError(
            f"Labels must contain at least {min_classes} classes for truth inference; got "
            f"{cl.n_classes} ({short_list(list(cl.classes))}). Pass `n_classes` if the other "
            "classes exist but were never chosen."
        )
    per_item = cl.labels_per_item()
    if (per_item == 0).any():
        empty = cl.item_ids[per_item == 0]
        raise ValueError(
            f"Items {short_list(empty)} have no labels; drop them before aggregating "
            "(a row of -1 in the dense view)."
        )
    per_ann = cl.labels_per_annotator()
    if (per_ann == 0).any():
        idle = cl.annotator_ids[per_ann == 0]
        warnings.warn(
            f"Annotators {short_list(idle)} did not label any items; their reliability is "
            "reported as unknown.",
            UserWarning,
            stacklevel=3,
        )
    return cl


def check_int(value: Any, name: str, low: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool) of at least ``low``.

    Raises:
        TypeError: For a non-integer, with the type it got.
        ValueError: Below ``low``, naming the bound ("a positive integer" when it is 1).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int; got {type(value).__name__}.")
    if value < low:
        bound = "a positive integer" if low == 1 else f">= {low}"
        raise ValueError(f"`{name}` must be {bound}; got {value}.")
    return int(value)


def check_option(value: Any, enum: type[E], name: str) -> E:
    """Look up a string option in an enumeration, suggesting the closest valid value.

    Args:
        value: The option given by the user.
        enum: The enumeration of valid values.
        name: Argument name used in the message.

    Returns:
        The enumeration member.

    Raises:
        ValueError: If ``value`` is not a valid option.

    Examples:
        >>> from enum import Enum
        >>> class Init(str, Enum):
        ...     MAJORITY_VOTE = "majority_vote"
        ...     RANDOM = "random"
        >>> check_option("random", Init, "init")
        <Init.RANDOM: 'random'>
        >>> check_option("majority", Init, "init")
        Traceback (most recent call last):
        ...
        ValueError: `init` must be one of ['majority_vote', 'random']; got 'majority'. Did you ...
    """
    if isinstance(value, enum):
        return value
    valid = [m.value for m in enum]
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "_")
        for m in enum:
            if str(m.value).lower().replace("-", "_") == key:
                return m
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"`{name}` must be one of {valid}; got {_plain(value)!r}.{hint}")


def interval(
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    closed: str = "both",
) -> Callable[[Any], str | None]:
    """Build a constraint that a number lies in an interval (for :func:`check_params`)."""

    def check(v: Any) -> str | None:
        kind = numbers.Integral if integer else numbers.Real
        if isinstance(v, bool) or not isinstance(v, kind):
            return "an integer" if integer else "a number"
        if isinstance(v, float) and np.isnan(v):
            return "a number (not NaN)"
        x = float(v)
        lo_ok = low is None or (x >= low if closed in ("both", "left") else x > low)
        hi_ok = high is None or (x <= high if closed in ("both", "right") else x < high)
        if lo_ok and hi_ok:
            return None
        lb = "[" if closed in ("both", "left") else "("
        rb = "]" if closed in ("both", "right") else ")"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        what = "an integer" if integer else "a number"
        return f"{what} in {lb}{lo}, {hi}{rb}"

    return check


def check_params(estimator: Any, constraints: Mapping[str, Callable[[Any], str | None]]) -> None:
    """Check an estimator's hyperparameters against a declarative table.

    Args:
        estimator: Object whose attributes are the hyperparameters.
        constraints: Maps a parameter name to a function returning ``None`` when the value is
            valid, else a description of what it must be.

    Raises:
        ValueError: On the first invalid hyperparameter.
    """
    for name, check in constraints.items():
        value = getattr(estimator, name)
        expectation = check(value)
        if expectation is not None:
            raise ValueError(
                f"`{name}` of {type(estimator).__name__} must be {expectation}; got "
                f"{_plain(value)!r}."
            )


def check_random_state(seed: Any) -> np.random.Generator:
    """Turn ``seed`` into a :class:`numpy.random.Generator`.

    Args:
        seed: ``None`` (fresh entropy), an int, or a Generator (returned as is).

    Returns:
        A Generator.
    """
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, (numbers.Integral, np.integer)):
        return np.random.default_rng(int(seed))
    if isinstance(seed, np.random.Generator):
        return seed
    raise TypeError(
        f"`random_state` must be None, an int or a numpy Generator; got {type(seed).__name__}."
    )


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value, so messages show ``0``, not ``np.int64(0)``."""
    return value.item() if isinstance(value, np.generic) else value
