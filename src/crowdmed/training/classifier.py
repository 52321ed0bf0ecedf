"""Fit loop for networks trained on the labels of many annotators.

One estimator, :class:`CrowdClassifier`, covers the learning-from-crowds methods and their
baselines with the same network, optimiser and schedule:

==================  =====================================================================
``method``          what the network is trained on
==================  =====================================================================
``dl-mv``           majority-vote labels (ties broken by ``random_state``)
``dl-ds``           Dawid–Skene consensus labels
``dl-soft``         soft vote shares (soft cross-entropy)
``dl-true``         the true labels (upper bound; ``labels`` is then ``(N,)``)
``crowd-layer-mw``  raw labels through a crowd layer, matrix per annotator
``crowd-layer-vw``  … vector scale; ``crowd-layer-vb`` vector bias; ``crowd-layer-vw+b`` both
``aggnet``          raw binary labels through AggNet's EM layer (α, β, quiz trust prior)
``dl-em``           raw labels through Dawid–Skene EM around the network
==================  =====================================================================
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crowdmed._validation import check_option
from crowdmed.data.labels import CrowdLabels
from crowdmed.metrics import roc_auc
from crowdmed.nn.layers import AggNetEM, CrowdLayer, DawidSkeneEM
from crowdmed.training._checkpoint import data_digest, load_checkpoint, save_checkpoint

__all__ = ["CrowdClassifier", "TrainMethod"]


class TrainMethod(str, Enum):
    """Training targets (see the module docstring)."""

    DL_MV = "dl-mv"
    DL_DS = "dl-ds"
    DL_SOFT = "dl-soft"
    DL_TRUE = "dl-true"
    CL_MW = "crowd-layer-mw"
    CL_VW = "crowd-layer-vw"
    CL_VB = "crowd-layer-vb"
    CL_VW_B = "crowd-layer-vw+b"
    AGGNET = "aggnet"
    DL_EM = "dl-em"


_CL_MODES = {
    TrainMethod.CL_MW: "MW",
    TrainMethod.CL_VW: "VW",
    TrainMethod.CL_VB: "VB",
    TrainMethod.CL_VW_B: "VW+B",
}

ProgressHook = Callable[[int, int, dict[str, float]], None]


def tta_views(x: torch.Tensor) -> Iterator[torch.Tensor]:
    """The eight rotations (0/90/180/270°) × mirror of an image batch ``(B, C, H, W)``."""
    for k in range(4):
        r = torch.rot90(x, k, dims=(-2, -1))
        yield r
        yield torch.flip(r, dims=(-1,))


class CrowdClassifier:
    """Train a network on the labels of many annotators.

    The network maps a batch of inputs to class logits ``(B, K)``. Training runs on the CPU
    by default with a seeded data order and weight initialisation (the global torch RNG is
    restored afterwards), validation each epoch, early stopping on the validation metric,
    and checkpoints that let an interrupted fit resume where it stopped.

    Args:
        network: Module mapping inputs to logits ``(B, n_classes)``; trained in place.
        method: See the module docstring.
        epochs: Maximum number of epochs.
        batch_size: Mini-batch size.
        lr: Learning rate of Adam.
        weight_decay: Weight decay of Adam for the network (never for the crowd layer).
        crowd_lr: Learning rate of the crowd layer's parameters; ``lr`` when ``None``.
        patience: Early stopping after this many epochs without a better validation score;
            ``None`` trains all epochs and keeps the last state.
        smoothing: Dirichlet pseudo-count of the DS fit (``dl-ds``) and of DL-EM's M-step.
        tau: Strength of AggNet's quiz trust prior.
        augment: Callable applied to each training batch of inputs (e.g. random flips).
        tta: Average the softmax over the 8 rotations/mirrors at prediction (images only).
        checkpoint_dir: Folder for ``checkpoint.pt``, written atomically after every epoch;
            a fit with the same folder resumes from it.
        device: Torch device.
        random_state: Seed of the data order, dropout, the crowd/EM head's initialisation and
            tie-breaking (the network's own weights are initialised when you build it: build
            it inside ``torch.random.fork_rng()`` with a seed for a fully seeded run).
        progress: ``True`` for a rich progress bar, ``False`` for none, or a callable
            ``progress(epoch, epochs, metrics)`` called after every epoch.

    Attributes:
        history_ (list[dict]): One record per epoch: ``epoch, loss, seconds`` and the
            validation ``val_accuracy``/``val_auc`` when validation labels are given.
        best_epoch_ (int): Epoch whose weights were kept.
        stopped_early_ (bool): Whether early stopping ended the fit (resuming a stopped run
            trains no further).
        annotator_confusion_ (ndarray of shape (n_annotators, K, K) or None): Estimated
            annotator confusion matrices (crowd layer, DL-EM, AggNet); ``None`` otherwise.
        n_classes_ (int), n_annotators_ (int): Sizes seen in ``fit``.

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds. AAAI.
        https://doi.org/10.1609/aaai.v32i1.11506
        Albarqouni et al. (2016). AggNet. IEEE TMI. https://doi.org/10.1109/TMI.2016.2528120

    Examples:
        >>> import numpy as np, torch
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(200, 5)).astype("float32"); truth = (x[:, 0] > 0).astype(int)
        >>> labels = np.stack([truth, truth, 1 - truth], axis=1)   # one adversarial annotator
        >>> clf = CrowdClassifier(torch.nn.Linear(5, 2), method="crowd-layer-mw", epochs=30,
        ...                       lr=0.05, progress=False, random_state=0)
        >>> float((clf.fit(x, labels).predict(x) == truth).mean()) > 0.9
        True
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        method: str = "crowd-layer-mw",
        epochs: int = 50,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        crowd_lr: float | None = None,
        patience: int | None = 10,
        smoothing: float = 0.01,
        tau: float = 10.0,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tta: bool = False,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        random_state: int = 0,
        progress: bool | ProgressHook = True,
    ) -> None:
        self.network = network
        self.method = method
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.crowd_lr = crowd_lr
        self.patience = patience
        self.smoothing = smoothing
        self.tau = tau
        self.augment = augment
        self.tta = tta
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.random_state = random_state
        self.progress = progress

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> TrainMethod:
        m = check_option(self.method, TrainMethod, "method")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {v!r}.")
        if not (self.lr > 0):
            raise ValueError(f"`lr` must be positive; got {self.lr!r}.")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(
                f"`patience` must be a positive integer or None; got {self.patience!r}."
            )
        if not isinstance(self.network, nn.Module):
            raise TypeError(
                f"`network` must be a torch.nn.Module; got {type(self.network).__name__}."
            )
        return m

    @staticmethod
    def _as_tensor(x: Any, name: str) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            t = x
        else:
            arr = np.asarray(x)
            if arr.dtype == object:
                raise TypeError(f"`{name}` must be a numeric array or tensor; got dtype object.")
            t = torch.as_tensor(arr)
        if t.dtype == torch.float64:
            t = t.float()
        if not t.dtype.is_floating_point:
            t = t.float()
        if t.ndim < 2:
            raise ValueError(
                f"`{name}` must have shape (N, ...) with features; got {tuple(t.shape)}."
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"`{name}` contains NaN or infinite values; clean the inputs before training."
            )
        return t

    def _prepare_labels(
        self, method: TrainMethod, labels: Any, n: int, n_classes: int | None
    ) -> tuple[np.ndarray, int, int]:
        """Dense labels ``(N, A)`` (or ``(N,)`` for ``dl-true``), K and A."""
        if isinstance(labels, CrowdLabels):
            dense = labels.to_dense()
            k = labels.n_classes
        else:
            dense = np.asarray(labels)
            if dense.dtype.kind == "f":
                if np.isnan(dense).any():
                    raise ValueError(
                        "`labels` must not contain NaN; mark missing annotations with -1."
                    )
                if not np.all(dense == np.round(dense)):
                    raise TypeError("`labels` must hold integer class indices.")
            elif dense.dtype.kind not in "iub":
                raise TypeError(f"`labels` must be an integer array; got dtype {dense.dtype}.")
            dense = dense.astype(np.int64)
            k = int(dense.max()) + 1 if dense.size else 0
        if method is TrainMethod.DL_TRUE:
            if dense.ndim != 1:
                raise ValueError(
                    f"`labels` must be the true classes of shape (N,) for method 'dl-true'; got "
                    f"shape {dense.shape}."
                )
            dense_2d = dense[:, None]
        else:
            if dense.ndim != 2:
                raise ValueError(
                    f"`labels` must have shape (N, n_annotators) with -1 for missing; got shape "
                    f"{dense.shape}."
                )
            dense_2d = dense
        if len(dense_2d) != n:
            raise ValueError(
                f"`labels` has {len(dense_2d)} rows but `X` has {n} items; they must match "
                "row for row."
            )
        if (dense_2d < -1).any():
            raise ValueError(
                f"`labels` must hold classes 0..K-1 or -1 for missing; got {int(dense_2d.min())}."
            )
        if n_classes is not None:
            if k > n_classes:
                raise ValueError(
                    f"`labels` contain class {k - 1} but the network has n_classes={n_classes} "
                    "outputs; fix the labels or the network head."
                )
            k = n_classes
        empty = ~(dense_2d >= 0).any(axis=1)
        if empty.any():
            raise ValueError(
                f"{int(empty.sum())} items have no labels (rows "
                f"{np.flatnonzero(empty)[:5].tolist()}); drop them before training."
            )
        return dense, k, dense_2d.shape[1]

    # ------------------------------------------------------------------ targets
    def _targets(self, method: TrainMethod, dense: np.ndarray, k: int) -> np.ndarray:
        from crowdmed.aggregation import DawidSkene, MajorityVote

        if method is TrainMethod.DL_TRUE:
            return dense
        if method is TrainMethod.DL_MV:
            return MajorityVote(random_state=self.random_state).fit(dense, n_classes=k).labels_
        if method is TrainMethod.DL_SOFT:
            return MajorityVote().fit(dense, n_classes=k).posteriors_.astype(np.float32)
        if method is TrainMethod.DL_DS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = DawidSkene(smoothing=self.smoothing, random_state=self.random_state)
                return ds.fit(dense, n_classes=k).labels_
        return dense  # raw labels

    def _build_head(
        self, method: TrainMethod, dense: np.ndarray, k: int, a: int, quiz: np.ndarray | None
    ) -> nn.Module | None:
        from crowdmed.aggregation import BinarySensSpec, DawidSkene

        if method in _CL_MODES:
            return CrowdLayer(k, a, mode=_CL_MODES[method])
        if method is TrainMethod.AGGNET:
            if k != 2:
                raise ValueError(
                    f"method 'aggnet' needs binary labels (2 classes); got {k}. Use 'dl-em' or a "
                    "crowd layer for more classes."
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bss = BinarySensSpec(tau=self.tau).fit(dense, n_classes=2, quiz_accuracy=quiz)
            return AggNetEM(
                a,
                tau=self.tau,
                quiz_accuracy=quiz,
                init_sensitivity=bss.sensitivity_,
                init_specificity=bss.specificity_,
            )
        if method is TrainMethod.DL_EM:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = DawidSkene(smoothing=self.smoothing).fit(dense, n_classes=k)
            return DawidSkeneEM(k, a, smoothing=self.smoothing, init_confusion=ds.confusion_)
        return None

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: Any,
        labels: Any,
        *,
        X_val: Any = None,
        y_val: Any = None,
        n_classes: int | None = None,
        quiz_accuracy: Any = None,
    ) -> CrowdClassifier:
        """Train the network.

        Args:
            X: Inputs, float array or tensor of shape ``(N, ...)``: features ``(N, D)`` or
                images ``(N, C, H, W)``.
            labels: Integer array of shape ``(N, n_annotators)`` with ``-1`` marking a missing
                annotation, or :class:`~crowdmed.data.CrowdLabels` in the same item order;
                for ``dl-true`` the true classes ``(N,)``.
            X_val: Validation inputs ``(M, ...)``.
            y_val: True validation classes ``(M,)``; drives early stopping (accuracy, or AUC
                for two classes).
            n_classes: Number of network outputs ``K``; inferred from the labels when omitted.
            quiz_accuracy: Float array ``(n_annotators,)`` for AggNet's trust prior; ``NaN``
                marks no quiz. Defaults to ``labels.quiz_accuracy`` for CrowdLabels.

        Returns:
            The fitted estimator.
        """
        method = self._check_params()
        for attr in ("history_", "best_epoch_", "annotator_confusion_", "head_", "stopped_early_"):
            self.__dict__.pop(attr, None)
        x = self._as_tensor(X, "X")
        dense, k, a = self._prepare_labels(method, labels, len(x), n_classes)
        if quiz_accuracy is None and isinstance(labels, CrowdLabels):
            quiz_accuracy = labels.quiz_accuracy
        quiz = None if quiz_accuracy is None else np.asarray(quiz_accuracy, dtype=np.float64)
        xv = yv = None
        if X_val is not None:
            if y_val is None:
                raise ValueError("`y_val` must be given with `X_val` (true validation classes).")
            xv = self._as_tensor(X_val, "X_val")
            yv = np.asarray(y_val).astype(np.int64)
            if yv.shape != (len(xv),):
                raise ValueError(f"`y_val` must have shape ({len(xv)},); got {yv.shape}.")
            bad = (yv < 0) | (yv >= k)
            if bad.any():
                bad_vals = np.unique(yv[bad])[:5].tolist()
                raise ValueError(f"`y_val` must hold true classes 0..{k - 1}; got {bad_vals}.")
        device = torch.device(self.device)
        self._check_network_output(x[:2].to(device), k)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            head = self._build_head(method, dense, k, a, quiz)
            self._fit_loop(method, x, dense, k, head, xv, yv, device)
        self.n_classes_ = k
        self.n_annotators_ = a if method is not TrainMethod.DL_TRUE else 0
        self.method_ = method
        self.head_ = head
        if isinstance(head, (CrowdLayer, DawidSkeneEM)):
            self.annotator_confusion_: np.ndarray | None = head.confusion_matrices()
        elif isinstance(head, AggNetEM):
            al, be = head.sensitivity.numpy(), head.specificity.numpy()
            self.annotator_confusion_ = np.stack(
                [np.stack([be, 1 - be], -1), np.stack([1 - al, al], -1)], axis=1
            )
        else:
            self.annotator_confusion_ = None
        return self

    def _check_network_output(self, x: torch.Tensor, k: int) -> None:
        net = self.network.to(x.device)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = net(x)
        except Exception as exc:  # a shape mismatch between data and network
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(
                f"The network cannot process inputs of shape {tuple(x.shape[1:])}: {first_line}"
            ) from exc
        finally:
            net.train(was_training)
        if out.ndim != 2 or out.shape[1] != k:
            raise ValueError(
                f"The network must output logits of shape (B, {k}) for {k} classes; got "
                f"{tuple(out.shape)}. Fix its last layer."
            )

    def _loss(
        self,
        method: TrainMethod,
        head: nn.Module | None,
        logits: torch.Tensor,
        target: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch loss, and the E-step posteriors for the EM heads (else ``None``)."""
        if method in (TrainMethod.DL_MV, TrainMethod.DL_DS):
            return nn.functional.cross_entropy(logits, target), None
        if method is TrainMethod.DL_TRUE:
            return nn.functional.cross_entropy(logits, target.reshape(-1)), None
        if method is TrainMethod.DL_SOFT:
            return -(target * torch.log_softmax(logits, 1)).sum(1).mean(), None
        if isinstance(head, (AggNetEM, DawidSkeneEM)):
            # One E-step per batch (labels were validated before training), reused for the
            # epoch's M-step.
            post = head.posteriors(logits.detach(), target, validate_args=False)
            return head.expected_nll(logits, post), post
        if isinstance(head, CrowdLayer):
            # Only the observed (item, annotator) pairs: the sum over annotators of the
            # cross-entropy, averaged over items (crowd_cross_entropy on the dense output).
            items, annotators = torch.nonzero(target >= 0, as_tuple=True)
            obs_logits = head.forward_observed(torch.softmax(logits, 1), items, annotators)
            ce = nn.functional.cross_entropy(obs_logits, target[items, annotators], reduction="sum")
            return ce / logits.shape[0], None
        raise NotImplementedError(f"no loss for method {method.value!r}")  # pragma: no cover

    def _fit_loop(
        self,
        method: TrainMethod,
        x: torch.Tensor,
        dense: np.ndarray,
        k: int,
        head: nn.Module | None,
        xv: torch.Tensor | None,
        yv: np.ndarray | None,
        device: torch.device,
    ) -> None:
        net = self.network.to(device)
        if head is not None:
            head.to(device)
        targets = torch.as_tensor(self._targets(method, dense, k))
        groups: list[dict[str, Any]] = [{"params": list(net.parameters())}]
        if isinstance(head, CrowdLayer):
            # Weight decay would pull the per-annotator transforms towards zero (a uniform
            # confusion), not towards the identity: the crowd layer is never decayed.
            if self.crowd_lr is None and self.weight_decay == 0:
                groups[0]["params"] += list(head.parameters())
            else:
                groups.append(
                    {
                        "params": list(head.parameters()),
                        "lr": self.crowd_lr or self.lr,
                        "weight_decay": 0.0,
                    }
                )
        opt = torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.random_state)

        start_epoch: int = 0
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"score": -math.inf, "epoch": 0, "state": None}
        ckpt = Path(self.checkpoint_dir) / "checkpoint.pt" if self.checkpoint_dir else None
        config = self._run_config(method, x, targets)
        stopped = False
        state = load_checkpoint(
            ckpt,
            config,
            device,
            fix="use another checkpoint_dir or delete it. Only `epochs` may grow on resume.",
        )
        if state is not None:
            net.load_state_dict(state["network"])
            if head is not None and state.get("head") is not None:
                head.load_state_dict(state["head"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            start_epoch, history, best = state["epoch"], state["history"], state["best"]
            stopped = bool(state.get("stopped", False))

        n = len(x)
        bar = self._progress_bar()
        try:
            for epoch in range(start_epoch, self.epochs if not stopped else start_epoch):
                t0 = time.perf_counter()
                net.train()
                perm = torch.randperm(n, generator=gen)
                total, seen = 0.0, 0
                em_post: list[torch.Tensor] = []
                em_idx: list[torch.Tensor] = []
                for idx in self._batches(perm):
                    xb = x[idx].to(device)
                    if self.augment is not None:
                        xb = self.augment(xb)
                    tb = targets[idx].to(device)
                    logits = net(xb)
                    loss, post = self._loss(method, head, logits, tb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
                    if post is not None:
                        em_post.append(post.cpu())
                        em_idx.append(idx)
                if isinstance(head, (AggNetEM, DawidSkeneEM)) and em_post:
                    # M-step once per epoch on the posteriors of the whole training set
                    order = torch.cat(em_idx)
                    post = torch.cat(em_post)
                    full = torch.empty_like(post)
                    full[order] = post
                    head.m_step(full, targets)
                record: dict[str, float] = {"epoch": epoch + 1, "loss": total / max(seen, 1)}
                score = -record["loss"]
                if xv is not None and yv is not None:
                    proba = self._predict_proba_tensor(xv, device, tta=False)
                    record["val_accuracy"] = float((proba.argmax(1) == yv).mean())
                    if k == 2:
                        record["val_auc"] = roc_auc(proba[:, 1], yv)
                    score = record.get("val_auc", record["val_accuracy"])
                    if k == 2 and math.isnan(score):
                        score = record["val_accuracy"]
                record["seconds"] = time.perf_counter() - t0
                history.append(record)
                if score > best["score"] or self.patience is None:
                    best = {
                        "score": score,
                        "epoch": epoch + 1,
                        "state": (
                            copy.deepcopy(net.state_dict()),
                            None if head is None else copy.deepcopy(head.state_dict()),
                        ),
                    }
                stopped = self.patience is not None and epoch + 1 - best["epoch"] >= self.patience
                if ckpt is not None:
                    self._save_checkpoint(
                        ckpt, config, epoch + 1, stopped, net, head, opt, gen, history, best
                    )
                self._report(bar, epoch + 1, record)
                if stopped:
                    break
        finally:
            if bar is not None:
                bar.stop()
        if best["state"] is not None:
            net.load_state_dict(best["state"][0])
            if head is not None and best["state"][1] is not None:
                head.load_state_dict(best["state"][1])
        self.history_ = history
        self.best_epoch_ = int(best["epoch"])
        self.stopped_early_ = stopped

    def _batches(self, perm: torch.Tensor) -> Iterator[torch.Tensor]:
        """Mini-batches of a permutation.

        A last batch of a single item joins the previous one: batch normalisation cannot
        train on one item.
        """
        n, b = len(perm), self.batch_size
        starts = list(range(0, n, b))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else n
            yield perm[s:end]

    def _run_config(
        self, method: TrainMethod, x: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, Any]:
        """Everything but ``epochs`` that must match for a checkpoint to be resumed."""
        digest = data_digest(targets)
        return {
            "method": method.value,
            "n": len(x),
            "input_shape": list(x.shape[1:]),
            "targets_sha256": digest,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "crowd_lr": self.crowd_lr,
            "patience": self.patience,
            "smoothing": self.smoothing,
            "tau": self.tau,
            "random_state": self.random_state,
        }

    def _save_checkpoint(
        self,
        path: Path,
        config: dict[str, Any],
        epoch: int,
        stopped: bool,
        net: nn.Module,
        head: nn.Module | None,
        opt: torch.optim.Optimizer,
        gen: torch.Generator,
        history: list[dict[str, float]],
        best: dict[str, Any],
    ) -> None:
        state = {
            "config": config,
            "epoch": epoch,
            "stopped": stopped,
            "network": net.state_dict(),
            "head": None if head is None else head.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "best": best,
        }
        save_checkpoint(path, state)

    # ------------------------------------------------------------------ progress
    def _progress_bar(self) -> Any:
        if self.progress is not True:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} epochs"),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        bar.start()
        self._task = bar.add_task(str(self.method), total=self.epochs, metrics="")
        return bar

    def _report(self, bar: Any, epoch: int, record: dict[str, float]) -> None:
        if callable(self.progress) and self.progress is not True:
            self.progress(epoch, self.epochs, record)
        elif bar is not None:
            shown = " ".join(
                f"{k}={v:.3f}" for k, v in record.items() if k not in ("epoch", "seconds")
            )
            bar.update(self._task, completed=epoch, metrics=shown)

    # ------------------------------------------------------------------ prediction
    def _predict_proba_tensor(
        self, x: torch.Tensor, device: torch.device, *, tta: bool
    ) -> np.ndarray:
        net = self.network
        was = net.training
        net.eval()
        out = []
        try:
            with torch.no_grad():
                for s in range(0, len(x), 256):
                    xb = x[s : s + 256].to(device)
                    if tta and xb.ndim == 4:
                        views = [torch.softmax(net(v), 1) for v in tta_views(xb)]
                        out.append(torch.stack(views).mean(0).cpu())
                    else:
                        out.append(torch.softmax(net(xb), 1).cpu())
        finally:
            net.train(was)
        return torch.cat(out).double().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, K)`` of the network (the crowd layer is dropped)."""
        if not hasattr(self, "history_"):
            from crowdmed.exceptions import NotFittedError

            raise NotFittedError(
                "This CrowdClassifier instance is not fitted yet. Call 'fit' first."
            )
        x = self._as_tensor(X, "X")
        return self._predict_proba_tensor(x, torch.device(self.device), tta=self.tta)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class ``(N,)``."""
        return self.predict_proba(X).argmax(axis=1)
