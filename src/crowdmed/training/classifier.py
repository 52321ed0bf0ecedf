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
``dl-dn``           Doctor Net: one output head per annotator on the network's trunk, each
                    trained on its annotator's labels; prediction: majority vote of the heads
``dl-wdn``          weighted Doctor Net: ``dl-dn``, then averaging weights of the frozen
                    heads learned by backpropagation; prediction: weighted mean of the heads
==================  =====================================================================

``dl-dn`` and ``dl-wdn`` are the Doctor Net baselines of Rodrigues & Pereira (2018), after
Guan et al. (2018): the network's last linear layer is replaced by one copy per annotator
(:class:`~crowdmed.nn.layers.DoctorNetHeads`; the network must end in a ``torch.nn.Linear``).
Rodrigues & Pereira do not say what target the averaging weights are fitted to; here it is
the majority-vote labels (``dl-mv``'s target). Against the soft vote shares, a proper scoring
rule, calibrated heads would get weights equal to the annotators' shares of the labels
whatever their reliability.
"""

from __future__ import annotations

import math
import os
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
from crowdmed.nn.layers import AggNetEM, CrowdLayer, DawidSkeneEM, DoctorNetHeads
from crowdmed.nn.models import split_last_linear
from crowdmed.nn.registry import network_spec
from crowdmed.training.engine import (
    CHECKPOINT_NAME,
    Engine,
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
    DL_DN = "dl-dn"
    DL_WDN = "dl-wdn"


_CL_MODES = {
    TrainMethod.CL_MW: "MW",
    TrainMethod.CL_VW: "VW",
    TrainMethod.CL_VB: "VB",
    TrainMethod.CL_VW_B: "VW+B",
}

_DOCTOR_NET = {TrainMethod.DL_DN: "vote", TrainMethod.DL_WDN: "weighted"}

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
        momentum: ``None`` trains with Adam; a number trains with SGD with this momentum
            (AggNet's refinement: SGD, momentum 0.9, weight decay 5e-4).
        crowd_lr: Learning rate of the crowd layer's parameters; ``lr`` when ``None``.
        patience: Early stopping after this many epochs without a better validation score;
            ``None`` trains all epochs and keeps the last state.
        smoothing: Dirichlet pseudo-count of the DS fit (``dl-ds``) and of DL-EM's M-step.
        tau: Strength ``τ`` of AggNet's quiz trust prior (eq. 8; the paper's range is
            ``[0.1, 1]``).
        augment: Callable applied to each training batch of inputs (e.g. random flips).
        tta: Average the softmax over the 8 rotations/mirrors at prediction (images only).
        checkpoint_dir: Folder for ``checkpoint.safetensors``, written atomically after every
            epoch (weights, optimiser, RNG states, history; no pickle); a fit with the same
            folder, settings and data resumes from it exactly, and other settings raise
            :class:`~crowdmed.training.CheckpointMismatchError`.
        device: Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``; ``None``: CUDA when
            available). Under ``torchrun`` ``"cuda"`` means this process's GPU.
        random_state: Seed of the data order, dropout, the crowd/EM head's initialisation and
            tie-breaking (the network's own weights are initialised when you build it: build
            it inside ``torch.random.fork_rng()`` with a seed for a fully seeded run).
        progress: ``True`` for a rich progress bar, ``False`` for none, or a callable
            ``progress(epoch, epochs, metrics)`` called after every epoch.
        resume: ``False`` deletes an existing checkpoint in ``checkpoint_dir`` and starts over.
        num_threads: Torch CPU threads during ``fit`` (restored afterwards); ``None`` leaves
            the setting alone.

    The fit runs on :class:`crowdmed.training.engine.Engine`, also under
    ``torchrun --nproc_per_node N`` (data parallel, one shard of every epoch per process).
    :meth:`save` writes a model folder that :meth:`load` and
    :func:`crowdmed.training.load_model` read back.

    Attributes:
        history_ (list[dict]): One record per epoch: ``epoch, loss, seconds`` and the
            validation ``val_accuracy``/``val_auc`` when validation labels are given.
        best_epoch_ (int): Epoch whose weights were kept.
        stopped_early_ (bool): Whether early stopping ended the fit (resuming a stopped run
            trains no further).
        annotator_confusion_ (ndarray of shape (n_annotators, K, K) or None): Estimated
            annotator confusion matrices (crowd layer, DL-EM, AggNet); ``None`` otherwise.
        averaging_weights_ (ndarray of shape (n_annotators,) or None): DL-WDN's learned
            averaging weights of the annotators' heads (sum to 1); ``None`` otherwise.
        n_classes_ (int), n_annotators_ (int): Sizes seen in ``fit``.

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds. AAAI.
        https://doi.org/10.1609/aaai.v32i1.11506
        Albarqouni et al. (2016). AggNet. IEEE TMI. https://doi.org/10.1109/TMI.2016.2528120
        Guan et al. (2018). Who said what: modeling individual labelers improves
        classification. AAAI. https://doi.org/10.1609/aaai.v32i1.11756

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
        momentum: float | None = None,
        crowd_lr: float | None = None,
        patience: int | None = 10,
        smoothing: float = 0.01,
        tau: float = 0.5,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tta: bool = False,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        random_state: int = 0,
        progress: bool | ProgressHook = True,
        resume: bool = True,
        num_threads: int | None = None,
    ) -> None:
        self.network = network
        self.method = method
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
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
        self.resume = resume
        self.num_threads = num_threads

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
        if method in _DOCTOR_NET:
            _, last = split_last_linear(self.network)
            # every head starts as the network's last layer: with identical annotators the
            # heads stay identical and the fit follows plain training (Adam is scale-free)
            return DoctorNetHeads(
                last.in_features,
                k,
                a,
                combine=_DOCTOR_NET[method],
                init_weight=last.weight,
                init_bias=last.bias,
            )
        if method is TrainMethod.AGGNET:
            if k != 2:
                raise ValueError(
                    f"method 'aggnet' needs binary labels (2 classes); got {k}. Use 'dl-em' or a "
                    "crowd layer for more classes."
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # AggNet's initialisation: eq. 2 majority vote, then one M-step (eq. 6/8)
                bss = BinarySensSpec(tau=self.tau, max_iter=0, init="aggnet")
                bss.fit(dense, n_classes=2, quiz_accuracy=quiz)
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
        for attr in (
            "history_",
            "best_epoch_",
            "annotator_confusion_",
            "averaging_weights_",
            "head_",
            "stopped_early_",
        ):
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
        device = resolve_device(self.device)
        self._check_network_output(x[:2].to(device), k)
        if method in _DOCTOR_NET:
            split_last_linear(self.network)  # a clear error before training starts

        task = _ClassifierTask(self, method, x, dense, k, a, quiz, xv, yv)
        result = self._engine(device).fit(task)
        head = task.head
        if isinstance(head, DoctorNetHeads) and head.combine == "weighted":
            self._fit_averaging_weights(head, x, dense, k, device)
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.stopped_early_ = result.stopped_early
        self.n_classes_ = k
        self.n_annotators_ = a if method is not TrainMethod.DL_TRUE else 0
        self.method_ = method
        self.head_ = head
        self.annotator_confusion_ = _head_confusion(head)
        self.averaging_weights_ = _averaging_weights(head)
        return self

    def _fit_averaging_weights(
        self, head: DoctorNetHeads, x: torch.Tensor, dense: np.ndarray, k: int, device: Any
    ) -> None:
        """DL-WDN's second stage: averaging weights of the frozen heads on the MV labels."""
        from crowdmed.aggregation import MajorityVote

        trunk, _ = split_last_linear(self.network)
        was = self.network.training
        self.network.eval()
        head.eval()
        parts = []
        try:
            with torch.no_grad():
                for s in range(0, len(x), 256):
                    feats = trunk(x[s : s + 256].to(device))
                    parts.append(torch.softmax(head(feats), dim=-1).cpu())
        finally:
            self.network.train(was)
        target = MajorityVote(random_state=self.random_state).fit(dense, n_classes=k).labels_
        head.fit_averaging_weights(torch.cat(parts), torch.as_tensor(target))

    def _engine(self, device: torch.device) -> Engine:
        ckpt = Path(self.checkpoint_dir) / CHECKPOINT_NAME if self.checkpoint_dir else None
        return Engine(
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.random_state,
            patience=self.patience,
            device=device,
            checkpoint=ckpt,
            resume=self.resume,
            mismatch_hint="use another checkpoint_dir or delete it. Only `epochs` may grow on "
            "resume.",
            progress=self.progress,
            num_threads=self.num_threads,
            setting_names={"seed": "random_state"},
        )

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
        if isinstance(head, DoctorNetHeads):
            # ``logits`` are the trunk's features here: each annotator's head on their own
            # labels, summed over annotators and averaged over items (as the crowd layer)
            items, annotators = torch.nonzero(target >= 0, as_tuple=True)
            obs_logits = head.forward_observed(logits, items, annotators)
            ce = nn.functional.cross_entropy(obs_logits, target[items, annotators], reduction="sum")
            return ce / logits.shape[0], None
        if isinstance(head, CrowdLayer):
            # ``target`` holds the batch's observed pairs (B, 2, M): annotators, then labels
            # (-1: padding). The sum over annotators of the cross-entropy, averaged over
            # items (crowd_cross_entropy on the dense output), on the observed pairs only.
            return head.observed_nll(logits, target[:, 0], target[:, 1]), None
        raise NotImplementedError(f"no loss for method {method.value!r}")  # pragma: no cover

    # ------------------------------------------------------------------ prediction
    def _predict_proba_tensor(
        self,
        x: torch.Tensor,
        device: torch.device,
        *,
        tta: bool,
        head: nn.Module | None = None,
    ) -> np.ndarray:
        net = self.network
        proba: Callable[[torch.Tensor], torch.Tensor]
        if isinstance(head, DoctorNetHeads):
            trunk, _ = split_last_linear(net)
            doctors = head

            def proba(v: torch.Tensor) -> torch.Tensor:
                return doctors.combined_proba(trunk(v))
        else:

            def proba(v: torch.Tensor) -> torch.Tensor:
                return torch.softmax(net(v), 1)

        was = net.training
        net.eval()
        out = []
        try:
            with torch.no_grad():
                for s in range(0, len(x), 256):
                    xb = x[s : s + 256].to(device)
                    if tta and xb.ndim == 4:
                        views = [proba(v) for v in tta_views(xb)]
                        out.append(torch.stack(views).mean(0).cpu())
                    else:
                        out.append(proba(xb).cpu())
        finally:
            net.train(was)
        return torch.cat(out).double().numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, K)`` of the network (the crowd layer is dropped).

        For ``dl-dn`` the heads' vote shares (ties broken by their mean probability, see
        :meth:`~crowdmed.nn.layers.DoctorNetHeads.combined_proba`); for ``dl-wdn`` the
        weighted mean of the heads' probabilities.
        """
        self._check_fitted()
        x = self._as_tensor(X, "X")
        head = self.head_ if isinstance(self.head_, DoctorNetHeads) else None
        return self._predict_proba_tensor(x, resolve_device(self.device), tta=self.tta, head=head)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class ``(N,)``."""
        return self.predict_proba(X).argmax(axis=1)

    # ------------------------------------------------------------------ persistence
    _SAVED_PARAMS = (
        "method",
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "crowd_lr",
        "patience",
        "smoothing",
        "tau",
        "tta",
        "random_state",
    )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted model as a folder: ``config.json`` + ``model.safetensors``.

        The folder holds the network's weights (and its :func:`~crowdmed.nn.network_spec`
        when it was built by :func:`crowdmed.nn.build_network`, :func:`~crowdmed.nn.mlp_head`
        or :func:`~crowdmed.nn.small_cnn`), the crowd/EM head, the settings and the fitted
        attributes. Under ``torchrun`` only rank 0 writes.

        Args:
            path: The model folder (created when missing; other files in it are kept).

        Returns:
            The folder.
        """
        self._check_fitted()
        tensors = {f"network/{k}": v for k, v in self.network.state_dict().items()}
        head = self.head_
        head_config: dict[str, Any] | None = None
        if head is not None:
            tensors.update({f"head/{k}": v for k, v in head.state_dict().items()})
            head_config = {"type": type(head).__name__}
            if isinstance(head, CrowdLayer):
                head_config["mode"] = head.mode.value
            if isinstance(head, AggNetEM):
                tensors["head_quiz_accuracy"] = torch.as_tensor(head.quiz_accuracy)
            if isinstance(head, DoctorNetHeads):
                head_config.update(combine=head.combine, in_features=head.in_features)
        if self.annotator_confusion_ is not None:
            tensors["annotator_confusion"] = torch.as_tensor(self.annotator_confusion_)
        config = {
            "network": network_spec(self.network),
            "network_class": type(self.network).__qualname__,
            "params": {name: getattr(self, name) for name in self._SAVED_PARAMS},
            "augment": None if self.augment is None else _qualname(self.augment),
            "head": head_config,
            "fitted": {
                "method": self.method_.value,
                "n_classes": self.n_classes_,
                "n_annotators": self.n_annotators_,
                "history": self.history_,
                "best_epoch": self.best_epoch_,
                "stopped_early": self.stopped_early_,
            },
        }
        if not is_main_process():
            return Path(path)
        return save_folder(path, task="classifier", config=config, tensors=tensors)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        network: nn.Module | None = None,
        device: str | torch.device | None = None,
    ) -> CrowdClassifier:
        """Read a folder written by :meth:`save`; the model is ready to predict.

        Args:
            path: The model folder.
            network: The network to fill with the saved weights; needed only when the saved
                network was not built by :func:`crowdmed.nn.build_network` (its config has no
                network spec).
            device: Torch device of the model; CUDA when available if ``None``.

        Returns:
            The fitted classifier (``augment`` is not saved: it is ``None``).

        Raises:
            ValueError: The folder is missing, corrupt, of another task, or its weights do not
                fit ``network`` (one line naming the file).
        """
        config, tensors = read_folder(path, task="classifier")
        folder = Path(path)
        net = rebuild_network(config, network, folder)
        load_state(net, tensors, "network/", folder)
        dev = resolve_device(device)
        clf = cls(net, **config["params"], device=str(dev), progress=False)
        fitted = config["fitted"]
        method = TrainMethod(fitted["method"])
        k, a = int(fitted["n_classes"]), int(fitted["n_annotators"])
        head = _head_from(config.get("head"), tensors, k, a, float(clf.smoothing), float(clf.tau))
        if head is not None:
            load_state(head, tensors, "head/", folder)
            head.to(dev)
        net.to(dev)
        clf.history_ = list(fitted["history"])
        clf.best_epoch_ = int(fitted["best_epoch"])
        clf.stopped_early_ = bool(fitted["stopped_early"])
        clf.n_classes_, clf.n_annotators_, clf.method_, clf.head_ = k, a, method, head
        conf = tensors.get("annotator_confusion")
        clf.annotator_confusion_ = None if conf is None else conf.numpy()
        clf.averaging_weights_ = _averaging_weights(head)
        return clf

    def _check_fitted(self) -> None:
        if not hasattr(self, "history_"):
            from crowdmed.exceptions import NotFittedError

            raise NotFittedError(
                "This CrowdClassifier instance is not fitted yet. Call 'fit' first."
            )


class _ClassifierTask(TrainTask):
    """One :class:`CrowdClassifier` fit as an engine task."""

    def __init__(
        self,
        clf: CrowdClassifier,
        method: TrainMethod,
        x: torch.Tensor,
        dense: np.ndarray,
        k: int,
        a: int,
        quiz: np.ndarray | None,
        xv: torch.Tensor | None,
        yv: np.ndarray | None,
    ) -> None:
        self.clf, self.method, self.x, self.dense = clf, method, x, dense
        self.k, self.a, self.quiz, self.xv, self.yv = k, a, quiz, xv, yv
        self.name = str(clf.method)
        self.head: nn.Module | None = None
        self.em_post: list[torch.Tensor] = []
        self.em_idx: list[torch.Tensor] = []
        self.trunk: nn.Module | None = None

    def setup(self, engine: Engine) -> None:
        clf, device = self.clf, engine.device
        # built with the seeded global RNG, before the data order is drawn
        self.head = clf._build_head(self.method, self.dense, self.k, self.a, self.quiz)
        self.net = clf.network.to(device)
        if self.head is not None:
            self.head.to(device)
        self.targets = torch.as_tensor(clf._targets(self.method, self.dense, self.k))
        # the crowd layer's batches: each item's observed (annotator, label) pairs, padded,
        # built once (a batch indexes them instead of searching its dense labels)
        self.batch_targets = self.targets
        if isinstance(self.head, CrowdLayer):
            self.batch_targets = torch.stack(CrowdLayer.observed_pairs(self.targets), dim=1)
        groups: list[dict[str, Any]] = [{"params": list(self.net.parameters())}]
        if isinstance(self.head, DoctorNetHeads):
            # the trunk and the heads; the network's own last layer is not used
            self.trunk, _ = split_last_linear(self.net)
            groups[0]["params"] = list(self.trunk.parameters()) + list(self.head.parameters())
        elif isinstance(self.head, CrowdLayer):
            # Weight decay would pull the per-annotator transforms towards zero (a uniform
            # confusion), not towards the identity: the crowd layer is never decayed.
            if clf.crowd_lr is None and clf.weight_decay == 0:
                groups[0]["params"] += list(self.head.parameters())
            else:
                groups.append(
                    {
                        "params": list(self.head.parameters()),
                        "lr": clf.crowd_lr or clf.lr,
                        "weight_decay": 0.0,
                    }
                )
        self.opt: torch.optim.Optimizer
        if clf.momentum is None:
            self.opt = torch.optim.Adam(groups, lr=clf.lr, weight_decay=clf.weight_decay)
        else:  # SGD with momentum, as AggNet trains and refines its network
            self.opt = torch.optim.SGD(
                groups, lr=clf.lr, momentum=clf.momentum, weight_decay=clf.weight_decay
            )
        # the Doctor Net trunk is not wrapped: the engine averages its gradients over ranks
        self.model = self.net if self.trunk is not None else engine.wrap(self.net)
        self.em_post, self.em_idx = [], []

    def modules(self) -> dict[str, nn.Module]:
        out = {"network": self.net}
        if self.head is not None:
            out["head"] = self.head
        return out

    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt

    def config(self) -> dict[str, Any]:
        clf = self.clf
        return {
            "method": self.method.value,
            "n": len(self.x),
            "input_shape": list(self.x.shape[1:]),
            "inputs_sha256": data_digest(self.x),
            "targets_sha256": data_digest(self.targets),
            "lr": clf.lr,
            "weight_decay": clf.weight_decay,
            **({} if clf.momentum is None else {"momentum": clf.momentum}),
            "crowd_lr": clf.crowd_lr,
            "smoothing": clf.smoothing,
            "tau": clf.tau,
        }

    def epoch_items(self, epoch: int, engine: Engine) -> int:
        return len(self.x)

    def train_batch(self, idx: torch.Tensor, engine: Engine) -> torch.Tensor:
        xb = self.x[idx].to(engine.device)
        if self.clf.augment is not None:
            xb = self.clf.augment(xb)
        tb = self.batch_targets[idx].to(engine.device)
        out = self.trunk(xb) if self.trunk is not None else self.model(xb)
        loss, post = self.clf._loss(self.method, self.head, out, tb)
        if post is not None:
            self.em_post.append(post.cpu())
            self.em_idx.append(idx)
        return loss

    def end_epoch(self, epoch: int, engine: Engine) -> dict[str, float]:
        if isinstance(self.head, (AggNetEM, DawidSkeneEM)) and self.em_post:
            # M-step once per epoch on the posteriors of the whole training set (of every
            # process under torchrun: the shards have equal sizes)
            order = engine.all_gather(torch.cat(self.em_idx))
            post = engine.all_gather(torch.cat(self.em_post))
            full = torch.empty((len(self.x), *post.shape[1:]), dtype=post.dtype)
            full[order] = post
            self.head.m_step(full, self.targets)
        self.em_post, self.em_idx = [], []
        return {}

    def validate(self, engine: Engine) -> dict[str, float]:
        if self.xv is None or self.yv is None:
            return {}
        proba = self.clf._predict_proba_tensor(self.xv, engine.device, tta=False, head=self.head)
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


def _head_confusion(head: nn.Module | None) -> np.ndarray | None:
    """Annotator confusion matrices ``(A, K, K)`` of a crowd/EM head, else ``None``."""
    if isinstance(head, (CrowdLayer, DawidSkeneEM)):
        return head.confusion_matrices()
    if isinstance(head, AggNetEM):
        al, be = head.sensitivity.cpu().numpy(), head.specificity.cpu().numpy()
        return np.stack([np.stack([be, 1 - be], -1), np.stack([1 - al, al], -1)], axis=1)
    return None


def _averaging_weights(head: nn.Module | None) -> np.ndarray | None:
    """DL-WDN's averaging weights ``(A,)``, else ``None``."""
    if isinstance(head, DoctorNetHeads) and head.combine == "weighted":
        return head.averaging_weights().detach().cpu().double().numpy()
    return None


def _head_from(
    config: dict[str, Any] | None,
    tensors: dict[str, torch.Tensor],
    k: int,
    a: int,
    smoothing: float,
    tau: float,
) -> nn.Module | None:
    """An empty head of the saved type (its weights are loaded afterwards)."""
    if config is None:
        return None
    kind = config.get("type")
    if kind == "CrowdLayer":
        return CrowdLayer(k, a, mode=config["mode"])
    if kind == "DawidSkeneEM":
        return DawidSkeneEM(k, a, smoothing=smoothing)
    if kind == "AggNetEM":
        quiz = tensors.get("head_quiz_accuracy")
        return AggNetEM(a, tau=tau, quiz_accuracy=None if quiz is None else quiz.numpy())
    if kind == "DoctorNetHeads":
        return DoctorNetHeads(int(config["in_features"]), k, a, combine=config["combine"])
    raise ValueError(f"Unknown crowd head {kind!r} in the model config; save the model again.")


def _qualname(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", type(obj).__qualname__))


register_loader("classifier", CrowdClassifier.load)
