"""The synthetic crowd loop end to end (tiny and, marked slow, at demo size)."""

import numpy as np
import pytest

pytest.importorskip("torch")

from crowdmed.pipelines.aggnet_loop import run_crowd_loop


def test_tiny_loop_runs_every_step(tmp_path):
    import torch

    torch.set_num_threads(1)
    steps = []
    r = run_crowd_loop(
        n_train=3,
        n_crowd=4,
        n_gold_fields=2,
        n_test=3,
        size=(96, 96),
        detector_epochs=1,
        refine_epochs=3,
        n_annotators=12,
        workdir=tmp_path,
        random_state=0,
        progress=lambda s, i, n: steps.append((s, i, n)),
    )
    assert next(s for s, _, _ in steps) == "generate fields"
    assert len(steps) == 9
    assert r.metrics["model"].tolist() == [
        "detector (fused, 0.5)",
        "unrefined",
        "AM-MV",
        "AM-GLAD",
        "AM-GT",
        "AggNet",
    ]
    assert set(r.timings) == {s for s, _, _ in steps}
    assert r.package is not None
    assert (tmp_path / "package" / "manifest.csv").is_file()
    assert (tmp_path / "votes.csv").is_file()
    assert len(r.maps) == 3
    assert all(m.shape == (96, 96) for m in r.maps.values())
    assert {"kind", "quiz_accuracy", "est_spammer_score"} <= set(r.annotators.columns)
    assert r.truth["is_gold"].any()
    assert np.isfinite(r.metrics.loc[r.metrics["model"] == "AM-GT", "truth_accuracy"]).all()


@pytest.mark.slow
def test_demo_loop_refinement_improves_auc():
    import torch

    torch.set_num_threads(1)
    r = run_crowd_loop(random_state=0)
    auc = r.metrics.set_index("model")["auc"]
    assert auc["AggNet"] > auc["unrefined"]
    ann = r.annotators
    assert (
        ann.loc[ann["kind"] == "spammer", "est_spammer_score"].mean()
        < ann.loc[ann["kind"] == "honest", "est_spammer_score"].mean()
    )
