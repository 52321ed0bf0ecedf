"""Studies: a folder with the settings, the images shown to annotators and the database.

::

    STUDY/
      study.json      settings (question, classes, labels per item, quiz, hidden gold)
      images/         the images shown to annotators (one file per item)
      study.sqlite    the database (unless the study lives in PostgreSQL)
      exports/        votes CSVs written by ``crowdmed serve export`` and the admin page

A study is created from a ``crowdmed crowd export`` task package (:func:`study_from_package`:
the candidates, with the package's gold tasks as quiz and hidden gold) or from a folder of
images and a class list (:func:`study_from_images`, optionally with a gold table).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crowdmed._io import atomic_path, to_jsonable
from crowdmed._version import __version__
from crowdmed.crowdsourcing.server.storage import Storage

__all__ = [
    "DATABASE_ENV",
    "Study",
    "StudySettings",
    "create_study",
    "export_votes",
    "open_study",
    "study_from_images",
    "study_from_package",
]

#: Environment variable with the database URL of a study kept outside its folder.
DATABASE_ENV = "CROWDMED_DATABASE_URL"

_KINDS = ("binary", "multiclass", "ordinal")
_BROWSER_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class StudySettings:
    """The settings of a study (``study.json``).

    Attributes:
        name: Title shown on the pages.
        question: The question shown above every image.
        classes: Class names; the label of a vote is the class index.
        kind: ``"binary"``, ``"multiclass"`` or ``"ordinal"`` (classes in order).
        labels_per_item: Labels wanted per (non-gold) item.
        quiz_size: Gold items in each annotator's qualification quiz (``0``: no quiz).
        pass_mark: Quiz accuracy needed to get tasks, in ``[0, 1]``.
        gold_share: Chance that the next task is a hidden gold item, in ``[0, 1)``.
        seed: Seed of the quiz draws and of the hidden-gold draws.
        study_id: Unique id that ties the folder to its database.
        storage: ``"sqlite"`` (in the folder) or ``"url"`` (a database URL, see
            :data:`DATABASE_ENV`).
        source: Where the items came from.
        created: Creation time (UTC, ISO 8601).
        crowdmed: Version of crowdmed that created the study.
    """

    name: str
    question: str
    classes: tuple[str, ...]
    kind: str = "binary"
    labels_per_item: int = 5
    quiz_size: int = 10
    pass_mark: float = 0.7
    gold_share: float = 0.1
    seed: int = 0
    study_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    storage: str = "sqlite"
    source: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    crowdmed: str = __version__

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def to_json(self) -> str:
        """The settings as JSON text."""
        return json.dumps(to_jsonable(asdict(self)), indent=2) + "\n"


@dataclass
class Study:
    """An open study: its folder, settings and storage."""

    path: Path
    settings: StudySettings
    storage: Storage

    @property
    def images(self) -> Path:
        """The folder of the images shown to annotators."""
        return self.path / "images"

    def invite(self, names: Sequence[str]) -> dict[str, str]:
        """Add annotators; returns name -> token (the token is shown once, stored hashed)."""
        return {n: self.storage.add_principal(n) for n in names}

    def admin_token(self) -> str:
        """A new administrator token (earlier administrator tokens stay valid)."""
        for i in range(2, 10_000):
            try:
                return self.storage.add_principal(f"admin-{i}", role="admin")
            except ValueError:
                continue
        raise ValueError("Too many administrator tokens; rotate one instead.")  # pragma: no cover

    def set_scores(self, scores: pd.DataFrame | str | os.PathLike[str]) -> int:
        """Set the "which case next" scores: items with a higher score are served first.

        Args:
            scores: A table or CSV ``item, score`` (a higher score means "label this next");
                items left out keep their score (``0`` at creation).

        Returns:
            The number of items updated.

        Raises:
            ValueError: If a column is missing, a score is not a finite number or an item is
                not in the study.
        """
        table = scores if isinstance(scores, pd.DataFrame) else pd.read_csv(scores, dtype=str)
        lower = {str(c).strip().lower(): c for c in table.columns}
        c_item = next((lower[c] for c in ("item", "task", "image") if c in lower), None)
        c_score = next((lower[c] for c in ("score", "priority") if c in lower), None)
        if c_item is None or c_score is None:
            raise ValueError(
                f"The scores table must have columns item,score; got {list(table.columns)}."
            )
        values = pd.to_numeric(table[c_score], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            rows = (np.flatnonzero(bad)[:5] + 1).tolist()
            raise ValueError(f"Scores must be finite numbers; rows {rows} are not.")
        items = table[c_item].astype(str).str.strip().tolist()
        known = {r["item"] for r in self.storage.items()}
        unknown = [i for i in items if i not in known]
        if unknown:
            raise ValueError(
                f"Items {unknown[:5]} are not in study '{self.path}'; use the item ids of "
                "the export."
            )
        return self.storage.set_priorities(dict(zip(items, values.tolist(), strict=True)))

    def close(self) -> None:
        """Release the database connections."""
        self.storage.close()


def _check_settings(s: StudySettings, n_gold: int) -> None:
    if s.kind not in _KINDS:
        raise ValueError(f"`kind` must be one of {list(_KINDS)}; got {s.kind!r}.")
    if len(s.classes) < 2 or len(set(s.classes)) != len(s.classes):
        raise ValueError(f"`classes` must be at least two distinct names; got {list(s.classes)}.")
    if len(s.classes) > 9:
        raise ValueError(
            f"`classes` must be at most 9 names (keys 1-9 answer them); got {len(s.classes)}."
        )
    if s.kind == "binary" and len(s.classes) != 2:
        raise ValueError(
            f"A binary question needs exactly two classes; got {list(s.classes)}. Use "
            "kind 'multiclass' or 'ordinal'."
        )
    if isinstance(s.labels_per_item, bool) or s.labels_per_item < 1:
        raise ValueError(f"`labels_per_item` must be an integer >= 1; got {s.labels_per_item}.")
    if s.quiz_size < 0:
        raise ValueError(f"`quiz_size` must be >= 0; got {s.quiz_size}.")
    if s.quiz_size > n_gold:
        raise ValueError(
            f"`quiz_size` must be at most the number of gold items ({n_gold}); got "
            f"{s.quiz_size}. Lower --quiz-size or add gold items."
        )
    if not (0.0 <= s.pass_mark <= 1.0) or math.isnan(s.pass_mark):
        raise ValueError(f"`pass_mark` must lie in [0, 1]; got {s.pass_mark}.")
    if not (0.0 <= s.gold_share < 1.0):
        raise ValueError(f"`gold_share` must lie in [0, 1); got {s.gold_share}.")
    if s.gold_share > 0 and n_gold == 0:
        raise ValueError(
            f"`gold_share` {s.gold_share} needs gold items; pass a gold table or set it to 0."
        )


def _database_url(path: Path, settings: StudySettings | None, database_url: str | None) -> str:
    url = database_url or os.environ.get(DATABASE_ENV) or None
    if settings is not None and settings.storage == "sqlite":
        if database_url:
            raise ValueError(
                f"Study '{path}' keeps its votes in {path / 'study.sqlite'}; drop --database."
            )
        url = None
    if url is None:
        if settings is not None and settings.storage == "url":
            raise ValueError(
                f"Study '{path}' keeps its votes in a database server; pass --database URL or "
                f"set {DATABASE_ENV}."
            )
        return f"sqlite:///{(path / 'study.sqlite').resolve()}"
    return url


def _write_study(
    out: Path,
    settings: StudySettings,
    rows: list[dict[str, Any]],
    copy_image: Any,
    database_url: str | None,
) -> tuple[Study, str]:
    """Create the study folder atomically: stage, fill, rename; returns the admin token."""
    if out.exists():
        raise ValueError(f"Study folder '{out}' already exists; choose another folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    storage: Storage | None = None
    try:
        (stage / "images").mkdir()
        for r in rows:
            r["image"] = copy_image(r, stage / "images")
        settings = StudySettings(
            **{
                **asdict(settings),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "storage": "url" if database_url else "sqlite",
            }
        )
        (stage / "study.json").write_text(settings.to_json(), encoding="utf-8")
        os.chmod(stage, 0o755)
        os.rename(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    try:
        storage = Storage(_database_url(out, None, database_url))
        token = storage.create_schema(settings.study_id, settings_json=settings.to_json())
        storage.add_items(rows)
    except BaseException:
        if storage is not None:
            storage.close()
        shutil.rmtree(out, ignore_errors=True)
        raise
    return Study(path=out, settings=settings, storage=storage), token


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "item"
    return name[:100]


def study_from_package(
    package: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str | None = None,
    question: str = "Is there a mitotic figure at the centre of the patch?",
    labels_per_item: int = 5,
    quiz_size: int = 10,
    pass_mark: float = 0.7,
    gold_share: float = 0.1,
    seed: int = 0,
    database_url: str | None = None,
) -> tuple[Study, str]:
    """Create a study from a ``crowdmed crowd export`` task package.

    The package's gold tasks become the quiz and the hidden gold; the candidates are the
    items. Classes are the package's (``not mitosis``, ``mitosis``).

    Args:
        package: The task package folder.
        out: The study folder to create; it must not exist.
        name: Title of the study; the package folder name when omitted.
        question: Question shown above every image.
        labels_per_item: Labels wanted per candidate.
        quiz_size: Gold items in each annotator's quiz.
        pass_mark: Quiz accuracy needed to get tasks.
        gold_share: Chance that a task is a hidden gold item.
        seed: Seed of the quiz and hidden-gold draws.
        database_url: SQLAlchemy URL of an empty database (PostgreSQL); ``study.sqlite`` in
            the study folder when omitted.

    Returns:
        The open study and its first administrator token.

    Raises:
        ValueError: If the package is invalid, ``out`` exists or a setting is out of range.
    """
    from crowdmed.crowdsourcing.tasks import load_package

    pkg = load_package(package)
    gold = pkg.gold_labels()
    classes = tuple(str(c) for c in pkg.settings.get("classes", ("not mitosis", "mitosis")))
    settings = StudySettings(
        name=name or Path(package).name,
        question=question,
        classes=classes,
        kind="binary",
        labels_per_item=labels_per_item,
        quiz_size=quiz_size,
        pass_mark=pass_mark,
        gold_share=gold_share,
        seed=seed,
        source={"package": str(Path(package).resolve()), "n_tasks": len(pkg.tasks)},
    )
    _check_settings(settings, int((gold >= 0).sum()))
    rows = [
        {"item": t, "gold": None if g < 0 else int(g)}
        for t, g in zip(pkg.tasks, gold.tolist(), strict=True)
    ]
    for r in rows:
        f = pkg.path / "patches" / f"{r['item']}.png"
        if not f.is_file():
            raise ValueError(
                f"Task package '{pkg.path}' has no image for task {r['item']!r} ({f}); export "
                "the package again."
            )

    def copy(r: dict[str, Any], folder: Path) -> str:
        target = f"{_safe_name(r['item'])}.png"
        shutil.copyfile(pkg.path / "patches" / f"{r['item']}.png", folder / target)
        return target

    return _write_study(Path(out), settings, rows, copy, database_url)


def _class_index(value: Any, classes: Sequence[str]) -> int | None:
    text = str(value).strip()
    if text in classes:
        return list(classes).index(text)
    lowered = [c.lower() for c in classes]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if re.fullmatch(r"\d+", text) and int(text) < len(classes):
        return int(text)
    return None


def study_from_images(
    images: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    kind: str = "multiclass",
    gold: str | os.PathLike[str] | pd.DataFrame | None = None,
    name: str | None = None,
    question: str = "Which class does the image show?",
    labels_per_item: int = 5,
    quiz_size: int = 0,
    pass_mark: float = 0.7,
    gold_share: float = 0.0,
    seed: int = 0,
    database_url: str | None = None,
) -> tuple[Study, str]:
    """Create a study from a folder of images and a class list.

    Every PNG, JPEG or TIFF file of the folder is an item (its file stem is the item id); TIFF
    files are converted to PNG for the browser.

    Args:
        images: Folder of image files (not searched recursively).
        out: The study folder to create; it must not exist.
        classes: Class names, in order for an ordinal question.
        kind: ``"binary"``, ``"multiclass"`` or ``"ordinal"``.
        gold: Gold answers for the quiz and hidden gold: a CSV or table ``item, label``
            (label a class name or index); items are file stems.
        name: Title of the study; the folder name when omitted.
        question: Question shown above every image.
        labels_per_item: Labels wanted per item.
        quiz_size: Gold items in each annotator's quiz (needs ``gold``).
        pass_mark: Quiz accuracy needed to get tasks.
        gold_share: Chance that a task is a hidden gold item (needs ``gold``).
        seed: Seed of the quiz and hidden-gold draws.
        database_url: SQLAlchemy URL of an empty database; ``study.sqlite`` when omitted.

    Returns:
        The open study and its first administrator token.

    Raises:
        ValueError: On an empty folder, unknown gold items or labels, or a bad setting.
    """
    from crowdmed.data.images import image_paths, list_images

    ids = list_images(images)  # refuses two files with one stem
    stems: dict[str, Path] = dict(zip(ids, image_paths(images, ids), strict=True))
    cls = tuple(str(c).strip() for c in classes)
    gold_of: dict[str, int] = {}
    if gold is not None:
        table = gold if isinstance(gold, pd.DataFrame) else pd.read_csv(gold, dtype=str)
        lower = {str(c).strip().lower(): c for c in table.columns}
        c_item = next((lower[c] for c in ("item", "image", "task") if c in lower), None)
        c_label = next((lower[c] for c in ("label", "answer", "gold") if c in lower), None)
        if c_item is None or c_label is None:
            raise ValueError(
                f"The gold table must have columns item,label; got {list(table.columns)}."
            )
        for pos, (it, lab) in enumerate(zip(table[c_item], table[c_label], strict=True)):
            key = Path(str(it).strip()).stem
            if key not in stems:
                raise ValueError(
                    f"Gold row {pos + 1} names item {it!r}, which is not an image of "
                    f"'{images}'; use the file stem."
                )
            k = _class_index(lab, cls)
            if k is None:
                raise ValueError(
                    f"Gold row {pos + 1} has label {lab!r}, which is not one of the classes "
                    f"{list(cls)} (or their index)."
                )
            gold_of[key] = k
    settings = StudySettings(
        name=name or Path(images).resolve().name,
        question=question,
        classes=cls,
        kind=kind,
        labels_per_item=labels_per_item,
        quiz_size=quiz_size,
        pass_mark=pass_mark,
        gold_share=gold_share,
        seed=seed,
        source={"images": str(Path(images).resolve()), "n_images": len(stems)},
    )
    _check_settings(settings, len(gold_of))
    rows = [{"item": s, "gold": gold_of.get(s), "path": p} for s, p in stems.items()]

    def copy(r: dict[str, Any], folder: Path) -> str:
        src: Path = r.pop("path")
        if src.suffix.lower() in _BROWSER_SUFFIXES:
            target = f"{_safe_name(r['item'])}{src.suffix.lower()}"
            shutil.copyfile(src, folder / target)
        else:
            from crowdmed.crowdsourcing.tasks import read_image, write_png

            target = f"{_safe_name(r['item'])}.png"
            write_png(read_image(src), folder / target)
        return target

    names_seen: set[str] = set()
    for r in rows:
        safe = _safe_name(str(r["item"]))
        if safe in names_seen:
            raise ValueError(
                f"Items {r['item']!r} and another file map to the same image name {safe!r}; "
                "rename one."
            )
        names_seen.add(safe)
    return _write_study(Path(out), settings, rows, copy, database_url)


def open_study(path: str | os.PathLike[str], *, database_url: str | None = None) -> Study:
    """Open a study folder.

    Args:
        path: The study folder (``study.json``).
        database_url: Database URL of a study kept in a database server; else
            :data:`DATABASE_ENV`.

    Raises:
        ValueError: If the folder is not a study or its database belongs to another study.
    """
    p = Path(path)
    f = p / "study.json"
    if not f.is_file():
        what = "does not exist" if not p.exists() else "has no study.json"
        raise ValueError(f"Study folder '{p}' {what}; create one with `crowdmed serve init`.")
    raw = json.loads(f.read_text(encoding="utf-8"))
    raw["classes"] = tuple(raw["classes"])
    known = set(StudySettings.__dataclass_fields__)
    settings = StudySettings(**{k: v for k, v in raw.items() if k in known})
    storage = Storage(_database_url(p, settings, database_url))
    found = storage.meta("study_id")
    if found != settings.study_id:
        storage.close()
        where = storage.url.render_as_string(hide_password=True)
        raise ValueError(
            f"The database '{where}' does not hold study '{p}' (study id "
            f"{settings.study_id}, found {found}); check --database."
        )
    return Study(path=p, settings=settings, storage=storage)


def votes_frame(study: Study, *, phase: str | None = "task") -> pd.DataFrame:
    """The votes as a long table ``item, annotator, label, gold, quiz_accuracy, phase``.

    "Unsure" answers have ``label`` ``NaN``.

    Args:
        study: The study.
        phase: ``"task"``, ``"quiz"``, or ``None`` for both.
    """
    votes = study.storage.votes()
    gamma = {a["name"]: a["quiz_accuracy"] for a in study.storage.annotators()}
    df = pd.DataFrame(
        votes, columns=["id", "vote_id", "phase", "label", "created", "item", "gold", "annotator"]
    )
    if phase is not None:
        df = df[df["phase"] == phase]
    out = pd.DataFrame(
        {
            "item": df["item"].astype(str).to_numpy(),
            "annotator": df["annotator"].astype(str).to_numpy(),
            "label": pd.array(df["label"].to_numpy(dtype=object), dtype="Int64"),
            "gold": pd.array(df["gold"].to_numpy(dtype=object), dtype="Int64"),
            "quiz_accuracy": np.array(
                [
                    np.nan if gamma.get(a) is None else float(gamma[a])
                    for a in df["annotator"].astype(str)
                ],
                dtype=np.float64,
            ),
            "phase": df["phase"].astype(str).to_numpy(),
        }
    )
    return out


def export_votes(
    study: Study, out: str | os.PathLike[str] | None = None, *, overwrite: bool = False
) -> Path:
    """Write the task votes as the long CSV of ``aggregate``, ``crowd import`` and ``refine``.

    A JSON record is written next to it.
    Columns: ``item, annotator, label, gold, quiz_accuracy``. ``label`` is the class index
    (``0..K-1``, the order of the study's classes); "unsure" answers are left out (missing
    labels) and counted in the record; ``gold`` is the class of a hidden gold item, empty
    otherwise; ``quiz_accuracy`` is the annotator's quiz accuracy ``γ``. Both files are
    written atomically (temporary file, then rename).

    Args:
        study: The study.
        out: The CSV path; ``exports/votes-<UTC time>.csv`` in the study folder when omitted.
        overwrite: Replace an existing file.

    Returns:
        The CSV path.

    Raises:
        ValueError: If ``out`` exists and ``overwrite`` is false.
    """
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = study.path / "exports" / f"votes-{stamp}.csv"
    else:
        target = Path(out)
    record_path = target.with_name(target.name + ".json")
    if not overwrite:
        for p in (target, record_path):
            if p.exists():
                raise ValueError(f"'{p}' already exists; choose another path or overwrite it.")
    df = votes_frame(study, phase="task")
    unsure = int(df["label"].isna().sum())
    table = df[df["label"].notna()].drop(columns="phase").reset_index(drop=True)
    record = {
        "crowdmed_version": __version__,
        "command": "serve export",
        "study": str(study.path.resolve()),
        "study_id": study.settings.study_id,
        "classes": list(study.settings.classes),
        "kind": study.settings.kind,
        "label": "class index in the order of `classes`",
        "n_votes": len(table),
        "n_unsure": unsure,
        "n_items": int(table["item"].nunique()),
        "n_annotators": int(table["annotator"].nunique()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(record_path) as tmp:
        Path(tmp).write_text(json.dumps(to_jsonable(record), indent=2) + "\n", encoding="utf-8")
    return target


def create_study(
    folder: Any,
    *,
    package: Any = None,
    images: Any = None,
    classes: str | Sequence[str] | None = None,
    kind: str = "multiclass",
    gold: Any = None,
    **settings: Any,
) -> tuple[Any, str]:
    """Create a study from a task package or from a folder of images and a class list.

    Args:
        folder: The study folder to create.
        package: A task package from ``crowdmed crowd export`` (exclusive with ``images``).
        images: A folder of images, one item each (needs ``classes``).
        classes: Class names, a sequence or one comma-separated string (with ``images``).
        kind: ``binary``, ``multiclass`` or ``ordinal`` (with ``images``).
        gold: CSV ``item,label`` of gold answers (with ``images``).
        **settings: The study settings of :func:`study_from_package` /
            :func:`study_from_images`; ``None`` values keep their defaults.

    Returns:
        The open study and the administrator token.

    Raises:
        ValueError: When both or neither of ``package`` and ``images`` are given, or an
            option does not go with the chosen source.
    """
    common = {k: v for k, v in settings.items() if v is not None or k == "name"}
    if package is not None and images is not None:
        raise ValueError("Pass one of --package (a task package) or --images DIR, not both.")
    if package is not None:
        if classes is not None or gold is not None:
            raise ValueError("--classes and --gold go with --images; a task package has its own.")
        return study_from_package(package, folder, **common)
    if images is None:
        raise ValueError("Pass --package (a task package) or --images DIR.")
    if not classes:
        raise ValueError("--images needs --classes, e.g. --classes normal,abnormal.")
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    return study_from_images(images, folder, classes=list(classes), kind=kind, gold=gold, **common)
