"""The crowdsourcing loop from files: what ``crowdmed crowd ...`` and ``crowdmed refine`` run.

:func:`export_package` turns a candidates file into a task package, :func:`gold_pool` builds
gold questions from reference points and known false candidates, :func:`simulate_package_votes`
simulates a crowd on a package, and :func:`refine_from_votes` refines a saved mitosis detector
on crowd votes with AggNet's aggregation layer (:func:`crowdmed.pipelines.refine.refine`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed.pipelines.mitosis import field_stem
from crowdmed.pipelines.records import file_record

__all__ = [
    "RefineRun",
    "export_package",
    "gold_pool",
    "read_fields",
    "read_point_table",
    "refine_from_votes",
    "simulate_package_votes",
]


def read_fields(folder: Path, names: Any) -> dict[str, Any]:
    """The fields named in ``names`` (stems) from an image folder."""
    from crowdmed.data.points import image_files, load_field

    files = image_files(folder)
    wanted = sorted({field_stem(n) for n in names})
    missing = [n for n in wanted if n not in files]
    if missing:
        raise ValueError(
            f"Image folder '{folder}' has no field for images {missing[:5]}; check the image "
            "column or --images."
        )
    return {n: load_field(files[n]) for n in wanted}


def read_point_table(path: Path, option: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV of points with at least ``columns``; image names stay text (``'001'``).

    Raises:
        ValueError: For a missing or unreadable file, missing columns, rows without image,
            coordinates or scores that are not finite numbers, or only one of x and y.
    """
    if not path.is_file():
        raise ValueError(f"`{option}` file '{path}' does not exist.")
    try:  # image names stay text: '001' must not become 1
        df = pd.read_csv(path, dtype={"image": str}, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"Cannot read `{option}` file '{path}': {exc}.") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"`{option}` file '{path}' needs columns {list(columns)}; missing {missing}."
        )
    df = df.copy()
    if df["image"].isna().any():
        lines = (df.index[df["image"].isna()] + 2).tolist()
        raise ValueError(f"`{option}` file '{path}' has rows without an image (lines {lines[:5]}).")
    df["image"] = df["image"].map(field_stem)
    for col in [c for c in ("x", "y", "score") if c in df.columns]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = (df[col].notna() & values.isna()) | np.isinf(values)
        if bad.any():
            lines = (df.index[bad] + 2).tolist()
            shown = [str(v) for v in df.loc[bad, col].head(3)]
            raise ValueError(
                f"`{option}` file '{path}' has {col} values that are not finite numbers "
                f"{shown} (lines {lines[:5]})."
            )
        df[col] = values.astype(float)
    if "x" in df.columns and "y" in df.columns:
        half = df["x"].isna() != df["y"].isna()
        if half.any():
            lines = (df.index[half] + 2).tolist()
            raise ValueError(
                f"`{option}` file '{path}' has rows with only one of x and y (lines "
                f"{lines[:5]}); give both, or leave both empty for a field without points."
            )
    return df


def export_package(
    candidates: Path,
    images: Path,
    out: Path,
    *,
    threshold: float | None = None,
    gold: Path | None = None,
    gold_rate: float = 0.1,
    patch_size: int = 99,
    label_studio: bool = True,
    url_prefix: str = "",
    seed: int = 0,
) -> Any:
    """Turn a candidates file into a task package.

    See :func:`crowdmed.crowdsourcing.tasks.export_tasks` for the package and the arguments.

    Raises:
        ValueError: For a gold rate without a gold pool or unreadable inputs.
    """
    from crowdmed.crowdsourcing.tasks import export_tasks

    if gold is None and gold_rate > 0:
        raise ValueError(
            "`--gold-rate` > 0 needs `--gold` (a pool of gold questions); pass one or set "
            "--gold-rate 0."
        )
    cands = read_point_table(candidates, "CANDIDATES", ("image", "x", "y", "score"))
    pool = None if gold is None else read_point_table(gold, "--gold", ("image", "x", "y", "label"))
    names = list(cands["image"]) + ([] if pool is None else list(pool["image"]))
    from crowdmed.pipelines.memory import check_memory

    check_memory(  # every crop held at once: RGB bytes plus a float64 blue-ratio view
        (3 + 8) * len(names) * float(patch_size) ** 2,
        f"{len(names):,} context crops of --patch-size {patch_size}",
        "lower --patch-size",
    )
    fields = read_fields(images, names)
    _check_inside(cands, fields, f"CANDIDATES '{candidates.name}'")
    if pool is not None and gold is not None:
        _check_inside(pool, fields, f"`--gold` '{gold.name}'")
    return export_tasks(
        fields,
        cands,
        out,
        threshold=threshold,
        gold=pool,
        gold_rate=gold_rate if gold is not None else 0.0,
        patch_size=patch_size,
        label_studio=label_studio,
        url_prefix=url_prefix,
        random_state=seed,
    )


def _check_inside(points: pd.DataFrame, fields: dict[str, Any], what: str) -> None:
    """Refuse points outside their field, naming the file (before any crop is cut)."""
    for image, rows in points.dropna(subset=["x", "y"]).groupby("image", sort=True):
        h, w = np.asarray(fields[field_stem(image)]).shape[:2]
        x, y = rows["x"].to_numpy(dtype=float), rows["y"].to_numpy(dtype=float)
        bad = ~((x >= 0) & (x < w) & (y >= 0) & (y < h))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{what} has {int(bad.sum())} point(s) outside image {image!r} ({w}x{h} "
                f"pixels), e.g. x={x[i]:g}, y={y[i]:g}; coordinates are pixels from 0."
            )


def gold_pool(points: Path, candidates: Path, *, radius: float = 15.0) -> tuple[pd.DataFrame, int]:
    """Gold questions: the reference points (mitosis) and far candidates (not mitosis).

    Returns:
        ``(pool, n_negatives)``: a frame image, x, y, label and the number of negatives.

    Raises:
        ValueError: For candidates in unlisted images or an empty pool.
    """
    from crowdmed.metrics.points import match_points

    listed = read_point_table(points, "--points", ("image", "x", "y"))
    ref = listed.dropna(subset=["x", "y"])
    cands = read_point_table(candidates, "--candidates", ("image", "x", "y"))
    unlisted = sorted(set(cands["image"]) - set(listed["image"]))
    if unlisted:
        raise ValueError(
            f"Candidates lie in images {unlisted[:5]} that `--points` does not list; every "
            "field of the gold pool needs its reference points (a field without mitoses "
            "once with empty x and y)."
        )
    cands = cands.dropna(subset=["x", "y"])  # a field listed without candidates
    neg = cands.iloc[0:0]
    if len(cands):
        res = match_points(cands, ref, radius=radius, duplicates="ignore")
        tp = res.detections["tp"].fillna(False).to_numpy().astype(bool)
        neg = cands.loc[~tp]
    parts = [
        ref[["image", "x", "y"]].assign(label="mitosis"),
        neg[["image", "x", "y"]].assign(label="not mitosis"),
    ]
    parts = [part for part in parts if len(part)]  # no concat of empty frames (dtype warning)
    pool = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(pool) == 0:
        raise ValueError(
            f"`--points` '{points.name}' has no reference points and `--candidates` "
            f"'{candidates.name}' no candidate outside them; the gold pool would be empty."
        )
    return pool, len(neg)


def simulate_package_votes(
    package: Path,
    points: Path,
    *,
    radius: float = 15.0,
    n_annotators: int = 20,
    votes_per_task: int = 10,
    spammers: float = 0.25,
    seed: int = 0,
) -> tuple[Any, int]:
    """Simulate crowd votes on a task package; a task within ``radius`` of a point is a mitosis.

    Returns:
        ``(simulation, n_tasks)``: :func:`crowdmed.simulate.votes.simulate_votes`'s result.
    """
    from crowdmed.crowdsourcing.tasks import load_package
    from crowdmed.metrics.points import match_points
    from crowdmed.simulate.votes import simulate_votes

    pkg = load_package(package)
    ref = read_point_table(points, "--points", ("image", "x", "y"))
    m = pkg.manifest
    truth = pkg.gold_labels()
    real = ~m["is_gold"].to_numpy()
    det = m.loc[real, ["image", "x", "y"]].reset_index(drop=True)
    if real.any():
        res = match_points(det, ref.dropna(subset=["x", "y"]), radius=radius, duplicates="ignore")
        truth[real] = res.detections["tp"].fillna(False).to_numpy().astype(int)
    sim = simulate_votes(
        pkg.tasks,
        truth,
        n_annotators=n_annotators,
        votes_per_task=votes_per_task,
        spammer_fraction=spammers,
        random_state=seed,
    )
    return sim, len(m)


@dataclasses.dataclass
class RefineRun:
    """A detector refined by :func:`refine_from_votes`.

    Attributes:
        detector: The detector with the refined network.
        truth: task, is_gold, score and the inferred label of every task.
        annotators: The annotators' figures (spammer score, quiz accuracy ...).
        history: One row per EM round.
        record: Settings, counts and inputs for the run record.
        problems: Skipped vote rows (report).
    """

    detector: Any
    truth: pd.DataFrame
    annotators: pd.DataFrame
    history: pd.DataFrame
    record: dict[str, Any]
    problems: str | None

    def save(self, out: Path, stage: Callable[[Path], Path] = Path) -> list[Path]:
        """Write the detector, truth.csv, annotators.csv and history.csv."""
        from crowdmed.pipelines.model_folder import save_model

        targets = save_model(self.detector, out, stage)
        for name, frame in (
            ("truth.csv", self.truth),
            ("annotators.csv", self.annotators),
            ("history.csv", self.history),
        ):
            frame.to_csv(stage(out / name), index=False)
            targets.append(out / name)
        return targets


def _patches(
    detector: Any, rows: pd.DataFrame, pkg: Any, cl: Any, images: Path | None, scale: float
) -> tuple[Any, str]:
    from crowdmed.pipelines.refine import detector_patches, model_inputs

    if images is not None:
        fields = read_fields(images, rows["image"])
        return detector_patches(detector, fields, rows[["image", "x", "y"]], scale=scale), "fields"
    return model_inputs(pkg.patches(list(cl.item_ids)), 33), "package crops"


def refine_from_votes(
    model: Path,
    package: Path,
    votes: Path,
    *,
    images: Path | None = None,
    quiz: Path | None = None,
    on_error: str = "raise",
    scale: float = 0.33,
    lr: float = 1e-3,
    epochs: int = 50,
    tau: float = 0.5,
    seed: int = 0,
    progress: Callable[..., None] | None = None,
) -> RefineRun:
    """Refine one scale's network of a saved mitosis detector on crowd votes (AggNet).

    Args:
        model: Model folder written by ``crowdmed mitosis train``.
        package: Task package folder.
        votes: Votes CSV task,annotator,label or a Label Studio JSON export.
        images: Folder of the fields: cut the inputs from them exactly; else resample the
            package's context crops.
        quiz: CSV annotator,quiz_accuracy (else from the gold tasks).
        on_error: ``"raise"`` or ``"drop"`` malformed vote rows.
        scale: Scale of the network to refine.
        lr: Learning rate of Adam (the ``"fast"`` preset of
            :func:`crowdmed.pipelines.refine.refine`; the paper refines with SGD at 5e-5).
        epochs: EM rounds, one full-batch step each.
        tau: Strength ``τ`` of AggNet's quiz trust prior (eq. 8; the paper's range [0.1, 1]).
        seed: Seed.
        progress: Called with ``description``, ``completed``, ``total`` keywords.

    Returns:
        The refined detector and its tables.

    Raises:
        ValueError: For bad values or inputs.
    """
    from crowdmed.crowdsourcing.tasks import load_package
    from crowdmed.crowdsourcing.votes import read_votes
    from crowdmed.pathology.detector import load_detector
    from crowdmed.pipelines.refine import refine, scale_index, with_model

    if not model.is_dir():
        what = "is a file" if model.exists() else "does not exist"
        raise ValueError(
            f"`--model` must be a folder written by `crowdmed mitosis train`; '{model}' {what}."
        )
    if not (lr > 0) or epochs < 1:
        raise ValueError(f"`--lr` must be positive and `--epochs` >= 1; got {lr}, {epochs}.")
    detector = load_detector(model)
    i = scale_index(detector, scale)
    imported = read_votes(votes, package, quiz=quiz, on_error=on_error)
    cl = imported.labels
    pkg = load_package(package)
    pos = pd.Index(pkg.tasks).get_indexer(cl.item_ids)
    report = progress or (lambda **_: None)
    report(description=f"Preparing {cl.n_items} patches")
    x, source = _patches(detector, pkg.manifest.iloc[pos], pkg, cl, images, scale)
    report(description="Refining", total=epochs, completed=0)

    def on_epoch(epoch: int, total: int, metrics: dict[str, float]) -> None:
        report(completed=epoch)

    res = refine(
        detector.models[i],
        x,
        cl,
        preset="fast",
        lr=lr,
        epochs=epochs,
        tau=tau,
        random_state=seed,
        progress=on_epoch,
    )
    truth = res.truth.rename(columns={"item": "task"})
    truth.insert(1, "is_gold", pkg.manifest["is_gold"].to_numpy()[pos])
    truth.insert(2, "score", pkg.manifest["score"].to_numpy()[pos])
    annotators = res.annotators.assign(quiz_source=imported.quiz_source)
    record = {
        "inputs": {
            "votes": file_record(votes),
            "package": {"path": pkg.path.resolve(), "n_tasks": len(pkg.manifest)},
            "patches": source,
        },
        "refined_scale": detector.scales[i],
        "settings": res.settings,
        "n_votes": cl.n_labels,
        "n_tasks": cl.n_items,
        "n_annotators": cl.n_annotators,
        "n_problems": len(imported.problems),
        "inferred_mitoses": int(truth["label"].sum()),
        "final_loss": res.history[-1]["loss"] if res.history else None,
        "annotators": annotators,
    }
    problems = imported.report() if len(imported.problems) else None
    refined = with_model(detector, res.model, scale=scale)
    return RefineRun(refined, truth, annotators, pd.DataFrame(res.history), record, problems)
