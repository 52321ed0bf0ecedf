"""Loaders for real multi-annotator medical data sets that are not shipped with crowdmed.

The files stay where they are (one sub-folder of ``$CROWDMED_DATA`` per data set, each with a
README giving origin and licence; see :func:`crowdmed.data.datasets.shared_data_path`). Nothing
is downloaded and nothing is copied.

* ``tupac_mitosis_alt_labels``: two pathologists' labels of 12,482 candidate cells of the
  TUPAC16 auxiliary mitosis data (Bertram et al. 2020): :func:`load_tupac_alt_table` (one row
  per cell) and :func:`load_tupac_alt_labels` (:class:`~crowdmed.data.CrowdLabels`).
* ``enhance_isic_crowd``: crowd (MTurk) and student scores of asymmetry, border and colour of
  ISIC 2017 skin-lesion images with the ISIC diagnosis (Raumanns et al. 2021, the data of
  Cheplygina & Pluim 2018): :func:`load_isic_crowd`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crowdmed.data.datasets import shared_data_path
from crowdmed.data.labels import CrowdLabels

__all__ = [
    "ISIC_CROWD_FOLDER",
    "TUPAC_ALT_FOLDER",
    "IsicCrowd",
    "load_isic_crowd",
    "load_tupac_alt_labels",
    "load_tupac_alt_table",
]

#: Sub-folder of ``$CROWDMED_DATA`` with the TUPAC16 alternative labels.
TUPAC_ALT_FOLDER = "tupac_mitosis_alt_labels"
#: Sub-folder of ``$CROWDMED_DATA`` with the ENHANCE crowd/student ABC scores of ISIC images.
ISIC_CROWD_FOLDER = "enhance_isic_crowd"

_TUPAC_CSV = "tupac_alt_labels_per_cell.csv"
_TUPAC_COLUMNS = (
    "anno_id",
    "slide_id",
    "slide_filename",
    "x",
    "y",
    "label_expert1_Christof",
    "label_expert2_Robert",
    "label_consensus",
    "agreed_class",
)
#: SlideRunner class ids of the TUPAC database -> class names (index 1 is the positive class).
_TUPAC_CLASSES = {2: "hard_negative", 1: "mitotic_figure"}
_TUPAC_EXPERTS = {"label_expert1_Christof": "expert1", "label_expert2_Robert": "expert2"}

_ISIC_GT = Path("0_data") / "external" / "ISIC-2017_Training_Part3_GroundTruth.csv"
_ISIC_FEATURES = ("asymmetry", "border", "color")
_STUDENT_YEAR = "2017-2018"


def _folder(path: str | os.PathLike[str] | None, folder: str) -> Path:
    """The data folder: ``path`` when given (must exist), else ``$CROWDMED_DATA/<folder>``."""
    if path is None:
        return shared_data_path(folder)
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"`path` {str(p)!r} does not exist; pass the {folder!r} folder or leave `path` "
            "unset to use $CROWDMED_DATA."
        )
    return p


def _require_file(path: Path, folder: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is missing; pass the {folder!r} folder (it holds that file) or set "
            "CROWDMED_DATA to its parent."
        )
    return path


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{str(path)!r} must have the columns {list(columns)}; missing {missing}. Is it the "
            "unmodified file from the data folder?"
        )


# ---------------------------------------------------------------------------------- TUPAC


def load_tupac_alt_table(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The TUPAC16 "alternative labels" of Bertram et al. (2020), one row per candidate cell.

    12,482 candidate cells (point annotations) in the 73 stitched high-power-field images of
    the TUPAC16 auxiliary training set, each labelled by two pathologists as mitotic figure or
    hard negative (a look-alike). A third label, ``consensus``, exists where the two were
    reviewed together (6,308 cells), and ``agreed`` is the database's final label. Class names:
    ``"mitotic_figure"`` (SlideRunner class 1) and ``"hard_negative"`` (class 2). Expert 2
    has no label for one cell (``None``). No licence is stated by the source; the data are not
    shipped (see the folder's README).

    Args:
        path: The ``tupac_mitosis_alt_labels`` folder, or its ``tupac_alt_labels_per_cell.csv``;
            ``$CROWDMED_DATA/tupac_mitosis_alt_labels`` when omitted.

    Returns:
        Columns ``cell`` (the database's annotation id), ``slide_id``, ``slide`` (image file
        name), ``x``, ``y`` (pixels), ``expert1``, ``expert2``, ``consensus`` and ``agreed``
        (class names as strings; ``None`` where absent), in file order.

    Raises:
        FileNotFoundError: ``path`` or the CSV does not exist, or ``CROWDMED_DATA`` is unset.
        ValueError: The CSV lacks a column or has a class id other than 1 or 2.

    References:
        Bertram, Veta, Marzahl, Stathonikos, Maier, Klopfleisch & Aubreville (2020). Are
        pathologist-defined labels reproducible? Comparison of the TUPAC16 mitotic figure
        dataset with an alternative set of labels. UNSURE/LABELS @ MICCAI 2020.
        https://arxiv.org/abs/2007.05351
    """
    p = _folder(path, TUPAC_ALT_FOLDER)
    csv = _require_file(p / _TUPAC_CSV if p.is_dir() else p, TUPAC_ALT_FOLDER)
    raw = pd.read_csv(csv)
    _require_columns(raw, _TUPAC_COLUMNS, csv)
    out = pd.DataFrame(
        {
            "cell": raw["anno_id"].to_numpy(),
            "slide_id": raw["slide_id"].to_numpy(),
            "slide": raw["slide_filename"].astype(str).to_numpy(),
            "x": raw["x"].to_numpy(),
            "y": raw["y"].to_numpy(),
        }
    )
    for src, dst in (
        *_TUPAC_EXPERTS.items(),
        ("label_consensus", "consensus"),
        ("agreed_class", "agreed"),
    ):
        values = pd.to_numeric(raw[src], errors="coerce")
        bad = values.notna() & ~values.isin(list(_TUPAC_CLASSES))
        if (raw[src].notna() & values.isna()).any() or bad.any():
            rows = (np.flatnonzero(bad | (raw[src].notna() & values.isna())) + 2)[:5].tolist()
            raise ValueError(
                f"{str(csv)!r} column {src!r} must hold SlideRunner class ids 1 (mitotic figure) "
                f"or 2 (hard negative); got other values on lines {rows}."
            )
        out[dst] = values.map(_TUPAC_CLASSES).astype(object).where(values.notna(), None)
    if out["agreed"].isna().any():
        raise ValueError(f"{str(csv)!r} column 'agreed_class' must be set for every cell.")
    if out["cell"].duplicated().any():
        dup = out.loc[out["cell"].duplicated(), "cell"].head(5).tolist()
        raise ValueError(f"{str(csv)!r} column 'anno_id' must be unique; repeated ids {dup}.")
    return out


def load_tupac_alt_labels(path: str | os.PathLike[str] | None = None) -> CrowdLabels:
    """The two pathologists' TUPAC16 labels as binary :class:`~crowdmed.data.CrowdLabels`.

    Items are the 12,482 candidate cells of :func:`load_tupac_alt_table` (ids: the database's
    annotation ids), annotators ``"expert1"`` and ``"expert2"`` (12,481 cells have both labels,
    one cell only expert 1's), classes ``["hard_negative", "mitotic_figure"]`` so class index
    1 is the positive class. ``gold`` holds the database's final (agreed) label of every cell;
    it is for evaluation and is never used by ``fit`` unless passed explicitly.

    Args:
        path: The ``tupac_mitosis_alt_labels`` folder, or its ``tupac_alt_labels_per_cell.csv``;
            ``$CROWDMED_DATA/tupac_mitosis_alt_labels`` when omitted.

    Returns:
        The labels, items in file order.

    Raises:
        FileNotFoundError: ``path`` or the CSV does not exist, or ``CROWDMED_DATA`` is unset.
        ValueError: The CSV lacks a column or has an unknown class id.
    """
    table = load_tupac_alt_table(path)
    classes = ["hard_negative", "mitotic_figure"]
    index = {name: k for k, name in enumerate(classes)}
    item_idx = np.arange(len(table), dtype=np.int64)
    items, annotators, labels = [], [], []
    for a, column in enumerate(_TUPAC_EXPERTS.values()):
        has = table[column].notna().to_numpy()
        items.append(item_idx[has])
        annotators.append(np.full(int(has.sum()), a, dtype=np.int64))
        labels.append(table.loc[has, column].map(index).to_numpy(dtype=np.int64))
    gold = table["agreed"].map(index).to_numpy(dtype=np.int64)
    return CrowdLabels.from_triplets(
        np.concatenate(items),
        np.concatenate(annotators),
        np.concatenate(labels),
        n_items=len(table),
        n_annotators=2,
        n_classes=2,
        item_ids=table["cell"].to_numpy(),
        annotator_ids=np.array(list(_TUPAC_EXPERTS.values())),
        classes=np.array(classes),
        gold=gold,
    )


# ---------------------------------------------------------------------------------- ISIC


@dataclass(frozen=True)
class IsicCrowd:
    """Per-annotator ABC scores of ISIC 2017 images and their diagnosis.

    Attributes:
        scores: Long table, one row per (image, annotator, feature): columns ``image_id``,
            ``group`` (``"mturk"`` for the crowd; ``"2017-2018/groupNN"`` for students),
            ``annotator`` (unique across groups), ``feature`` (lower case, e.g.
            ``"asymmetry"``, ``"border"``, ``"color"``) and ``score`` (``float64``; rows
            without a score are dropped).
        diagnosis: One row per image with a score, indexed by ``image_id``: ``melanoma`` and
            ``seborrheic_keratosis`` (``int64`` 0/1, from the ISIC 2017 ground truth).
        source: ``"crowd"`` or ``"student"``.
    """

    scores: pd.DataFrame
    diagnosis: pd.DataFrame
    source: str

    def per_annotator(self, features: tuple[str, ...] | None = None) -> pd.DataFrame:
        """The scores as one row per (image, annotator), one column per feature.

        This is the input of :func:`crowdmed.quality.crowd_features`
        (``item="image_id"``).

        Args:
            features: Features to keep (columns, in this order); every feature when omitted.

        Returns:
            Columns ``image_id``, ``group``, ``annotator`` and one ``float64`` column per
            feature (``NaN`` where that annotator did not score it); rows without any of the
            requested scores are dropped.

        Raises:
            ValueError: If a requested feature does not occur in :attr:`scores`.
        """
        known = list(pd.unique(self.scores["feature"]))
        names = known if features is None else list(features)
        unknown = [f for f in names if f not in known]
        if unknown:
            raise ValueError(f"`features` {unknown} are not scored here; choose from {known}.")
        sub = self.scores[self.scores["feature"].isin(names)]
        wide = sub.pivot_table(
            index=["image_id", "group", "annotator"],
            columns="feature",
            values="score",
            aggfunc="first",
            sort=False,
        )
        wide = wide.reindex(columns=names).dropna(how="all")
        wide.columns.name = None
        return wide.reset_index()


def _read_isic_truth(root: Path) -> pd.DataFrame:
    csv = _require_file(root / _ISIC_GT, ISIC_CROWD_FOLDER)
    gt = pd.read_csv(csv)
    _require_columns(gt, ("image_id", "melanoma", "seborrheic_keratosis"), csv)
    out = gt.set_index("image_id")[["melanoma", "seborrheic_keratosis"]]
    values = out.to_numpy(dtype=np.float64)
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"{str(csv)!r} must hold 0/1 diagnoses; got other values.")
    return out.astype(np.int64)


def _crowd_scores(root: Path) -> pd.DataFrame:
    frames = []
    for feature in _ISIC_FEATURES:
        csv = _require_file(root / "0_data" / "crowd" / f"{feature}.csv", ISIC_CROWD_FOLDER)
        wide = pd.read_csv(csv)
        _require_columns(wide, ("ID", "i", "ii", "iii"), csv)
        long = wide.melt(id_vars="ID", value_vars=["i", "ii", "iii"], var_name="slot")
        frames.append(
            pd.DataFrame(
                {
                    "image_id": long["ID"].astype(str),
                    "group": "mturk",
                    "annotator": "mturk_" + long["slot"],
                    "feature": feature,
                    "score": pd.to_numeric(long["value"], errors="coerce").astype(np.float64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


_ANNOTATOR_SUFFIX = re.compile(r"_(\d+)$")


def _student_scores(root: Path) -> pd.DataFrame:
    """The 2017-2018 student groups; feature names from ``data_types.csv`` by column position.

    The annotator is the trailing number of each column header (unique within a group).
    Group 8 scores the border twice (headers ``Border1_*`` and ``Border2_*``), kept as
    ``border1`` and ``border2``; ``Color_Categorised`` becomes ``color_categorised``.
    """
    folder = root / "0_data" / "student" / _STUDENT_YEAR
    types_csv = _require_file(folder / "data_types.csv", ISIC_CROWD_FOLDER)
    types = pd.read_csv(types_csv, sep=";", encoding="utf-8-sig").set_index("group_num")
    frames = []
    for group, row in types.iterrows():
        name = f"group{int(str(group)):02d}"
        csv = _require_file(folder / f"{name}.csv", ISIC_CROWD_FOLDER)
        wide = pd.read_csv(csv, sep=";", encoding="utf-8-sig")
        wide = wide.loc[:, ~wide.columns.str.startswith("Unnamed")]
        _require_columns(wide, ("ID",), csv)
        score_cols = [c for c in wide.columns if c != "ID"]
        kinds = [str(v) for v in row.to_numpy() if isinstance(v, str) and v.strip()]
        if len(kinds) != len(score_cols):
            raise ValueError(
                f"{str(csv)!r} has {len(score_cols)} score columns but data_types.csv lists "
                f"{len(kinds)} for group {group}; the files do not match."
            )
        wide = wide.dropna(subset=["ID"])
        for column, kind in zip(score_cols, kinds, strict=True):
            m = _ANNOTATOR_SUFFIX.search(column)
            if m is None:
                raise ValueError(
                    f"{str(csv)!r} column {column!r} does not end in _<annotator number>."
                )
            prefix = column.split("_", 1)[0]
            feature = kind.lower()
            if prefix[-1:].isdigit() and prefix.lower().startswith(feature):
                feature = prefix.lower()  # Border1 / Border2 of group 8
            frames.append(
                pd.DataFrame(
                    {
                        "image_id": wide["ID"]
                        .astype(str)
                        .str.strip()
                        .str.rstrip("."),  # group 8 writes "ISIC_0010327."
                        "group": f"{_STUDENT_YEAR}/{name}",
                        "annotator": f"{name}_s{m.group(1)}",
                        "feature": feature,
                        "score": pd.to_numeric(wide[column], errors="coerce").astype(np.float64),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def load_isic_crowd(
    path: str | os.PathLike[str] | None = None, *, source: str = "crowd"
) -> IsicCrowd:
    """ABC feature scores of ISIC 2017 skin-lesion images from several annotators (ENHANCE).

    ``source="crowd"``: 1,250 ISIC 2017 training images, each scored by 3 Amazon MTurk workers
    for asymmetry (0-2), border (0-8) and colour (0-6). The columns ``i``, ``ii``, ``iii`` of
    the source files are answer slots, not persons: worker identity is not given, so the
    annotators ``mturk_i`` .. ``mturk_iii`` are exchangeable and per-annotator reliability
    across the data set is meaningless.

    ``source="student"``: the 2017-2018 undergraduate groups (8 groups of about 100 images,
    3 to 6 students each; the student cohort of Cheplygina & Pluim 2018). Each group chose its
    own features and scales (``asymmetry``, ``border``, ``color``, and e.g. ``dermo``,
    ``blood``, ``blue``, ``color_categorised``), so scores are comparable within a group only.
    Annotators are ``"groupNN_sK"``.

    The diagnosis comes from the ISIC 2017 Part 3 ground truth (melanoma, seborrheic
    keratosis, or neither: naevus). Data: Raumanns et al., ENHANCE (MELBA 2021); no licence
    is stated by the source, so the data are not shipped.

    Args:
        path: The ``enhance_isic_crowd`` folder; ``$CROWDMED_DATA/enhance_isic_crowd`` when
            omitted.
        source: ``"crowd"`` or ``"student"``.

    Returns:
        The scores (long table) and the diagnosis of every scored image.

    Raises:
        FileNotFoundError: The folder or one of its files is missing, or ``CROWDMED_DATA`` is
            unset.
        ValueError: ``source`` is unknown, a file lacks a column, or a scored image has no
            diagnosis.

    References:
        Raumanns, Schouten, Joosten, Pluim & Cheplygina (2021). ENHANCE (ENriching Health data
        by ANnotations of Crowd and Experts): A case study for skin lesion classification.
        MELBA 2021. Data: https://github.com/raumannsr/ENHANCE
        Cheplygina & Pluim (2018). Crowd disagreement about medical images is informative.
        LABELS @ MICCAI 2018. https://doi.org/10.1007/978-3-030-01364-6_12
    """
    if source not in ("crowd", "student"):
        raise ValueError(f"`source` must be 'crowd' or 'student'; got {source!r}.")
    root = _folder(path, ISIC_CROWD_FOLDER)
    if not root.is_dir():
        raise FileNotFoundError(
            f"`path` {str(root)!r} must be the {ISIC_CROWD_FOLDER!r} folder, not a file."
        )
    truth = _read_isic_truth(root)
    scores = _crowd_scores(root) if source == "crowd" else _student_scores(root)
    scores = scores.dropna(subset=["score"]).reset_index(drop=True)
    images = pd.unique(scores["image_id"])
    unknown = [i for i in images if i not in truth.index]
    if unknown:
        raise ValueError(
            f"Images {unknown[:5]} ({len(unknown)} in all) have scores but no ISIC 2017 "
            "diagnosis; the ground-truth file does not match the score files."
        )
    return IsicCrowd(scores=scores, diagnosis=truth.loc[images].copy(), source=source)
