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
    # the paper's refinement settings and trust prior strength by default
    assert (r.settings["refine_preset"], r.settings["tau"]) == ("paper", 0.5)
    # the AM-MV row's majority vote is eq. 2 (ties positive)
    from crowdmed.aggregation.classification.sens_spec import binary_majority_vote

    votes = __import__("pandas").read_csv(tmp_path / "votes.csv")
    assert set(r.truth["mv"].unique()) <= {0, 1}
    assert binary_majority_vote(np.array([[1, 0]]))[0] == 1
    assert len(votes) > 0


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


def test_aggnet_layer_starts_from_the_eq2_vote_and_one_m_step():
    """Albarqouni et al. (2016) II-B: mu from majority voting (eq. 2, ybar >= 0.5 -> 1),
    alpha and beta computed once from it (eq. 6, with the trust prior of eq. 8)."""
    import torch

    from crowdmed.training.classifier import CrowdClassifier, TrainMethod

    # (5 items, 3 annotators); eq. 2 vote: [1, 1 (tie), 0, 0, 1]
    dense = np.array([[1, 1, 0], [1, 0, -1], [0, 0, 1], [0, 0, 0], [1, 1, 1]])
    quiz = np.array([np.nan, np.nan, 0.8])
    clf = CrowdClassifier(torch.nn.Linear(2, 2), method="aggnet", progress=False)
    assert clf.tau == 0.5
    head = clf._build_head(TrainMethod.AGGNET, dense, 2, 3, quiz)
    alpha, beta = head.sensitivity.numpy(), head.specificity.numpy()
    # annotator 1: TP 2, FN 1 (items 0, 1, 4), TN 2, FP 0 -> 2/3 and 1
    # annotator 2 (gamma 0.8, tau 0.5: 1 + tau*gamma = 1.4): TP 1, FN 1, TN 1, FP 1
    #   -> 1.4 / 2.4 for both
    np.testing.assert_allclose(alpha, [1.0, 2 / 3, 1.4 / 2.4], atol=1e-9)
    np.testing.assert_allclose(beta, [1.0, 1.0, 1.4 / 2.4], atol=1e-9)
