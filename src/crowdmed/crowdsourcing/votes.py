"""Vote import: crowd answers (CSV or Label Studio JSON) into :class:`~crowdmed.CrowdLabels`.

Every row is checked against the task package: unknown task ids, answers that are neither
mitosis nor not mitosis, empty annotator names and repeated ``(task, annotator)`` pairs are
reported with their row, never dropped silently. By default any problem is an error; with
``on_error="drop"`` the bad rows are left out and listed in :attr:`ImportedVotes.problems`.

Each annotator's quiz accuracy ``γ`` (AggNet's trust prior) is their accuracy on the gold
tasks of the package, unless it is given (a ``quiz_accuracy`` column or a quiz table).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._tables import LINE_OFFSET, check_file, read_table
from crowdmed.crowdsourcing.labelstudio import read_label_studio
from crowdmed.crowdsourcing.tasks import TaskPackage, load_package, parse_label
from crowdmed.data.labels import CrowdLabels

__all__ = ["ImportedVotes", "read_votes"]


@dataclass(frozen=True)
class ImportedVotes:
    """The result of :func:`read_votes`.

    Attributes:
        labels: Binary labels (class 1 = mitosis) of the tasks that received at least one
            valid vote, in task order; ``gold`` holds the answers of the gold tasks and
            ``quiz_accuracy`` each annotator's ``γ`` (``NaN`` when unknown).
        votes: The accepted votes: ``task, annotator, label`` (label ``0``/``1``).
        problems: The rejected rows: ``where, task, annotator, label, problem``.
        quiz_source: Per annotator, where ``γ`` came from: ``"given"``, ``"gold"`` or
            ``"none"`` (same order as ``labels.annotator_ids``).
    """

    labels: CrowdLabels
    votes: pd.DataFrame
    problems: pd.DataFrame
    quiz_source: np.ndarray

    def report(self, limit: int = 20) -> str:
        """The problems as text, one per line (at most ``limit`` lines plus a count)."""
        lines = [
            f"{r.where}: {r.problem}" for r in self.problems.head(limit).itertuples(index=False)
        ]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def _read_table(source: str | os.PathLike[str] | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    if isinstance(source, pd.DataFrame):
        df = source.reset_index(drop=True).copy()
        df["where"] = [f"row {i + 1}" for i in range(len(df))]
        return df, "the vote table"
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"Vote file '{path}' does not exist; pass a CSV or a JSON export.")
    check_file(path, "Vote file")
    if path.suffix.lower() == ".json":
        return read_label_studio(path), f"'{path}'"
    df = read_table(path, all_text=True, what="Vote file", folder=False, sep="sniff").fillna("")
    df["where"] = [f"line {i + LINE_OFFSET}" for i in range(len(df))]  # line 1 is the header
    return df, f"'{path}'"


def _column(df: pd.DataFrame, names: tuple[str, ...], role: str, origin: str) -> str:
    lower = {str(c).strip().lower(): c for c in df.columns}
    for n in names:
        if n in lower:
            return str(lower[n])
    raise ValueError(
        f"{origin} needs a {role} column (one of {list(names)}); columns are "
        f"{[c for c in df.columns if c != 'where']}."
    )


def _quiz_table(quiz: Any) -> pd.Series:
    """Quiz accuracy per annotator id (as text) from a mapping, Series, table or CSV path."""
    if isinstance(quiz, pd.Series):
        s = quiz
    elif isinstance(quiz, dict):
        s = pd.Series(quiz, dtype=np.float64)
    else:
        df = (
            quiz
            if isinstance(quiz, pd.DataFrame)
            else read_table(quiz, all_text=True, what="Quiz file", folder=False)
        )
        ann = _column(df, ("annotator", "worker", "user"), "annotator", "The quiz table")
        acc = _column(df, ("quiz_accuracy", "accuracy", "gamma"), "quiz_accuracy", "The quiz table")
        s = pd.Series(df[acc].to_numpy(), index=df[ann].astype(str))
    s = pd.to_numeric(s, errors="coerce")
    s.index = s.index.astype(str)
    bad = s.isna() | (s < 0) | (s > 1)
    if bad.any():
        origin = f" in '{quiz}'" if isinstance(quiz, (str, os.PathLike)) else ""
        raise ValueError(
            f"Quiz accuracies must be numbers in [0, 1]; annotators {s.index[bad][:5].tolist()} "
            f"have other values{origin}."
        )
    return s


def _check_rows(
    df: pd.DataFrame,
    task: pd.Series,
    ann: pd.Series,
    lab: pd.Series,
    c_lab: str,
    known: set[str],
) -> tuple[np.ndarray, pd.DataFrame]:
    """Which rows are valid votes, and a table of the others (where, task, ..., problem)."""
    problems: list[tuple[str, int]] = []  # (message, row position)
    for pos, (t, a, raw) in enumerate(zip(task, ann, df[c_lab], strict=True)):
        if t not in known:
            problems.append((f"unknown task id {t!r} (not in the package manifest)", pos))
        if a == "":
            problems.append(("empty annotator", pos))
        if pd.isna(lab.iloc[pos]):
            if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "":
                problems.append(("no label chosen (skip the row or choose one)", pos))
            else:
                problems.append((f"bad label {raw!r} (use mitosis / not mitosis, or 1 / 0)", pos))
    valid = np.ones(len(df), dtype=bool)
    valid[[p for _, p in problems]] = False
    dup = pd.Series(list(zip(task, ann, strict=True))).duplicated(keep="first").to_numpy() & valid
    first_row: dict[tuple[str, str], int] = {}
    for pos, key in enumerate(zip(task, ann, strict=True)):
        first_row.setdefault(key, pos)
    for pos in np.flatnonzero(dup).tolist():
        key = (task.iloc[pos], ann.iloc[pos])
        problems.append(
            (
                f"duplicated vote of annotator {key[1]!r} on task {key[0]!r} (first at "
                f"{df['where'].iloc[first_row[key]]})",
                int(pos),
            )
        )
    valid &= ~dup
    problems.sort(key=lambda p: p[1])
    table = pd.DataFrame(
        {
            "where": [df["where"].iloc[p] for _, p in problems],
            "task": [task.iloc[p] for _, p in problems],
            "annotator": [ann.iloc[p] for _, p in problems],
            "label": [df[c_lab].iloc[p] for _, p in problems],
            "problem": [m for m, _ in problems],
        }
    )
    return valid, table


def _gold_accuracy(
    labels: np.ndarray, items: np.ndarray, anns: np.ndarray, n_annotators: int, gold: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each annotator's accuracy on the gold tasks (NaN without any) and its source."""
    quiz_acc = np.full(n_annotators, np.nan)
    source_of = np.full(n_annotators, "none", dtype=object)
    if (gold >= 0).any():
        g = gold[items]
        on_gold = g >= 0
        n = np.bincount(anns[on_gold], minlength=n_annotators)
        right = np.bincount(
            anns[on_gold], weights=(labels[on_gold] == g[on_gold]), minlength=n_annotators
        )
        has = n > 0
        quiz_acc[has] = right[has] / n[has]
        source_of[has] = "gold"
    return quiz_acc, source_of


def _given_quiz(
    df: pd.DataFrame, valid: np.ndarray, ann: pd.Series, origin: str, quiz: Any
) -> pd.Series | None:
    """Given quiz accuracies by annotator: the ``quiz`` argument over the file's column."""
    given: pd.Series | None = None
    c_quiz = next((c for c in df.columns if str(c).strip().lower() == "quiz_accuracy"), None)
    if c_quiz is not None:
        col = pd.to_numeric(df.loc[valid, c_quiz], errors="coerce")  # "" -> NaN
        per = pd.DataFrame({"a": ann[valid].to_numpy(), "q": col.to_numpy()}).dropna()
        per = per.drop_duplicates()
        if per["a"].duplicated().any():
            bad = per["a"][per["a"].duplicated()].unique()[:5].tolist()
            raise ValueError(f"Annotators {bad} have more than one quiz_accuracy in {origin}.")
        given = pd.Series(per["q"].to_numpy(), index=per["a"].astype(str))
    if quiz is not None:
        q = _quiz_table(quiz)
        given = q if given is None else pd.concat([given[~given.index.isin(q.index)], q])
    return given


def read_votes(
    source: str | os.PathLike[str] | pd.DataFrame,
    package: TaskPackage | str | os.PathLike[str],
    *,
    quiz: Any = None,
    on_error: str = "raise",
) -> ImportedVotes:
    """Read crowd votes for a task package.

    Args:
        source: A CSV ``task, annotator, label`` (``worker``/``item`` are accepted too; an
            optional ``quiz_accuracy`` column gives each annotator's γ), a Label Studio JSON
            export (``.json``), or a table with those columns.
        package: The task package (or its folder) the votes answer.
        quiz: Given quiz accuracies: a mapping or Series annotator -> γ, or a table/CSV
            ``annotator, quiz_accuracy``. They take precedence over the column and over the
            accuracy on gold tasks.
        on_error: ``"raise"`` to fail on the first problems (all are listed, up to five, in
            the message) or ``"drop"`` to leave bad rows out and list them in ``problems``.

    Returns:
        The labels, accepted votes, problems and quiz sources.

    Raises:
        ValueError: On malformed rows (with ``on_error="raise"``), a missing column, or when
            no valid vote is left.
    """
    if on_error not in ("raise", "drop"):
        raise ValueError(f"`on_error` must be 'raise' or 'drop'; got {on_error!r}.")
    pkg = package if isinstance(package, TaskPackage) else load_package(package)
    df, origin = _read_table(source)
    if len(df) == 0:
        raise ValueError(f"{origin} holds no votes; it needs one row per answer.")
    c_task = _column(df, ("task", "item", "task_id"), "task", origin)
    c_ann = _column(df, ("annotator", "worker", "user", "annotator_id"), "annotator", origin)
    c_lab = _column(df, ("label", "answer", "choice"), "label", origin)
    task = df[c_task].map(lambda v: "" if v is None else str(v).strip())
    ann = df[c_ann].map(lambda v: "" if v is None else str(v).strip())
    lab = df[c_lab].map(parse_label)
    valid, table = _check_rows(df, task, ann, lab, c_lab, set(pkg.tasks))
    if len(table) and on_error == "raise":
        shown = "; ".join(
            f"{w}: {m}" for w, m in zip(table["where"][:5], table["problem"][:5], strict=True)
        )
        more = f" (and {len(table) - 5} more)" if len(table) > 5 else ""
        raise ValueError(
            f"{origin} has {len(table)} malformed or duplicated rows: {shown}{more}. Fix them "
            "or pass --on-error drop to skip them."
        )
    votes = pd.DataFrame(
        {
            "task": task[valid].to_numpy(),
            "annotator": ann[valid].to_numpy(),
            "label": lab[valid].astype(np.int64).to_numpy(),
        }
    )
    if len(votes) == 0:
        raise ValueError(f"{origin} has no valid vote left; check the task ids and labels.")
    order = pd.Index(pkg.tasks)
    votes = votes.iloc[np.argsort(order.get_indexer(votes["task"]), kind="stable")]
    votes = votes.reset_index(drop=True)

    items, item_ids = pd.factorize(votes["task"], sort=False)
    anns, ann_ids = pd.factorize(votes["annotator"], sort=False)
    gold = pkg.gold_labels()[order.get_indexer(item_ids)]
    quiz_acc, source_of = _gold_accuracy(votes["label"].to_numpy(), items, anns, len(ann_ids), gold)
    given = _given_quiz(df, valid, ann, origin, quiz)
    if given is not None:
        idx = pd.Index(np.asarray(ann_ids).astype(str)).get_indexer(given.index)
        quiz_acc[idx[idx >= 0]] = given.to_numpy()[idx >= 0]
        source_of[idx[idx >= 0]] = "given"
    labels = CrowdLabels.from_triplets(
        items,
        anns,
        votes["label"].to_numpy(),
        n_items=len(item_ids),
        n_annotators=len(ann_ids),
        n_classes=2,
        item_ids=np.asarray(item_ids, dtype=object),
        annotator_ids=np.asarray(ann_ids, dtype=object),
        classes=np.array([0, 1]),
        gold=gold if (gold >= 0).any() else None,
        quiz_accuracy=quiz_acc if np.isfinite(quiz_acc).any() else None,
    )
    return ImportedVotes(labels=labels, votes=votes, problems=table, quiz_source=source_of)
