"""AutoAggregator: annotation folds, the criteria and the choice."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest

from crowdmed.aggregation import AutoAggregator, DawidSkene, MajorityVote, make_aggregator
from crowdmed.aggregation.classification.auto import (
    POOLED_STRENGTH,
    UNIFORM_MIX,
    annotation_folds,
    chance_corrected_agreement,
    consensus_log_likelihood,
    held_out_agreement,
    held_out_log_likelihood,
)
from crowdmed.data import CrowdLabels


def _crowd(seed: int = 0, n_items: int = 300) -> tuple[CrowdLabels, np.ndarray]:
    """3 good annotators and 4 who answer 0 whatever the truth (a majority of spammers)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n_items)
    cols = []
    for _ in range(3):
        cols.append(np.where(rng.random(n_items) < 0.9, truth, 1 - truth))
    for _ in range(4):
        cols.append(np.where(rng.random(n_items) < 0.95, 0, 1))
    return CrowdLabels.from_dense(np.stack(cols, axis=1)), truth


def test_annotation_folds_keep_a_label_per_item() -> None:
    # items with 1, 2, 3 and 7 labels (a dense 4 x 7 matrix with -1 for missing)
    dense = np.full((4, 7), -1)
    dense[0, 0] = 1
    dense[1, :2] = 0
    dense[2, :3] = 1
    dense[3, :] = 0
    cl = CrowdLabels.from_dense(dense)
    folds = annotation_folds(cl, 3, random_state=0)
    assert folds.shape == (cl.n_labels,)
    assert folds[cl.items == 0].tolist() == [-1]  # one label: never held out
    for item, n in ((1, 2), (2, 3), (3, 7)):
        f = folds[cl.items == item]
        counts = np.bincount(f, minlength=3)
        # dealt round-robin: fold sizes differ by at most one, never all labels in one fold
        assert counts.max() - counts.min() <= 1
        assert counts.max() < n
    np.testing.assert_array_equal(folds, annotation_folds(cl, 3, random_state=0))


def test_held_out_log_likelihood_by_hand() -> None:
    """P(label) = Σ_k post[i, k] conf[a, k, l], mixed with ε of a uniform distribution."""
    train = CrowdLabels.from_dense(np.array([[0, -1], [1, 1]]))
    held = CrowdLabels.from_dense(np.array([[-1, 1], [-1, -1]]), n_classes=2)
    agg = types.SimpleNamespace(
        posteriors_=np.array([[0.8, 0.2], [0.1, 0.9]]),
        confusion_=np.array([[[0.9, 0.1], [0.3, 0.7]], [[0.6, 0.4], [0.2, 0.8]]]),
    )
    # annotator 1 says 1 on item 0: 0.8 * 0.4 + 0.2 * 0.8 = 0.48
    eps = UNIFORM_MIX
    expected = np.log((1 - eps) * 0.48 + eps / 2)
    np.testing.assert_allclose(held_out_log_likelihood(agg, train, held), [expected])


def test_held_out_log_likelihood_without_confusion_uses_empirical_model() -> None:
    """No confusion_: the annotator's confusion against the posteriors, 0.5 pseudo-counts."""
    train = CrowdLabels.from_dense(np.array([[0, -1], [1, 1], [0, 0]]))
    held = CrowdLabels.from_dense(np.array([[-1, 1], [-1, -1], [-1, -1]]), n_classes=2)
    agg = types.SimpleNamespace(posteriors_=np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    # annotator 1 in training: says 1 on a class-1 item, 0 on a class-0 item
    # row k=0: counts [1, 0] + 0.5 -> [0.75, 0.25]; P(says 1 | item 0 of class 0) = 0.25
    eps = UNIFORM_MIX
    np.testing.assert_allclose(
        held_out_log_likelihood(agg, train, held), [np.log((1 - eps) * 0.25 + eps / 2)]
    )


def _hand_case() -> tuple[CrowdLabels, CrowdLabels, types.SimpleNamespace]:
    """Training labels (0, ·), (1, 1); annotator 1 says 1 on item 0 in the held-out fold."""
    train = CrowdLabels.from_dense(np.array([[0, -1], [1, 1]]))
    held = CrowdLabels.from_dense(np.array([[-1, 1], [-1, -1]]), n_classes=2)
    agg = types.SimpleNamespace(
        posteriors_=np.array([[0.8, 0.2], [0.1, 0.9]]), labels_=np.array([0, 1])
    )
    return train, held, agg


def test_held_out_agreement_by_hand() -> None:
    """The posterior of the held-out label's class on its item: 0.2."""
    _, held, agg = _hand_case()
    np.testing.assert_allclose(held_out_agreement(agg, held), [0.2])


def test_chance_corrected_agreement_by_hand() -> None:
    """0.2 minus Σ_k rate[1, k] post[0, k], the rate shrunk toward the pooled one."""
    train, held, agg = _hand_case()
    # training labels per annotator: a0 [1, 1], a1 [0, 1]; pooled ([1, 2] + 0.5) / (3 + 1)
    pooled = np.array([1.5, 2.5]) / 4
    rate1 = (np.array([0.0, 1.0]) + POOLED_STRENGTH * pooled) / (1 + POOLED_STRENGTH)
    np.testing.assert_allclose(rate1, [0.3125, 0.6875])  # with POOLED_STRENGTH = 5
    expected = 0.2 - (0.8 * rate1[0] + 0.2 * rate1[1])
    np.testing.assert_allclose(chance_corrected_agreement(agg, train, held), [expected])
    np.testing.assert_allclose(expected, -0.1875)


def test_chance_corrected_agreement_ignores_a_constant_annotator() -> None:
    """An annotator who always says 0 adds (close to) nothing, whatever the consensus."""
    n = 2000
    dense = np.stack([np.zeros(n, dtype=np.int64), np.arange(n) % 2], axis=1)
    held_mask = np.zeros_like(dense, dtype=bool)
    held_mask[:4, 0] = True  # annotator 0's labels on items 0-3 are held out
    train = CrowdLabels.from_dense(np.where(held_mask, -1, dense))
    held = CrowdLabels.from_dense(np.where(held_mask, dense, -1), n_classes=2)
    post = np.full((n, 2), 0.5)
    post[:4] = [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.05, 0.95]]
    agg = types.SimpleNamespace(posteriors_=post)
    # rate of annotator 0: 1996 zeros plus 5 pooled pseudo-labels, nearly [1, 0]
    scores = chance_corrected_agreement(agg, train, held)
    assert np.abs(scores).max() < 2e-3
    # without the correction, agreement follows the consensus: 0.9, 0.3, 0.6, 0.05
    np.testing.assert_allclose(held_out_agreement(agg, held), [0.9, 0.3, 0.6, 0.05])


def test_consensus_log_likelihood_by_hand() -> None:
    """Annotator 1's confusion against the consensus, shrunk toward the pooled one."""
    train, held, agg = _hand_case()
    # counts n[a, consensus, label]: a0 (0, 0) and (1, 1); a1 (1, 1)
    # pooled [[1, 0], [0, 2]] + 0.5 -> rows [[0.75, 0.25], [1/6, 5/6]]
    # a1 row of consensus 0: (0 + 5 * [0.75, 0.25]) / 5 = [0.75, 0.25]
    eps = UNIFORM_MIX
    expected = np.log((1 - eps) * 0.25 + eps / 2)
    np.testing.assert_allclose(consensus_log_likelihood(agg, train, held), [expected])
    # a hard consensus only: other posteriors with the same argmax give the same score
    agg2 = types.SimpleNamespace(posteriors_=np.array([[0.55, 0.45], [0.4, 0.6]]))
    np.testing.assert_allclose(consensus_log_likelihood(agg2, train, held), [expected])


def test_auto_agreement_prefers_majority_vote_over_a_majority_of_spammers() -> None:
    """The failure mode of `agreement`: annotators who give one class whatever the item.

    Four of seven annotators say 0 on 95 % of the items: the majority vote, mostly 0, agrees
    with them, so `agreement` prefers it although it is less accurate; `kappa` removes the
    agreement expected by chance and chooses Dawid–Skene.
    """
    cl, truth = _crowd()
    auto = AutoAggregator(candidates=["majority-vote", "dawid-skene"], random_state=0).fit(cl)
    assert auto.criterion == "agreement"
    assert auto.chosen_ == "majority-vote"
    assert auto.scores_ is auto.criterion_scores_["agreement"]
    assert (
        auto.criterion_scores_["kappa"]["dawid-skene"]
        > (auto.criterion_scores_["kappa"]["majority-vote"])
    )
    mv = np.mean(MajorityVote().fit(cl).labels_ == truth)
    assert np.mean(DawidSkene().fit(cl).labels_ == truth) > mv


def test_auto_prefers_dawid_skene_over_a_majority_of_spammers() -> None:
    cl, truth = _crowd()
    auto = AutoAggregator(
        candidates=["majority-vote", "dawid-skene"], criterion="kappa", random_state=0
    ).fit(cl)
    assert set(auto.scores_) == {"majority-vote", "dawid-skene"}
    assert auto.chosen_ == "dawid-skene"
    assert auto.scores_["dawid-skene"] > auto.scores_["majority-vote"]
    # the other criteria that allow for class-dependent errors agree here
    for c in ("likelihood", "consensus"):
        assert auto.criterion_scores_[c]["dawid-skene"] > auto.criterion_scores_[c]["majority-vote"]
    assert auto.n_held_out_ == cl.n_labels  # every item has 7 labels
    # the chosen model refitted on all labels, with the seed the candidates got
    seed = int(np.random.default_rng(0).integers(2**31))
    ds = DawidSkene(random_state=seed).fit(cl)
    np.testing.assert_allclose(auto.posteriors_, ds.posteriors_)
    np.testing.assert_array_equal(auto.labels_, ds.labels_)
    assert auto.confusion_ is auto.estimator_.confusion_  # read through to the chosen model
    assert np.mean(auto.labels_ == truth) > np.mean(MajorityVote().fit(cl).labels_ == truth)


@pytest.mark.parametrize("criterion", ["agreement", "kappa", "likelihood", "consensus"])
def test_auto_scores_are_means_over_held_out_labels(criterion: str) -> None:
    """The score of a method is the mean over the folds' held-out labels, recomputed here."""
    cl, _ = _crowd(n_items=60)
    auto = AutoAggregator(
        candidates=["one-coin"], criterion=criterion, n_folds=3, random_state=5
    ).fit(cl)
    rng = np.random.default_rng(5)
    seed = int(rng.integers(2**31))
    folds = annotation_folds(cl, 3, rng)
    score = {
        "agreement": lambda agg, tr, ho: held_out_agreement(agg, ho),
        "kappa": chance_corrected_agreement,
        "likelihood": held_out_log_likelihood,
        "consensus": consensus_log_likelihood,
    }[criterion]
    total = 0.0
    for f in range(3):
        held = folds == f

        def subset(keep: np.ndarray) -> CrowdLabels:
            return CrowdLabels.from_triplets(
                cl.items[keep], cl.annotators[keep], cl.labels[keep],
                n_items=cl.n_items, n_annotators=cl.n_annotators, n_classes=2,
            )  # fmt: skip

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            agg = make_aggregator("one-coin", random_state=seed).fit(subset(~held))
        total += score(agg, subset(~held), subset(held)).sum()
    assert auto.scores_["one-coin"] == pytest.approx(total / cl.n_labels)
    assert auto.criterion_scores_[criterion] is auto.scores_


def test_auto_leaves_out_binary_methods_on_more_classes() -> None:
    labels = np.array([[0, 0, 1], [2, 2, 2], [1, 1, 0], [2, 1, 2], [0, 0, 0]])
    auto = AutoAggregator(candidates=["sens-spec", "kos", "majority-vote"]).fit(labels)
    assert list(auto.scores_) == ["majority-vote"]
    assert auto.chosen_ == "majority-vote"


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"candidates": ["gold-majority-vote"]}, r"`candidates` .* must be method names that need"),
        ({"candidates": "dawid-skene"}, r"`candidates` .* must be None or a non-empty sequence"),
        ({"n_folds": 1}, r"`n_folds` of AutoAggregator must be"),
        ({"criterion": "agree"}, r"`criterion` must be one of .*Did you mean 'agreement'"),
    ],
)
def test_auto_bad_params(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AutoAggregator(**params).fit(np.array([[0, 1], [1, 1]]))


def test_auto_only_binary_candidates_on_multiclass() -> None:
    with pytest.raises(ValueError, match=r"`candidates` must include a method for K = 3"):
        AutoAggregator(candidates=["kos"]).fit(np.array([[0, 1], [2, 2], [1, 1]]))


def test_make_aggregator_auto() -> None:
    auto = make_aggregator("auto", n_folds=4)
    assert isinstance(auto, AutoAggregator)
    assert auto.n_folds == 4


def test_auto_leaves_out_a_candidate_that_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate whose fit raises is scored -inf, named in errors_, and not chosen."""
    from crowdmed.aggregation.classification import glad

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("solver failed")

    monkeypatch.setattr(glad, "minimize", broken)
    cl, _ = _crowd(n_items=40)
    auto = AutoAggregator(candidates=["glad", "majority-vote"], n_folds=2).fit(cl)
    assert auto.scores_["glad"] == float("-inf")
    assert auto.errors_ == {"glad": "solver failed"}
    assert auto.chosen_ == "majority-vote"


def test_auto_leaves_out_a_candidate_with_non_finite_posteriors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A candidate whose fitted posteriors hold NaN is scored -inf for every criterion."""
    make = AutoAggregator._make

    def nan_glad(self: AutoAggregator, name: str, seed: object) -> object:
        agg = make(self, name, seed)
        if name == "glad":
            fit = agg.fit

            def broken_fit(*args: object, **kwargs: object) -> object:
                fit(*args, **kwargs)
                agg.posteriors_ = np.full_like(agg.posteriors_, np.nan)
                return agg

            agg.fit = broken_fit
        return agg

    monkeypatch.setattr(AutoAggregator, "_make", nan_glad)
    cl, _ = _crowd(n_items=40)
    auto = AutoAggregator(candidates=["glad", "majority-vote"], n_folds=2).fit(cl)
    assert all(s["glad"] == float("-inf") for s in auto.criterion_scores_.values())
    assert "not finite" in auto.errors_["glad"]
    assert auto.chosen_ == "majority-vote"
