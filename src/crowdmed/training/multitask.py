"""Multi-task learning with annotations as auxiliary targets.

:class:`MultiTaskClassifier` trains one network with a main head (the diagnosis, or the
reference label) and an auxiliary head that predicts the annotators' other labels — crowd
ABC scores of skin lesions, or each reader's per-finding labels of a chest X-ray — from the
same trunk, with the loss ``L = CE(main) + aux_weight · L_aux`` (Cheplygina, "Cats and
Crowds": the multi-task network with crowd annotations as an extra output beside the class
label). The auxiliary head is dropped at prediction: it only shapes the shared features.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crowdmed.metrics import roc_auc
from crowdmed.nn.models import split_last_linear
from crowdmed.nn.registry import network_spec
from crowdmed.training.engine import (
    CHECKPOINT_NAME,
    Engine,
    ProgressHook,
    TrainTask,
    data_digest,
    is_main_process,
    resolve_device,
)
from crowdmed.training.persistence import (
    load_state,
    read_folder,
    rebuild_network,
    register_loader,
    save_folder,
)

__all__ = ["MultiTaskClassifier", "multitask_loss"]

_AUX_LOSSES = ("bce", "mse")


def multitask_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    aux_out: torch.Tensor,
    aux_target: torch.Tensor,
    *,
    aux_weight: float,
    aux_loss: str = "bce",
) -> torch.Tensor:
    """``CE(logits, target) + aux_weight · mean over observed entries of L_aux``.

    Args:
        logits: Float tensor ``(B, K)`` of the main head.
        target: Integer tensor ``(B,)`` of main classes.
        aux_out: Float tensor ``(B, T)`` of the auxiliary head (logits for ``"bce"``).
        aux_target: Float tensor ``(B, T)``; ``NaN`` marks a missing auxiliary label. For
            ``"bce"`` values in [0, 1] (a fraction of readers is a soft target).
        aux_weight: Weight of the auxiliary loss (``0``: single-task training).
        aux_loss: ``"bce"`` (binary cross-entropy with logits) or ``"mse"``.

    Returns:
        The scalar loss.

    Examples:
        >>> import torch
        >>> loss = multitask_loss(torch.zeros(1, 2), torch.tensor([0]), torch.zeros(1, 2),
        ...                       torch.tensor([[1.0, float("nan")]]), aux_weight=0.5)
        >>> round(float(loss), 4)  # log 2 + 0.5 · log 2
        1.0397
    """
    main = nn.functional.cross_entropy(logits, target)
    obs = ~torch.isnan(aux_target)
    if not bool(obs.any()):
        return main + 0.0 * aux_out.sum()
    t = torch.where(obs, aux_target, torch.zeros_like(aux_target))
    if aux_loss == "bce":
        per = nn.functional.binary_cross_entropy_with_logits(aux_out, t, reduction="none")
    else:
        per = (aux_out - t) ** 2
    aux = (per * obs).sum() / obs.sum()
    return main + aux_weight * aux


class MultiTaskClassifier:
    """A classifier with a main head and an auxiliary head on the annotators' other labels.

    The network must end in a ``torch.nn.Linear`` (its main head, e.g.
    :func:`crowdmed.nn.small_cnn`); the auxiliary head is a linear layer on the same
    features (the input of that last layer) with one output per auxiliary target. With
    ``aux_weight=0`` the fit is exactly single-task training: the auxiliary head is built
    from its own seeded generator, so the network's initialisation, data order and dropout
    are those of :class:`~crowdmed.training.CrowdClassifier` with ``method="dl-true"``.

    Args:
        network: Module mapping inputs to main-task logits ``(B, K)``; trained in place.
        aux_weight: Weight of the auxiliary loss.
        aux_loss: ``"bce"`` (binary auxiliary labels or fractions of readers) or ``"mse"``
            (continuous scores such as ABC ratings).
        epochs: Maximum number of epochs.
        batch_size: Mini-batch size.
        lr: Learning rate of Adam.
        weight_decay: Weight decay of Adam.
        patience: Early stopping after this many epochs without a better validation score
            (AUC for two classes, else accuracy); ``None`` keeps the last state.
        augment: Callable applied to each training batch of inputs.
        checkpoint_dir: Folder for ``checkpoint.safetensors`` (exact resume).
        device: Torch device; the CPU by default.
        random_state: Seed of the data order, dropout, augmentation and the auxiliary head.
        progress: ``True`` for a rich progress bar, ``False`` for none, or a callable.
        resume: ``False`` deletes an existing checkpoint and starts over.
        num_threads: Torch CPU threads during ``fit`` (restored afterwards).

    Attributes:
        history_ (list[dict]): One record per epoch (``loss``, ``seconds``, validation).
        best_epoch_ (int): Epoch whose weights were kept.
        stopped_early_ (bool): Whether early stopping ended the fit.
        aux_head_ (torch.nn.Linear): The fitted auxiliary head.
        n_classes_ (int), n_aux_ (int): Main classes and auxiliary targets.

    References:
        Cheplygina, V. Cats and crowds: augmenting limited labelled data in medical image
        analysis (talk; multi-task network with crowd annotations, work by E. K. Contar).
        Raumanns, Schouten, Joosten, Pluim & Cheplygina (2021). ENHANCE: multi-task learning
        with crowdsourced ABC features for skin lesion classification.
        https://doi.org/10.1007/978-3-030-87722-4_3

    Examples:
        >>> import numpy as np, torch
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(200, 4)).astype("float32"); y = (x[:, 0] > 0).astype(int)
        >>> aux = np.stack([x[:, 1] > 0, x[:, 0] > 0.5], 1).astype(float)
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> mtl = MultiTaskClassifier(net, aux_weight=0.5, epochs=30, lr=0.05, progress=False)
        >>> float((mtl.fit(x, y, aux).predict(x) == y).mean()) > 0.9
        True
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        aux_weight: float = 1.0,
        aux_loss: str = "bce",
        epochs: int = 50,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int | None = 10,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        random_state: int = 0,
        progress: bool | ProgressHook = True,
        resume: bool = True,
        num_threads: int | None = None,
    ) -> None:
        self.network = network
        self.aux_weight = aux_weight
        self.aux_loss = aux_loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.augment = augment
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.resume = resume
        self.num_threads = num_threads

    def _check_params(self) -> None:
        if not isinstance(self.network, nn.Module):
            raise TypeError(
                f"`network` must be a torch.nn.Module; got {type(self.network).__name__}."
            )
        if not (isinstance(self.aux_weight, (int, float)) and math.isfinite(self.aux_weight)):
            raise ValueError(f"`aux_weight` must be a finite number; got {self.aux_weight!r}.")
        if self.aux_weight < 0:
            raise ValueError(f"`aux_weight` must be >= 0; got {self.aux_weight}.")
        if self.aux_loss not in _AUX_LOSSES:
            raise ValueError(f"`aux_loss` must be 'bce' or 'mse'; got {self.aux_loss!r}.")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {v!r}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"`lr` must be a positive number; got {self.lr!r}.")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(
                f"`patience` must be a positive integer or None; got {self.patience!r}."
            )

    @staticmethod
    def _inputs(x: Any, name: str) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        t = t.float()
        if t.ndim < 2:
            raise ValueError(
                f"`{name}` must have shape (N, ...) with features; got {tuple(t.shape)}."
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"`{name}` contains NaN or infinite values; clean the inputs first.")
        return t

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: Any,
        y: Any,
        aux: Any,
        *,
        X_val: Any = None,
        y_val: Any = None,
        n_classes: int | None = None,
    ) -> MultiTaskClassifier:
        """Train the network on the main labels and the auxiliary labels.

        Args:
            X: Inputs ``(N, ...)``: features or images ``(N, C, H, W)``.
            y: Integer array ``(N,)`` of main classes ``0..K-1``.
            aux: Float array ``(N, T)`` of auxiliary labels; ``NaN`` marks a missing one.
            X_val: Validation inputs ``(M, ...)``.
            y_val: Validation main classes ``(M,)``; drive early stopping.
            n_classes: Number of main classes ``K``; inferred from ``y`` when omitted.

        Returns:
            The fitted estimator.
        """
        self._check_params()
        x = self._inputs(X, "X")
        target = np.asarray(y)
        if target.shape != (len(x),) or target.dtype.kind not in "iub":
            raise ValueError(
                f"`y` must be an integer array of shape ({len(x)},); got {target.dtype} "
                f"{target.shape}."
            )
        k = int(n_classes) if n_classes is not None else int(target.max()) + 1
        if target.min() < 0 or target.max() >= k:
            raise ValueError(f"`y` must hold classes 0..{k - 1}; got {np.unique(target)[:5]}.")
        a = np.asarray(aux, dtype=np.float64)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or len(a) != len(x):
            raise ValueError(
                f"`aux` must have shape ({len(x)}, n_aux) with NaN for missing; got {a.shape}."
            )
        if np.isinf(a).any():
            raise ValueError("`aux` must be finite or NaN (missing); got infinite values.")
        if self.aux_loss == "bce" and ((a < 0) | (a > 1)).any():
            raise ValueError(
                "`aux` must lie in [0, 1] for aux_loss='bce'; use aux_loss='mse' for scores."
            )
        trunk, last = split_last_linear(self.network)
        xv = yv = None
        if X_val is not None:
            if y_val is None:
                raise ValueError("`y_val` must be given with `X_val` (validation classes).")
            xv = self._inputs(X_val, "X_val")
            yv = np.asarray(y_val).astype(np.int64)
            if yv.shape != (len(xv),):
                raise ValueError(f"`y_val` must have shape ({len(xv)},); got {yv.shape}.")
        # the auxiliary head draws its initialisation from its own generator: the global
        # torch RNG (network init, dropout) is left as single-task training leaves it
        gen = torch.Generator().manual_seed(int(self.random_state))
        aux_head = nn.Linear(last.in_features, a.shape[1])
        bound = 1.0 / math.sqrt(last.in_features)
        with torch.no_grad():
            aux_head.weight.uniform_(-bound, bound, generator=gen)
            aux_head.bias.uniform_(-bound, bound, generator=gen)
        task = _MultiTask(self, x, target, a, k, trunk, aux_head, xv, yv)
        device = resolve_device(self.device)
        ckpt = Path(self.checkpoint_dir) / CHECKPOINT_NAME if self.checkpoint_dir else None
        result = Engine(
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.random_state,
            patience=self.patience,
            device=device,
            checkpoint=ckpt,
            resume=self.resume,
            progress=self.progress,
            num_threads=self.num_threads,
            setting_names={"seed": "random_state"},
        ).fit(task)
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.stopped_early_ = result.stopped_early
        self.aux_head_ = aux_head
        self.n_classes_ = k
        self.n_aux_ = int(a.shape[1])
        return self

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "history_"):
            from crowdmed.exceptions import NotFittedError

            raise NotFittedError(
                "This MultiTaskClassifier instance is not fitted yet. Call 'fit' first."
            )

    def _run(self, x: torch.Tensor, device: torch.device, *, aux: bool) -> np.ndarray:
        net = self.network
        trunk, _ = split_last_linear(net)
        was = net.training
        net.eval()
        out = []
        try:
            with torch.no_grad():
                for s in range(0, len(x), 256):
                    xb = x[s : s + 256].to(device)
                    if aux:
                        o = self.aux_head_.to(device)(trunk(xb))
                        out.append((torch.sigmoid(o) if self.aux_loss == "bce" else o).cpu())
                    else:
                        out.append(torch.softmax(net(xb), 1).cpu())
        finally:
            net.train(was)
        return torch.cat(out).double().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Main-task class probabilities ``(N, K)`` (the auxiliary head is not used)."""
        self._check_fitted()
        return self._run(self._inputs(X, "X"), resolve_device(self.device), aux=False)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable main class ``(N,)``."""
        return self.predict_proba(X).argmax(axis=1)

    def predict_aux(self, X: Any) -> np.ndarray:
        """Auxiliary predictions ``(N, T)``: probabilities (``"bce"``) or values (``"mse"``)."""
        self._check_fitted()
        return self._run(self._inputs(X, "X"), resolve_device(self.device), aux=True)

    # ------------------------------------------------------------------ persistence
    _SAVED_PARAMS = (
        "aux_weight",
        "aux_loss",
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "patience",
        "random_state",
    )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted model as a folder (``config.json`` + ``model.safetensors``)."""
        self._check_fitted()
        tensors = {f"network/{k}": v for k, v in self.network.state_dict().items()}
        tensors.update({f"aux_head/{k}": v for k, v in self.aux_head_.state_dict().items()})
        config = {
            "network": network_spec(self.network),
            "network_class": type(self.network).__qualname__,
            "params": {name: getattr(self, name) for name in self._SAVED_PARAMS},
            "fitted": {
                "n_classes": self.n_classes_,
                "n_aux": self.n_aux_,
                "aux_in_features": self.aux_head_.in_features,
                "history": self.history_,
                "best_epoch": self.best_epoch_,
                "stopped_early": self.stopped_early_,
            },
        }
        if not is_main_process():
            return Path(path)
        return save_folder(path, task="multitask", config=config, tensors=tensors)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        network: nn.Module | None = None,
        device: str | torch.device | None = None,
    ) -> MultiTaskClassifier:
        """Read a folder written by :meth:`save`; the model is ready to predict.

        Args:
            path: The model folder.
            network: The network to fill, when the saved one was not built by
                :func:`crowdmed.nn.build_network`.
            device: Torch device; CUDA when available if ``None``.

        Returns:
            The fitted classifier (``augment`` is not saved: it is ``None``).
        """
        config, tensors = read_folder(path, task="multitask")
        folder = Path(path)
        net = rebuild_network(config, network, folder)
        load_state(net, tensors, "network/", folder)
        fitted = config["fitted"]
        head = nn.Linear(int(fitted["aux_in_features"]), int(fitted["n_aux"]))
        load_state(head, tensors, "aux_head/", folder)
        dev = resolve_device(device)
        net.to(dev)
        head.to(dev)
        clf = cls(net, **config["params"], device=str(dev), progress=False)
        clf.history_ = list(fitted["history"])
        clf.best_epoch_ = int(fitted["best_epoch"])
        clf.stopped_early_ = bool(fitted["stopped_early"])
        clf.aux_head_ = head
        clf.n_classes_ = int(fitted["n_classes"])
        clf.n_aux_ = int(fitted["n_aux"])
        return clf


class _MultiTask(TrainTask):
    """One :class:`MultiTaskClassifier` fit as an engine task."""

    def __init__(
        self,
        clf: MultiTaskClassifier,
        x: torch.Tensor,
        y: np.ndarray,
        aux: np.ndarray,
        k: int,
        trunk: nn.Module,
        aux_head: nn.Linear,
        xv: torch.Tensor | None,
        yv: np.ndarray | None,
    ) -> None:
        self.clf, self.x, self.k, self.trunk, self.aux_head = clf, x, k, trunk, aux_head
        self.y = torch.as_tensor(y, dtype=torch.int64)
        self.aux = torch.as_tensor(aux, dtype=torch.float32)
        self.xv, self.yv = xv, yv
        self.name = "multitask"

    def setup(self, engine: Engine) -> None:
        clf = self.clf
        self.net = clf.network.to(engine.device)
        self.aux_head.to(engine.device)
        _, self.last = split_last_linear(self.net)
        # the network's parameters first, as single-task training has them
        groups = [{"params": list(self.net.parameters()) + list(self.aux_head.parameters())}]
        self.opt = torch.optim.Adam(groups, lr=clf.lr, weight_decay=clf.weight_decay)

    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.net, "aux_head": self.aux_head}

    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt

    def config(self) -> dict[str, Any]:
        clf = self.clf
        return {
            "n": len(self.x),
            "inputs_sha256": data_digest(self.x),
            "targets_sha256": data_digest(self.y),
            "aux_sha256": data_digest(torch.nan_to_num(self.aux, nan=-1.0)),
            "aux_weight": float(clf.aux_weight),
            "aux_loss": clf.aux_loss,
            "lr": clf.lr,
            "weight_decay": clf.weight_decay,
        }

    def epoch_items(self, epoch: int, engine: Engine) -> int:
        return len(self.x)

    def train_batch(self, idx: torch.Tensor, engine: Engine) -> torch.Tensor:
        xb = self.x[idx].to(engine.device)
        if self.clf.augment is not None:
            xb = self.clf.augment(xb)
        feats = self.trunk(xb)
        return multitask_loss(
            self.last(feats),
            self.y[idx].to(engine.device),
            self.aux_head(feats),
            self.aux[idx].to(engine.device),
            aux_weight=float(self.clf.aux_weight),
            aux_loss=self.clf.aux_loss,
        )

    def validate(self, engine: Engine) -> dict[str, float]:
        if self.xv is None or self.yv is None:
            return {}
        self.clf.aux_head_ = self.aux_head
        proba = self.clf._run(self.xv, engine.device, aux=False)
        out = {"val_accuracy": float((proba.argmax(1) == self.yv).mean())}
        if self.k == 2:
            out["val_auc"] = roc_auc(proba[:, 1], self.yv)
        return out

    def score(self, record: dict[str, float]) -> float:
        if "val_accuracy" not in record:
            return -record["loss"]
        score = record.get("val_auc", record["val_accuracy"])
        if self.k == 2 and math.isnan(score):
            score = record["val_accuracy"]
        return score


register_loader("multitask", MultiTaskClassifier.load)
