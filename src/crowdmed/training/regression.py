"""Fit loop for regression networks trained on the continuous labels of many annotators.

One estimator, :class:`CrowdRegressor`, covers Rodrigues & Pereira's (2018) regression
methods with the same network, optimiser and schedule:

====================  ===================================================================
``method``            what the network is trained on
====================  ===================================================================
``mean``              the mean answer of each item's annotators (squared error)
``crowd-layer-s``     raw answers through a regression crowd layer, scale per annotator
``crowd-layer-b``     … bias per annotator; ``crowd-layer-s+b`` both
``dl-em``             raw answers through Raykar-style EM: per-annotator precision
``dl-em+b``           ``dl-em`` with a per-annotator bias as well (not in the paper)
====================  ===================================================================

``dl-em`` is the paper's regression DL-EM baseline: annotators answer
``y_ir ~ N(μ_i, 1/λ_r)`` around the network's prediction ``μ_i`` (Raykar et al. 2010,
section 3, with the linear model replaced by the network); the fit alternates between the
adjusted ground truth ``ŷ_i = Σ_r λ_r y_ir / Σ_r λ_r`` the network is trained on and the
precisions re-estimated from the network's predictions once per epoch
(:class:`~crowdmed.nn.layers.GaussianReadersEM`). The precisions (and biases) start from a
label-only :class:`~crowdmed.aggregation.RaykarRegression` fit.
"""

from __future__ import annotations

import math
import os
import warnings
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crowdmed._validation import check_option
from crowdmed.nn.layers import CrowdRegressionLayer, GaussianReadersEM
from crowdmed.nn.losses import crowd_mse
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

__all__ = ["CrowdRegressor", "RegressionMethod"]


class RegressionMethod(str, Enum):
    """Training targets of :class:`CrowdRegressor` (see the module docstring)."""

    MEAN = "mean"
    CL_S = "crowd-layer-s"
    CL_B = "crowd-layer-b"
    CL_S_B = "crowd-layer-s+b"
    DL_EM = "dl-em"
    DL_EM_B = "dl-em+b"


_CL_MODES = {
    RegressionMethod.CL_S: "S",
    RegressionMethod.CL_B: "B",
    RegressionMethod.CL_S_B: "S+B",
}


class CrowdRegressor:
    """Train a regression network on the continuous answers of many annotators.

    The network maps a batch of inputs to predictions ``(B,)`` or ``(B, 1)``. Training runs
    on :class:`~crowdmed.training.engine.Engine` with a seeded data order, validation each
    epoch (root mean squared error against true values), early stopping and checkpoints.

    Args:
        network: Module mapping inputs to predictions ``(B,)`` or ``(B, 1)``; trained in place.
        method: See the module docstring.
        epochs: Maximum number of epochs.
        batch_size: Mini-batch size.
        lr: Learning rate of Adam.
        weight_decay: Weight decay of Adam for the network (never for the crowd layer).
        patience: Early stopping after this many epochs without a better validation score;
            ``None`` trains all epochs and keeps the last state.
        checkpoint_dir: Folder for ``checkpoint.safetensors`` (exact resume, see
            :class:`~crowdmed.training.CrowdClassifier`).
        device: Torch device; the CPU by default.
        random_state: Seed of the data order and dropout.
        progress: ``True`` for a rich progress bar, ``False`` for none, or a callable
            ``progress(epoch, epochs, metrics)``.
        resume: ``False`` deletes an existing checkpoint in ``checkpoint_dir`` and starts over.
        num_threads: Torch CPU threads during ``fit`` (restored afterwards).

    Attributes:
        history_ (list[dict]): One record per epoch (``loss``, ``seconds``, ``val_rmse``).
        best_epoch_ (int): Epoch whose weights were kept.
        stopped_early_ (bool): Whether early stopping ended the fit.
        annotator_precision_ (ndarray of shape (n_annotators,) or None): ``λ_r`` of
            ``dl-em``/``dl-em+b``; ``None`` otherwise.
        annotator_bias_ (ndarray of shape (n_annotators,) or None): ``b_r`` of ``dl-em+b`` and
            the crowd layers with a bias; zeros for ``dl-em``; ``None`` otherwise.
        annotator_scale_ (ndarray of shape (n_annotators,) or None): Crowd-layer scales.
        n_annotators_ (int): Number of annotators seen in ``fit``.

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds (regression crowd layer and
        DL-EM). AAAI. https://doi.org/10.1609/aaai.v32i1.11506
        Raykar et al. (2010). Learning from crowds. JMLR 11, 1297–1322.

    Examples:
        >>> import numpy as np, torch
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(300, 3)).astype("float32"); z = x @ np.array([1.0, -1.0, 0.5])
        >>> y = z[:, None] + rng.normal(size=(300, 2)) * np.array([0.1, 2.0])
        >>> reg = CrowdRegressor(torch.nn.Linear(3, 1), method="dl-em", epochs=40, lr=0.05,
        ...                      progress=False).fit(x, y)
        >>> bool(reg.annotator_precision_[0] > 10 * reg.annotator_precision_[1])
        True
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        method: str = "dl-em",
        epochs: int = 50,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int | None = 10,
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
        self.patience = patience
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.resume = resume
        self.num_threads = num_threads

    def _check_params(self) -> RegressionMethod:
        m = check_option(self.method, RegressionMethod, "method")
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
        if not isinstance(self.network, nn.Module):
            raise TypeError(
                f"`network` must be a torch.nn.Module; got {type(self.network).__name__}."
            )
        return m

    @staticmethod
    def _as_inputs(x: Any, name: str) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
        if t.ndim < 2:
            raise ValueError(
                f"`{name}` must have shape (N, ...) with features; got {tuple(t.shape)}."
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"`{name}` contains NaN or infinite values; clean the inputs first.")
        return t

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, labels: Any, *, X_val: Any = None, y_val: Any = None) -> CrowdRegressor:
        """Train the network.

        Args:
            X: Inputs, float array or tensor ``(N, ...)``.
            labels: Float array ``(N, n_annotators)`` of answers; ``NaN`` marks a missing one.
            X_val: Validation inputs ``(M, ...)``.
            y_val: True validation values ``(M,)``; drive early stopping (RMSE).

        Returns:
            The fitted estimator.
        """
        method = self._check_params()
        x = self._as_inputs(X, "X")
        y = np.asarray(labels, dtype=np.float64)
        if y.ndim != 2 or len(y) != len(x):
            raise ValueError(
                f"`labels` must have shape ({len(x)}, n_annotators) with NaN for missing; got "
                f"{y.shape}."
            )
        if np.isinf(y).any():
            raise ValueError("`labels` must be finite or NaN (missing); got infinite values.")
        empty = np.isnan(y).all(axis=1)
        if empty.any():
            raise ValueError(
                f"{int(empty.sum())} items have no answers (rows "
                f"{np.flatnonzero(empty)[:5].tolist()}); drop them before training."
            )
        xv = yv = None
        if X_val is not None:
            if y_val is None:
                raise ValueError("`y_val` must be given with `X_val` (true validation values).")
            xv = self._as_inputs(X_val, "X_val")
            yv = np.asarray(y_val, dtype=np.float64).reshape(-1)
            if yv.shape != (len(xv),):
                raise ValueError(f"`y_val` must have shape ({len(xv)},); got {yv.shape}.")
        device = resolve_device(self.device)
        task = _RegressionTask(self, method, x, y, xv, yv)
        ckpt = Path(self.checkpoint_dir) / CHECKPOINT_NAME if self.checkpoint_dir else None
        engine = Engine(
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
        )
        result = engine.fit(task)
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.stopped_early_ = result.stopped_early
        self.method_ = method
        self.n_annotators_ = y.shape[1]
        self.head_ = task.head
        self._set_annotator_attributes()
        return self

    def _set_annotator_attributes(self) -> None:
        head = self.head_
        self.annotator_precision_ = self.annotator_bias_ = self.annotator_scale_ = None
        if isinstance(head, GaussianReadersEM):
            self.annotator_precision_ = head.precision.cpu().numpy().copy()
            self.annotator_bias_ = head.offset.cpu().numpy().copy()
        if isinstance(head, CrowdRegressionLayer):
            if head.scale is not None:
                self.annotator_scale_ = head.scale.detach().cpu().double().numpy()
            if head.bias is not None:
                self.annotator_bias_ = head.bias.detach().cpu().double().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out.squeeze(-1)
        if out.ndim != 1:
            raise ValueError(
                f"The network must output predictions of shape (B,) or (B, 1); got "
                f"{tuple(out.shape)}. Fix its last layer."
            )
        return out

    def _predict_tensor(self, x: torch.Tensor, device: torch.device) -> np.ndarray:
        net = self.network
        was = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = [
                    self._forward(x[s : s + 256].to(device)).cpu() for s in range(0, len(x), 256)
                ]
        finally:
            net.train(was)
        return torch.cat(out).double().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``(N,)`` of the network (the crowd layer / EM head is dropped)."""
        if not hasattr(self, "history_"):
            from crowdmed.exceptions import NotFittedError

            raise NotFittedError(
                "This CrowdRegressor instance is not fitted yet. Call 'fit' first."
            )
        return self._predict_tensor(self._as_inputs(X, "X"), resolve_device(self.device))

    # ------------------------------------------------------------------ persistence
    _SAVED_PARAMS = (
        "method",
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "patience",
        "random_state",
    )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted model as a folder (``config.json`` + ``model.safetensors``)."""
        if not hasattr(self, "history_"):
            from crowdmed.exceptions import NotFittedError

            raise NotFittedError(
                "This CrowdRegressor instance is not fitted yet. Call 'fit' first."
            )
        tensors = {f"network/{k}": v for k, v in self.network.state_dict().items()}
        head_config: dict[str, Any] | None = None
        if self.head_ is not None:
            tensors.update({f"head/{k}": v for k, v in self.head_.state_dict().items()})
            head_config = {"type": type(self.head_).__name__}
            if isinstance(self.head_, CrowdRegressionLayer):
                head_config["mode"] = self.head_.mode.value
            if isinstance(self.head_, GaussianReadersEM):
                head_config["bias"] = self.head_.bias
        config = {
            "network": network_spec(self.network),
            "network_class": type(self.network).__qualname__,
            "params": {name: getattr(self, name) for name in self._SAVED_PARAMS},
            "head": head_config,
            "fitted": {
                "method": self.method_.value,
                "n_annotators": self.n_annotators_,
                "history": self.history_,
                "best_epoch": self.best_epoch_,
                "stopped_early": self.stopped_early_,
            },
        }
        if not is_main_process():
            return Path(path)
        return save_folder(path, task="regressor", config=config, tensors=tensors)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        network: nn.Module | None = None,
        device: str | torch.device | None = None,
    ) -> CrowdRegressor:
        """Read a folder written by :meth:`save`; the model is ready to predict.

        Args:
            path: The model folder.
            network: The network to fill, when the saved one was not built by
                :func:`crowdmed.nn.build_network`.
            device: Torch device; CUDA when available if ``None``.

        Returns:
            The fitted regressor.
        """
        config, tensors = read_folder(path, task="regressor")
        folder = Path(path)
        net = rebuild_network(config, network, folder)
        load_state(net, tensors, "network/", folder)
        dev = resolve_device(device)
        reg = cls(net, **config["params"], device=str(dev), progress=False)
        fitted = config["fitted"]
        a = int(fitted["n_annotators"])
        head: nn.Module | None = None
        hc = config.get("head")
        if hc is not None and hc.get("type") == "CrowdRegressionLayer":
            head = CrowdRegressionLayer(a, mode=hc["mode"])
        elif hc is not None and hc.get("type") == "GaussianReadersEM":
            head = GaussianReadersEM(a, bias=bool(hc["bias"]))
        elif hc is not None:
            raise ValueError(f"Unknown crowd head {hc.get('type')!r} in the model config.")
        if head is not None:
            load_state(head, tensors, "head/", folder)
        net.to(dev)
        reg.history_ = list(fitted["history"])
        reg.best_epoch_ = int(fitted["best_epoch"])
        reg.stopped_early_ = bool(fitted["stopped_early"])
        reg.method_ = RegressionMethod(fitted["method"])
        reg.n_annotators_ = a
        reg.head_ = head
        reg._set_annotator_attributes()
        return reg


class _RegressionTask(TrainTask):
    """One :class:`CrowdRegressor` fit as an engine task."""

    def __init__(
        self,
        reg: CrowdRegressor,
        method: RegressionMethod,
        x: torch.Tensor,
        y: np.ndarray,
        xv: torch.Tensor | None,
        yv: np.ndarray | None,
    ) -> None:
        self.reg, self.method, self.x, self.y, self.xv, self.yv = reg, method, x, y, xv, yv
        self.name = str(reg.method)
        self.head: nn.Module | None = None

    def setup(self, engine: Engine) -> None:
        reg, device, y = self.reg, engine.device, self.y
        a = y.shape[1]
        if self.method in _CL_MODES:
            self.head = CrowdRegressionLayer(a, mode=_CL_MODES[self.method])
        elif self.method in (RegressionMethod.DL_EM, RegressionMethod.DL_EM_B):
            from crowdmed.aggregation import RaykarRegression

            bias = self.method is RegressionMethod.DL_EM_B
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                init = RaykarRegression(bias=bias).fit(y)
            self.head = GaussianReadersEM(
                a, bias=bias, init_precision=init.precision_, init_bias=init.bias_
            )
        self.net = reg.network.to(device)
        if self.head is not None:
            self.head.to(device)
        if self.method is RegressionMethod.MEAN:
            self.targets = torch.as_tensor(np.nanmean(y, axis=1), dtype=torch.float32)
        else:
            self.targets = torch.as_tensor(y, dtype=torch.float32)
        groups: list[dict[str, Any]] = [{"params": list(self.net.parameters())}]
        if isinstance(self.head, CrowdRegressionLayer):
            groups.append({"params": list(self.head.parameters()), "weight_decay": 0.0})
        self.opt = torch.optim.Adam(groups, lr=reg.lr, weight_decay=reg.weight_decay)
        self.model = engine.wrap(self.net)

    def modules(self) -> dict[str, nn.Module]:
        out = {"network": self.net}
        if self.head is not None:
            out["head"] = self.head
        return out

    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method.value,
            "n": len(self.x),
            "inputs_sha256": data_digest(self.x),
            "targets_sha256": data_digest(torch.nan_to_num(self.targets, nan=-1e30)),
            "lr": self.reg.lr,
            "weight_decay": self.reg.weight_decay,
        }

    def epoch_items(self, epoch: int, engine: Engine) -> int:
        return len(self.x)

    def train_batch(self, idx: torch.Tensor, engine: Engine) -> torch.Tensor:
        xb = self.x[idx].to(engine.device)
        tb = self.targets[idx].to(engine.device)
        out = self.model(xb)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out.squeeze(-1)
        if isinstance(self.head, GaussianReadersEM):
            return self.head.loss(out, tb)
        if isinstance(self.head, CrowdRegressionLayer):
            return crowd_mse(self.head(out), tb)
        return nn.functional.mse_loss(out, tb)

    def end_epoch(self, epoch: int, engine: Engine) -> dict[str, float]:
        if isinstance(self.head, GaussianReadersEM):
            # M-step once per epoch from the network's predictions on the whole training set
            pred = self.reg._predict_tensor(self.x, engine.device)
            self.head.m_step(pred, self.y)
        return {}

    def validate(self, engine: Engine) -> dict[str, float]:
        if self.xv is None or self.yv is None:
            return {}
        pred = self.reg._predict_tensor(self.xv, engine.device)
        return {"val_rmse": float(np.sqrt(np.mean((pred - self.yv) ** 2)))}

    def score(self, record: dict[str, float]) -> float:
        return -record["val_rmse"] if "val_rmse" in record else -record["loss"]


register_loader("regressor", CrowdRegressor.load)
