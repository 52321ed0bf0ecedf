"""``annotators.csv`` of the classify pipeline: DL-WDN's learned averaging weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from crowdmed.data import CrowdLabels
from crowdmed.pipelines.classify import annotator_frame, train_classifier


def _data(root: Path) -> dict[str, Path]:
    """60 items with 4 features, 3 annotators of accuracy 0.95, 0.75 and 0.55."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    truth = (x[:, 0] > 0).astype(int)
    ids = [f"c{i:02d}" for i in range(60)]
    rows = []
    for i in range(60):
        for a, acc in enumerate((0.95, 0.75, 0.55)):
            label = truth[i] if rng.random() < acc else 1 - truth[i]
            rows.append((ids[i], f"r{a}", ("neg", "pos")[label]))
    root.mkdir()
    pd.DataFrame(rows, columns=["item", "annotator", "label"]).to_csv(
        root / "labels.csv", index=False
    )
    np.save(root / "x.npy", x)
    (root / "ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    return {"labels": root / "labels.csv", "features": root / "x.npy", "ids": root / "ids.txt"}


def test_annotator_frame_adds_the_averaging_weights() -> None:
    cl = CrowdLabels.from_long(
        pd.DataFrame({"item": [0, 0, 1], "annotator": ["b", "a", "b"], "label": [0, 1, 1]})
    )
    table = annotator_frame(cl, None, np.array([0.25, 0.75]))
    assert table.columns.tolist() == ["annotator", "n_labels", "averaging_weight"]
    assert dict(zip(table["annotator"], table["averaging_weight"], strict=True)) == dict(
        zip(cl.annotator_ids, [0.25, 0.75], strict=True)
    )
    assert "averaging_weight" not in annotator_frame(cl, None).columns


@pytest.mark.parametrize("method", ["dl-wdn", "dl-dn"])
def test_dl_wdn_weights_in_annotators_csv(tmp_path: Path, method: str) -> None:
    d = _data(tmp_path / "data")
    run = train_classifier(
        d["labels"],
        tmp_path / "m",
        features=d["features"],
        feature_ids=d["ids"],
        method=method,
        epochs=3,
        batch_size=16,
        lr=0.01,
        patience=0,
        seed=0,
    )
    run.save(tmp_path / "m")
    table = pd.read_csv(tmp_path / "m" / "annotators.csv")
    assert table["annotator"].tolist() == ["r0", "r1", "r2"]
    assert table["n_labels"].tolist() == [60, 60, 60]
    if method == "dl-dn":  # majority vote of the heads: no learned weights
        assert "averaging_weight" not in table.columns
        return
    weights = run.classifier.averaging_weights_
    assert weights.shape == (3,)
    np.testing.assert_allclose(table["averaging_weight"], weights, rtol=1e-9)
    assert table["averaging_weight"].sum() == pytest.approx(1.0)
    assert np.ptp(weights) > 1e-4  # learned, not the uniform start
