"""The crowd layer's training step on padded observed pairs equals the previous formulation."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crowdmed.nn.layers import CrowdLayer  # noqa: E402
from crowdmed.training import classifier as classifier_module  # noqa: E402
from crowdmed.training.classifier import CrowdClassifier  # noqa: E402


def _previous_loss(self, method, head, logits, target):
    """The loss before ``CrowdLayer.observed_nll``: the batch's dense labels (B, A)."""
    if isinstance(head, CrowdLayer):
        items, anns = torch.nonzero(target >= 0, as_tuple=True)
        out = head.forward_observed(torch.softmax(logits, 1), items, anns)
        ce = torch.nn.functional.cross_entropy(out, target[items, anns], reduction="sum")
        return ce / logits.shape[0], None
    return _current_loss(self, method, head, logits, target)


_current_loss = CrowdClassifier._loss


def _fit(method: str, x: np.ndarray, labels: np.ndarray) -> CrowdClassifier:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    clf = CrowdClassifier(
        net, method=method, epochs=3, batch_size=16, lr=0.02, patience=None, progress=False
    )
    return clf.fit(x, labels, n_classes=3)


@pytest.mark.parametrize("method", ["crowd-layer-mw", "crowd-layer-vw+b"])
def test_fit_equals_the_dense_label_formulation(method, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    truth = rng.integers(0, 3, 50)
    labels = np.full((50, 9), -1)
    for i in range(50):  # 1-3 labels per item
        who = rng.choice(9, rng.integers(1, 4), replace=False)
        labels[i, who] = np.where(rng.random(len(who)) < 0.7, truth[i], rng.integers(0, 3))
    fast = _fit(method, x, labels)

    setup = classifier_module._ClassifierTask.setup

    def dense_setup(self, engine):
        setup(self, engine)
        self.batch_targets = self.targets  # every batch gets its (B, A) dense labels

    monkeypatch.setattr(classifier_module._ClassifierTask, "setup", dense_setup)
    monkeypatch.setattr(CrowdClassifier, "_loss", _previous_loss)
    before = _fit(method, x, labels)
    assert [r["loss"] for r in fast.history_] == pytest.approx(
        [r["loss"] for r in before.history_], abs=1e-6
    )
    for a, b in zip(fast.network.parameters(), before.network.parameters(), strict=True):
        assert float((a - b).abs().max()) <= 1e-6
    np.testing.assert_allclose(fast.annotator_confusion_, before.annotator_confusion_, atol=1e-6)
    assert fast.history_[-1]["loss"] < fast.history_[0]["loss"]  # it trained
