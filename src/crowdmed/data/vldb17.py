"""The truth-inference benchmark data of Zheng et al. (VLDB 2017), read where they are stored.

Five crowdsourcing data sets with a gold answer for every question, from the authors'
repository (https://github.com/zhydhkcws/crowd_truth_infer, folder ``datasets/``; no licence is
stated for the data, so crowdmed does not ship them). They live in the
``truth_inference_vldb17`` sub-folder of ``$CROWDMED_DATA`` (see
:func:`crowdmed.data.datasets.shared_data_path`); nothing is downloaded.

==============  ===========================================  =====  =======  =======  =======
name            task                                         items  workers  answers  classes
==============  ===========================================  =====  =======  =======  =======
``duck``        is it a duck (CUBAM bluebirds)               108    39       4,212    2
``product``     product entity resolution                    8,315  176      24,945   2
``dog``         dog breed                                    807    109      8,070    4
``face``        face sentiment                               584    27       5,242    4
``emotion``     emotion score (numeric, −100..100)           700    38       7,000    numeric
==============  ===========================================  =====  =======  =======  =======

Each data-set folder holds ``answer.csv`` (``question, worker, answer``) and ``truth.csv``
(``question, truth``).

Reference: Zheng, Li, Li, Shan & Cheng (2017). Truth inference in crowdsourcing: is the
problem solved? PVLDB 10(5), 541–552. https://doi.org/10.14778/3055540.3055547
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pandas as pd

from crowdmed.data.datasets import shared_data_path
from crowdmed.data.io import from_long_frame
from crowdmed.data.labels import CrowdLabels

__all__ = ["VLDB17_DATASETS", "VLDB17_FOLDER", "load_vldb17", "load_vldb17_table"]

#: Sub-folder of ``$CROWDMED_DATA`` holding the data.
VLDB17_FOLDER = "truth_inference_vldb17"

#: Short name -> folder under ``datasets/``.
VLDB17_DATASETS: dict[str, str] = {
    "duck": "d_Duck Identification",
    "product": "d_jn-product",
    "dog": "s4_Dog data",
    "face": "s4_Face Sentiment Identification",
    "emotion": "f201_Emotion_FULL",
}

_NUMERIC = frozenset({"emotion"})


def _dataset_folder(name: str, path: str | os.PathLike[str] | None) -> tuple[str, Path]:
    key = str(name).strip().lower()
    if key not in VLDB17_DATASETS:
        close = difflib.get_close_matches(key, list(VLDB17_DATASETS), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"`name` must be one of {list(VLDB17_DATASETS)}; got {name!r}.{hint}")
    if path is None:
        root = shared_data_path(VLDB17_FOLDER)
    else:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"`path` {str(root)!r} does not exist; pass the {VLDB17_FOLDER!r} folder or "
                "leave `path` unset to use $CROWDMED_DATA."
            )
    folder = root / "datasets" / VLDB17_DATASETS[key]
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{str(folder)!r} is missing; pass the {VLDB17_FOLDER!r} folder (it holds "
            "datasets/) or set CROWDMED_DATA to its parent."
        )
    return key, folder


def _read(folder: Path, filename: str, columns: tuple[str, ...]) -> pd.DataFrame:
    file = folder / filename
    if not file.is_file():
        raise FileNotFoundError(f"{str(file)!r} is missing; is the data folder complete?")
    df = pd.read_csv(file)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{str(file)!r} must have the columns {list(columns)}; missing {missing}. Is it the "
            "unmodified file from the data folder?"
        )
    return df


def load_vldb17_table(
    name: str, path: str | os.PathLike[str] | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    """Answers and gold of one VLDB'17 truth-inference data set, as tables.

    Args:
        name: ``"duck"``, ``"product"``, ``"dog"``, ``"face"`` or ``"emotion"``.
        path: The ``truth_inference_vldb17`` folder; ``$CROWDMED_DATA/truth_inference_vldb17``
            when omitted.

    Returns:
        ``answers``: a long table with columns ``item`` (question id), ``annotator`` (worker
        id) and ``label`` (the answer; numbers for ``"emotion"``), one row per answer, in file
        order. ``truth``: the gold answer of every question, indexed by ``item``, sorted.

    Raises:
        ValueError: Unknown ``name`` (the message suggests the closest) or a file without its
            columns.
        FileNotFoundError: The folder or a file is missing, or ``CROWDMED_DATA`` is unset.
    """
    _, folder = _dataset_folder(name, path)
    answers = _read(folder, "answer.csv", ("question", "worker", "answer"))
    truth = _read(folder, "truth.csv", ("question", "truth"))
    answers = answers.rename(columns={"question": "item", "worker": "annotator", "answer": "label"})
    gold = truth.set_index("question")["truth"].rename("truth").sort_index()
    gold.index.name = "item"
    return answers[["item", "annotator", "label"]], gold


def load_vldb17(name: str, path: str | os.PathLike[str] | None = None) -> CrowdLabels:
    """One categorical VLDB'17 data set as :class:`~crowdmed.data.CrowdLabels` with gold.

    The gold answers are in ``labels.gold`` (never used by ``fit`` unless passed explicitly).
    Classes are the sorted answer and gold values.

    Args:
        name: ``"duck"``, ``"product"``, ``"dog"`` or ``"face"``; the numeric ``"emotion"``
            data are read with :func:`load_vldb17_table`.
        path: The ``truth_inference_vldb17`` folder; ``$CROWDMED_DATA/truth_inference_vldb17``
            when omitted.

    Returns:
        The labels.

    Raises:
        ValueError: Unknown or numeric ``name``.
        FileNotFoundError: The folder or a file is missing, or ``CROWDMED_DATA`` is unset.
    """
    key, _ = _dataset_folder(name, path)
    if key in _NUMERIC:
        raise ValueError(
            f"`name` must be a categorical data set for CrowdLabels; got {name!r}, whose answers "
            "are numbers. Read it with load_vldb17_table and fit a continuous aggregator."
        )
    answers, truth = load_vldb17_table(key, path)
    classes = sorted(set(answers["label"].tolist()) | set(truth.tolist()))
    table = answers.assign(
        gold=answers["item"].map(truth).fillna(-1).astype(answers["label"].dtype)
    )
    return from_long_frame(
        table, item="item", annotator="annotator", label="label", gold="gold", classes=classes
    )
