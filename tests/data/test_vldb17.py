"""VLDB'17 truth-inference data: read from CROWDMED_DATA, never downloaded."""

import numpy as np
import pytest

from crowdmed.aggregation.continuous import ContinuousMean, ContinuousMedian
from crowdmed.data import load_vldb17, load_vldb17_table
from crowdmed.data.vldb17 import VLDB17_FOLDER


@pytest.fixture(scope="module")
def vldb(shared_data):
    path = shared_data / VLDB17_FOLDER
    if not path.is_dir():
        pytest.skip(f"{VLDB17_FOLDER} not found under {shared_data}")
    return path


# name, items, workers, answers, classes (from the data folder's README)
CATEGORICAL = [
    ("duck", 108, 39, 4212, 2),
    ("product", 8315, 176, 24945, 2),
    ("dog", 807, 109, 8070, 4),
    ("face", 584, 27, 5242, 4),
]


@pytest.mark.parametrize(("name", "items", "workers", "answers", "classes"), CATEGORICAL)
def test_categorical_sets(vldb, name, items, workers, answers, classes):
    cl = load_vldb17(name, vldb)
    assert (cl.n_items, cl.n_annotators, cl.n_labels, cl.n_classes) == (
        items,
        workers,
        answers,
        classes,
    )
    assert cl.gold is not None
    assert (cl.gold >= 0).all()


def test_emotion_table_and_baselines(vldb):
    answers, truth = load_vldb17_table("emotion", vldb)
    assert answers.shape == (7000, 3)
    assert list(answers.columns) == ["item", "annotator", "label"]
    assert answers["annotator"].nunique() == 38
    assert truth.shape == (700,)
    # Hand-checkable figures of the two baselines on these files.
    mean = ContinuousMean().fit(answers)
    err = mean.labels_ - truth.loc[mean.item_ids_].to_numpy()
    assert np.abs(err).mean() == pytest.approx(12.022, abs=5e-4)
    assert np.sqrt((err**2).mean()) == pytest.approx(17.835, abs=5e-4)
    median = ContinuousMedian().fit(answers)
    err = median.labels_ - truth.loc[median.item_ids_].to_numpy()
    assert np.abs(err).mean() == pytest.approx(13.529, abs=5e-4)


def test_errors(vldb, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'dog'"):
        load_vldb17("dogs", vldb)
    with pytest.raises(ValueError, match="whose answers are numbers"):
        load_vldb17("emotion", vldb)
    monkeypatch.delenv("CROWDMED_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="set CROWDMED_DATA"):
        load_vldb17_table("emotion")
    with pytest.raises(FileNotFoundError, match="datasets/"):
        load_vldb17_table("emotion", tmp_path)


def test_environment_variable(vldb, monkeypatch):
    monkeypatch.setenv("CROWDMED_DATA", str(vldb.parent))
    assert load_vldb17("duck").n_items == 108
