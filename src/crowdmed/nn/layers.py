"""Layers that learn from the raw labels of many annotators (PyTorch).

* :class:`CrowdLayer` — Rodrigues & Pereira's crowd layer for classification (``MW``, ``VW``,
  ``VB``, ``VW+B``) and :class:`CrowdRegressionLayer` (``S``, ``B``, ``S+B``).
* :class:`AggNetEM` — the EM aggregation layer of AggNet (binary, per-annotator sensitivity
  and specificity, quiz trust prior).
* :class:`DawidSkeneEM` — DL-EM: Dawid–Skene confusion matrices around a network.
* :class:`DoctorNetHeads` — DL-DN / DL-WDN: one output head per annotator (Doctor Net).
* :class:`GaussianReadersEM` — regression DL-EM: per-annotator precision (and bias).

Label batches follow the dense convention: an integer tensor of shape ``(B, A)`` with ``-1``
marking a missing annotation.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import nn

from crowdmed._validation import check_int, check_option

__all__ = [
    "AggNetEM",
    "CrowdLayer",
    "CrowdMode",
    "CrowdRegressionLayer",
    "DawidSkeneEM",
    "DoctorNetHeads",
    "GaussianReadersEM",
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
        self.n_classes = check_int(n_classes, "n_classes")
        self.n_annotators = check_int(n_annotators, "n_annotators")
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
        # index_select rather than advanced indexing: its backward is one index_add_, not an
        # accumulating index_put_ (a few percent of a small head's step)
        p = probs.index_select(0, items)
        if self.mode is CrowdMode.MW:
            assert self.weight is not None
            w = self.weight.index_select(0, annotators)
            return torch.bmm(w, p.unsqueeze(-1)).squeeze(-1)
        out = p
        if self.weight is not None:
            out = out * self.weight.index_select(0, annotators)
        if self.bias is not None:
            out = out + self.bias.index_select(0, annotators)
        return out

    @staticmethod
    def observed_pairs(labels: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item's observed annotations, padded to the largest count per item.

        The per-item layout :meth:`observed_nll` takes: index the result with a batch's item
        indices instead of gathering the dense labels every step.

        Args:
            labels: Integer array of shape ``(N, A)``; ``-1`` marks a missing annotation.

        Returns:
            ``(annotators, classes)``, int64 tensors of shape ``(N, M)`` (``M``: the largest
            number of labels of an item): each item's annotators in increasing order and
            their labels; padding has annotator ``0`` and class ``-1``.

        Examples:
            >>> ann, cls = CrowdLayer.observed_pairs(torch.tensor([[-1, 2, 0], [1, -1, -1]]))
            >>> ann.tolist(), cls.tolist()
            ([[1, 2], [0, 0]], [[2, 0], [1, -1]])
        """
        y = torch.as_tensor(labels)
        if y.ndim != 2 or y.dtype.is_floating_point:
            raise ValueError(
                f"`labels` must be an integer array (N, A); got shape {tuple(y.shape)} and "
                f"dtype {y.dtype}."
            )
        obs = y >= 0
        m = int(obs.sum(1).max()) if y.numel() else 0
        # observed annotators first, in increasing order (a stable sort of the missing flags)
        order = torch.sort((~obs).to(torch.int8), dim=1, stable=True).indices[:, :m]
        keep = torch.gather(obs, 1, order)
        annotators = torch.where(keep, order, torch.zeros_like(order))
        classes = torch.where(keep, torch.gather(y, 1, order), torch.full_like(order, -1))
        return annotators.long(), classes.long()

    def observed_nll(
        self, logits: torch.Tensor, annotators: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor:
        """Crowd-layer training loss from the network's logits and the observed labels.

        The cross-entropy of each observed ``(item, annotator)`` pair's logits (this layer
        applied to ``softmax(logits)``), summed over the pairs and divided by the batch size:
        equal to ``crowd_cross_entropy(self(softmax(logits)), labels)`` on the dense labels.
        It touches only the ``B × M`` padded pairs, in a handful of tensor operations: a
        small network's step is dominated by per-operation overhead, not arithmetic.

        Args:
            logits: Float tensor ``(B, K)`` of the network's logits.
            annotators: int64 tensor ``(B, M)`` of annotator indices (any index where
                ``classes`` is ``-1``), e.g. rows of :meth:`observed_pairs`.
            classes: int64 tensor ``(B, M)`` of the labels; ``-1`` marks padding.

        Returns:
            The scalar loss.

        Examples:
            >>> import torch
            >>> from crowdmed.nn.losses import crowd_cross_entropy
            >>> layer = CrowdLayer(3, 2)
            >>> labels = torch.tensor([[0, -1], [2, 1]])
            >>> ann, cls = CrowdLayer.observed_pairs(labels)
            >>> z = torch.randn(2, 3)
            >>> dense = crowd_cross_entropy(layer(torch.softmax(z, 1)), labels)
            >>> bool(torch.isclose(layer.observed_nll(z, ann, cls), dense))
            True
        """
        b, m = annotators.shape
        k = self.n_classes
        flat = annotators.reshape(-1)
        p = torch.softmax(logits, 1)
        if self.mode is CrowdMode.MW:
            assert self.weight is not None
            w = self.weight.index_select(0, flat).view(b, m * k, k)
            out = torch.bmm(w, p.unsqueeze(-1)).view(b * m, k)
        else:
            pairs = p.unsqueeze(1).expand(b, m, k)
            if self.weight is not None:
                pairs = pairs * self.weight.index_select(0, flat).view(b, m, k)
            if self.bias is not None:
                pairs = pairs + self.bias.index_select(0, flat).view(b, m, k)
            out = pairs.reshape(b * m, k)
        ce = nn.functional.cross_entropy(out, classes.reshape(-1), ignore_index=-1, reduction="sum")
        return ce / b

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
        self.n_annotators = check_int(n_annotators, "n_annotators")
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
        self.n_classes = check_int(n_classes, "n_classes")
        self.n_annotators = check_int(n_annotators, "n_annotators")
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
    epoch with AggNet's trust prior (eq. 8, ``α_j = (1 + τγ_j)·TP / ((1 + τγ_j)·TP + FN)``,
    likewise β_j; 0.5 where undetermined; see ``sens_spec_m_step``).

    Args:
        n_annotators: Number of annotators.
        tau: Strength ``τ`` of the quiz trust prior (the paper's range is ``[0.1, 1]``).
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
        tau: float = 0.5,
        quiz_accuracy: np.ndarray | None = None,
        init_sensitivity: float | np.ndarray = 0.8,
        init_specificity: float | np.ndarray = 0.8,
    ) -> None:
        super().__init__()
        self.n_annotators = check_int(n_annotators, "n_annotators")
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


class DoctorNetHeads(nn.Module):
    """Doctor Net: one linear output head per annotator on a shared trunk.

    Each annotator ``r`` gets its own softmax layer ``softmax(W_r h + b_r)`` on the trunk's
    features ``h`` (the network without its last linear layer), trained on that annotator's
    own labels only. Predictions combine the heads (Rodrigues & Pereira 2018, baselines
    DL-DN and DL-WDN, after Guan et al. 2018):

    * ``combine="vote"`` (DL-DN): majority vote of the heads' most probable classes.
    * ``combine="weighted"`` (DL-WDN): ``Σ_r w_r softmax(W_r h + b_r)`` with averaging
      weights ``w = softmax(v)`` learned by backpropagation with the heads held fixed
      (:meth:`fit_averaging_weights`); the weights start equal.

    Args:
        in_features: Width ``H`` of the trunk's features.
        n_classes: Number of classes ``K``.
        n_annotators: Number of annotators ``A``.
        combine: ``"vote"`` or ``"weighted"``.
        init_weight: Float tensor ``(K, H)`` copied into every head (e.g. the network's last
            linear layer, so that identical annotators train exactly like one network);
            ``torch.nn.Linear``'s initialisation per head otherwise.
        init_bias: Float tensor ``(K,)`` copied into every head's bias.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: ``(B, H)`` trunk features.
        - Output: ``(B, A, K)`` per-annotator logits.

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds (baselines DL-DN, DL-WDN). AAAI.
        https://doi.org/10.1609/aaai.v32i1.11506
        Guan, Gulshan, Dai & Hinton (2018). Who said what: modeling individual labelers
        improves classification. AAAI. https://doi.org/10.1609/aaai.v32i1.11756

    Examples:
        >>> import torch
        >>> heads = DoctorNetHeads(4, 3, 2, init_weight=torch.eye(3, 4))
        >>> heads(torch.tensor([[0.0, 2.0, 0.0, 0.0]])).argmax(-1).tolist()
        [[1, 1]]
        >>> heads.combined_proba(torch.tensor([[0.0, 2.0, 0.0, 0.0]])).argmax(1).tolist()
        [1]
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        n_annotators: int,
        *,
        combine: str = "vote",
        init_weight: torch.Tensor | None = None,
        init_bias: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features")
        self.n_classes = check_int(n_classes, "n_classes")
        self.n_annotators = check_int(n_annotators, "n_annotators")
        if combine not in ("vote", "weighted"):
            raise ValueError(f"`combine` must be 'vote' or 'weighted'; got {combine!r}.")
        self.combine = combine
        h, k, a = self.in_features, self.n_classes, self.n_annotators
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        weight = torch.empty(a, k, h, **kw)
        bias = torch.empty(a, k, **kw)
        if init_weight is None:
            bound = 1.0 / float(np.sqrt(h))
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)
        else:
            if tuple(init_weight.shape) != (k, h):
                raise ValueError(
                    f"`init_weight` must have shape ({k}, {h}); got {tuple(init_weight.shape)}."
                )
            with torch.no_grad():
                weight.copy_(init_weight.detach().expand(a, k, h))
                bias.zero_()
                if init_bias is not None:
                    bias.copy_(init_bias.detach().expand(a, k))
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.register_buffer("averaging_logits", torch.zeros(a, **kw))
        self.averaging_logits: torch.Tensor

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Per-annotator logits ``(B, A, K)`` from trunk features ``(B, H)``."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"`features` must have shape (B, {self.in_features}); got {tuple(features.shape)}."
            )
        return torch.einsum("akh,bh->bak", self.weight, features) + self.bias

    def forward_observed(
        self, features: torch.Tensor, items: torch.Tensor, annotators: torch.Tensor
    ) -> torch.Tensor:
        """Logits ``(n_obs, K)`` of the observed ``(item, annotator)`` pairs only."""
        w = self.weight[annotators]  # (n_obs, K, H)
        return torch.bmm(w, features[items].unsqueeze(-1)).squeeze(-1) + self.bias[annotators]

    def averaging_weights(self) -> torch.Tensor:
        """DL-WDN's averaging weights ``softmax(v)``, shape ``(A,)`` (equal before fitting)."""
        return torch.softmax(self.averaging_logits, dim=0)

    @torch.no_grad()
    def combined_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K)`` of the combined heads (see the class docstring).

        For ``"vote"`` these are the vote shares of the heads with, to break ties, the heads'
        mean probability mixed in at weight ``1/(2A)`` (smaller than one vote, so the most
        probable class is always a majority-vote winner).
        """
        probs = torch.softmax(self.forward(features), dim=-1)  # (B, A, K)
        if self.combine == "weighted":
            return torch.einsum("a,bak->bk", self.averaging_weights().to(probs.dtype), probs)
        a = self.n_annotators
        votes = nn.functional.one_hot(probs.argmax(-1), self.n_classes).to(probs.dtype)
        shares = votes.mean(dim=1)
        eps = 0.5 / a
        return (shares + eps * probs.mean(dim=1)) / (1.0 + eps)

    def fit_averaging_weights(
        self,
        head_probs: torch.Tensor,
        target: torch.Tensor,
        *,
        steps: int = 500,
        lr: float = 0.05,
    ) -> DoctorNetHeads:
        """Learn DL-WDN's averaging weights with the heads held fixed (Guan et al.'s WDN).

        Minimises the cross-entropy ``-mean_i log Σ_r w_r p_ir[t_i]`` of the weighted average
        of the heads' probabilities against the targets ``t`` over ``w = softmax(v)`` by
        full-batch Adam on ``v`` (backpropagation, as in the paper); the objective is convex
        in ``w``, so the starting point does not matter.

        Args:
            head_probs: Float tensor ``(N, A, K)`` of the frozen heads' probabilities.
            target: Integer tensor ``(N,)`` of target classes.
            steps: Adam steps.
            lr: Adam learning rate.

        Returns:
            ``self`` (``averaging_logits`` updated).
        """
        if head_probs.ndim != 3 or head_probs.shape[1:] != (self.n_annotators, self.n_classes):
            raise ValueError(
                f"`head_probs` must have shape (N, {self.n_annotators}, {self.n_classes}); "
                f"got {tuple(head_probs.shape)}."
            )
        t = torch.as_tensor(target, device=head_probs.device).long()
        p_t = head_probs.detach().double()[torch.arange(len(t)), :, t]  # (N, A)
        v = torch.zeros(self.n_annotators, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([v], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            q = p_t @ torch.softmax(v, dim=0)
            loss = -torch.log(q.clamp_min(1e-12)).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            self.averaging_logits.copy_((v - v.max()).to(self.averaging_logits))
        return self

    def extra_repr(self) -> str:
        """Sizes and combination, shown by ``repr``."""
        return (
            f"in_features={self.in_features}, n_classes={self.n_classes}, "
            f"n_annotators={self.n_annotators}, combine={self.combine!r}"
        )


class GaussianReadersEM(nn.Module):
    """Regression DL-EM: per-annotator precision (and bias) wrapped around a network.

    Annotator ``r`` reports ``y_ir ~ N(μ_i + b_r, 1/λ_r)`` around the network's prediction
    ``μ_i`` (Rodrigues & Pereira 2018, the regression DL-EM baseline after Raykar et al.
    2010, section 3: ``y_ir ~ N(z_i, 1/λ_r)``; ``bias=True`` adds the bias ``b_r`` of
    :class:`~crowdmed.aggregation.RaykarRegression`). The procedure alternates:

    * the adjusted ground truth ``ŷ_i = Σ_r λ_r (y_ir - b_r) / Σ_r λ_r`` over the annotators
      of item ``i`` (:meth:`adjusted_targets`), on which the network is trained with the
      squared error weighted by ``Σ_r λ_r`` (:meth:`loss`: the negative log-likelihood up to
      constants);
    * the annotators' parameters from the network's predictions on the whole training set
      (:meth:`m_step`): ``b_r = mean_i (y_ir - μ_i)`` (biases shifted to mean 0, which fixes
      the origin the network and the biases would otherwise share) and
      ``1/λ_r = mean_i (y_ir - μ_i - b_r)²``.

    Args:
        n_annotators: Number of annotators ``A``.
        bias: Whether annotators have a bias ``b_r`` (``False``: the paper's model).
        init_precision: Starting ``λ`` (scalar or ``(A,)``), e.g. a label-only
            :class:`~crowdmed.aggregation.RaykarRegression` fit.
        init_bias: Starting ``b`` (scalar or ``(A,)``).
        min_variance: Floor of ``1/λ_r`` (an annotator the network fits exactly keeps a
            finite precision).

    References:
        Rodrigues & Pereira (2018). Deep learning from crowds (regression DL-EM). AAAI.
        https://doi.org/10.1609/aaai.v32i1.11506
        Raykar et al. (2010). Learning from crowds. JMLR 11, 1297–1322.

    Examples:
        >>> import torch
        >>> em = GaussianReadersEM(2, init_precision=[1.0, 3.0])
        >>> em.adjusted_targets(torch.tensor([[0.0, 4.0]])).tolist()
        [3.0]
    """

    def __init__(
        self,
        n_annotators: int,
        *,
        bias: bool = False,
        init_precision: float | np.ndarray | list[float] = 1.0,
        init_bias: float | np.ndarray | list[float] = 0.0,
        min_variance: float = 1e-6,
    ) -> None:
        super().__init__()
        self.n_annotators = check_int(n_annotators, "n_annotators")
        a = self.n_annotators
        self.bias = bool(bias)
        if not min_variance > 0:
            raise ValueError(f"`min_variance` must be positive; got {min_variance}.")
        self.min_variance = float(min_variance)
        lam = np.broadcast_to(np.asarray(init_precision, dtype=np.float64), (a,)).copy()
        if np.any(~np.isfinite(lam) | (lam <= 0)):
            raise ValueError(f"`init_precision` must be positive and finite; got {lam[:5]}.")
        b = np.broadcast_to(np.asarray(init_bias, dtype=np.float64), (a,)).copy()
        if not self.bias:
            b[:] = 0.0
        self.register_buffer("precision", torch.as_tensor(lam))
        self.register_buffer("offset", torch.as_tensor(b))
        self.precision: torch.Tensor
        self.offset: torch.Tensor

    def _check(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim != 2 or labels.shape[1] != self.n_annotators:
            raise ValueError(
                f"`labels` must have shape (B, {self.n_annotators}) with NaN for missing; got "
                f"{tuple(labels.shape)}."
            )
        return ~torch.isnan(labels)

    def adjusted_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """``ŷ`` ``(B,)``: the precision-weighted mean of the bias-corrected labels ``(B, A)``."""
        obs = self._check(labels)
        lam = self.precision.to(labels.dtype) * obs
        y = torch.where(obs, labels - self.offset.to(labels.dtype), torch.zeros_like(labels))
        return (lam * y).sum(1) / lam.sum(1).clamp_min(1e-300)

    def loss(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``mean_i ½ Σ_r λ_r (y_ir - b_r - μ_i)²`` for predictions ``(B,)`` or ``(B, 1)``.

        Equal, up to a term free of ``μ``, to ``mean_i ½ (Σ_r λ_r)(ŷ_i - μ_i)²``: the network's
        negative log-likelihood of the labels.
        """
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred.squeeze(-1)
        obs = self._check(labels)
        lam = (self.precision.to(pred.dtype) * obs).sum(1)
        target = self.adjusted_targets(labels).to(pred.dtype)
        return 0.5 * (lam * (target - pred) ** 2).mean()

    @torch.no_grad()
    def m_step(self, pred: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Re-estimate ``b`` and ``λ`` from the predictions ``(N,)`` and labels ``(N, A)``."""
        mu = torch.as_tensor(pred, dtype=torch.float64).reshape(-1)
        y = torch.as_tensor(labels, dtype=torch.float64)
        obs = self._check(y)
        n = obs.sum(0).to(torch.float64)
        resid = torch.where(obs, y - mu[:, None], torch.zeros_like(y))
        active = n > 0
        if self.bias:
            b = torch.where(active, resid.sum(0) / n.clamp_min(1), torch.zeros_like(n))
            if bool(active.any()):
                b = torch.where(active, b - b[active].mean(), b)
            self.offset.copy_(b)
        r = torch.where(obs, resid - self.offset, torch.zeros_like(y))
        var = torch.where(active, (r * r).sum(0) / n.clamp_min(1), 1.0 / self.precision)
        self.precision.copy_(1.0 / var.clamp_min(self.min_variance))
