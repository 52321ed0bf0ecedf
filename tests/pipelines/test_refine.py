"""Refinement with AggNet's aggregation layer and the AM-* baselines (stand-in network)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from crowdmed.data.io import from_long_frame  # noqa: E402
from crowdmed.metrics import roc_auc  # noqa: E402
from crowdmed.pipelines.refine import fine_tune, model_inputs, predict_proba, refine  # noqa: E402
from crowdmed.simulate.votes import simulate_votes  # noqa: E402


def _patches(n, rng):
    """Toy 33 x 33 patches: a mitosis is a dark blob at the centre, plus clutter elsewhere."""
    truth = rng.integers(0, 2, n)
    x = rng.uniform(0.6, 0.9, size=(n, 3, 33, 33)).astype(np.float32)
    yy, xx = np.mgrid[:33, :33]
    centre = ((yy - 16) ** 2 + (xx - 16) ** 2) <= 16
    for i in range(n):
        if truth[i]:
            x[i][:, centre] -= rng.uniform(0.3, 0.5)
        # a decoy blob off centre in half of the patches
        if rng.random() < 0.5:
            cy, cx = rng.integers(4, 29, 2)
            x[i][:, ((yy - cy) ** 2 + (xx - cx) ** 2) <= 9] -= 0.4
    return np.clip(x, 0, 1), truth


def _net(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 33 * 33, 2)
        )


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x_crowd, t_crowd = _patches(300, rng)
    x_test, t_test = _patches(300, rng)
    net = _net()  # the "unrefined" model: barely trained
    sim = simulate_votes(
        [f"t{i:03d}" for i in range(300)],
        t_crowd,
        n_annotators=20,
        votes_per_task=10,
        spammer_fraction=0.25,
        random_state=0,
    )
    votes = sim.votes.assign(label=(sim.votes["label"] == "mitosis").astype(int))
    cl = from_long_frame(votes, classes=[0, 1])
    order = np.array([int(t[1:]) for t in cl.item_ids])
    return net, x_crowd[order], t_crowd[order], x_test, t_test, cl, sim


def test_refine_improves_auc_and_finds_spammers(setup):
    net, x, truth, x_test, t_test, cl, sim = setup
    before = roc_auc(predict_proba(net, x_test), t_test)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []
    res = refine(
        net,
        x,
        cl,
        preset="fast",
        lr=3e-3,
        epochs=40,
        random_state=0,
        progress=lambda e, n, m: seen.append(e),
    )
    after = roc_auc(predict_proba(res.model, x_test), t_test)
    assert after > before + 0.1, (before, after)
    assert seen == list(range(1, 41))
    # the input network is not changed
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k])
    # inferred truth beats majority vote and the spammers are found
    mv = (cl.vote_counts()[:, 1] > cl.vote_counts()[:, 0]).astype(int)
    acc = (res.truth["label"].to_numpy() == truth).mean()
    assert acc >= (mv == truth).mean()
    assert acc > 0.9
    table = res.annotators.merge(sim.annotators[["annotator", "kind"]], on="annotator")
    means = table.groupby("kind")["spammer_score"].mean()
    assert means["spammer"] < 0.05 < means["honest"]
    assert list(res.truth.columns) == ["item", "p_mitosis", "label", "gold"]
    assert res.settings["batch_size"] == len(x)  # full batch, as in the paper


@pytest.mark.parametrize("target", ["mv", "glad", "gt"])
def test_baselines_train(setup, target):
    net, x, truth, x_test, _t_test, cl, _ = setup
    res = fine_tune(
        net, x, cl, target=target, truth=truth, preset="fast", lr=3e-3, epochs=10, random_state=0
    )
    assert res.method == f"am-{target}"
    assert len(res.history) == 10
    assert np.isfinite(predict_proba(res.model, x_test)).all()
    if target == "gt":
        np.testing.assert_array_equal(res.truth["label"], truth)


def test_refine_errors(setup):
    net, x, _truth, _, _, cl, _ = setup
    with pytest.raises(ValueError, match="one per item"):
        refine(net, x[:10], cl, epochs=1)
    with pytest.raises(TypeError, match="CrowdLabels"):
        refine(net, x, cl.to_dense(), epochs=1)
    with pytest.raises(ValueError, match="`target` must be one of"):
        fine_tune(net, x, cl, target="ds")
    with pytest.raises(ValueError, match="`truth`"):
        fine_tune(net, x, cl, target="gt")


def test_model_inputs_downsamples_context_crops():
    crops = np.zeros((2, 99, 99, 3), np.uint8)
    crops[1] = 255
    x = model_inputs(crops, 33)
    assert x.shape == (2, 3, 33, 33)
    assert x.dtype == np.float32
    assert x[0].max() == 0
    assert x[1].min() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        model_inputs(np.zeros((2, 3, 33, 33)))


def test_refining_a_scale_the_detector_was_not_trained_at_names_its_scales():
    from crowdmed.nn.aggnet import AggNetCNN
    from crowdmed.pathology.detector import MultiScaleDetector
    from crowdmed.pipelines.refine import scale_index

    det = MultiScaleDetector([0.5, 1.0], [AggNetCNN(), AggNetCNN()])
    assert scale_index(det, 0.5) == 0
    with pytest.raises(ValueError, match=r"scales are \[0.5, 1.0\].*--scale"):
        scale_index(det, 0.33)


def test_paper_preset_is_the_papers_refinement(setup):
    """Albarqouni et al. (2016) III-2: SGD, momentum 0.9, weight decay 5e-4; refinement at
    learning rate 5e-5 with the whole crowd set as the batch; III-5: 100 epochs."""
    net, x, _truth, _x_test, _t_test, cl, _ = setup
    res = refine(net, x, cl, epochs=2, random_state=0)
    s = res.settings
    assert (s["preset"], s["optimizer"], s["momentum"], s["weight_decay"], s["lr"]) == (
        "paper",
        "sgd",
        0.9,
        5e-4,
        5e-5,
    )
    assert s["batch_size"] == len(x)
    assert s["tau"] == 0.5
    from crowdmed.pipelines.refine import REFINE_PRESETS

    assert REFINE_PRESETS["paper"]["epochs"] == 100
    with pytest.raises(ValueError, match=r"`preset` must be one of \['paper', 'fast'\]"):
        refine(net, x, cl, preset="slow")


def test_am_mv_targets_follow_eq2_ties_positive(setup):
    """AM-MV trains on the eq. 2 vote: ybar >= 0.5 -> 1, so a tied item is positive."""
    net, x, _truth, _x_test, _t_test, cl, _ = setup
    from crowdmed.aggregation.classification.sens_spec import binary_majority_vote

    res = fine_tune(net, x, cl, target="mv", preset="fast", epochs=1, random_state=0)
    dense = cl.to_dense()
    np.testing.assert_array_equal(res.truth["label"].to_numpy(), binary_majority_vote(dense))
    n1, n = (dense == 1).sum(axis=1), (dense >= 0).sum(axis=1)
    tied = 2 * n1 == n
    assert (res.truth["label"].to_numpy()[tied] == 1).all()


def test_refine_that_diverges_stops_with_a_clear_error(setup):
    from crowdmed.training import NonFiniteLossError

    net, x, _truth, _, _, cl, _ = setup
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"became (NaN|inf) (at|after) epoch \d+"):
        refine(net, x, cl, epochs=5, lr=1e30)
    # the network given is left as it was (refine trains a copy)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("target", ["aggnet", "mv"])
def test_the_last_epoch_is_kept(setup, target):
    """The paper keeps the 'best performing' of 100 epochs but names no criterion: keep the last."""
    net, x, cl = setup[0], setup[1], setup[5]

    def run(epochs):
        if target == "aggnet":
            return refine(net, x, cl, preset="fast", lr=3e-3, epochs=epochs, random_state=0)
        return fine_tune(net, x, cl, target=target, preset="fast", lr=3e-3, epochs=epochs)

    two, three = run(2), run(3)
    assert three.settings["kept_epoch"] == 3
    assert two.settings["kept_epoch"] == 2
    assert [h["epoch"] for h in three.history] == [1, 2, 3]
    # the third epoch's step is in the kept weights: a run of 3 epochs is not the run of 2
    p2, p3 = predict_proba(two.model, x), predict_proba(three.model, x)
    assert np.abs(p3 - p2).max() > 1e-6
    np.testing.assert_allclose(predict_proba(run(3).model, x), p3, atol=1e-7)  # seeded
