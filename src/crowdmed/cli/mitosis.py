"""Commands of the mitosis detection and the crowd loop (AggNet) workflow.

``crowdmed mitosis synthesize | train | detect | evaluate``: synthetic fields for a demo, the
multi-scale detector, its candidates and their evaluation against reference points.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.table import Table

from crowdmed._io import to_jsonable
from crowdmed._version import __version__
from crowdmed.cli._common import (
    _check_outputs,
    _environment,
    _import_torch,
    _progress,
    _sha256,
    _staged_outputs,
    _stderr,
    _step,
    _user_errors,
)
from crowdmed.data.images import IMAGE_SUFFIXES
from crowdmed.pipelines.model_folder import MODEL_FILES, save_model

mitosis_app = typer.Typer(
    name="mitosis",
    help="Mitosis detection in H&E high-power fields (AggNet): synthesize, train, detect, "
    "evaluate.",
    no_args_is_help=True,
    add_completion=False,
)


def _stem(name: Any) -> str:
    text = str(name).strip()
    return Path(text).stem if Path(text).suffix.lower() in IMAGE_SUFFIXES else text


def _parse_scales(text: str) -> list[float]:
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        scales = []
    if not scales or not all(0 < s <= 4 for s in scales):
        raise ValueError(
            f"`--scales` must be comma-separated positive numbers such as 0.33,0.66,1.0; "
            f"got {text!r}."
        )
    return scales


def _tree_record(images: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {"path": folder.resolve(), "n_files": len(images)}


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8")


@mitosis_app.command()
def synthesize(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for the PNG fields and points.csv.", show_default=False
        ),
    ],
    n_images: Annotated[int, typer.Option("--n-images", "-n", help="Number of fields.")] = 20,
    size: Annotated[int, typer.Option("--size", help="Side of each square field in pixels.")] = 256,
    stain_variation: Annotated[
        float, typer.Option("--stain-variation", help="Per-image stain variation (0 to 0.5).")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generator.")] = 0,
    prefix: Annotated[
        str,
        typer.Option("--prefix", help="Fields are named <prefix>_000, <prefix>_001, ..."),
    ] = "synthetic",
) -> None:
    """Write synthetic H&E high-power fields with mitoses and their points.csv.

    The fields are synthetic (a two-stain optical model, not tissue): for demos and tests.
    Their nuclei correspond to about half the resolution of a 40x field, so use a matching
    radius of 15 px with them.

    Example: crowdmed mitosis synthesize --out fields/ --n-images 20 --seed 0
    """
    with _user_errors(ctx):
        from crowdmed.pathology.synthetic import make_synthetic_fields

        if out.exists() and not out.is_dir():
            raise ValueError(f"`--out` must be a folder; '{out}' is a file.")
        if out.is_dir() and any(out.iterdir()):
            raise ValueError(f"`--out` folder '{out}' is not empty; pass a new or empty folder.")
        fields = make_synthetic_fields(
            n_images,
            size=(size, size),
            stain_variation=stain_variation,
            random_state=seed,
            prefix=prefix,
        )
        fields.save(out)
    typer.echo(
        f"Wrote {n_images} synthetic fields with {len(fields.points)} mitoses: {out / 'points.csv'}"
    )


@mitosis_app.command("train")
def train_cmd(
    ctx: typer.Context,
    images: Annotated[
        Path,
        typer.Option(
            "--images",
            help="Folder of PNG/TIFF/JPEG high-power fields.",
            metavar="DIR",
            show_default=False,
        ),
    ],
    points: Annotated[
        Path,
        typer.Option(
            "--points",
            help="CSV image,x,y of the mitoses (x column, y row, in pixels); every image listed, "
            "one without mitoses once with empty x and y.",
            metavar="CSV",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Model folder: the detector (config.json, model.safetensors), history.csv, "
            "run.json.",
            metavar="MODEL_DIR",
            show_default=False,
        ),
    ],
    val_images: Annotated[
        Path | None,
        typer.Option(
            "--val-images",
            help="Validation fields; choose the operating point there.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    val_points: Annotated[
        Path | None,
        typer.Option(
            "--val-points",
            help="CSV image,x,y of the validation fields.",
            metavar="CSV",
            show_default=False,
        ),
    ] = None,
    scales: Annotated[
        str, typer.Option("--scales", help="Image scales, one network each.")
    ] = "0.33,0.66,1.0",
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs per scale.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Mini-batch size.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate of Adam.")] = 1e-3,
    radius: Annotated[
        float,
        typer.Option("--radius", help="Matching and suppression radius in pixels (30 px at 40x)."),
    ] = 30.0,
    stain_reference: Annotated[
        Path | None,
        typer.Option(
            "--stain-reference",
            help="A reference field: Macenko-normalise every field to its staining (needs "
            "torchstain: the pathology extra of crowdmed).",
            metavar="IMAGE",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of initialisation and sampling.")] = 0,
) -> None:
    """Train the multi-scale AggNet mitosis detector on point annotations.

    One network per scale learns 33x33 patches (positives at the points in all rotations and
    mirrors, about 3:7 positives to negatives). With --val-images/--val-points the operating
    point maximises F1 on the validation fields; otherwise it is 0.5.

    Example: crowdmed mitosis train --images train/ --points train/points.csv
    --val-images val/ --val-points val/points.csv --out model/ --radius 15
    """
    started = time.perf_counter()
    console = _stderr()
    with _user_errors(ctx):
        torch = _import_torch("mitosis train")
        from crowdmed.data.points import load_field, read_points
        from crowdmed.pathology.detector import train_detector

        scale_list = _parse_scales(scales)
        if (val_images is None) != (val_points is None):
            raise ValueError("`--val-images` and `--val-points` must be given together.")
        if not (radius > 0):
            raise ValueError(f"`--radius` must be a positive number of pixels; got {radius}.")
        if out.exists() and not out.is_dir():
            raise ValueError(f"`--out` must be a folder for the model; '{out}' is a file.")
        history_path, run_path = out / "history.csv", out / "run.json"
        inputs = [p for p in (points, val_points, stain_reference) if p is not None]
        _check_outputs(
            inputs,
            {
                **{f"--out {n}": out / n for n in MODEL_FILES},
                "--out history.csv": history_path,
                "--out run.json": run_path,
            },
        )
        with _progress(console) as progress:
            with _step(progress, "Reading fields"):
                imgs, pts = read_points(points, images)
                val = read_points(val_points, val_images) if val_points and val_images else None
                reference = load_field(stain_reference) if stain_reference is not None else None
            task = progress.add_task("Training", total=epochs * len(scale_list))

            def on_epoch(scale: float, epoch: int, total: int, record: dict[str, float]) -> None:
                progress.update(
                    task,
                    advance=1,
                    description=f"Training scale {scale:g}: epoch {epoch}/{total} "
                    f"loss={record['loss']:.3f}",
                )

            with torch.random.fork_rng(devices=[]):
                detector = train_detector(
                    imgs,
                    pts,
                    scales=scale_list,
                    epochs=epochs,
                    batch_size=batch_size,
                    lr=lr,
                    radius=radius,
                    stain_reference=reference,
                    random_state=seed,
                    callback=on_epoch,
                )
            progress.remove_task(task)
            val_f1 = None
            if val is not None:
                with _step(progress, "Choosing the operating point on validation fields"):
                    _, val_f1 = detector.calibrate(*val)
            history = pd.DataFrame(
                [{"scale": s, **rec} for s, recs in detector.history.items() for rec in recs]
            )
            history["epoch"] = history["epoch"].astype(int)
            record: dict[str, Any] = {
                "crowdmed_version": __version__,
                "command": "mitosis train",
                "arguments": ctx.params,
                "seed": seed,
                "settings": detector.settings,
                "threshold": detector.threshold,
                "val_f1": val_f1,
                "inputs": {
                    "images": _tree_record(imgs, images),
                    "points": {"path": points.resolve(), "sha256": _sha256(points)},
                    "val_points": None
                    if val_points is None
                    else {"path": val_points.resolve(), "sha256": _sha256(val_points)},
                },
                "environment": _environment(torch=torch.__version__),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            with _staged_outputs() as stage:
                save_model(detector, out, stage)
                history.to_csv(stage(history_path), index=False)
                record["elapsed_seconds"] = time.perf_counter() - started
                _write_json(stage(run_path), record)
    table = Table(title="crowdmed mitosis train", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("fields", f"{len(imgs)} ({len(pts)} mitoses)")
    table.add_row("scales", ", ".join(f"{s:g}" for s in scale_list))
    table.add_row("epochs per scale", str(epochs))
    table.add_row("threshold", f"{detector.threshold:.4f}")
    if val_f1 is not None:
        table.add_row("validation F1", f"{val_f1:.3f}")
    table.add_row("time", f"{record['elapsed_seconds']:.1f} s")
    table.add_row("model", str(out))
    console.print(table)


@mitosis_app.command("detect")
def detect_cmd(
    ctx: typer.Context,
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            help="Model folder written by `crowdmed mitosis train`.",
            metavar="MODEL_DIR",
            show_default=False,
        ),
    ],
    images: Annotated[
        Path,
        typer.Option(
            "--images", help="Folder of PNG/TIFF/JPEG fields.", metavar="DIR", show_default=False
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Candidates CSV: image, x, y, score.", show_default=False),
    ],
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Operating point on the detection map; the model's (chosen on validation) "
            "when omitted. 0 keeps every local maximum (for ROC curves).",
            show_default=False,
        ),
    ] = None,
    radius: Annotated[
        float | None,
        typer.Option(
            "--radius",
            help="Suppression radius in pixels; the model's when omitted.",
            show_default=False,
        ),
    ] = None,
    maps: Annotated[
        Path | None,
        typer.Option(
            "--maps",
            help="Folder for the detection maps: <image>.png (probability x 255) and <image>.npy.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta/--no-tta", help="Average over the 8 rotations/mirrors.")
    ] = True,
) -> None:
    """Detect mitosis candidates in every field of a folder.

    Example: crowdmed mitosis detect --model model/ --images test/ --out candidates.csv
    """
    started = time.perf_counter()
    console = _stderr()
    with _user_errors(ctx):
        torch = _import_torch("mitosis detect")
        from crowdmed.data.points import image_files, load_field
        from crowdmed.pathology.detector import detect, load_detector

        if not model.is_dir():
            what = "is a file" if model.exists() else "does not exist"
            raise ValueError(
                f"`--model` must be a folder written by `crowdmed mitosis train`; '{model}' {what}."
            )
        model_file = model / MODEL_FILES[1]
        if threshold is not None and not (0.0 <= threshold <= 1.0):
            raise ValueError(f"`--threshold` must be in [0, 1]; got {threshold}.")
        if radius is not None and not radius > 0:
            raise ValueError(f"`--radius` must be a positive number of pixels; got {radius}.")
        if maps is not None and maps.exists() and not maps.is_dir():
            raise ValueError(f"`--maps` must be a folder; '{maps}' is a file.")
        json_out = out.with_name(out.name + ".json")
        _check_outputs([model_file], {"--out": out, "--out .json": json_out})
        detector = load_detector(model)
        files = image_files(images)
        with _progress(console) as progress:
            with _step(progress, f"Reading {len(files)} fields"):
                fields = {name: load_field(p) for name, p in files.items()}
            prob_maps: dict[Any, Any] = {}
            with _step(progress, f"Detecting in {len(files)} fields"), torch.no_grad():
                cands = detect(
                    detector,
                    fields,
                    threshold=threshold,
                    radius=radius,
                    tta=tta,
                    maps=prob_maps if maps is not None else None,
                )
            record = {
                "crowdmed_version": __version__,
                "command": "mitosis detect",
                "arguments": ctx.params,
                "model": {"path": model_file.resolve(), "sha256": _sha256(model_file)},
                "threshold": detector.threshold if threshold is None else threshold,
                "radius": detector.radius if radius is None else radius,
                "tta": tta,
                "inputs": {"images": _tree_record(fields, images)},
                "n_candidates": len(cands),
                "environment": _environment(torch=torch.__version__),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            with _staged_outputs() as stage:
                cands.to_csv(stage(out), index=False)
                if maps is not None:
                    import numpy as np
                    from PIL import Image

                    for name, prob in prob_maps.items():
                        grey = np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
                        Image.fromarray(grey).save(stage(maps / f"{name}.png"), format="PNG")
                        np.save(stage(maps / f"{name}.npy"), prob.astype(np.float32))
                record["elapsed_seconds"] = time.perf_counter() - started
                _write_json(stage(json_out), record)
    console.print(f"Found {len(cands)} candidates in {len(fields)} fields: {out}")


@mitosis_app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    candidates: Annotated[
        Path,
        typer.Option(
            "--candidates",
            help="Candidates CSV image,x,y[,score].",
            metavar="CSV",
            show_default=False,
        ),
    ],
    points: Annotated[
        Path,
        typer.Option(
            "--points", help="Reference CSV image,x,y.", metavar="CSV", show_default=False
        ),
    ],
    radius: Annotated[
        float, typer.Option("--radius", help="Matching radius in pixels at full resolution.")
    ] = 30.0,
    scale: Annotated[
        float,
        typer.Option(
            "--scale", help="Scale of the coordinates; the radius becomes radius x scale."
        ),
    ] = 1.0,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", help="Keep candidates with score >= this first.", show_default=False
        ),
    ] = None,
    duplicates: Annotated[
        str,
        typer.Option(
            "--duplicates", help="A second detection of a matched point: 'fp' or 'ignore'."
        ),
    ] = "fp",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Per-image table (CSV) and <out>.json with the totals.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Precision, recall, F1 and candidate AUC of detections against reference points.

    A detection within the radius of an unmatched reference point is a true positive (nearest
    point, highest scores first); each point is matched once.

    Example: crowdmed mitosis evaluate --candidates candidates.csv --points test/points.csv
    --radius 15
    """
    console = _stderr()
    with _user_errors(ctx):
        from crowdmed.data.points import check_points, repeated_points
        from crowdmed.metrics.points import match_points

        frames = []
        for option, path in (("--candidates", candidates), ("--points", points)):
            if not path.is_file():
                raise FileNotFoundError(f"`{option}` file '{path}' does not exist.")
            try:
                df = pd.read_csv(path, dtype={"image": str}, skipinitialspace=True)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                raise ValueError(f"Cannot read `{option}` file '{path}': {exc}.") from exc
            if "image" in df.columns:
                df["image"] = [_stem(v) for v in df["image"]]
            frames.append(df)
        det_raw, ref_raw = frames
        names = list(dict.fromkeys(list(ref_raw.get("image", [])) + list(det_raw.get("image", []))))
        det = check_points(det_raw, f"candidates file '{candidates}'")
        ref_raw["_line"] = list(range(2, len(ref_raw) + 2))
        ref = check_points(ref_raw, f"points file '{points}'")
        repeated = repeated_points(ref, ref.pop("_line").to_numpy())
        if repeated:
            raise ValueError(
                f"Points file '{points}' repeats {len(repeated)} point(s): "
                f"{'; '.join(repeated[:3])}. Keep one row per mitosis."
            )
        if threshold is not None:
            if "score" not in det.columns:
                raise ValueError("`--threshold` needs a 'score' column in the candidates.")
            det = det[pd.to_numeric(det["score"], errors="coerce") >= threshold]
        unknown = sorted(set(det["image"]) - set(ref_raw["image"]))
        if unknown:
            raise ValueError(
                f"Candidates name {len(unknown)} images without reference rows: {unknown[:5]}. "
                "List every image in --points (empty x and y when it has no mitoses)."
            )
        result = match_points(
            det, ref, radius=radius, scale=scale, duplicates=duplicates, images=names
        )
        if out is not None:
            json_out = out.with_name(out.name + ".json")
            _check_outputs([candidates, points], {"--out": out, "--out .json": json_out})
            with _staged_outputs() as stage:
                result.per_image.to_csv(stage(out), index=False)
                _write_json(
                    stage(json_out),
                    {
                        "crowdmed_version": __version__,
                        "command": "mitosis evaluate",
                        "arguments": ctx.params,
                        "overall": result.summary(),
                        "n_images": len(names),
                    },
                )
    table = Table(title="crowdmed mitosis evaluate", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images", str(len(names)))
    table.add_row("radius", f"{result.radius:g} px")
    table.add_row("TP / FP / FN", f"{result.tp} / {result.fp} / {result.fn}")
    for name in ("precision", "recall", "f1", "auc"):
        table.add_row(name, f"{getattr(result, name):.4f}")
    console.print(table)
    typer.echo(json.dumps(to_jsonable(result.summary())))


def register(app: typer.Typer) -> None:
    """Add this workflow's commands to the ``crowdmed`` application."""
    app.add_typer(mitosis_app, name="mitosis")
    _register_crowd_loop(app)


# =====================================================================================
# Crowd loop commands (task export/import, votes, refine): added below this line.
# They may add commands to `mitosis_app` (crowdmed mitosis ...) or to `app` directly.
# =====================================================================================


crowd_app = typer.Typer(
    name="crowd",
    help="The crowdsourcing loop: export patch-labelling tasks, simulate or import votes.",
    no_args_is_help=True,
    add_completion=False,
)


def _read_fields(folder: Path, names: Any) -> dict[str, Any]:
    """The fields named in ``names`` (stems) from an image folder."""
    from crowdmed.data.points import image_files, load_field

    files = image_files(folder)
    wanted = sorted({_stem(n) for n in names})
    missing = [n for n in wanted if n not in files]
    if missing:
        raise ValueError(
            f"Image folder '{folder}' has no field for images {missing[:5]}; check the image "
            "column or --images."
        )
    return {n: load_field(files[n]) for n in wanted}


def _read_point_table(path: Path, option: str, columns: tuple[str, ...]) -> pd.DataFrame:
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
    df["image"] = df["image"].map(_stem)
    return df


@crowd_app.command("export")
def crowd_export(
    ctx: typer.Context,
    candidates: Annotated[
        Path,
        typer.Argument(
            help="Candidates CSV image,x,y,score (from `crowdmed mitosis detect`).",
            metavar="CANDIDATES",
            show_default=False,
        ),
    ],
    images: Annotated[
        Path,
        typer.Option("--images", help="Folder of the fields.", metavar="DIR", show_default=False),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Task package folder to create.", show_default=False),
    ],
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Export candidates scoring at least this (a lower operating point); all when "
            "omitted.",
            show_default=False,
        ),
    ] = None,
    gold: Annotated[
        Path | None,
        typer.Option(
            "--gold",
            help="Pool of gold questions: CSV image,x,y,label with label mitosis/not mitosis "
            "(reference points and known negatives).",
            show_default=False,
        ),
    ] = None,
    gold_rate: Annotated[
        float, typer.Option("--gold-rate", help="Share of all tasks that are gold questions.")
    ] = 0.1,
    patch_size: Annotated[
        int, typer.Option("--patch-size", help="Side of the context crops in pixels.")
    ] = 99,
    label_studio: Annotated[
        bool,
        typer.Option(
            "--label-studio/--no-label-studio",
            help="Also write label_studio/tasks.json and label_studio/config.xml.",
        ),
    ] = True,
    url_prefix: Annotated[
        str,
        typer.Option("--url-prefix", help="Prefix of the image paths in the Label Studio tasks."),
    ] = "",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the gold draw and task order.")] = 0,
) -> None:
    """Turn candidates into a task package: context crops, blue-ratio views, gold questions.

    Example: crowdmed crowd export candidates.csv --images fields/ --threshold 0.1
    --gold gold.csv --gold-rate 0.1 --out tasks/
    """
    from crowdmed.crowdsourcing.tasks import export_tasks

    console = _stderr()
    with _user_errors(ctx):
        if gold is None and gold_rate > 0:
            raise ValueError(
                "`--gold-rate` > 0 needs `--gold` (a pool of gold questions); pass one or set "
                "--gold-rate 0."
            )
        cands = _read_point_table(candidates, "CANDIDATES", ("image", "x", "y", "score"))
        pool = (
            None
            if gold is None
            else _read_point_table(gold, "--gold", ("image", "x", "y", "label"))
        )
        names = list(cands["image"]) + ([] if pool is None else list(pool["image"]))
        fields = _read_fields(images, names)
        pkg = export_tasks(
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
    console.print(
        f"Wrote {len(pkg.manifest)} tasks ({pkg.n_gold} gold) to {out} "
        f"(manifest.csv, votes_template.csv{', label_studio/' if label_studio else ''})."
    )


@crowd_app.command("gold")
def crowd_gold(
    ctx: typer.Context,
    points: Annotated[
        Path,
        typer.Option(
            "--points",
            help="Reference points CSV image,x,y (the known mitoses).",
            show_default=False,
        ),
    ],
    candidates: Annotated[
        Path,
        typer.Option(
            "--candidates",
            help="Candidates CSV image,x,y,score in the same fields; those farther than --radius "
            "from every reference point become known negatives.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Gold pool CSV image,x,y,label.", show_default=False)
    ],
    radius: Annotated[float, typer.Option("--radius", help="Matching radius in pixels.")] = 15.0,
) -> None:
    """Build a pool of gold questions from reference points and known false candidates.

    Example: crowdmed crowd gold --points gold/points.csv --candidates gold_cands.csv
    --out gold.csv
    """
    from crowdmed.metrics.points import match_points

    console = _stderr()
    with _user_errors(ctx):
        _check_outputs([points, candidates], {"--out": out})
        listed = _read_point_table(points, "--points", ("image", "x", "y"))
        ref = listed.dropna(subset=["x", "y"])
        cands = _read_point_table(candidates, "--candidates", ("image", "x", "y"))
        unlisted = sorted(set(cands["image"]) - set(listed["image"]))
        if unlisted:
            raise ValueError(
                f"Candidates lie in images {unlisted[:5]} that `--points` does not list; every "
                "field of the gold pool needs its reference points (a field without mitoses "
                "once with empty x and y)."
            )
        neg = cands.iloc[0:0]
        if len(cands):
            res = match_points(cands, ref, radius=radius, duplicates="ignore")
            tp = res.detections["tp"].fillna(False).to_numpy().astype(bool)
            neg = cands.loc[~tp]
        pool = pd.concat(
            [
                ref[["image", "x", "y"]].assign(label="mitosis"),
                neg[["image", "x", "y"]].assign(label="not mitosis"),
            ],
            ignore_index=True,
        )
        if len(pool) == 0:
            raise ValueError("No reference points and no negative candidates; nothing to write.")
        with _staged_outputs() as stage:
            pool.to_csv(stage(out), index=False)
    console.print(
        f"Wrote {len(ref)} mitoses and {len(neg)} known negatives as gold questions: {out}"
    )


@crowd_app.command("simulate")
def crowd_simulate(
    ctx: typer.Context,
    package: Annotated[
        Path, typer.Option("--package", help="Task package folder.", show_default=False)
    ],
    points: Annotated[
        Path,
        typer.Option(
            "--points",
            help="Reference points CSV image,x,y: a task within --radius of one is a mitosis.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Votes CSV task,annotator,label.", show_default=False),
    ],
    radius: Annotated[float, typer.Option("--radius", help="Matching radius in pixels.")] = 15.0,
    n_annotators: Annotated[int, typer.Option("--annotators", help="Simulated workers.")] = 20,
    votes_per_task: Annotated[int, typer.Option("--votes-per-task", help="Votes per task.")] = 10,
    spammers: Annotated[
        float, typer.Option("--spammers", help="Share of spammers among the workers.")
    ] = 0.25,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated crowd.")] = 0,
) -> None:
    """Simulate crowd votes on a task package (synthetic workers, some of them spammers).

    The true annotator parameters go to <out>.annotators.csv.

    Example: crowdmed crowd simulate --package tasks/ --points points.csv --out votes.csv
    """
    from crowdmed.crowdsourcing.tasks import load_package
    from crowdmed.metrics.points import match_points
    from crowdmed.simulate.votes import simulate_votes

    console = _stderr()
    with _user_errors(ctx):
        pkg = load_package(package)
        ref = _read_point_table(points, "--points", ("image", "x", "y"))
        ann_out = out.with_name(out.stem + ".annotators.csv")
        _check_outputs([points], {"--out": out, "--out annotators": ann_out})
        m = pkg.manifest
        truth = pkg.gold_labels()
        real = ~m["is_gold"].to_numpy()
        det = m.loc[real, ["image", "x", "y"]].reset_index(drop=True)
        if real.any():
            res = match_points(
                det, ref.dropna(subset=["x", "y"]), radius=radius, duplicates="ignore"
            )
            truth[real] = res.detections["tp"].fillna(False).to_numpy().astype(int)
        sim = simulate_votes(
            pkg.tasks,
            truth,
            n_annotators=n_annotators,
            votes_per_task=votes_per_task,
            spammer_fraction=spammers,
            random_state=seed,
        )
        with _staged_outputs() as stage:
            sim.votes.to_csv(stage(out), index=False)
            sim.annotators.to_csv(stage(ann_out), index=False)
    console.print(
        f"Simulated {len(sim.votes)} votes of {n_annotators} workers on {len(m)} tasks: {out}"
    )


@crowd_app.command("import")
def crowd_import(
    ctx: typer.Context,
    votes: Annotated[
        Path,
        typer.Argument(
            help="Votes: CSV task,annotator,label (optional quiz_accuracy) or a Label Studio "
            "JSON export.",
            metavar="VOTES",
            show_default=False,
        ),
    ],
    package: Annotated[
        Path, typer.Option("--package", help="Task package folder.", show_default=False)
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Labels CSV item,annotator,label,gold,quiz_accuracy (label 1 = mitosis), "
            "readable by `crowdmed aggregate` and `crowdmed train`.",
            show_default=False,
        ),
    ],
    quiz: Annotated[
        Path | None,
        typer.Option(
            "--quiz",
            help="CSV annotator,quiz_accuracy; otherwise γ is the accuracy on the gold tasks.",
            show_default=False,
        ),
    ] = None,
    on_error: Annotated[
        str,
        typer.Option(
            "--on-error",
            help="raise: stop on malformed or duplicated rows; drop: skip them and print them.",
        ),
    ] = "raise",
) -> None:
    """Import crowd votes for a task package; malformed rows are named by line.

    Example: crowdmed crowd import votes.csv --package tasks/ --out labels.csv
    """
    from crowdmed.crowdsourcing.votes import read_votes
    from crowdmed.data.io import write_labels

    started = time.perf_counter()
    console = _stderr()
    with _user_errors(ctx):
        json_out = out.with_name(out.name + ".json")
        _check_outputs([votes], {"--out": out, "--out .json": json_out})
        imported = read_votes(votes, package, quiz=quiz, on_error=on_error)
        cl = imported.labels
        record = {
            "crowdmed_version": __version__,
            "command": "crowd import",
            "arguments": ctx.params,
            "inputs": {"votes": {"path": votes.resolve(), "sha256": _sha256(votes)}},
            "n_votes": cl.n_labels,
            "n_tasks": cl.n_items,
            "n_annotators": cl.n_annotators,
            "n_problems": len(imported.problems),
            "problems": imported.problems,
            "quiz_source": dict(zip(map(str, cl.annotator_ids), imported.quiz_source, strict=True)),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with _staged_outputs() as stage:
            write_labels(cl, stage(out))
            record["elapsed_seconds"] = time.perf_counter() - started
            _write_json(stage(json_out), record)
    if len(imported.problems):
        console.print(f"Skipped {len(imported.problems)} rows:\n{imported.report()}")
    console.print(
        f"Imported {cl.n_labels} votes of {cl.n_annotators} annotators on {cl.n_items} tasks: {out}"
    )


def refine_cmd(
    ctx: typer.Context,
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            help="Model folder written by `crowdmed mitosis train`.",
            metavar="MODEL_DIR",
            show_default=False,
        ),
    ],
    package: Annotated[
        Path,
        typer.Option("--package", help="Task package folder.", metavar="PKG", show_default=False),
    ],
    votes: Annotated[
        Path,
        typer.Option(
            "--votes",
            help="Votes CSV task,annotator,label or a Label Studio JSON export.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder: the detector (config.json, model.safetensors; 0.33 network refined), "
            "truth.csv, annotators.csv, "
            "history.csv, run.json.",
            metavar="OUT_DIR",
            show_default=False,
        ),
    ],
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="Folder of the fields: cut the network's inputs from them exactly (with the "
            "detector's stain normalisation); else resample the package's context crops.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    quiz: Annotated[
        Path | None,
        typer.Option(
            "--quiz",
            help="CSV annotator,quiz_accuracy (else from the gold tasks).",
            show_default=False,
        ),
    ] = None,
    on_error: Annotated[
        str, typer.Option("--on-error", help="raise or drop malformed vote rows.")
    ] = "raise",
    scale: Annotated[float, typer.Option("--scale", help="Scale of the network to refine.")] = 0.33,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (small).")] = 1e-3,
    epochs: Annotated[
        int, typer.Option("--epochs", help="EM rounds, one full-batch step each.")
    ] = 50,
    tau: Annotated[float, typer.Option("--tau", help="Strength of the quiz trust prior.")] = 10.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed.")] = 0,
) -> None:
    """Refine the detector's 0.33-scale network on crowd votes with AggNet's aggregation layer.

    Example: crowdmed refine --model model/ --package tasks/ --votes votes.csv --out refined/
    """
    started = time.perf_counter()
    console = _stderr()
    with _user_errors(ctx):
        torch = _import_torch("refine")
        from crowdmed.crowdsourcing.votes import read_votes
        from crowdmed.pathology.detector import load_detector
        from crowdmed.pipelines.refine import (
            detector_patches,
            model_inputs,
            refine,
            scale_index,
            with_model,
        )

        if not model.is_dir():
            what = "is a file" if model.exists() else "does not exist"
            raise ValueError(
                f"`--model` must be a folder written by `crowdmed mitosis train`; '{model}' {what}."
            )
        model_file = model / MODEL_FILES[1]
        if out.exists() and not out.is_dir():
            raise ValueError(f"`--out` must be a folder; '{out}' is a file.")
        if out.resolve() == model.resolve():
            raise ValueError("`--out` must differ from `--model`; the input model is kept.")
        if not (lr > 0) or epochs < 1:
            raise ValueError(f"`--lr` must be positive and `--epochs` >= 1; got {lr}, {epochs}.")
        paths = {
            **{n: out / n for n in MODEL_FILES},
            "truth.csv": out / "truth.csv",
            "annotators.csv": out / "annotators.csv",
            "history.csv": out / "history.csv",
            "run.json": out / "run.json",
        }
        _check_outputs([model_file, votes], {f"--out {k}": v for k, v in paths.items()})
        detector = load_detector(model)
        i = scale_index(detector, scale)
        imported = read_votes(votes, package, quiz=quiz, on_error=on_error)
        cl = imported.labels
        from crowdmed.crowdsourcing.tasks import load_package

        pkg = load_package(package)
        pos = pd.Index(pkg.tasks).get_indexer(cl.item_ids)
        rows = pkg.manifest.iloc[pos]
        with _progress(console) as progress:
            with _step(progress, f"Preparing {cl.n_items} patches"):
                if images is not None:
                    fields = _read_fields(images, rows["image"])
                    x = detector_patches(detector, fields, rows[["image", "x", "y"]], scale=scale)
                    source = "fields"
                else:
                    x = model_inputs(pkg.patches(list(cl.item_ids)), 33)
                    source = "package crops"
            bar = progress.add_task("Refining", total=epochs)

            def on_epoch(epoch: int, total: int, metrics: dict[str, float]) -> None:
                progress.update(bar, completed=epoch)

            res = refine(
                detector.models[i],
                x,
                cl,
                lr=lr,
                epochs=epochs,
                tau=tau,
                random_state=seed,
                progress=on_epoch,
            )
        refined = with_model(detector, res.model, scale=scale)
        truth = res.truth.rename(columns={"item": "task"})
        truth.insert(1, "is_gold", pkg.manifest["is_gold"].to_numpy()[pos])
        truth.insert(2, "score", pkg.manifest["score"].to_numpy()[pos])
        annotators = res.annotators.assign(quiz_source=imported.quiz_source)
        record = {
            "crowdmed_version": __version__,
            "command": "refine",
            "arguments": ctx.params,
            "model": {"path": model_file.resolve(), "sha256": _sha256(model_file)},
            "inputs": {
                "votes": {"path": votes.resolve(), "sha256": _sha256(votes)},
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
            "environment": _environment(torch=torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with _staged_outputs() as stage:
            save_model(refined, out, stage)
            truth.to_csv(stage(paths["truth.csv"]), index=False)
            annotators.to_csv(stage(paths["annotators.csv"]), index=False)
            pd.DataFrame(res.history).to_csv(stage(paths["history.csv"]), index=False)
            record["elapsed_seconds"] = time.perf_counter() - started
            _write_json(stage(paths["run.json"]), record)
    if len(imported.problems):
        console.print(f"Skipped {len(imported.problems)} vote rows:\n{imported.report()}")
    table = Table(title="Refinement (AggNet)", show_header=False)
    table.add_row("tasks / votes / annotators", f"{cl.n_items} / {cl.n_labels} / {cl.n_annotators}")
    table.add_row("inferred mitoses", str(int(truth["label"].sum())))
    table.add_row("spammers (score < 0.05)", str(int((annotators["spammer_score"] < 0.05).sum())))
    table.add_row("time", f"{record['elapsed_seconds']:.1f} s")
    console.print(table)
    console.print(f"Refined detector and tables written to {out}")


def _register_crowd_loop(app: typer.Typer) -> None:
    """Register ``crowdmed crowd export|gold|simulate|import`` and ``crowdmed refine``."""
    app.add_typer(crowd_app, name="crowd")
    app.command("refine")(refine_cmd)
