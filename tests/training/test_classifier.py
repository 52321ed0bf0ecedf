"""Tests of CrowdClassifier on tiny seeded problems (features and 16x16 images)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crowdmed.data import CrowdLabels  # noqa: E402
from crowdmed.nn.models import mlp_head, small_cnn  # noqa: E402
from crowdmed.training import CrowdClassifier, Engine, TrainMethod, tta_views  # noqa: E402

N_FEATURES = 6


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # These networks are tiny: with two intra-op threads on a busy 2-core machine each step
    # is 10-40x slower than with one (thread hand-off dominates). Restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_problem(
    seed: int = 0,
    n: int = 240,
    accuracies: tuple[float, ...] = (0.85, 0.75, 0.7, 0.65, 0.6),
    missing: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``(n, 6)``, crowd labels ``(n, A)`` with -1 missing, and the true classes.

    The true class is linear in the features; annotator ``a`` is right with probability
    ``accuracies[a]`` and flips the label otherwise. Every item keeps at least one label.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    truth = (x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] > 0).astype(np.int64)
    right = rng.random((n, len(accuracies))) < np.asarray(accuracies)
    labels = np.where(right, truth[:, None], 1 - truth[:, None])
    labels[rng.random(labels.shape) < missing] = -1
    empty = (labels < 0).all(axis=1)
    labels[empty, 0] = np.where(right[empty, 0], truth[empty], 1 - truth[empty])
    return x, labels, truth


def make_net(seed: int = 0, *, hidden: int = 16, dropout: float = 0.2) -> Any:
    """An MLP initialised from ``seed`` without touching the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return mlp_head(N_FEATURES, 2, hidden=hidden, dropout=dropout)


def make_cnn(seed: int = 0) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return small_cnn(1, 2, width=4, depth=3)  # 16 px -> 2 px after three blocks


def fit_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "epochs": 25,
        "lr": 0.02,
        "batch_size": 32,
        "patience": None,
        "progress": False,
        "random_state": 0,
    }
    kwargs.update(overrides)
    return kwargs


def accuracy(clf: CrowdClassifier, x: np.ndarray, truth: np.ndarray) -> float:
    return float((clf.predict(x) == truth).mean())


# ---------------------------------------------------------------------- every method learns
@pytest.mark.parametrize("method", [m.value for m in TrainMethod])
def test_every_method_beats_chance(method: str) -> None:
    x, labels, truth = make_problem(seed=0)
    x_test, _, truth_test = make_problem(seed=1, n=400)
    target = truth if method == "dl-true" else labels
    clf = CrowdClassifier(make_net(), method=method, **fit_kwargs())
    assert clf.fit(x, target) is clf
    # (n_test,) predictions on unseen items; chance is 0.5. (dl-ds is the weakest here: the
    # Dawid-Skene consensus of this small problem is itself only 79 % right.)
    assert accuracy(clf, x_test, truth_test) > 0.75
    assert len(clf.history_) == 25
    proba = clf.predict_proba(x_test)
    assert proba.shape == (400, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    if method.startswith("crowd-layer") or method in ("aggnet", "dl-em"):
        assert clf.annotator_confusion_ is not None
        assert clf.annotator_confusion_.shape == (5, 2, 2)
        np.testing.assert_allclose(clf.annotator_confusion_.sum(axis=2), 1.0, atol=1e-5)
    else:
        assert clf.annotator_confusion_ is None


def test_crowd_labels_container_trains_like_the_dense_view() -> None:
    x, labels, _ = make_problem(seed=0, n=80)
    dense = CrowdClassifier(make_net(), **fit_kwargs(epochs=3)).fit(x, labels)
    container = CrowdClassifier(make_net(), **fit_kwargs(epochs=3)).fit(
        x, CrowdLabels.from_dense(labels)
    )
    np.testing.assert_array_equal(dense.predict_proba(x), container.predict_proba(x))


def test_dl_true_is_an_upper_bound() -> None:
    # Noisy annotators: three labels per item at 65-70 % accuracy.
    x, labels, truth = make_problem(seed=2, accuracies=(0.7, 0.65, 0.65), missing=0.0)
    x_test, _, truth_test = make_problem(seed=3, n=600)
    scores = {}
    for method in ("dl-true", "dl-mv", "dl-soft", "crowd-layer-mw"):
        target = truth if method == "dl-true" else labels
        clf = CrowdClassifier(make_net(), method=method, **fit_kwargs())
        scores[method] = accuracy(clf.fit(x, target), x_test, truth_test)
    assert scores["dl-true"] > 0.9, scores
    assert scores["dl-true"] >= max(scores.values()), scores


# ---------------------------------------------------------------------- seeds and RNG
def test_same_seed_same_predictions_other_seed_differs() -> None:
    x, labels, _ = make_problem(seed=0, n=120)
    runs = [
        CrowdClassifier(make_net(0), **fit_kwargs(epochs=5, random_state=seed)).fit(x, labels)
        for seed in (0, 0, 1)
    ]
    p0, p0_again, p1 = (clf.predict_proba(x) for clf in runs)
    np.testing.assert_array_equal(p0, p0_again)
    assert [h["loss"] for h in runs[0].history_] == [h["loss"] for h in runs[1].history_]
    # Same initial weights, other random_state: another data order and dropout masks.
    assert not np.allclose(p0, p1)


def test_fit_leaves_the_global_torch_rng_untouched() -> None:
    x, labels, _ = make_problem(seed=0, n=60)
    torch.manual_seed(1234)  # a state the fit must give back
    before = torch.get_rng_state()
    CrowdClassifier(make_net(), **fit_kwargs(epochs=2)).fit(x, labels)
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------------- early stopping
def test_early_stopping_stops_and_restores_the_best_epoch() -> None:
    x, labels, _ = make_problem(seed=0, n=120)
    # Identical validation inputs: every prediction ties, so AUC stays 0.5 and the score
    # never improves after epoch 1.
    x_val = np.zeros((10, N_FEATURES), dtype=np.float32)
    y_val = np.array([0, 1] * 5)
    snapshots: dict[int, dict[str, Any]] = {}
    net = make_net()

    def hook(epoch: int, epochs: int, record: dict[str, float]) -> None:
        snapshots[epoch] = copy.deepcopy(net.state_dict())

    clf = CrowdClassifier(net, **fit_kwargs(epochs=30, patience=3, progress=hook))
    clf.fit(x, labels, X_val=x_val, y_val=y_val)
    assert clf.best_epoch_ == 1
    assert len(clf.history_) == 4 < 30  # stopped `patience` epochs after the best
    assert sorted(snapshots) == [1, 2, 3, 4]
    assert all(h["val_auc"] == 0.5 for h in clf.history_)
    final = net.state_dict()
    for name, value in final.items():
        assert torch.equal(value, snapshots[1][name]), name
    assert any(not torch.equal(final[n], snapshots[4][n]) for n in final)
    # The kept network predicts like one loaded with the best epoch's weights.
    best = make_net()
    best.load_state_dict(snapshots[1])
    best.eval()
    with torch.no_grad():
        expected = torch.softmax(best(torch.from_numpy(x)), 1).double().numpy()
    np.testing.assert_array_equal(clf.predict_proba(x), expected)


def test_patience_none_keeps_the_last_epoch() -> None:
    x, labels, _ = make_problem(seed=0, n=60)
    clf = CrowdClassifier(make_net(), **fit_kwargs(epochs=4, patience=None)).fit(x, labels)
    assert clf.best_epoch_ == len(clf.history_) == 4


# ---------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("method", ["crowd-layer-mw", "dl-em", "aggnet"])
def test_resume_continues_exactly(tmp_path: Path, method: str) -> None:
    x, labels, truth = make_problem(seed=0, n=120)
    x_val, y_val = x[:40], truth[:40]
    kwargs = fit_kwargs(method=method, patience=10)  # validation and dropout in play
    first = CrowdClassifier(make_net(), **{**kwargs, "epochs": 3}, checkpoint_dir=tmp_path)
    first.fit(x, labels, X_val=x_val, y_val=y_val)
    assert (tmp_path / "checkpoint.safetensors").is_file()

    calls: list[int] = []
    before = torch.get_rng_state()
    resumed = CrowdClassifier(
        make_net(),
        **{**kwargs, "epochs": 6, "progress": lambda e, n, r: calls.append(e)},
        checkpoint_dir=tmp_path,
    ).fit(x, labels, X_val=x_val, y_val=y_val)
    assert torch.equal(torch.get_rng_state(), before)
    assert calls == [4, 5, 6]
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4, 5, 6]
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history_]
    assert strip[:3] == [{k: v for k, v in h.items() if k != "seconds"} for h in first.history_]

    straight = CrowdClassifier(make_net(), **{**kwargs, "epochs": 6}).fit(
        x, labels, X_val=x_val, y_val=y_val
    )
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in straight.history_]
    assert resumed.best_epoch_ == straight.best_epoch_
    np.testing.assert_array_equal(resumed.predict_proba(x), straight.predict_proba(x))
    np.testing.assert_array_equal(resumed.annotator_confusion_, straight.annotator_confusion_)


class _StopAfter:
    """Progress hook interrupting the fit after epoch ``at`` (its checkpoint is written)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self, epoch: int, total: int, record: dict[str, float]) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", ["crowd-layer-vw+b", "dl-em", "aggnet", "dl-soft"])
def test_interrupted_fit_resumes_exactly(tmp_path: Path, method: str) -> None:
    """Interrupted after epoch 2 and resumed: the weights and history of an uninterrupted run."""
    x, labels, truth = make_problem(seed=1, n=100)
    kwargs = fit_kwargs(method=method, epochs=5, patience=3, weight_decay=1e-3, batch_size=16)
    val = {"X_val": x[:30], "y_val": truth[:30]}
    straight = CrowdClassifier(make_net(), **kwargs).fit(x, labels, **val)

    broken = CrowdClassifier(
        make_net(), **{**kwargs, "progress": _StopAfter(2)}, checkpoint_dir=tmp_path
    )
    with pytest.raises(KeyboardInterrupt):
        broken.fit(x, labels, **val)
    resumed = CrowdClassifier(make_net(), **kwargs, checkpoint_dir=tmp_path).fit(x, labels, **val)

    def strip(history: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert strip(resumed.history_) == strip(straight.history_)
    assert resumed.best_epoch_ == straight.best_epoch_
    assert resumed.stopped_early_ == straight.stopped_early_
    for a, b in zip(
        resumed.network.state_dict().values(), straight.network.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    if straight.head_ is not None:
        for a, b in zip(
            resumed.head_.state_dict().values(), straight.head_.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b)
    np.testing.assert_array_equal(resumed.predict_proba(x), straight.predict_proba(x))


def test_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    x, labels, _ = make_problem(seed=0, n=60)
    CrowdClassifier(make_net(), **fit_kwargs(epochs=1), checkpoint_dir=tmp_path).fit(x, labels)
    other = CrowdClassifier(
        make_net(), **fit_kwargs(epochs=2, method="dl-mv"), checkpoint_dir=tmp_path
    )
    with pytest.raises(ValueError, match=r"belongs to another run \(changed: \['method', "):
        other.fit(x, labels)


def test_checkpoint_with_changed_settings_is_refused(tmp_path: Path) -> None:
    x, labels, _ = make_problem(seed=0, n=60)
    CrowdClassifier(make_net(), **fit_kwargs(epochs=1), checkpoint_dir=tmp_path).fit(x, labels)
    other = CrowdClassifier(
        make_net(), **fit_kwargs(epochs=2, lr=0.5, random_state=9), checkpoint_dir=tmp_path
    )
    with pytest.raises(ValueError, match=r"changed: \['lr', 'random_state'\]"):
        other.fit(x, labels)


def test_resuming_an_early_stopped_run_trains_no_further(tmp_path: Path) -> None:
    x, labels, _ = make_problem(seed=0, n=120)
    rng = np.random.default_rng(0)
    y_val = rng.integers(0, 2, 40)  # random validation labels: no real progress, stops early
    kw = fit_kwargs(epochs=40, patience=3)
    first = CrowdClassifier(make_net(), **kw, checkpoint_dir=tmp_path).fit(
        x, labels, X_val=x[:40], y_val=y_val
    )
    assert first.stopped_early_
    assert len(first.history_) < 40
    again = CrowdClassifier(make_net(), **kw, checkpoint_dir=tmp_path).fit(
        x, labels, X_val=x[:40], y_val=y_val
    )
    assert len(again.history_) == len(first.history_)
    assert again.best_epoch_ == first.best_epoch_
    np.testing.assert_array_equal(again.predict_proba(x), first.predict_proba(x))


def test_last_batch_of_one_joins_the_previous_batch() -> None:
    """BatchNorm cannot train on one item: 33 items with batch 32 make one batch of 33."""
    rng = np.random.default_rng(0)
    images = rng.random((33, 1, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 2, (33, 2))
    clf = CrowdClassifier(make_cnn(), **fit_kwargs(epochs=1, method="dl-mv"))
    clf.fit(images, labels)
    assert len(clf.history_) == 1
    engine = Engine(epochs=1, batch_size=32)
    assert [len(b) for b in engine.batches(torch.arange(33))] == [33]
    assert [len(b) for b in engine.batches(torch.arange(65))] == [32, 33]
    assert [len(b) for b in engine.batches(torch.arange(70))] == [32, 32, 6]


# ---------------------------------------------------------------------- test-time augmentation
def test_tta_is_invariant_to_rotations_and_mirrors() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((32, 1, 16, 16)).astype(np.float32)  # (B, 1, H, W)
    labels = rng.integers(0, 2, size=(32, 3))
    clf = CrowdClassifier(make_cnn(), **fit_kwargs(epochs=2, batch_size=16, tta=True))
    clf.fit(x, labels)
    proba = clf.predict_proba(x)
    rotated = np.ascontiguousarray(np.rot90(x, 1, axes=(-2, -1)))
    mirrored = np.ascontiguousarray(x[..., ::-1])
    np.testing.assert_allclose(clf.predict_proba(rotated), proba, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(mirrored), proba, atol=1e-6)
    clf.tta = False  # the network alone is not invariant, so the check above means something
    assert not np.allclose(clf.predict_proba(rotated), clf.predict_proba(x), atol=1e-4)


def test_tta_views_are_the_eight_symmetries() -> None:
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    views = list(tta_views(x))
    assert len(views) == 8
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], x)


# ---------------------------------------------------------------------- bad input
def _bad_cases() -> list[Any]:
    x, labels, truth = make_problem(seed=0, n=10)
    nan_x = x.copy()
    nan_x[3, 2] = np.nan
    unlabelled = labels.copy()
    unlabelled[2] = -1
    three = labels.copy()
    three[0, 0] = 2
    return [
        pytest.param(
            {"X": x, "labels": labels[:9]},
            {},
            ValueError,
            r"`labels` has 9 rows but `X` has 10 items",
            id="length-mismatch",
        ),
        pytest.param(
            {"X": x, "labels": three, "n_classes": 2},
            {},
            ValueError,
            r"`labels` contain class 2 but the network has n_classes=2",
            id="class-beyond-head",
        ),
        pytest.param(
            {"X": nan_x, "labels": labels},
            {},
            ValueError,
            r"`X` contains NaN or infinite",
            id="nan-features",
        ),
        pytest.param(
            {"X": np.where(np.isnan(nan_x), np.inf, nan_x), "labels": labels},
            {},
            ValueError,
            r"`X` contains NaN or infinite",
            id="inf-features",
        ),
        pytest.param(
            {"X": x, "labels": labels, "X_val": x[:4], "y_val": np.array([0, 1, -1, 7])},
            {},
            ValueError,
            r"`y_val` must hold true classes 0..1; got \[-1, 7\]",
            id="bad-y-val",
        ),
        pytest.param(
            {"X": x, "labels": unlabelled},
            {},
            ValueError,
            r"1 items have no labels \(rows \[2\]\)",
            id="item-without-labels",
        ),
        pytest.param(
            {"X": x, "labels": three},
            {"method": "aggnet", "network": mlp_head(N_FEATURES, 3, hidden=4)},
            ValueError,
            r"method 'aggnet' needs binary labels \(2 classes\); got 3",
            id="aggnet-three-classes",
        ),
        pytest.param(
            {"X": x, "labels": labels},
            {"network": mlp_head(N_FEATURES, 3, hidden=4)},
            ValueError,
            r"must output logits of shape \(B, 2\) for 2 classes; got \(2, 3\)",
            id="wrong-output-width",
        ),
        pytest.param(
            {"X": x, "labels": labels},
            {"network": mlp_head(N_FEATURES + 1, 2, hidden=4)},
            ValueError,
            r"cannot process inputs of shape \(6,\)",
            id="wrong-input-width",
        ),
        pytest.param(
            {"X": x, "labels": labels + 0.5},
            {},
            TypeError,
            r"`labels` must hold integer class indices",
            id="fractional-labels",
        ),
        pytest.param(
            {"X": x, "labels": labels},
            {"network": "mlp"},
            TypeError,
            r"`network` must be a torch.nn.Module; got str",
            id="not-a-module",
        ),
        pytest.param(
            {"X": x, "labels": truth[:, None].repeat(2, axis=1)},
            {"method": "dl-true"},
            ValueError,
            r"true classes of shape \(N,\) for method 'dl-true'",
            id="dl-true-needs-1d",
        ),
        pytest.param(
            {"X": x, "labels": labels},
            {"method": "crowd-layer"},
            ValueError,
            r"`method` must be one of .*Did you mean",
            id="unknown-method",
        ),
        pytest.param(
            {"X": x, "labels": labels, "X_val": x[:4], "y_val": truth[:3]},
            {},
            ValueError,
            r"`y_val` must have shape \(4,\); got \(3,\)",
            id="val-length",
        ),
        pytest.param(
            {"X": x, "labels": labels},
            {"epochs": 0},
            ValueError,
            r"`epochs` must be a positive integer; got 0",
            id="zero-epochs",
        ),
    ]


@pytest.mark.parametrize(("fit_args", "params", "error", "match"), _bad_cases())
def test_bad_input_fails_before_training(
    tmp_path: Path, fit_args: dict[str, Any], params: dict[str, Any], error: type, match: str
) -> None:
    calls: list[int] = []
    kwargs = fit_kwargs(epochs=2, progress=lambda e, n, r: calls.append(e))
    kwargs.update({k: v for k, v in params.items() if k != "network"})
    network = params.get("network", make_net())
    clf = CrowdClassifier(network, checkpoint_dir=tmp_path / "ckpt", **kwargs)
    args = dict(fit_args)
    with pytest.raises(error, match=match):
        clf.fit(args.pop("X"), args.pop("labels"), **args)
    assert calls == []  # no epoch ran
    assert not hasattr(clf, "history_")
    assert not (tmp_path / "ckpt").exists()  # no checkpoint written


def test_predict_before_fit_is_refused() -> None:
    from crowdmed.exceptions import NotFittedError

    clf = CrowdClassifier(make_net())
    with pytest.raises(NotFittedError, match=r"not fitted yet\. Call 'fit' first"):
        clf.predict(np.zeros((2, N_FEATURES), dtype=np.float32))
