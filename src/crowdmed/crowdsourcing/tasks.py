"""Task packages: candidate detections turned into patch-labelling tasks for a crowd.

A package is a folder that a requester can hand to a crowdsourcing tool::

    PKG/
      manifest.csv        task, image, x, y, score, is_gold (one row per task, task order)
      gold.csv            task, label (answers of the gold questions; never shown to workers)
      votes_template.csv  task, annotator, label (the import format, one empty row per task)
      package.json        settings, counts and class names
      patches/<task>.png      RGB context crop centred on the candidate
      blue_ratio/<task>.png   its blue-ratio view (grey levels)
      label_studio/tasks.json, label_studio/config.xml   (optional Label Studio project)

Gold questions (known mitoses and known negatives) are mixed into the candidates at a set rate
and the task order is shuffled with a seed, so workers cannot tell gold from real tasks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crowdmed._io import _umask, to_jsonable
from crowdmed._tables import read_table
from crowdmed._validation import check_random_state
from crowdmed._version import __version__
from crowdmed.crowdsourcing.views import blue_ratio_display, context_crops

__all__ = [
    "CLASS_NAMES",
    "TaskPackage",
    "export_tasks",
    "load_package",
    "parse_label",
    "read_image",
    "write_png",
]

#: Names of the two answers; class ``0`` is "not mitosis", class ``1`` is "mitosis".
CLASS_NAMES = ("not mitosis", "mitosis")

_LABEL_WORDS = {
    "0": 0,
    "1": 1,
    "not mitosis": 0,
    "not_mitosis": 0,
    "not-mitosis": 0,
    "non-mitosis": 0,
    "no": 0,
    "false": 0,
    "negative": 0,
    "mitosis": 1,
    "yes": 1,
    "true": 1,
    "positive": 1,
}

_PILLOW_HINT = "Reading and writing PNG files needs Pillow: pip install pillow."
PACKAGE_FORMAT = 1


def parse_label(value: Any) -> int | None:
    """Class index of an answer: ``1`` for mitosis, ``0`` for not mitosis, ``None`` if invalid.

    Accepts ``0``/``1`` (numbers or text), ``mitosis``/``not mitosis`` (also ``not_mitosis``),
    ``yes``/``no`` and ``true``/``false``, in any letter case.

    Examples:
        >>> [parse_label(v) for v in ["Mitosis", "not mitosis", 1, "0", "maybe", None]]
        [1, 0, 1, 0, None, None]
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer, float, np.floating)):
        return int(value) if value in (0, 1) else None
    return _LABEL_WORDS.get(str(value).strip().lower())


def write_png(array: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write a ``uint8`` image ``(H, W)`` or ``(H, W, 3)`` as PNG (Pillow)."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with the torch extra
        raise ImportError(_PILLOW_HINT) from exc
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an RGB ``uint8`` array ``(H, W, 3)`` (Pillow)."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover
        raise ImportError(_PILLOW_HINT) from exc
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"Cannot read image '{path}': {exc}") from exc


@dataclass(frozen=True)
class TaskPackage:
    """A task package folder (see the module docstring).

    Attributes:
        path: The package folder.
        manifest: One row per task in task order: ``task, image, x, y, score, is_gold``.
        gold: Answers of the gold tasks: ``task, label`` (``label`` is ``0`` or ``1``).
        settings: The export settings and counts (``package.json``).
    """

    path: Path
    manifest: pd.DataFrame
    gold: pd.DataFrame
    settings: dict[str, Any]

    @property
    def tasks(self) -> list[str]:
        """Task ids in task order."""
        return self.manifest["task"].astype(str).tolist()

    @property
    def n_gold(self) -> int:
        """Number of gold tasks."""
        return int(self.manifest["is_gold"].sum())

    def gold_labels(self) -> np.ndarray:
        """Integer array of shape ``(n_tasks,)``: the gold answer, ``-1`` for a real task."""
        out = np.full(len(self.manifest), -1, dtype=np.int64)
        pos = pd.Index(self.tasks).get_indexer(self.gold["task"].astype(str))
        out[pos] = self.gold["label"].to_numpy(dtype=np.int64)
        return out

    def patches(self, tasks: Sequence[str] | None = None, *, view: str = "rgb") -> np.ndarray:
        """Read the task images: ``uint8`` ``(n, H, W, 3)`` (``rgb``) or ``(n, H, W)``.

        Args:
            tasks: Task ids; all tasks in task order when omitted.
            view: ``"rgb"`` (the context crops) or ``"blue_ratio"``.
        """
        if view not in ("rgb", "blue_ratio"):
            raise ValueError(f"`view` must be 'rgb' or 'blue_ratio'; got {view!r}.")
        folder = self.path / ("patches" if view == "rgb" else "blue_ratio")
        ids = self.tasks if tasks is None else [str(t) for t in tasks]
        out = []
        for t in ids:
            f = folder / f"{t}.png"
            if not f.is_file():
                raise FileNotFoundError(
                    f"Task package '{self.path}' has no image for task {t!r} ({f}); export the "
                    "package again."
                )
            img = read_image(f)
            out.append(img if view == "rgb" else img[..., 0])
        return np.stack(out) if out else np.zeros((0, 1, 1, 3), dtype=np.uint8)


def load_package(path: str | os.PathLike[str]) -> TaskPackage:
    """Open a task package written by :func:`export_tasks`.

    Raises:
        ValueError: If the folder is missing or is not a task package.
    """
    p = Path(path)
    if not p.is_dir():
        what = "is a file" if p.exists() else "does not exist"
        raise ValueError(
            f"Task package '{p}' {what}; pass a folder written by `crowdmed crowd export`."
        )
    missing = [n for n in ("manifest.csv", "gold.csv", "package.json") if not (p / n).is_file()]
    if missing:
        raise ValueError(
            f"'{p}' is not a task package (missing {missing}); write one with "
            "`crowdmed crowd export`."
        )
    manifest = read_table(
        p / "manifest.csv", text_columns=("task", "image"), what="Manifest", folder=False
    )
    gold = read_table(p / "gold.csv", text_columns=("task",), what="Gold file", folder=False)
    settings = json.loads((p / "package.json").read_text(encoding="utf-8"))
    need = {"task", "image", "x", "y", "score", "is_gold"}
    if not need <= set(manifest.columns):
        raise ValueError(
            f"'{p / 'manifest.csv'}' must have columns {sorted(need)}; got "
            f"{list(manifest.columns)}."
        )
    manifest["is_gold"] = manifest["is_gold"].astype(bool)
    return TaskPackage(path=p, manifest=manifest, gold=gold, settings=settings)


def _check_points(df: Any, name: str, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"`{name}` must be a pandas DataFrame; got {type(df).__name__}.")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"`{name}` must have columns {list(columns)}; missing {missing} (columns are "
            f"{list(df.columns)})."
        )
    out = df.loc[:, list(columns)].copy()
    out["image"] = out["image"].astype(str)
    for c in ("x", "y", "score"):
        if c in out.columns:
            vals = pd.to_numeric(out[c], errors="coerce")
            bad = vals.isna() & out[c].notna() if c == "score" else vals.isna()
            if bad.any():
                rows = (np.flatnonzero(bad.to_numpy())[:5] + 1).tolist()
                raise ValueError(
                    f"`{name}` column {c!r} must be numeric; rows {rows} are not. Fix those rows."
                )
            out[c] = vals.astype(np.float64)
    return out.reset_index(drop=True)


def _image_lookup(
    images: Mapping[str, npt.ArrayLike] | Sequence[npt.ArrayLike], names: Sequence[str] | None
) -> dict[str, np.ndarray]:
    if isinstance(images, Mapping):
        return {str(k): np.asarray(v) for k, v in images.items()}
    imgs = list(images)
    keys = [str(i) for i in range(len(imgs))] if names is None else [str(n) for n in names]
    if len(keys) != len(imgs):
        raise ValueError(f"`names` must have one entry per image ({len(imgs)}); got {len(keys)}.")
    return {k: np.asarray(v) for k, v in zip(keys, imgs, strict=True)}


def _number_of_gold(n_candidates: int, gold_rate: float) -> int:
    """Gold tasks needed so that they make up ``gold_rate`` of all tasks."""
    if gold_rate == 0:
        return 0
    return max(1, round(gold_rate * n_candidates / (1.0 - gold_rate)))


def _check_export_args(target: Path, gold_rate: float, patch_size: int) -> None:
    if target.exists():
        raise ValueError(
            f"Task package folder '{target}' already exists; choose another --out or remove it."
        )
    if not (0 <= gold_rate < 1):
        raise ValueError(f"`gold_rate` must lie in [0, 1); got {gold_rate}.")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 3:
        raise ValueError(f"`patch_size` must be an integer >= 3; got {patch_size!r}.")


def _kept_candidates(candidates: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """The checked candidates scoring at least ``threshold``; none left is an error."""
    cand = _check_points(candidates, "candidates", ("image", "x", "y", "score"))
    if threshold is not None:
        cand = cand[cand["score"] >= threshold].reset_index(drop=True)
    if len(cand) == 0 and threshold is None:
        raise ValueError(
            "The candidates table is empty: there is nothing to ask the crowd; detect with a "
            "lower --threshold."
        )
    if len(cand) == 0:
        raise ValueError(
            f"No candidate scores at least the threshold {threshold}; lower --threshold."
        )
    return cand


def _draw_gold(
    gold: pd.DataFrame | None,
    n_gold: int,
    gold_rate: float,
    n_candidates: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """``n_gold`` gold questions drawn from the pool (in pool order), labels coded 1/0."""
    if not n_gold:
        return pd.DataFrame({"image": [], "x": [], "y": [], "label": []})
    if gold is None:
        raise ValueError(
            f"`gold_rate` {gold_rate} needs a pool of gold questions (`gold`: image, x, y, "
            "label); pass one or set the rate to 0."
        )
    pool = _check_points(gold, "gold", ("image", "x", "y", "label"))
    codes = pool["label"].map(parse_label)
    bad = codes.isna()
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy())[:5] + 1).tolist()
        raise ValueError(
            f"Gold labels must be mitosis/not mitosis (1/0); rows {rows} are not. Fix them."
        )
    pool["label"] = codes.astype(np.int64)
    if len(pool) < n_gold:
        raise ValueError(
            f"A gold rate of {gold_rate} with {n_candidates} candidates needs {n_gold} gold "
            f"questions; the pool has {len(pool)}. Add gold points or lower --gold-rate."
        )
    return pool.iloc[np.sort(rng.choice(len(pool), size=n_gold, replace=False))]


def _task_table(
    cand: pd.DataFrame,
    pool: pd.DataFrame,
    lookup: Mapping[str, np.ndarray],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Candidates and gold questions in a random order, named ``t0001``, ``t0002``..."""
    tasks = pd.concat(
        [
            cand.assign(is_gold=False, label=-1),
            pool.assign(score=np.nan, is_gold=True),
        ],
        ignore_index=True,
    )
    unknown = sorted(set(tasks["image"]) - set(lookup))
    if unknown:
        raise ValueError(
            f"Candidates name images {unknown[:5]} that were not given (images: "
            f"{sorted(lookup)[:5]}...); check the image column or the image folder."
        )
    tasks = tasks.iloc[rng.permutation(len(tasks))].reset_index(drop=True)
    width = max(4, len(str(len(tasks))))
    tasks.insert(0, "task", [f"t{i + 1:0{width}d}" for i in range(len(tasks))])
    return tasks


def _crops(tasks: pd.DataFrame, lookup: Mapping[str, np.ndarray], patch_size: int) -> np.ndarray:
    """The context crop of every task, ``(n_tasks, patch_size, patch_size, 3)`` uint8."""
    crops = np.empty((len(tasks), patch_size, patch_size, 3), dtype=np.uint8)
    for name, idx in tasks.groupby("image", sort=False).groups.items():
        img = lookup[str(name)]
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"Image {name!r} must be RGB (H, W, 3); got shape {img.shape}.")
        rows = tasks.loc[idx]
        try:
            c = context_crops(img, rows["x"].to_numpy(), rows["y"].to_numpy(), patch_size)
        except ValueError as exc:
            raise ValueError(f"Image {name!r}: {exc}") from None
        crops[np.asarray(idx)] = np.clip(c, 0, 255).astype(np.uint8)
    return crops


def _write_package(
    target: Path,
    tasks: pd.DataFrame,
    crops: np.ndarray,
    settings: dict[str, Any],
    *,
    label_studio: bool,
    url_prefix: str,
) -> None:
    """Write the package under a temporary name next to ``target``, then rename it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        (stage / "patches").mkdir()
        (stage / "blue_ratio").mkdir()
        for t, crop in zip(tasks["task"], crops, strict=True):
            write_png(crop, stage / "patches" / f"{t}.png")
            write_png(blue_ratio_display(crop), stage / "blue_ratio" / f"{t}.png")
        manifest = tasks[["task", "image", "x", "y", "score", "is_gold"]]
        manifest.to_csv(stage / "manifest.csv", index=False)
        gold_table = tasks.loc[tasks["is_gold"], ["task", "label"]].astype({"label": np.int64})
        gold_table.to_csv(stage / "gold.csv", index=False)
        pd.DataFrame({"task": tasks["task"], "annotator": "", "label": ""}).to_csv(
            stage / "votes_template.csv", index=False
        )
        (stage / "package.json").write_text(
            json.dumps(to_jsonable(settings), indent=2) + "\n", encoding="utf-8"
        )
        if label_studio:
            from crowdmed.crowdsourcing.labelstudio import write_label_studio

            write_label_studio(stage, tasks["task"].tolist(), url_prefix=url_prefix)
        os.chmod(stage, 0o777 & ~_umask())
        os.rename(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def export_tasks(
    images: Mapping[str, npt.ArrayLike] | Sequence[npt.ArrayLike],
    candidates: pd.DataFrame,
    out: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    threshold: float | None = None,
    gold: pd.DataFrame | None = None,
    gold_rate: float = 0.1,
    patch_size: int = 99,
    label_studio: bool = False,
    url_prefix: str = "",
    random_state: int | np.random.Generator | None = 0,
) -> TaskPackage:
    """Write a task package for the candidates scoring at least ``threshold``.

    Args:
        images: RGB images ``(H, W, 3)`` in ``0..255``, as a mapping name -> image or a list
            (named by ``names``, else ``"0"``, ``"1"``...).
        candidates: Table ``image, x, y, score``: one row per candidate detection, ``x`` the
            column and ``y`` the row in pixels.
        out: The package folder to create; it must not exist. It is written under a temporary
            name next to it and renamed when complete.
        names: Names of the images when ``images`` is a list.
        threshold: Keep candidates with ``score >= threshold`` (a lower operating point than
            the detector's); all candidates when omitted.
        gold: Pool of gold questions, a table ``image, x, y, label`` with ``label`` mitosis (1)
            or not mitosis (0) — reference points and known negatives. Required when
            ``gold_rate > 0``.
        gold_rate: Share of all tasks that are gold questions, in ``[0, 1)``.
        patch_size: Side in pixels of the context crop shown to workers.
        label_studio: Also write ``label_studio/tasks.json`` and ``label_studio/config.xml``.
        url_prefix: Prefix of the image paths in the Label Studio tasks (for example the
            ``/data/local-files/?d=`` route of a local-file storage).
        random_state: Seed of the gold draw and of the task order.

    Returns:
        The written package.

    Raises:
        ValueError: If ``out`` exists, a column is missing, a candidate names an unknown image
            or lies outside it, or the gold pool is smaller than ``gold_rate`` needs.
    """
    target = Path(out)
    _check_export_args(target, gold_rate, patch_size)
    lookup = _image_lookup(images, names)
    cand = _kept_candidates(candidates, threshold)
    n_gold = _number_of_gold(len(cand), gold_rate)
    rng = check_random_state(random_state)
    pool = _draw_gold(gold, n_gold, gold_rate, len(cand), rng)
    tasks = _task_table(cand, pool, lookup, rng)
    crops = _crops(tasks, lookup, patch_size)  # all validation happens before anything is written
    settings = {
        "format": "crowdmed-task-package",
        "format_version": PACKAGE_FORMAT,
        "crowdmed": __version__,
        "classes": list(CLASS_NAMES),
        "patch_size": patch_size,
        "threshold": threshold,
        "gold_rate": gold_rate,
        "random_state": random_state if not isinstance(random_state, np.random.Generator) else None,
        "n_tasks": len(tasks),
        "n_candidates": len(cand),
        "n_gold": n_gold,
        "label_studio": label_studio,
    }
    _write_package(target, tasks, crops, settings, label_studio=label_studio, url_prefix=url_prefix)
    return load_package(target)
