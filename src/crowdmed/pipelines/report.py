"""The report of an output folder: what ``crowdmed report FOLDER`` runs.

:func:`build_report` finds the run records (``<output>.json``) that ``crowdmed aggregate``,
``crowdmed masks consensus`` and ``crowdmed boxes fuse`` write next to their outputs, reads
the files each record names, and builds the same kind of page as the demo: a summary first
(what was run, what it found, one figure per run), then one section per run with its
figures, its tables (long ones folded) and links to its files. Every number comes from the
folder's files. :func:`write_report` writes the page as one self-contained HTML file.

Examples:
    >>> report = build_report("results/")  # doctest: +SKIP
    >>> report.runs[0].command, report.summary  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._io import atomic_write
from crowdmed._version import __version__
from crowdmed.report.html import Bullets, Details, Gallery, Image, Link, Section, render_html

__all__ = ["COMMANDS", "FolderReport", "Run", "build_report", "find_runs", "write_report"]

#: The commands whose output folders can be reported.
COMMANDS = ("aggregate", "masks consensus", "boxes fuse")

#: Annotators with fewer labels are not named as the most or least reliable.
MIN_LABELS = 10


@dataclass
class Run:
    """One run found in the folder.

    Attributes:
        command: ``aggregate``, ``masks consensus`` or ``boxes fuse``.
        record_path: The run record (JSON) that names the run's files.
        record: The run record's content.
        link_base: Folder the links to the run's files are relative to (the page's folder).
        tables: The tables read from the run's outputs, by role (``consensus``,
            ``annotators``, ``raters``, ``fused``, ``readers``, ``pairwise``).
        facts: Headline numbers of the run (what the summary sentence says).
        sentence: The summary sentence.
        sections: The run's section of the report.
        figures: The run's figures; the first is shown in the summary.
    """

    command: str
    record_path: Path
    record: dict[str, Any]
    link_base: Path = Path()
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    sentence: str = ""
    sections: list[Section] = field(default_factory=list)
    figures: list[Image] = field(default_factory=list)


@dataclass
class FolderReport:
    """The report of a folder.

    Attributes:
        folder: The folder.
        runs: The runs found, by command (in :data:`COMMANDS` order), then by file name.
        title: Page title.
        sections: The page's sections (summary first).
        summary: Plain-text summary, one line per run (what the command prints).
    """

    folder: Path
    runs: list[Run]
    title: str
    sections: list[Section]
    summary: str

    def html(self) -> str:
        """The page as one self-contained HTML document."""
        subtitle = f"crowdmed {__version__} · folder `{self.folder.resolve().name}`"
        return render_html(self.title, self.sections, subtitle=subtitle)


# ---------------------------------------------------------------------------- reading
def find_runs(folder: str | os.PathLike[str]) -> list[tuple[Path, dict[str, Any]]]:
    """The run records of ``aggregate``, ``masks consensus`` and ``boxes fuse`` in a folder.

    Args:
        folder: The folder, searched with its sub-folders.

    Returns:
        ``(path, record)`` of every JSON file whose ``command`` is one of :data:`COMMANDS`,
        sorted by path.

    Raises:
        ValueError: If ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"`FOLDER` must be an existing folder; got '{root}'.")
    runs = []
    for path in sorted(root.rglob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and record.get("command") in COMMANDS:
            runs.append((path, record))
    return runs


def _output(record_path: Path, recorded: Any) -> Path | None:
    """Where an output named in a record is now: its recorded path, else next to the record."""
    if not recorded or not isinstance(recorded, str):
        return None
    path = Path(recorded)
    if path.exists():
        return path
    nearby = record_path.parent / path.name
    return nearby if nearby.exists() else None


def _read_table(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        return pd.read_parquet(path)
    sep = "\t" if suffix in (".tsv", ".tab") else ","
    return pd.read_csv(path, sep=sep, dtype={"item": str, "annotator": str, "reader": str})


# ---------------------------------------------------------------------------- figures
def _png(fig: Any) -> bytes:
    from crowdmed.report.figures import figure_to_png

    return figure_to_png(fig)


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _bars(values: pd.Series, *, xlabel: str, ylabel: str, title: str) -> Any:
    from crowdmed.report.figures import plot_counts

    fig, ax = plot_counts(values, xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize="medium")
    return fig


# ---------------------------------------------------------------------------- aggregate
def _ranked(annotators: pd.DataFrame) -> pd.DataFrame:
    """Annotators with enough labels (all when none has), most reliable first."""
    score = "spammer_score" if "spammer_score" in annotators else "consensus_agreement"
    pool = annotators
    if "n_labels" in annotators and (annotators["n_labels"] >= MIN_LABELS).any():
        pool = annotators[annotators["n_labels"] >= MIN_LABELS]
    return pool.sort_values([score, "annotator"], ascending=[False, True], kind="stable")


def _aggregate_run(run: Run, figures: bool) -> None:
    rec, out = run.record, run.record.get("outputs", {})
    consensus = _read_table(_output(run.record_path, out.get("consensus")))
    if consensus is None:
        raise ValueError(
            f"The consensus table named in '{run.record_path}' is missing; it was "
            f"'{out.get('consensus')}'."
        )
    annotators = _read_table(_output(run.record_path, out.get("annotators")))
    run.tables["consensus"] = consensus
    data, fit = rec.get("data", {}), rec.get("fit", {})
    evaluation = rec.get("evaluation", {}) or {}
    method = str(rec.get("method", "?"))
    conf = consensus["confidence"].to_numpy(dtype=float)
    facts: dict[str, Any] = {
        "method": method,
        "n_items": len(consensus),
        "n_annotators": data.get("n_annotators"),
        "n_labels": data.get("n_labels"),
        "n_classes": data.get("n_classes"),
        "accuracy": evaluation.get("accuracy_vs_gold"),
        "n_gold": evaluation.get("n_gold"),
        "mean_confidence": float(np.mean(conf)) if len(conf) else float("nan"),
        "share_below_0.9": float(np.mean(conf < 0.9)) if len(conf) else float("nan"),
    }
    source = Path(str(rec.get("input", {}).get("path", "?"))).name
    text = (
        f"{method} consensus of {facts['n_items']:,} items ({source}; "
        f"{facts['n_annotators']} annotators, {facts['n_labels']:,} labels, "
        f"{facts['n_classes']} classes)"
    )
    if fit.get("n_iter") is not None:
        text += f", {'converged' if fit.get('converged') else 'stopped'} after {fit['n_iter']}"
        text += " iterations"
    text += f": mean confidence {facts['mean_confidence']:.3f}, {facts['share_below_0.9']:.1%}"
    text += " of items below 0.9"
    if facts["accuracy"] is not None:
        text += f"; accuracy {facts['accuracy']:.3f} against {facts['n_gold']:,} gold items"
    if annotators is not None and len(annotators):
        run.tables["annotators"] = annotators
        ranked = _ranked(annotators)
        score = "spammer_score" if "spammer_score" in ranked else "consensus_agreement"
        top, low = ranked.iloc[0], ranked.iloc[-1]
        facts.update(
            top_annotator=str(top["annotator"]),
            top_score=float(top[score]),
            least_annotator=str(low["annotator"]),
            least_score=float(low[score]),
            score=score,
        )
        words = score.replace("_", " ")
        text += (
            f". Most reliable annotator: {facts['top_annotator']} ({words} "
            f"{facts['top_score']:.2f}); least reliable: {facts['least_annotator']} "
            f"({facts['least_score']:.2f})"
        )
    run.facts, run.sentence = facts, text + "."
    if figures:
        run.figures = _aggregate_figures(consensus, annotators, method)
    classes = consensus["label"].value_counts().sort_index()
    classes.index.name = "consensus label"
    blocks: list[Any] = [
        run.sentence,
        *run.figures,
        "Items per consensus label:",
        classes.rename("items").to_frame(),
    ]
    if annotators is not None and len(annotators):
        cols = [
            c
            for c in (
                "annotator",
                "n_labels",
                "consensus_agreement",
                "sensitivity",
                "sensitivity_low",
                "sensitivity_high",
                "specificity",
                "specificity_low",
                "specificity_high",
                "spammer_score",
                "gold_accuracy",
            )
            if c in annotators.columns
        ]
        ranked = _ranked(annotators)[cols]
        blocks += [
            f"The five most and least reliable annotators with at least {MIN_LABELS} labels:",
            pd.concat([ranked.head(5), ranked.tail(5)]).drop_duplicates("annotator"),
            Details(f"All {len(annotators)} annotators", [annotators]),
        ]
    blocks += _links(run)
    run.sections = [Section(f"crowdmed aggregate: {method} ({source})", blocks)]


def _aggregate_figures(
    consensus: pd.DataFrame, annotators: pd.DataFrame | None, method: str
) -> list[Image]:
    from crowdmed.report.figures import plot_histograms
    from crowdmed.report.readers import plot_operating_points

    images = []
    if annotators is not None and {"sensitivity_low", "specificity_low"} <= set(annotators):
        fig, _ = plot_operating_points(
            annotators, min_items=1, title=f"Annotators against the {method} consensus"
        )
        images.append(
            Image(
                _png(fig),
                alt="ROC space: each annotator's sensitivity and false positive rate",
                caption=(
                    f"Each annotator against the {method} consensus (dots, 95 % intervals): "
                    "the closer to the top left, the more reliable."
                ),
            )
        )
    fig, ax = plot_histograms(
        {"items": consensus["confidence"]},
        bins=np.linspace(0, 1, 21),
        xlabel="confidence (posterior of the consensus label)",
        ylabel="items",
        legend=False,
    )
    ax.set_title("How sure the consensus is", fontsize="medium")
    images.append(
        Image(
            _png(fig),
            alt="Histogram of the consensus confidence",
            caption="Items by the posterior probability of their consensus label.",
        )
    )
    return images


# ---------------------------------------------------------------------------- masks
def _masks_run(run: Run, figures: bool) -> None:
    rec, out = run.record, run.record.get("outputs", {})
    raters = _read_table(_output(run.record_path, out.get("raters")))
    method = str(rec.get("method", "?"))
    data = rec.get("data", {})
    shape = "×".join(str(n) for n in data.get("shape", []))
    mask_path = _output(run.record_path, out.get("consensus"))
    facts: dict[str, Any] = {"method": method, "n_raters": data.get("n_raters"), "shape": shape}
    consensus = None
    if mask_path is not None and not out.get("soft"):
        from crowdmed.data.masks import read_mask

        try:
            consensus = read_mask(mask_path)
        except (ValueError, ImportError, FileNotFoundError):
            consensus = None
    if consensus is not None:
        facts["consensus_voxels"] = int((np.asarray(consensus.array) > 0).sum())
    text = f"{method} consensus of {facts['n_raters']} raters' masks on a {shape} grid"
    if "consensus_voxels" in facts:
        text += f" ({facts['consensus_voxels']:,} foreground voxels)"
    if raters is not None and "dice_vs_consensus" in raters:
        run.tables["raters"] = raters
        dice = raters.set_index("file")["dice_vs_consensus"]
        facts.update(
            dice_median=float(dice.median()),
            best_rater=str(dice.idxmax()),
            best_dice=float(dice.max()),
            worst_rater=str(dice.idxmin()),
            worst_dice=float(dice.min()),
        )
        text += (
            f": raters against the consensus have a median Dice of {facts['dice_median']:.3f}, "
            f"from {facts['worst_dice']:.3f} ({facts['worst_rater']}) to "
            f"{facts['best_dice']:.3f} ({facts['best_rater']})"
        )
    run.facts, run.sentence = facts, text + "."
    if figures:
        run.figures = _masks_figures(run, consensus)
    blocks: list[Any] = [run.sentence, *run.figures]
    if raters is not None:
        blocks += [
            "One row per rater (sensitivity and specificity as estimated by the fit):",
            raters,
        ]
    blocks += _links(run)
    run.sections = [Section(f"crowdmed masks consensus: {method} ({shape})", blocks)]


def _masks_figures(run: Run, consensus: Any) -> list[Image]:
    from crowdmed.report.figures import plot_mask_raters

    images = []
    inputs = [i.get("path") for i in run.record.get("inputs", []) if isinstance(i, dict)]
    found = [_output(run.record_path, p) for p in inputs]
    paths = [p for p in found if p is not None]
    if consensus is not None and paths and len(paths) == len(found):
        from crowdmed.data.masks import read_mask

        try:
            masks = np.stack([np.asarray(read_mask(p).array) > 0 for p in paths])
        except (ValueError, ImportError, FileNotFoundError):
            masks = None
        cons = np.asarray(consensus.array) > 0
        if masks is not None and masks.shape[1:] == cons.shape and cons.ndim in (2, 3):
            if cons.ndim == 3:
                k = int(np.argmax(cons.sum(axis=(0, 1))))
                masks, cons = masks[..., k], cons[..., k]
                where = f", slice {k}"
            else:
                where = ""
            spacing = tuple(consensus.spacing[:2]) if len(consensus.spacing) >= 2 else None
            fig, _ = plot_mask_raters(masks, cons.astype(float), spacing=spacing)
            images.append(
                Image(
                    _png(fig),
                    alt="Each rater's outline over the consensus mask",
                    caption=f"Each rater's outline (coloured lines) over the consensus{where} "
                    "(white).",
                )
            )
    raters = run.tables.get("raters")
    if raters is not None and "dice_vs_consensus" in raters:
        fig = _bars(
            raters.set_index("file")["dice_vs_consensus"],
            xlabel="rater",
            ylabel="Dice against the consensus",
            title="Each rater against the consensus",
        )
        images.append(
            Image(
                _png(fig),
                alt="Bar chart of each rater's Dice against the consensus",
                caption="Dice of each rater's mask against the consensus mask.",
            )
        )
    return images


# ---------------------------------------------------------------------------- boxes
def _boxes_run(run: Run, figures: bool) -> None:
    rec, out = run.record, run.record.get("outputs", {})
    fused = _read_table(_output(run.record_path, out.get("out")))
    if fused is None:
        raise ValueError(
            f"The fused boxes named in '{run.record_path}' are missing; they were "
            f"'{out.get('out')}'."
        )
    readers = _read_table(_output(run.record_path, out.get("readers-out")))
    pairwise = _read_table(_output(run.record_path, out.get("pairwise-out")))
    run.tables["fused"] = fused
    data = rec.get("data", {})
    n_readers = int(data.get("n_readers", 0))
    agree = fused["n_readers"].value_counts().sort_index()
    source = Path(str(rec.get("input", {}).get("path", "?"))).name
    facts: dict[str, Any] = {
        "n_boxes": data.get("n_boxes"),
        "n_readers": n_readers,
        "n_images": data.get("n_images"),
        "n_fused": len(fused),
        "n_all_readers": int(agree.get(n_readers, 0)),
        "n_one_reader": int(agree.get(1, 0)),
    }
    text = (
        f"{facts['n_boxes']:,} boxes of {n_readers} readers on {facts['n_images']:,} images "
        f"({source}) fused into {facts['n_fused']:,} consensus boxes: "
        f"{facts['n_all_readers']:,} marked by every reader, {facts['n_one_reader']:,} by one"
    )
    if readers is not None and "sensitivity" in readers:
        run.tables["readers"] = readers
        sens = readers.set_index("reader")["sensitivity"]
        facts.update(
            top_reader=str(sens.idxmax()),
            top_sensitivity=float(sens.max()),
            least_reader=str(sens.idxmin()),
            least_sensitivity=float(sens.min()),
        )
        text += (
            f"; readers' sensitivity against the consensus from {facts['least_sensitivity']:.2f}"
            f" ({facts['least_reader']}) to {facts['top_sensitivity']:.2f} "
            f"({facts['top_reader']})"
        )
    if pairwise is not None:
        matrix = pairwise.set_index("reader")
        run.tables["pairwise"] = matrix
        values = matrix.to_numpy(dtype=float)
        off = values[~np.eye(len(values), dtype=bool)] if values.shape[0] == values.shape[1] else []
        if len(off):
            facts["mean_pairwise_f1"] = float(np.nanmean(off))
            text += f"; mean pairwise F1 between readers {facts['mean_pairwise_f1']:.2f}"
    run.facts, run.sentence = facts, text + "."
    if figures:
        fig = _bars(
            agree, xlabel="readers who marked it", ylabel="consensus boxes", title="Agreement"
        )
        run.figures = [
            Image(
                _png(fig),
                alt="Bar chart of consensus boxes by the number of readers who marked them",
                caption="Consensus boxes by the number of readers who marked them.",
            )
        ]
    blocks: list[Any] = [run.sentence, *run.figures]
    if readers is not None:
        blocks += ["Each reader against the consensus:", readers]
    if pairwise is not None:
        blocks += ["Matched-box F1 between reader pairs:", run.tables["pairwise"]]
    blocks += [Details(f"The first 20 of {len(fused):,} consensus boxes", [fused.head(20)])]
    blocks += _links(run)
    run.sections = [Section(f"crowdmed boxes fuse ({source})", blocks)]


# ---------------------------------------------------------------------------- assembly
def _href(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _links(run: Run) -> list[Any]:
    """Links to the run's files, relative to the page's folder."""
    links: list[Any] = []
    for role, recorded in run.record.get("outputs", {}).items():
        path = _output(run.record_path, recorded)
        if path is None or not path.is_file():
            continue
        links.append(Link(_href(path, run.link_base), path.name, f"({role})"))
    return links


_BUILDERS = {"aggregate": _aggregate_run, "masks consensus": _masks_run, "boxes fuse": _boxes_run}


def build_report(
    folder: str | os.PathLike[str],
    *,
    figures: bool = True,
    link_base: str | os.PathLike[str] | None = None,
) -> FolderReport:
    """Build the report of a ``crowdmed aggregate`` / ``masks consensus`` / ``boxes fuse`` folder.

    Args:
        folder: A folder holding the outputs and run records (``<output>.json``) of one or
            more of those commands, possibly in sub-folders.
        figures: Draw the figures (needs matplotlib; left out when it is missing).
        link_base: Folder the page will be written to (links to the files are relative to
            it); ``folder`` when omitted.

    Returns:
        The report: the runs found with their headline numbers, the sections and a plain-text
        summary.

    Raises:
        ValueError: If ``folder`` is not a folder, holds no run record of those commands, or
            a record names a consensus file that is missing.
    """
    root = Path(folder)
    found = sorted(find_runs(root), key=lambda pr: (COMMANDS.index(pr[1]["command"]), pr[0]))
    if not found:
        is_demo = (root / "results.json").is_file() and (root / "report.html").is_file()
        demo = " It looks like a crowdmed demo folder: open its report.html." if is_demo else ""
        raise ValueError(
            f"`FOLDER` '{root}' holds no run record of crowdmed {', '.join(COMMANDS)} (a "
            f"<output>.json file with a 'command' field); run one of them with --out in this "
            f"folder first.{demo}"
        )
    draw = figures and _has_matplotlib()
    runs = []
    for path, record in found:
        base = root if link_base is None else Path(link_base)
        run = Run(command=record["command"], record_path=path, record=record, link_base=base)
        _BUILDERS[run.command](run, draw)
        runs.append(run)
    counts = pd.Series([r.command for r in runs]).value_counts()
    listed = ", ".join(f"{n} × crowdmed {c}" for c, n in counts.items())
    headline = [r.figures[0] for r in runs if r.figures]
    intro = (
        f"What was run: {listed}, found in `{root.resolve().name}`. Every number below is "
        "read from the files these runs wrote."
    )
    found_lines = [f"crowdmed {r.command}: {r.sentence}" for r in runs]
    blocks: list[Any] = [intro, "What it found:", Bullets(found_lines)]
    if headline:
        blocks.append(Gallery(headline))
    if not draw:
        blocks.append(
            "Figures are omitted: matplotlib is not installed (pip install 'crowdmed[report]')."
        )
    sections = [Section("Summary", blocks)]
    for run in runs:
        sections += run.sections
    sections.append(
        Section(
            "Reproducibility",
            [
                f"Report by crowdmed {__version__}. Each run's parameters, seed, input checksums"
                " and versions are in its record:",
                *[
                    Link(
                        _href(r.record_path, r.link_base),
                        r.record_path.relative_to(root).as_posix(),
                        f"crowdmed {r.command}, crowdmed {r.record.get('crowdmed_version', '?')}"
                        f", {r.record.get('created', '?')}",
                    )
                    for r in runs
                ],
            ],
        )
    )
    summary = "\n".join(found_lines)
    return FolderReport(
        folder=root,
        runs=runs,
        title=f"crowdmed report: {root.resolve().name}",
        sections=sections,
        summary=summary,
    )


def write_report(
    folder: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> tuple[FolderReport, Path]:
    """Build the report of ``folder`` and write it as one HTML file (atomically).

    Args:
        folder: See :func:`build_report`.
        out: The HTML file; ``FOLDER/report.html`` when omitted. Links to the folder's files
            are relative to the folder, so keep the page next to it.

    Returns:
        The report and the path written.

    Raises:
        ValueError: See :func:`build_report`; also if ``out`` is a folder.
    """
    path = Path(folder) / "report.html" if out is None else Path(out)
    if path.is_dir():
        raise ValueError(f"`--out` must be an HTML file; '{path}' is a folder.")
    report = build_report(folder, link_base=path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write(report.html())
    return report, path
