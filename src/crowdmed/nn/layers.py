"""Layers that learn from the raw labels of many annotators (PyTorch).

* :class:`CrowdLayer` — Rodrigues & Pereira's crowd layer for classification (``MW``, ``VW``,
  ``VB``, ``VW+B``) and :class:`CrowdRegressionLayer` (``S``, ``B``, ``S+B``).
* :class:`AggNetEM` — the EM aggregation layer of AggNet (binary, per-annotator sensitivity
  and specificity, quiz trust prior).
* :class:`DawidSkeneEM` — DL-EM: Dawid–Skene confusion matrices around a network.

Label batches follow the dense convention: an integer tensor of shape ``(B, A)`` with ``-1``
marking a missing annotation.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import nn

from crowdmed._validation import check_option

__all__ = [
    "AggNetEM",
    "CrowdLayer",
    "CrowdMode",
    "CrowdRegressionLayer",
    "DawidSkeneEM",
    "RegressionMode",
]


class CrowdMode(str, Enum):
    """Per-annotator transforms of the crowd layer."""

    MW = "MW"  # matrix
    VW = "VW"  # vector scale
    VB = "VB"  # vector bias
    VW_B = "VW+B"  # vector scale and bias


class RegressionMode(str, Enum):
    """Per-annotator transforms of the regression crowd layer."""

    S = "S"  # scale
    B = "B"  # bias
    S_B = "S+B"  # scale and bias


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int; got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1; got {value}.")
    return int(value)


class CrowdLayer(nn.Module):
    """Crowd layer: one learned transform per annotator after the network's softmax.

    Given class probabilities ``p`` of shape ``(B, K)`` (the bottleneck), annotator ``a``'s
    logits are ``W_a p`` (``MW``), ``w_a ⊙ p`` (``VW``), ``p + b_a`` (``VB``) or
    ``w_a ⊙ p + b_a`` (``VW+B``). Every transform starts at the identity. Train with
    :func:`crowdmed.nn.losses.crowd_cross_entropy` on the annotators' labels; afterwards drop
    the layer and predict with the bottleneck.

    Args:
        n_classes: Number of classes ``K``.
        n_annotators: Number of annotators ``A``.
        mode: ``"MW"``, ``"VW"``, ``"VB"`` or ``"VW+B"``.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: ``(B, K)`` probabilities (rows sum to 1).
        - Output: ``(B, A, K)`` per-annotator logits.

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds. AAAI.
        https://doi.org/10.1609/aaai.v32i1.11506

    Examples:
        >>> import torch
        >>> layer = CrowdLayer(3, 2, mode="MW")
        >>> p = torch.softmax(torch.randn(4, 3), dim=1)
        >>> layer(p).shape
        torch.Size([4, 2, 3])
        >>> torch.allclose(layer(p)[:, 0], p)
        True
    """

    def __init__(
        self,
        n_classes: int,
        n_annotators: int,
        *,
        mode: str | CrowdMode = "MW",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.n_classes = _check_positive_int(n_classes, "n_classes")
        self.n_annotators = _check_positive_int(n_annotators, "n_annotators")
        if self.n_classes < 2:
            raise ValueError(f"`n_classes` must be at least 2; got {n_classes}.")
        self.mode = check_option(mode, CrowdMode, "mode")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        k, a = self.n_classes, self.n_annotators
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        if self.mode is CrowdMode.MW:
            eye = torch.eye(k, **kw).expand(a, k, k).clone()
            self.weight = nn.Parameter(eye)
        if self.mode in (CrowdMode.VW, CrowdMode.VW_B):
            self.weight = nn.Parameter(torch.ones(a, k, **kw))
        if self.mode in (CrowdMode.VB, CrowdMode.VW_B):
            self.bias = nn.Parameter(torch.zeros(a, k, **kw))

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-annotator logits of shape ``(B, A, K)`` from probabilities ``(B, K)``."""
        if probs.ndim != 2 or probs.shape[1] != self.n_classes:
            raise ValueError(
                f"`probs` must have shape (B, {self.n_classes}); got {tuple(probs.shape)}."
            )
        if self.mode is CrowdMode.MW:
            assert self.weight is not None
            return torch.einsum("alk,bk->bal", self.weight, probs)
        out = probs.unsqueeze(1).expand(-1, self.n_annotators, -1)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out

    def forward_observed(
        self, probs: torch.Tensor, items: torch.Tensor, annotators: torch.Tensor
    ) -> torch.Tensor:
        """Logits of the observed ``(item, annotator)`` pairs only, shape ``(n_obs, K)``.

        Equal to ``self(probs)[items, annotators]`` but costs ``O(n_obs K²)`` instead of
        ``O(B A K²)``: with sparse crowds (a few labels per item out of many annotators)
        this keeps the crowd layer's overhead small.
        """
        p = probs[items]
        if self.mode is CrowdMode.MW:
            assert self.weight is not None
            return torch.bmm(self.weight[annotators], p.unsqueeze(-1)).squeeze(-1)
        out = p
        if self.weight is not None:
            out = out * self.weight[annotators]
        if self.bias is not None:
            out = out + self.bias[annotators]
        return out

    @torch.no_grad()
    def confusion_matrices(self) -> np.ndarray:
        """Estimated confusion matrices, shape ``(A, K, K)`` (see conventions).

        ``[a, k, l]`` is the probability annotator ``a``'s output gives class ``l`` when the
        bottleneck is certain of class ``k``: ``softmax(transform_a(e_k))_l``.
        """
        k = self.n_classes
        eye = torch.eye(k, device=self._device(), dtype=self._dtype())
        logits = self.forward(eye)  # (K_true, A, K_said)
        return torch.softmax(logits, dim=-1).permute(1, 0, 2).cpu().double().numpy()

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def extra_repr(self) -> str:
        """Sizes and mode, shown by ``repr``."""
        return (
            f"n_classes={self.n_classes}, n_annotators={self.n_annotators}, "
            f"mode={self.mode.value!r}"
        )


class CrowdRegressionLayer(nn.Module):
    """Crowd layer for regression: annotator ``a`` reports ``s_a · μ + b_a``.

    Args:
        n_annotators: Number of annotators ``A``.
        mode: ``"S"`` (scale), ``"B"`` (bias) or ``"S+B"``.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: ``(B,)`` or ``(B, 1)`` predictions.
        - Output: ``(B, A)`` per-annotator predictions. Train with
          :func:`crowdmed.nn.losses.crowd_mse` on targets ``(B, A)`` with ``NaN`` for missing.

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds. AAAI.
        https://doi.org/10.1609/aaai.v32i1.11506

    Examples:
        >>> import torch
        >>> CrowdRegressionLayer(3, mode="S+B")(torch.tensor([1.0, 2.0])).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        n_annotators: int,
        *,
        mode: str | RegressionMode = "S+B",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.n_annotators = _check_positive_int(n_annotators, "n_annotators")
        self.mode = check_option(mode, RegressionMode, "mode")
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.scale = (
            nn.Parameter(torch.ones(self.n_annotators, **kw))
            if self.mode in (RegressionMode.S, RegressionMode.S_B)
            else None
        )
        self.bias = (
            nn.Parameter(torch.zeros(self.n_annotators, **kw))
            if self.mode in (RegressionMode.B, RegressionMode.S_B)
            else None
        )

    def forward(self, pred: torch.Tensor) -> torch.Tensor:
        """Per-annotator predictions ``(B, A)`` from predictions ``(B,)`` or ``(B, 1)``."""
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred.squeeze(-1)
        if pred.ndim != 1:
            raise ValueError(f"`pred` must have shape (B,) or (B, 1); got {tuple(pred.shape)}.")
        out = pred.unsqueeze(1).expand(-1, self.n_annotators)
        if self.scale is not None:
            out = out * self.scale
        if self.bias is not None:
            out = out + self.bias
        return out


def _check_label_batch(labels: torch.Tensor, n_annotators: int, n_classes: int) -> None:
    if labels.ndim != 2 or labels.shape[1] != n_annotators:
        raise ValueError(
            f"`labels` must have shape (B, {n_annotators}); got {tuple(labels.shape)}."
        )
    if labels.dtype.is_floating_point:
        raise TypeError(f"`labels` must be an integer tensor; got {labels.dtype}.")
    bad = (labels < -1) | (labels >= n_classes)
    if bool(bad.any()):
        vals = torch.unique(labels[bad]).tolist()[:5]
        raise ValueError(
            f"`labels` must hold classes 0..{n_classes - 1} or -1 for missing; got {vals}."
        )


class DawidSkeneEM(nn.Module):
    """DL-EM: Dawid–Skene confusion matrices wrapped around a network.

    The network's class probabilities play the role of the class prior of each item. The
    E-step combines them with the annotators' confusion matrices into posteriors
    ``q_i ∝ p_i ⊙ Π_a confusion[a, :, y_ia]`` (log space); the network is trained on ``q`` with
    the expected negative log-likelihood (soft cross-entropy); the M-step re-estimates the
    confusion matrices from the posteriors of the whole training set, once per epoch, with a
    Dirichlet pseudo-count ``smoothing``.

    Args:
        n_classes: Number of classes ``K``.
        n_annotators: Number of annotators ``A``.
        smoothing: Dirichlet pseudo-count of the M-step.
        init_confusion: Float array ``(A, K, K)`` to start from (e.g. a
            :class:`~crowdmed.aggregation.DawidSkene` fit); diagonal ``0.7`` otherwise.

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds (DL-EM baseline). AAAI.
        https://doi.org/10.1609/aaai.v32i1.11506
        Dawid & Skene (1979). https://doi.org/10.2307/2346806

    Examples:
        >>> import torch
        >>> em = DawidSkeneEM(3, 2)
        >>> logits = torch.zeros(2, 3)
        >>> labels = torch.tensor([[0, 0], [2, -1]])
        >>> em.posteriors(logits, labels).argmax(1).tolist()
        [0, 2]
    """

    def __init__(
        self,
        n_classes: int,
        n_annotators: int,
        *,
        smoothing: float = 0.01,
        init_confusion: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.n_classes = _check_positive_int(n_classes, "n_classes")
        self.n_annotators = _check_positive_int(n_annotators, "n_annotators")
        if smoothing < 0:
            raise ValueError(f"`smoothing` must be >= 0; got {smoothing}.")
        self.smoothing = float(smoothing)
        k, a = self.n_classes, self.n_annotators
        if init_confusion is None:
            conf = np.full((a, k, k), 0.3 / max(k - 1, 1))
            conf[:, np.arange(k), np.arange(k)] = 0.7
        else:
            conf = np.asarray(init_confusion, dtype=np.float64)
            if conf.shape != (a, k, k):
                raise ValueError(
                    f"`init_confusion` must have shape ({a}, {k}, {k}); got {conf.shape}."
                )
        self.register_buffer("log_confusion", torch.log(torch.as_tensor(conf).clamp_min(1e-10)))
        self.log_confusion: torch.Tensor

    @torch.no_grad()
    def posteriors(
        self, logits: torch.Tensor, labels: torch.Tensor, *, validate_args: bool = True
    ) -> torch.Tensor:
        """E-step: posteriors ``(B, K)`` from network logits ``(B, K)`` and labels ``(B, A)``."""
        if validate_args:
            _check_label_batch(labels, self.n_annotators, self.n_classes)
        log_conf = self.log_confusion.to(logits.dtype)  # (A, K, K)
        items, annotators = torch.nonzero(labels >= 0, as_tuple=True)
        # log P(a says y_ia | k) for every k, for the observed pairs only: (n_obs, K)
        per = log_conf[annotators, :, labels[items, annotators]]
        log_post = torch.log_softmax(logits, dim=1).index_add(0, items, per)
        return torch.softmax(log_post, dim=1)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Expected negative log-likelihood (mean over the batch) for the network's logits.

        The posteriors are computed from the detached logits (E-step) and held fixed, so the
        gradient is that of :meth:`expected_nll`; at the E-step point it equals the gradient
        of the marginal log-likelihood (Fisher's identity).
        """
        return self.expected_nll(logits, self.posteriors(logits.detach(), labels))

    @staticmethod
    def expected_nll(logits: torch.Tensor, posteriors: torch.Tensor) -> torch.Tensor:
        """Soft cross-entropy ``-mean_i Σ_k q_ik log p_ik`` for posteriors ``q`` ``(B, K)``."""
        return -(posteriors * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()

    @torch.no_grad()
    def m_step(
        self, posteriors: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
    ) -> None:
        """Re-estimate the confusion matrices from all training posteriors and labels.

        Args:
            posteriors: Float array ``(N, K)``.
            labels: Integer array ``(N, A)``; ``-1`` marks a missing annotation.
        """
        q = torch.as_tensor(posteriors, dtype=torch.float64)
        y = torch.as_tensor(labels)
        _check_label_batch(y, self.n_annotators, self.n_classes)
        k = self.n_classes
        # Accumulate the observed labels only: counts[a, k, l] += q[i, k] for y_ia = l.
        items, annotators = torch.nonzero(y >= 0, as_tuple=True)
        rows = annotators * k + y[items, annotators]
        flat = torch.zeros(self.n_annotators * k, k, dtype=torch.float64)
        flat.index_add_(0, rows, q[items])
        counts = flat.reshape(self.n_annotators, k, k).transpose(1, 2) + self.smoothing
        conf = counts / counts.sum(dim=2, keepdim=True).clamp_min(1e-300)
        self.log_confusion.copy_(torch.log(conf.clamp_min(1e-10)))

    def confusion_matrices(self) -> np.ndarray:
        """Current confusion matrices, shape ``(A, K, K)``."""
        return self.log_confusion.exp().cpu().double().numpy()


class AggNetEM(nn.Module):
    """AggNet's EM aggregation layer for binary labels.

    Annotator ``j`` has sensitivity ``α_j`` and specificity ``β_j``. For the network's
    probability ``p_i`` of the positive class, the E-step gives
    ``μ_i = a_i p_i / (a_i p_i + b_i (1 - p_i))`` with
    ``a_i = Π_j α_j^{y_ij} (1-α_j)^{1-y_ij}`` and ``b_i = Π_j β_j^{1-y_ij} (1-β_j)^{y_ij}``;
    the network minimises the expected negative log-likelihood
    ``-[μ_i log p_i + (1-μ_i) log(1-p_i)]``. :meth:`m_step` re-estimates α and β once per
    epoch with the trust prior of :class:`~crowdmed.aggregation.BinarySensSpec` (``τ·γ_j``
    pseudo-counts from quiz accuracy γ; 0.5 where undetermined).

    Args:
        n_annotators: Number of annotators.
        tau: Strength of the quiz trust prior.
        quiz_accuracy: Float array ``(A,)``; ``NaN`` marks no quiz.
        init_sensitivity: Starting α (scalar or ``(A,)``).
        init_specificity: Starting β (scalar or ``(A,)``).

    References:
        Albarqouni et al. (2016). AggNet: deep learning from crowds for mitosis detection in
        breast cancer histology images. IEEE TMI. https://doi.org/10.1109/TMI.2016.2528120
        Raykar et al. (2010). Learning from crowds. JMLR 11.

    Examples:
        >>> import torch
        >>> layer = AggNetEM(3)
        >>> logits = torch.zeros(2, 2)              # network undecided
        >>> labels = torch.tensor([[1, 1, 1], [0, 0, -1]])
        >>> [round(v, 3) for v in layer.posteriors(logits, labels).tolist()]
        [0.985, 0.059]
    """

    def __init__(
        self,
        n_annotators: int,
        *,
        tau: float = 10.0,
        quiz_accuracy: np.ndarray | None = None,
        init_sensitivity: float | np.ndarray = 0.8,
        init_specificity: float | np.ndarray = 0.8,
    ) -> None:
        super().__init__()
        self.n_annotators = _check_positive_int(n_annotators, "n_annotators")
        if tau < 0:
            raise ValueError(f"`tau` must be >= 0; got {tau}.")
        self.tau = float(tau)
        a = self.n_annotators
        if quiz_accuracy is None:
            quiz = np.full(a, np.nan)
        else:
            quiz = np.asarray(quiz_accuracy, dtype=np.float64)
            if quiz.shape != (a,):
                raise ValueError(f"`quiz_accuracy` must have shape ({a},); got {quiz.shape}.")
        self.quiz_accuracy = quiz
        alpha = np.broadcast_to(np.asarray(init_sensitivity, dtype=np.float64), (a,)).copy()
        beta = np.broadcast_to(np.asarray(init_specificity, dtype=np.float64), (a,)).copy()
        for name, v in (("init_sensitivity", alpha), ("init_specificity", beta)):
            if np.any((v <= 0) | (v >= 1)):
                raise ValueError(f"`{name}` must lie in (0, 1); got {v[(v <= 0) | (v >= 1)][:5]}.")
        self.register_buffer("sensitivity", torch.as_tensor(alpha))
        self.register_buffer("specificity", torch.as_tensor(beta))
        self.sensitivity: torch.Tensor
        self.specificity: torch.Tensor

    @torch.no_grad()
    def posteriors(
        self, logits: torch.Tensor, labels: torch.Tensor, *, validate_args: bool = True
    ) -> torch.Tensor:
        """E-step: ``μ`` ``(B,)`` from logits ``(B, 2)`` (or ``(B,)``) and labels ``(B, A)``."""
        if validate_args:
            _check_label_batch(labels, self.n_annotators, 2)
        log_p1, log_p0 = self._log_probs(logits)
        y = labels.to(log_p1.dtype)
        obs = (labels >= 0).to(log_p1.dtype)
        la = torch.log(self.sensitivity).to(y.dtype)
        l1a = torch.log1p(-self.sensitivity).to(y.dtype)
        lb = torch.log(self.specificity).to(y.dtype)
        l1b = torch.log1p(-self.specificity).to(y.dtype)
        log_a = (obs * (y * la + (1 - y) * l1a)).sum(dim=1)
        log_b = (obs * ((1 - y) * lb + y * l1b)).sum(dim=1)
        # μ = a p / (a p + b (1 - p)), as a sigmoid of the log-odds (stable in log space)
        return torch.sigmoid(log_a + log_p1 - log_b - log_p0)

    @staticmethod
    def _log_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if logits.ndim == 2 and logits.shape[1] == 2:
            lp = torch.log_softmax(logits, dim=1)
            return lp[:, 1], lp[:, 0]
        if logits.ndim == 2 and logits.shape[1] == 1:
            logits = logits.squeeze(-1)
        if logits.ndim != 1:
            raise ValueError(
                f"`logits` must have shape (B, 2), (B, 1) or (B,); got {tuple(logits.shape)}."
            )
        return torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Expected negative log-likelihood (mean over the batch); ``μ`` is held fixed."""
        return self.expected_nll(logits, self.posteriors(logits.detach(), labels))

    @classmethod
    def expected_nll(cls, logits: torch.Tensor, posteriors: torch.Tensor) -> torch.Tensor:
        """``-mean_i [μ_i log p_i + (1-μ_i) log(1-p_i)]`` for posteriors ``μ`` ``(B,)``."""
        log_p1, log_p0 = cls._log_probs(logits)
        return -(posteriors * log_p1 + (1 - posteriors) * log_p0).mean()

    @torch.no_grad()
    def m_step(
        self, posteriors: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
    ) -> None:
        """Re-estimate α, β from the epoch's posteriors ``μ`` ``(N,)`` and labels ``(N, A)``."""
        from crowdmed.aggregation.classification.sens_spec import sens_spec_m_step

        mu = np.asarray(torch.as_tensor(posteriors).double().cpu().numpy()).reshape(-1)
        y = np.asarray(torch.as_tensor(labels).cpu().numpy())
        _check_label_batch(torch.as_tensor(y), self.n_annotators, 2)
        obs = y >= 0
        pos = (y == 1) & obs
        neg = (y == 0) & obs
        # counts[a, k, l]: soft number of items of true class k that annotator a labelled l
        counts = np.empty((self.n_annotators, 2, 2))
        counts[:, 1, 1] = mu @ pos
        counts[:, 1, 0] = mu @ neg
        counts[:, 0, 0] = (1 - mu) @ neg
        counts[:, 0, 1] = (1 - mu) @ pos
        alpha, beta = sens_spec_m_step(counts, self.quiz_accuracy, self.tau)
        self.sensitivity.copy_(torch.as_tensor(alpha))
        self.specificity.copy_(torch.as_tensor(beta))
