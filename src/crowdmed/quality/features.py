"""Per-item features from many annotators' scores: consensus and disagreement.

Cheplygina & Pluim (2018) predict a diagnosis from crowd scores of visual characteristics
(e.g. asymmetry, border and colour of a skin lesion) and show that the annotators'
*disagreement* about an item carries information of its own. :func:`crowd_features` turns a
table of per-annotator scores into one row per item with, for every scored characteristic,
a consensus statistic (mean, median) and disagreement statistics (standard deviation,
variance, range), ready for any classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np
import pandas as pd

from crowdmed._validation import check_option

__all__ = ["CrowdStat", "crowd_features"]


class CrowdStat(str, Enum):
    """Statistics of the annotators' scores of one item that :func:`crowd_features` computes."""

    MEAN = "mean"
    MEDIAN = "median"
    STD = "std"
    VAR = "var"
    MIN = "min"
    MAX = "max"
    RANGE = "range"
    COUNT = "count"


#: Statistics that measure disagreement: NaN when fewer than two annotators scored the item.
_SPREAD = (CrowdStat.STD, CrowdStat.VAR, CrowdStat.RANGE)


def _column(frame: pd.DataFrame, name: object, arg: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"`{arg}` must be a column name (str); got {type(name).__name__}.")
    if name not in frame.columns:
        raise ValueError(
            f"`{arg}` column {name!r} is not in the frame; available columns: "
            f"{[str(c) for c in frame.columns]}."
        )
    return name


def _check_stats(stats: str | Sequence[str]) -> list[CrowdStat]:
    """The statistics to compute, in the order given (at least one, none repeated)."""
    if isinstance(stats, str):
        stats = (stats,)
    chosen = [check_option(s, CrowdStat, "stats") for s in stats]
    if not chosen:
        raise ValueError(f"`stats` must name at least one of {[s.value for s in CrowdStat]}.")
    repeated = sorted({s.value for s in chosen if chosen.count(s) > 1})
    if repeated:
        raise ValueError(f"`stats` must not repeat a statistic; got {repeated} twice.")
    return chosen


def _check_features(
    frame: pd.DataFrame, features: str | Sequence[str] | None, item: str, annotator: str
) -> list[str]:
    """The score columns (every numeric column when ``features`` is None).

    Also checks that the item and annotator ids are filled and each pair occurs once.
    """
    if features is None:
        names = [
            c
            for c in frame.columns
            if c not in (item, annotator) and pd.api.types.is_numeric_dtype(frame[c])
        ]
        if not names:
            raise ValueError(
                "`frame` has no numeric score column besides the item and annotator columns; "
                "pass `features` with the score column names."
            )
    else:
        if isinstance(features, str):
            features = [features]
        names = list(features)
        bad = [f for f in names if not isinstance(f, str) or f not in frame.columns]
        if bad:
            raise ValueError(
                f"`features` {bad} are not columns of the frame; available columns: "
                f"{[str(c) for c in frame.columns]}."
            )
        clash = [f for f in names if f in (item, annotator)]
        if clash:
            raise ValueError(f"`features` must not include the item/annotator column {clash}.")
        if len(set(names)) != len(names):
            raise ValueError(f"`features` must not repeat a column; got {names}.")
        if not names:
            raise ValueError("`features` must name at least one score column; got none.")
    for f in names:
        col = frame[f]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            raise TypeError(
                f"Score column {f!r} must be numeric; got dtype {col.dtype}. Convert it, e.g. "
                f"with pd.to_numeric(frame[{f!r}], errors='coerce')."
            )
    for name in (item, annotator):
        if frame[name].isna().any():
            n = int(frame[name].isna().sum())
            raise ValueError(f"`{name}` column must not be empty; {n} rows have no {name} id.")
    dup = frame.duplicated([item, annotator])
    if dup.any():
        pairs = frame.loc[dup, [item, annotator]].head(3).to_numpy().tolist()
        raise ValueError(
            f"Each (item, annotator) pair must occur once; repeated pairs {pairs}. Aggregate "
            "repeated scores first (e.g. keep the last one)."
        )
    return names


def _statistics(
    frame: pd.DataFrame, names: list[str], item: str, chosen: list[CrowdStat], ddof: int
) -> pd.DataFrame:
    """One column ``<feature>_<stat>`` per feature and statistic, one row per item."""
    values = frame[names].astype(np.float64)
    values[item] = frame[item].to_numpy()
    grouped = values.groupby(item, sort=False)[names]
    count = grouped.count()
    results: dict[CrowdStat, pd.DataFrame] = {}
    few = count < 2
    for stat in chosen:
        if stat is CrowdStat.COUNT:
            results[stat] = count.astype(np.int64)
        elif stat is CrowdStat.MEAN:
            results[stat] = grouped.mean()
        elif stat is CrowdStat.MEDIAN:
            results[stat] = grouped.median()
        elif stat is CrowdStat.MIN:
            results[stat] = grouped.min()
        elif stat is CrowdStat.MAX:
            results[stat] = grouped.max()
        elif stat is CrowdStat.STD:
            results[stat] = grouped.std(ddof=ddof).mask(few)
        elif stat is CrowdStat.VAR:
            results[stat] = grouped.var(ddof=ddof).mask(few)
        else:  # RANGE
            results[stat] = (grouped.max() - grouped.min()).mask(few)
    out = pd.DataFrame(
        {f"{f}_{s.value}": results[s][f] for f in names for s in chosen}, index=count.index
    )
    out.index.name = item
    return out


def crowd_features(
    frame: pd.DataFrame,
    *,
    item: str = "item",
    annotator: str = "annotator",
    features: Sequence[str] | None = None,
    stats: Sequence[str] = ("mean", "std"),
    ddof: int = 1,
) -> pd.DataFrame:
    """Turn per-annotator scores into per-item feature columns, including disagreement.

    ``frame`` has one row per ``(item, annotator)`` and one numeric column per scored
    characteristic; a missing score (``NaN``) means that annotator did not score that
    characteristic of that item and is skipped. For every characteristic ``f`` and statistic
    ``s`` the result has a column ``"{f}_{s}"`` over the annotators who scored the item:

    * ``mean``, ``median``, ``min``, ``max``: consensus (``NaN`` when nobody scored it);
    * ``std`` (with ``ddof``), ``var`` (with ``ddof``), ``range`` (``max - min``):
      disagreement. These are ``NaN`` when fewer than two annotators scored the item: a single
      score says nothing about disagreement, so it is reported as unknown rather than as
      perfect agreement (impute it, e.g. with 0 or the column mean, if a classifier needs
      finite input);
    * ``count``: number of annotators who scored it (an integer, 0 when nobody did).

    Args:
        frame: Table with one row per (item, annotator): the ``item`` and ``annotator`` columns
            and numeric score columns (float; ``NaN`` marks a missing score).
        item: Name of the item column.
        annotator: Name of the annotator column.
        features: Names of the score columns; all numeric columns other than ``item`` and
            ``annotator`` when omitted.
        stats: Statistics to compute, from ``mean, median, std, var, min, max, range, count``.
        ddof: Delta degrees of freedom of ``std`` and ``var``: 1 gives the sample standard
            deviation (pandas), 0 the population one (NumPy).

    Returns:
        One row per item, indexed by the item ids in order of first appearance (index name
        ``item``); columns ``"{feature}_{stat}"``, features in the given order and statistics
        in the order of ``stats``; ``float64`` except ``count`` (``int64``).

    Raises:
        ValueError: If the frame is empty, a named column does not exist, a statistic is
            unknown or repeated, ``ddof`` is negative, an (item, annotator) pair occurs twice,
            or an item or annotator id is missing.
        TypeError: If ``frame`` is not a DataFrame or a score column is not numeric.

    Examples:
        >>> import pandas as pd
        >>> scores = pd.DataFrame({  # 2 items; annotator c did not score item y
        ...     "item": ["x", "x", "x", "y", "y"],
        ...     "annotator": ["a", "b", "c", "a", "b"],
        ...     "border": [1.0, 2.0, 6.0, 3.0, None],
        ... })
        >>> crowd_features(scores, stats=("mean", "range", "count"))
              border_mean  border_range  border_count
        item
        x             3.0           5.0             3
        y             3.0           NaN             1

    References:
        Cheplygina, V. & Pluim, J. P. W. (2018). Crowd disagreement about medical images is
        informative. LABELS @ MICCAI 2018, LNCS 11043. https://doi.org/10.1007/978-3-030-01364-6_12
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"`frame` must be a pandas DataFrame; got {type(frame).__name__}.")
    if len(frame) == 0:
        raise ValueError("`frame` must have at least one row of scores; got an empty frame.")
    item = _column(frame, item, "item")
    annotator = _column(frame, annotator, "annotator")
    if item == annotator:
        raise ValueError(f"`item` and `annotator` must be different columns; both are {item!r}.")
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"`ddof` must be a non-negative integer; got {ddof!r}.")
    chosen = _check_stats(stats)
    names = _check_features(frame, features, item, annotator)

    return _statistics(frame, names, item, chosen, int(ddof))
