"""Train a classifier on crowd labels from files, save it as a model folder, predict with it.

:func:`train_classifier` is what ``crowdmed train classify`` runs: it reads a long label file,
the inputs of the items (a feature matrix named by item ids, or a folder of images), trains an
MLP or a small CNN with :class:`crowdmed.training.CrowdClassifier` and returns a
:class:`ClassifierRun`, whose :meth:`ClassifierRun.save` writes the model folder:

- ``config.json`` and ``model.safetensors``: the classifier, saved by
  :meth:`crowdmed.training.CrowdClassifier.save` (weights only: loading runs no code);
- ``data.json``: the class values, the item and annotator ids and the kind and size of the
  inputs (read back with the classifier by :func:`load_classifier`);
- ``history.csv``: one row per epoch;
- ``annotators.csv``: per-annotator recall (and sensitivity/specificity for two classes) when
  the method models annotators, and DL-WDN's learned averaging weight of each annotator's
  head (``averaging_weight``) with ``method="dl-wdn"``;
- ``checkpoint/``: the checkpoint of every epoch and the settings it was made with.

Rerunning with the same settings and inputs continues an interrupted run from the checkpoint,
a larger ``epochs`` trains a finished run longer, and a run that stopped early stays stopped.

Examples:
    >>> from pathlib import Path
    >>> run = train_classifier(Path("labels.csv"), Path("m"), images=Path("i"))  # doctest: +SKIP
    >>> run.save(Path("model"))  # doctest: +SKIP
    >>> model = load_classifier(Path("model"))  # doctest: +SKIP
    >>> predict_classes(model, ImageInputs("images", Path("new")))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._io import to_jsonable
from crowdmed._tables import parse_class_list
from crowdmed._text import short_list
from crowdmed._validation import check_option
from crowdmed.data.features import (
    FeatureInputs,
    ImageInputs,
    id_key,
    input_source,
    read_true_labels,
)
from crowdmed.data.io import read_labels, write_table
from crowdmed.data.labels import CrowdLabels
from crowdmed.pipelines.model_folder import (
    DATA_NAME,
    check_data,
    fit_device,
    read_data,
    save_model,
    write_json,
)
from crowdmed.pipelines.records import file_record, files_record

__all__ = [
    "ClassifierModel",
    "ClassifierRun",
    "annotator_frame",
    "cnn_depth",
    "load_classifier",
    "predict_classes",
    "train_classifier",
]

#: Methods :func:`train_classifier` accepts (``dl-true`` needs the true class of every item).
TRAIN_METHODS = (
    "crowd-layer-mw, crowd-layer-vw, crowd-layer-vb, crowd-layer-vw+b, aggnet (two classes), "
    "dl-em, dl-dn, dl-wdn, dl-mv, dl-ds or dl-soft"
)

#: ``progress(description=..., completed=..., total=..., metrics=...)``, every argument
#: optional (the keywords of ``rich.progress.Progress.update``).
ProgressCallback = Callable[..., None]


def _no_progress(**_: Any) -> None:
    return None


def _import_torch(images: bool, purpose: str = "Training a classifier") -> Any:
    try:
        import torch

        if images:
            import monai  # noqa: F401  (small_cnn is built from MONAI blocks)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the torch extra ({exc}): pip install 'crowdmed[torch]'."
        ) from exc
    return torch


def checkpoint_file_of(out: Path) -> Path:
    """The checkpoint file of the model folder ``out``."""
    from crowdmed.training.engine import CHECKPOINT_NAME

    return out / "checkpoint" / CHECKPOINT_NAME


def cnn_depth(hw: tuple[int, int]) -> int:
    """Stride-2 blocks of ``small_cnn`` that keep at least 2x2 pixels for batch norm.

    With 1x1 pixels left, batch norm fails on a last mini-batch of one image.
    """
    return max(1, min(4, math.floor(math.log2(min(hw))) - 1))


def annotator_frame(
    cl: CrowdLabels, confusion: np.ndarray | None, averaging_weights: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-annotator label counts, the recalls of a fitted confusion matrix, DL-WDN's weights.

    Args:
        cl: The crowd labels.
        confusion: Float array of shape ``(n_annotators, K, K)`` (see the conventions) or
            ``None`` for a method that does not model annotators.
        averaging_weights: Float array of shape ``(n_annotators,)``: the learned averaging
            weights of the annotators' heads (DL-WDN, Rodrigues & Pereira 2018;
            :attr:`crowdmed.training.CrowdClassifier.averaging_weights_`), or ``None``.

    Returns:
        One row per annotator: annotator, n_labels, averaging_weight (with
        ``averaging_weights``) and, with ``confusion``, mean_recall, sensitivity/specificity
        (two classes) and recall_<class>.
    """
    frame: dict[str, Any] = {
        "annotator": cl.annotator_ids,
        "n_labels": np.bincount(cl.annotators, minlength=cl.n_annotators),
    }
    if averaging_weights is not None:
        frame["averaging_weight"] = np.asarray(averaging_weights, dtype=np.float64)
    if confusion is not None:
        diag = np.diagonal(confusion, axis1=1, axis2=2)
        frame["mean_recall"] = diag.mean(axis=1)
        if cl.n_classes == 2:
            frame["sensitivity"] = confusion[:, 1, 1]
            frame["specificity"] = confusion[:, 0, 0]
        for k, value in enumerate(cl.classes):
            frame[f"recall_{value}"] = diag[:, k]
    return pd.DataFrame(frame)


def _check_resume(config_path: Path, settings: dict[str, Any]) -> int | None:
    """Refuse to continue a checkpoint made with other settings or inputs.

    Returns:
        The epoch at which the checkpointed run stopped early, or ``None``.
    """
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise ValueError(
            f"The checkpoint in '{config_path.parent}' has no readable config.json; pass "
            "--no-resume to start over."
        )
    wanted = to_jsonable(settings)
    changed = [k for k in wanted if saved.get(k) != wanted[k]]
    if changed:
        shown = ", ".join(f"{k} {saved.get(k)!r} -> {wanted[k]!r}" for k in changed[:3])
        raise ValueError(
            f"The checkpoint in '{config_path.parent}' was made with other settings or inputs "
            f"({shown}); pass --no-resume to start over or use another --out folder."
        )
    stopped = saved.get("stopped_early_at")
    return int(stopped) if isinstance(stopped, int) else None


@dataclasses.dataclass
class _Options:
    method: str
    epochs: int
    batch_size: int
    lr: float
    patience: int
    seed: int
    size: tuple[int, int] | None
    channels: int
    tta: bool
    resume: bool
    device: str = "auto"
    #: How the label file is read: ``classes`` and ``on_duplicate`` of ``read_labels``.
    read: dict[str, Any] = dataclasses.field(default_factory=dict)


def _check_options(
    method: str,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    image_size: int | None,
    channels: int | None,
) -> tuple[str, tuple[int, int] | None, int]:
    from crowdmed.training import TrainMethod

    m = check_option(method, TrainMethod, "--method")
    if m is TrainMethod.DL_TRUE:
        raise ValueError(
            "`--method` dl-true needs the true class of every item, which a crowd label "
            f"file does not give; use one of {TRAIN_METHODS}."
        )
    for option, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise ValueError(f"`{option}` must be a positive integer; got {value}.")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"`--lr` must be a positive number; got {lr}.")
    if patience < 0:
        raise ValueError(f"`--patience` must be 0 (off) or a positive integer; got {patience}.")
    if image_size is not None and image_size < 4:
        raise ValueError(f"`--image-size` must be at least 4 pixels; got {image_size}.")
    size = None if image_size is None else (image_size, image_size)
    n_channels = 1 if channels is None else channels
    if n_channels not in (1, 3):
        raise ValueError(f"`--channels` must be 1 (grey) or 3 (RGB); got {n_channels}.")
    return m.value, size, n_channels


def _check_sources(
    source: FeatureInputs | ImageInputs,
    image_options: dict[str, bool],
    val_labels: Path | None,
    val_paths: dict[str, Path | None],
) -> None:
    is_images = isinstance(source, ImageInputs)
    if not is_images:
        for option, given in image_options.items():
            if given:
                raise ValueError(f"`{option}` applies to --images only.")
    if val_labels is None:
        for option, path in val_paths.items():
            if path is not None:
                raise ValueError(f"`{option}` needs `--val-labels` (the true classes).")
    if (val_paths["--val-features"] is not None and is_images) or (
        val_paths["--val-images"] is not None and not is_images
    ):
        raise ValueError(
            "Validation inputs must be of the kind used for training: --val-features with "
            "--features, --val-images with --images."
        )


@dataclasses.dataclass
class ClassifierRun:
    """A classifier trained by :func:`train_classifier`, with what is needed to save it.

    Attributes:
        classifier: The fitted :class:`crowdmed.training.CrowdClassifier` (``None`` when the
            run had already stopped early and nothing was trained: see ``skipped``).
        labels: The crowd labels it learnt from.
        method: The training method.
        network: ``{"name", "kwargs", "n_parameters"}`` of the network.
        input_spec: ``{"kind": "features", "n_features"}`` or ``{"kind": "images",
            "channels", "size"}``.
        inputs: Path and SHA-256 of every input.
        settings: What a resumed run must share (written to ``checkpoint/config.json``).
        data: Counts of items, annotators, classes, labels and validation items.
        fit: Epochs run, best epoch, early stopping, best scores, seconds, warnings.
        notes: Remarks for the user (e.g. validation items that also have crowd labels).
        skipped: Why nothing was trained, or ``None``.
    """

    classifier: Any
    labels: CrowdLabels
    method: str
    network: dict[str, Any]
    input_spec: dict[str, Any]
    inputs: dict[str, Any]
    settings: dict[str, Any]
    data: dict[str, Any]
    fit: dict[str, Any]
    tta: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)
    skipped: str | None = None

    def history(self) -> pd.DataFrame:
        """One row per epoch (epoch, loss, validation scores, seconds)."""
        history = pd.DataFrame(self.classifier.history_)
        history["epoch"] = history["epoch"].astype(int)
        return history

    def data_json(self) -> dict[str, Any]:
        """The content of ``data.json``: what the classifier's inputs and outputs mean."""
        cl = self.labels
        return {
            "task": "classification",
            "method": self.method,
            "classes": cl.classes.tolist(),
            "input": self.input_spec,
            "item_ids": cl.item_ids.tolist(),
            "annotator_ids": cl.annotator_ids.tolist(),
        }

    def save(self, out: Path, stage: Callable[[Path], Path] = Path) -> list[Path]:
        """Write the classifier, data.json, history.csv, annotators.csv and checkpoint settings.

        Args:
            out: The model folder.
            stage: Maps each target file to the path actually written (the command line
                writes to temporary files and moves them in place at the end).

        Returns:
            The target files.
        """
        clf = self.classifier
        targets = save_model(clf, out, stage)
        write_json(stage, out / DATA_NAME, self.data_json())
        write_table(self.history(), stage(out / "history.csv"))
        annotators = annotator_frame(
            self.labels, clf.annotator_confusion_, getattr(clf, "averaging_weights_", None)
        )
        write_table(annotators, stage(out / "annotators.csv"))
        # Early stopping is final: a rerun reports it instead of loading the data and network
        # again (the trainer would also train no further).
        settings = dict(self.settings)
        settings["stopped_early_at"] = len(clf.history_) if self.fit["stopped_early"] else None
        config = out / "checkpoint" / "config.json"
        write_json(stage, config, settings)
        return [*targets, out / DATA_NAME, out / "history.csv", out / "annotators.csv", config]


def _build_network(
    x: np.ndarray, k: int, is_images: bool, n_channels: int, seed: int
) -> tuple[str, dict[str, Any], Any]:
    """The network, seeded without touching the global torch RNG."""
    import torch

    from crowdmed.nn.models import mlp_head, small_cnn

    build: Callable[..., Any]
    if is_images:
        name, build = "small_cnn", small_cnn
        kwargs: dict[str, Any] = {
            "in_channels": n_channels,
            "n_classes": k,
            "depth": cnn_depth((int(x.shape[2]), int(x.shape[3]))),
        }
    else:
        name, build = "mlp_head", mlp_head
        kwargs = {"in_features": int(x.shape[1]), "n_classes": k}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build(**kwargs)
    return name, kwargs, network


def _read_data(
    labels: Path,
    source: FeatureInputs | ImageInputs,
    val: tuple[Path | None, FeatureInputs | ImageInputs | None],
    opts: _Options,
    report: ProgressCallback,
) -> tuple[CrowdLabels, np.ndarray, Any, list[Any], list[str]]:
    report(description=f"Reading {labels.name}")
    cl = read_labels(labels, **opts.read)
    if cl.n_classes < 2:
        raise ValueError(
            f"`--labels` must hold at least two classes to train a classifier; got "
            f"only {short_list(list(cl.classes))}."
        )

    def on_image(done: int, total: int) -> None:
        report(completed=done, total=total)

    report(description="Reading inputs")
    if isinstance(source, ImageInputs) and opts.size is not None:
        from crowdmed.pipelines.memory import check_memory

        h, w = opts.size
        check_memory(  # float32 images and a copy while training
            8.0 * len(cl.item_ids) * (opts.channels or 3) * h * w,
            f"{len(cl.item_ids):,} images resized to --image-size {h}",
            "lower --image-size",
        )
    kw: dict[str, Any] = {"channels": opts.channels, "progress": on_image}
    x = source.take(cl.item_ids, "labelled items", size=opts.size, **kw)
    if isinstance(source, ImageInputs):  # the training size: given, or that of every image
        opts.size = (int(x.shape[2]), int(x.shape[3]))
    val_labels, val_source = val
    x_val = y_val = None
    val_ids: list[Any] = []
    notes: list[str] = []
    if val_labels is not None:
        val_ids, y_val = read_true_labels(val_labels, cl.classes)
        report(description="Reading validation inputs", completed=0)
        x_val = (val_source or source).take(val_ids, "validation items", size=opts.size, **kw)
        overlap = len({id_key(i) for i in val_ids} & {id_key(i) for i in cl.item_ids})
        if overlap:
            notes.append(
                f"{overlap} of {len(val_ids)} validation items also have crowd labels; the "
                "validation score is optimistic."
            )
    return cl, x, (x_val, y_val), val_ids, notes


def _fit(
    clf: Any,
    x: np.ndarray,
    cl: CrowdLabels,
    val: Any,
    resumed: bool,
    out: Path,
    settings: dict[str, Any],
) -> tuple[float, list[str]]:
    checkpoint_dir = out / "checkpoint"
    checkpoint_file = checkpoint_file_of(out)
    config_path = checkpoint_dir / "config.json"
    made_dirs = [p for p in (checkpoint_dir, out, *out.parents) if not p.exists()]
    with contextlib.ExitStack() as cleanup:
        if not resumed:

            @cleanup.callback
            def _forget_unused_checkpoint() -> None:
                # A failure before the first epoch leaves no trace.
                if not checkpoint_file.exists():
                    config_path.unlink(missing_ok=True)
                    for d in made_dirs:
                        with contextlib.suppress(OSError):
                            d.rmdir()

            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            config_path.write_text(
                json.dumps(to_jsonable(settings), indent=2) + "\n", encoding="utf-8"
            )
        fit_start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf.fit(x, cl, X_val=val[0], y_val=val[1], n_classes=cl.n_classes)
        seconds = time.perf_counter() - fit_start
    return seconds, [" ".join(str(w.message).split()) for w in caught]


def train_classifier(
    labels: Path,
    out: Path,
    *,
    features: Path | None = None,
    feature_ids: Path | None = None,
    images: Path | None = None,
    val_labels: Path | None = None,
    val_features: Path | None = None,
    val_feature_ids: Path | None = None,
    val_images: Path | None = None,
    method: str = "crowd-layer-mw",
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    patience: int = 10,
    seed: int = 0,
    image_size: int | None = None,
    channels: int | None = None,
    tta: bool = False,
    resume: bool = True,
    device: str = "auto",
    classes: Sequence[Any] | None = None,
    on_duplicate: str = "error",
    progress: ProgressCallback | None = None,
) -> ClassifierRun:
    """Train a network on the crowd labels of a file; checkpoint it in ``out/checkpoint/``.

    The network is an MLP on ``features`` (rows named by ``feature_ids``) or a small CNN on
    the ``images`` folder (one file per item, scaled to [0, 1]). Inputs are matched to the
    items of ``labels`` by item id. Validation (early stopping, best epoch) uses the true
    classes of ``val_labels``, whose inputs come from ``features``/``images`` unless
    ``val_features``/``val_images`` are given.

    Args:
        labels: Long label file (item, annotator, label).
        out: The model folder (its ``checkpoint/`` is written during training).
        features: ``.npy`` features ``(n_rows, n_features)``.
        feature_ids: Item id of each feature row.
        images: Folder of item images.
        val_labels: CSV item,label with the true class of validation items.
        val_features: Features of the validation items.
        val_feature_ids: Item id of each validation feature row.
        val_images: Folder of validation images.
        method: A method of :class:`crowdmed.training.TrainMethod` other than ``dl-true``.
        epochs: Maximum number of epochs.
        batch_size: Mini-batch size.
        lr: Learning rate of Adam.
        patience: Epochs without improvement before stopping; 0 trains every epoch.
        seed: Seed of the weights, the data order and dropout.
        image_size: Resize images to this many pixels square (``None``: all the same size).
        channels: Image channels, 1 or 3 (``None``: 1).
        tta: Store test-time augmentation as the model's prediction default.
        resume: Continue from a checkpoint of the same settings and inputs in ``out``.
        device: Where to train: ``"auto"`` (a CUDA GPU when one is available, else the
            CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        classes: Every class in order, also classes no label uses (``["0,1,2"]`` as the
            command line gives them, or the values); the sorted labels when omitted.
        on_duplicate: Repeated ``(item, annotator)`` pairs in ``labels``: ``"error"``,
            ``"first"``, ``"last"`` or ``"drop"`` the pair when its labels conflict.
        progress: Called with ``description``, ``completed``, ``total``, ``metrics`` keywords.

    Returns:
        The run; :meth:`ClassifierRun.save` writes the model folder.

    Raises:
        ValueError: For bad values, missing or inconsistent inputs, or a checkpoint made
            with other settings.
    """
    _import_torch(images is not None)
    report = progress or _no_progress
    m, size, n_channels = _check_options(
        method, epochs, batch_size, lr, patience, image_size, channels
    )
    source = input_source(features, feature_ids, images)
    if source is None:
        raise ValueError(
            "Pass the inputs of the labelled items with `--features` (and `--feature-ids`) "
            "or `--images`."
        )
    image_options = {"--image-size": image_size is not None, "--channels": channels is not None}
    val_paths = {
        "--val-features": val_features,
        "--val-feature-ids": val_feature_ids,
        "--val-images": val_images,
    }
    _check_sources(source, {**image_options, "--tta": tta}, val_labels, val_paths)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`--out` must be a folder for the model; '{out}' is a file.")
    _import_torch(isinstance(source, ImageInputs))
    from crowdmed.pipelines.aggregate import OnDuplicate

    read = {
        "classes": parse_class_list(None if classes is None else [str(c) for c in classes]),
        "on_duplicate": check_option(on_duplicate, OnDuplicate, "--on-duplicate").value,
    }
    opts = _Options(
        m, epochs, batch_size, lr, patience, seed, size, n_channels, tta, resume, device, read
    )
    val_source = (
        input_source(val_features, val_feature_ids, val_images, "--val-")
        if val_labels is not None
        else None
    )
    cl, x, val, val_ids, notes = _read_data(labels, source, (val_labels, val_source), opts, report)
    paths = {
        "labels": labels,
        "features": features,
        "feature_ids": feature_ids,
        "val_labels": val_labels,
        "val_features": val_features,
        "val_feature_ids": val_feature_ids,
    }
    return _train(cl, x, val, val_ids, source, val_source, paths, opts, out, notes, report)


def _inputs(
    paths: dict[str, Path | None],
    source: FeatureInputs | ImageInputs,
    val_source: Any,
    cl: CrowdLabels,
    val_ids: list[Any],
) -> dict[str, Any]:
    from crowdmed.data.images import image_paths

    inputs: dict[str, Any] = {name: file_record(p) for name, p in paths.items()}
    if isinstance(source, ImageInputs):
        inputs["images"] = files_record(source.folder, image_paths(source.folder, cl.item_ids))
        if paths["val_labels"] is not None:
            folder = val_source.folder if isinstance(val_source, ImageInputs) else source.folder
            inputs["val_images"] = files_record(folder, image_paths(folder, val_ids))
    return inputs


def _train(
    cl: CrowdLabels,
    x: np.ndarray,
    val: Any,
    val_ids: list[Any],
    source: FeatureInputs | ImageInputs,
    val_source: Any,
    paths: dict[str, Path | None],
    opts: _Options,
    out: Path,
    notes: list[str],
    report: ProgressCallback,
) -> ClassifierRun:
    is_images = isinstance(source, ImageInputs)
    net_name, net_kwargs, network = _build_network(
        x, cl.n_classes, is_images, opts.channels, opts.seed
    )
    report(description="Checking inputs", completed=0)
    inputs = _inputs(paths, source, val_source, cl, val_ids)
    settings = _run_settings(opts, net_name, net_kwargs, is_images, inputs)
    checkpoint_file = checkpoint_file_of(out)
    resumed = opts.resume and checkpoint_file.exists()
    run = ClassifierRun(
        classifier=None,
        labels=cl,
        method=opts.method,
        network={
            "name": net_name,
            "kwargs": net_kwargs,
            "n_parameters": int(sum(p.numel() for p in network.parameters())),
        },
        input_spec=_input_spec(opts, is_images, x),
        inputs=inputs,
        settings=settings,
        data=_data_record(cl, x, val_ids),
        fit={},
        tta=opts.tta,
        notes=notes,
    )
    if resumed:
        run.skipped = _stopped_early(out, settings)
        if run.skipped is not None:
            return run
    clf, new_epochs = _classifier(network, opts, out, report)
    report(description=f"Training {opts.method}", total=opts.epochs, completed=0, metrics="")
    if not opts.resume:
        for stale in (checkpoint_file, out / "checkpoint" / "config.json"):
            stale.unlink(missing_ok=True)
    seconds, caught = _fit(clf, x, cl, val, resumed, out, settings)
    report(description="Writing outputs", metrics="")
    run.classifier = clf
    run.fit = {
        "epochs_run": len(clf.history_),
        "resumed_from_epoch": len(clf.history_) - len(new_epochs) if resumed else None,
        "device": fit_device(opts.device)[1],
        "best_epoch": clf.best_epoch_,
        "stopped_early": clf.stopped_early_,
        "best": clf.history_[clf.best_epoch_ - 1] if clf.history_ else {},
        "seconds": seconds,
        "warnings": caught,
    }
    return run


def _run_settings(
    opts: _Options,
    net_name: str,
    net_kwargs: dict[str, Any],
    is_images: bool,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """What a resumed run must share with the checkpointed one."""
    return {
        "method": opts.method,
        "seed": opts.seed,
        "lr": opts.lr,
        "batch_size": opts.batch_size,
        "patience": opts.patience,
        "network": net_name,
        "network_kwargs": net_kwargs,
        "image_size": opts.size if is_images else None,
        "inputs": {name: None if rec is None else rec["sha256"] for name, rec in inputs.items()},
        # how the labels were read, when not the default (checkpoints made before keep working)
        **(
            {"read": opts.read}
            if opts.read.get("classes") or opts.read.get("on_duplicate", "error") != "error"
            else {}
        ),
    }


def _input_spec(opts: _Options, is_images: bool, x: np.ndarray) -> dict[str, Any]:
    if is_images and opts.size is not None:
        return {"kind": "images", "channels": opts.channels, "size": list(opts.size)}
    return {"kind": "features", "n_features": int(x.shape[1])}


def _data_record(cl: CrowdLabels, x: np.ndarray, val_ids: list[Any]) -> dict[str, Any]:
    return {
        "n_items": cl.n_items,
        "n_annotators": cl.n_annotators,
        "n_classes": cl.n_classes,
        "classes": cl.classes,
        "n_labels": cl.n_labels,
        "input_shape": list(x.shape[1:]),
        "n_val": len(val_ids),
        "n_val_with_crowd_labels": len(
            {id_key(i) for i in val_ids} & {id_key(i) for i in cl.item_ids}
        ),
    }


def _stopped_early(out: Path, settings: dict[str, Any]) -> str | None:
    """Why a resumed run trains nothing: it stopped early with these settings; else ``None``.

    Raises:
        ValueError: When the checkpoint was made with other settings, or the run stopped
            early but its weights are missing.
    """
    stopped = _check_resume(out / "checkpoint" / "config.json", settings)
    if stopped is None:
        return None
    if not (out / "model.safetensors").is_file():
        raise ValueError(
            f"The run in '{out}' stopped early at epoch {stopped} but its "
            "model.safetensors is missing; pass --no-resume to train again."
        )
    return (
        f"The run in '{out}' already stopped early at epoch {stopped} with "
        "these settings; nothing to train (pass --no-resume to train again)."
    )


def _classifier(
    network: Any, opts: _Options, out: Path, report: ProgressCallback
) -> tuple[Any, list[int]]:
    """The classifier to fit, and the list its progress hook fills with each new epoch."""
    from crowdmed.training import CrowdClassifier

    clf = CrowdClassifier(
        network,
        method=opts.method,
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        lr=opts.lr,
        patience=opts.patience or None,
        checkpoint_dir=out / "checkpoint",
        random_state=opts.seed,
        tta=opts.tta,
        device=fit_device(opts.device)[0],
    )
    new_epochs: list[int] = []

    def on_epoch(epoch: int, total: int, record: dict[str, float]) -> None:
        new_epochs.append(epoch)
        shown = " ".join(
            f"{name}={value:.3f}"
            for name, value in record.items()
            if name not in ("epoch", "seconds")
        )
        report(completed=epoch, total=total, metrics=shown)

    clf.progress = on_epoch
    return clf, new_epochs


@dataclasses.dataclass
class ClassifierModel:
    """A classifier read back from a model folder by :func:`load_classifier`.

    Attributes:
        classifier: The fitted :class:`crowdmed.training.CrowdClassifier`.
        data: The content of ``data.json``: ``classes``, ``input``, ``method`` ...
        path: The weights file.
    """

    classifier: Any
    data: dict[str, Any]
    path: Path


def load_classifier(model_dir: Path) -> ClassifierModel:
    """Read back a model folder written by :meth:`ClassifierRun.save` (no code is unpickled).

    Args:
        model_dir: The model folder.

    Returns:
        The classifier with the meaning of its inputs and outputs.

    Raises:
        ValueError: When the folder holds no readable classifier.
    """
    data = read_data(model_dir)
    if data["task"] != "classification":
        raise ValueError(f"'{model_dir}' holds a {data['task']} model, not a classifier.")
    check_data(model_dir, data, task="classification")
    _import_torch(data["input"]["kind"] == "images", "Prediction")
    from crowdmed.training import load_model

    clf = load_model(model_dir, device="cpu")
    check_data(model_dir, data, task="classification", n_classes=int(clf.n_classes_))
    return ClassifierModel(clf, data, model_dir / "model.safetensors")


def predict_classes(
    model: ClassifierModel,
    source: FeatureInputs | ImageInputs,
    *,
    tta: bool | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Class probabilities of every feature row or every image of a folder.

    Args:
        model: A classifier from :func:`load_classifier`.
        source: Feature rows named by ids, or a folder of images (resized to the training
            size).
        tta: Average over the 8 rotations/mirrors of each image; the model's setting when
            ``None``.
        progress: Called with a ``description`` keyword at each step.

    Returns:
        One row per item: item, label, confidence, p_<class>...

    Raises:
        ValueError: When the inputs are not of the kind or width the model was trained on.
    """
    report = progress or _no_progress
    spec = model.data["input"]
    if source.kind != spec["kind"]:
        raise ValueError(
            f"The model in '{model.path.parent}' was trained on {spec['kind']}; pass "
            f"`--{spec['kind']}` instead of `{source.option}`."
        )
    clf = model.classifier
    use_tta = bool(clf.tta) if tta is None else tta
    if tta and source.kind != "images":
        raise ValueError("`--tta` applies to --images only.")
    if isinstance(source, FeatureInputs):
        if source.matrix.shape[1] != spec["n_features"]:
            raise ValueError(
                f"`--features` has {source.matrix.shape[1]} columns but the model was "
                f"trained on {spec['n_features']} features."
            )
        items: list[Any] = source.ids
        x = source.matrix
    else:
        from crowdmed.data.images import list_images

        items = list_images(source.folder)
        report(description=f"Reading {len(items):,} images")
        x = source.take(items, "images", size=tuple(spec["size"]), channels=spec["channels"])
    report(description=f"Predicting {len(items):,} items")
    clf.tta = use_tta
    proba = clf.predict_proba(x)
    classes = np.asarray(model.data["classes"])
    frame: dict[str, Any] = {
        "item": items,
        "label": classes[proba.argmax(axis=1)],
        "confidence": proba.max(axis=1),
    }
    for k, value in enumerate(classes):
        frame[f"p_{value}"] = proba[:, k]
    result = pd.DataFrame(frame)
    result.attrs["tta"] = use_tta
    return result
