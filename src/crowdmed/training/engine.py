"""The one epoch loop of crowdmed's trainers.

:class:`Engine` runs the loop every trainer shares: seeding, shuffled (and, under
``torchrun``, sharded) mini-batches, the optimiser step, per-epoch history, validation,
best-state tracking, early stopping, atomic checkpoints after every epoch with exact resume,
progress, torch thread settings, devices, and distributed data parallel training.
A trainer only says what one batch costs, through a :class:`TrainTask`.

How to plug a new trainer in::

    class MyTask(TrainTask):
        name = "my-model"                     # progress bar label

        def __init__(self, net, x, y, lr):
            self.net, self.x, self.y, self.lr = net, x, y, lr

        def setup(self, engine):              # runs with the global torch RNG seeded
            self.net.to(engine.device)
            self.model = engine.wrap(self.net)     # DistributedDataParallel under torchrun
            self.opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)

        def modules(self):                    # checkpointed, best state kept (unwrapped)
            return {"network": self.net}

        def optimizer(self):
            return self.opt

        def config(self):                     # what must not change on resume
            return {"lr": self.lr, "data": data_digest(self.x, self.y)}

        def epoch_items(self, epoch, engine):  # items to shuffle this epoch
            return len(self.x)

        def train_batch(self, idx, engine):   # the loss; the engine steps the optimiser
            xb, yb = self.x[idx].to(engine.device), self.y[idx].to(engine.device)
            return F.cross_entropy(self.model(xb), yb)

        def validate(self, engine):           # optional: metrics added to the record
            return {"val_accuracy": ...}

        def score(self, record):              # optional: higher is better (default -loss)
            return record["val_accuracy"]

    result = Engine(epochs=20, batch_size=64, seed=0, patience=5,
                    checkpoint="run/checkpoint.safetensors").fit(MyTask(...))
    result.history, result.best_epoch, result.stopped_early

Randomness: the engine owns a ``torch.Generator`` (:attr:`Engine.generator`) and a NumPy
``Generator`` (:attr:`Engine.rng`), both seeded with ``seed``, for the data order and any
randomness of the task (augmentation, resampling). Dropout and weight initialisation draw
from torch's global RNG: the engine forks it (it is restored after the fit) and seeds the
fork with ``seed``. All three states are checkpointed, so a resumed fit continues with the
same numbers as an uninterrupted one.

Checkpoints are one safetensors file (tensors: module and best states, optimiser tensors,
RNG states; its JSON metadata: step, epoch, history, optimiser settings, NumPy RNG state,
the run's fingerprint). A checkpoint of a run with another :meth:`TrainTask.config` or other
engine settings (only ``epochs`` may change) raises :class:`CheckpointMismatchError`, and a
checkpoint with more finished epochs than ``epochs`` raises :class:`CheckpointEpochsError`
(never a result that claims more epochs than asked for).

Finite training: the loss of every mini-batch is checked before its optimiser step, and the
weights after every epoch. A NaN or infinite value stops the fit with
:class:`NonFiniteLossError` (epoch, step and learning rate): the step is not taken, no epoch
with non-finite weights is checkpointed (the checkpoint of the last finite epoch is kept),
and no result is returned, so no caller can save a diverged model.

Distributed training: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1`` in the
environment), the engine joins the process group (gloo on CPU, NCCL on CUDA; created on the
first fit when the script has not, kept for later fits, destroyed at exit), gives each
rank one shard of every epoch's permutation (padded to equal size, like
``DistributedSampler``), averages the gradients (``engine.wrap`` makes the network a
``DistributedDataParallel``; the gradients of the optimiser's other parameters are
all-reduced by the engine), averages the epoch's metrics over ranks, and writes checkpoints
on rank 0 only.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import datetime
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from crowdmed.training._checkpoint import (
    CheckpointEpochsError,
    CheckpointMismatchError,
    NonFiniteLossError,
    data_digest,
)

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointEpochsError",
    "CheckpointMismatchError",
    "Engine",
    "FitResult",
    "NonFiniteLossError",
    "ProgressHook",
    "TrainTask",
    "data_digest",
    "distributed_env",
    "is_main_process",
    "read_checkpoint",
    "resolve_device",
]

#: File name of a trainer's checkpoint inside its ``checkpoint_dir``.
CHECKPOINT_NAME = "checkpoint.safetensors"
_CHECKPOINT_VERSION = 1
_META_KEY = "crowdmed_checkpoint"

ProgressHook = Callable[[int, int, dict[str, float]], None]


# ---------------------------------------------------------------------- environment
def distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the ``torchrun`` environment (``0, 1, 0``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def is_main_process() -> bool:
    """Whether this process is rank 0 (always true outside ``torchrun``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return distributed_env()[0] == 0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device to train on.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``, or ``None`` for CUDA
            when available, else the CPU. Under ``torchrun``, ``"cuda"`` and ``None`` mean
            ``cuda:LOCAL_RANK``.

    Returns:
        The device.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", distributed_env()[2] % max(torch.cuda.device_count(), 1))
    return dev


# ---------------------------------------------------------------------- task protocol
class TrainTask:
    """What a trainer plugs into :class:`Engine` (subclass it; see the module docstring).

    Required: :meth:`modules`, :meth:`optimizer`, :meth:`epoch_items`, :meth:`train_batch`.
    The other methods have defaults that do nothing.
    """

    #: Label of the progress bar.
    name: str = "train"

    def setup(self, engine: Engine) -> None:
        """Build what the fit needs (heads, optimiser, wrapped modules).

        Called once per fit with the global torch RNG forked and seeded with
        ``engine.seed``, before a checkpoint is restored. ``engine.device``,
        ``engine.generator`` and ``engine.rng`` are ready.
        """

    def modules(self) -> dict[str, nn.Module]:
        """Named modules whose weights are checkpointed and whose best state is kept.

        Return the modules themselves, not their ``DistributedDataParallel`` wrappers.
        """
        raise NotImplementedError

    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser the engine steps after every batch (checkpointed)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """JSON-able settings and data fingerprints that must match to resume a checkpoint."""
        return {}

    def epoch_items(self, epoch: int, engine: Engine) -> int:
        """Number of items the engine shuffles into batches in ``epoch`` (0-based).

        Called at the start of every epoch, before the permutation is drawn: a task that
        resamples its items per epoch does it here with ``engine.rng``.
        """
        raise NotImplementedError

    def train_batch(
        self, idx: torch.Tensor, engine: Engine
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
        """The loss of one mini-batch (the engine runs backward and the optimiser step).

        Args:
            idx: int64 indices ``(B,)`` of this batch's items, on the CPU.
            engine: The running engine (``engine.step`` is the optimiser step about to run).

        Returns:
            The scalar loss, or ``(loss, extras)``: batch metrics averaged over the epoch like
            the loss and added to the history record.
        """
        raise NotImplementedError

    def end_epoch(self, epoch: int, engine: Engine) -> dict[str, float]:
        """After the epoch's batches (e.g. an EM step); returns entries for the record."""
        return {}

    def validate(self, engine: Engine) -> dict[str, float]:
        """Validation metrics of the epoch (added to the record; averaged over ranks)."""
        return {}

    def score(self, record: dict[str, float]) -> float:
        """Higher is better; drives best-state tracking and early stopping."""
        return -record["loss"]

    def state_dict(self) -> dict[str, Any]:
        """JSON-able task state checkpointed with the engine's (e.g. a schedule)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


@dataclass
class FitResult:
    """Outcome of :meth:`Engine.fit`.

    Attributes:
        history: One record per epoch: ``epoch``, ``loss``, the task's extras, validation
            metrics and ``seconds``.
        best_epoch: Epoch (1-based) whose weights the modules hold now; 0 when no epoch ran.
        best_score: Its score.
        stopped_early: Whether early stopping ended the run.
        step: Optimiser steps taken in the whole run.
        start_epoch: Epochs already done when the fit started (resumed from a checkpoint).
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    stopped_early: bool = False
    step: int = 0
    start_epoch: int = 0


# ---------------------------------------------------------------------- engine
class Engine:
    """Run a :class:`TrainTask` epoch by epoch.

    Args:
        epochs: Maximum number of epochs (the only setting that may change on resume).
        batch_size: Mini-batch size (per process under ``torchrun``).
        seed: Seed of :attr:`generator`, :attr:`rng` and the forked global torch RNG.
        patience: Stop after this many epochs without a better score; ``None`` trains all
            epochs and keeps the last state.
        keep_best: Keep (and restore at the end) the best epoch's weights; ``False`` keeps the
            last weights and copies nothing.
        shuffle: ``"torch"`` draws each epoch's order with ``torch.randperm(generator=...)``,
            ``"numpy"`` with ``rng.permutation``, ``"none"`` keeps the item order.
        join_single: A last batch of one item joins the previous batch (batch
            normalisation cannot train on one item).
        loss_average: ``"items"`` averages the batch losses weighted by batch size,
            ``"batches"`` weights every batch equally.
        clip_grad_norm: Clip the gradient norm of the optimiser's parameters to this value.
        device: See :func:`resolve_device`.
        checkpoint: File written atomically after every epoch (rank 0 only); a fit with
            the same file resumes from it.
        resume: ``False`` deletes an existing ``checkpoint`` and starts over.
        mismatch_hint: End of the error raised for a checkpoint of another run.
        progress: ``True`` for a rich progress bar, ``False`` for none, or a callable
            ``progress(epoch, epochs, record)`` called after every epoch (rank 0 only).
        num_threads: ``torch.set_num_threads`` during the fit (restored afterwards).
        distributed: ``None`` joins a process group when ``WORLD_SIZE > 1`` (``torchrun``),
            ``False`` never does.
        numpy_rng: A NumPy generator to use as :attr:`rng` instead of one seeded with
            ``seed`` (its state is checkpointed).
        setting_names: Names of the engine's settings in the mismatch error, e.g.
            ``{"seed": "random_state"}`` for a trainer whose users set ``random_state``.

    Attributes:
        device (torch.device): Device of the fit.
        generator (torch.Generator): CPU generator of the data order (``shuffle="torch"``).
        rng (numpy.random.Generator): NumPy generator for the task's own draws.
        step (int): Optimiser steps taken.
        epoch (int): Current epoch (0-based).
        rank (int), world_size (int): This process and the number of processes.
    """

    def __init__(
        self,
        *,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        patience: int | None = None,
        keep_best: bool = True,
        shuffle: Literal["torch", "numpy", "none"] = "torch",
        join_single: bool = True,
        loss_average: Literal["items", "batches"] = "items",
        clip_grad_norm: float | None = None,
        device: str | torch.device | None = "cpu",
        checkpoint: str | os.PathLike[str] | None = None,
        resume: bool = True,
        mismatch_hint: str = "delete it or use another checkpoint. Only `epochs` may change "
        "on resume.",
        progress: bool | ProgressHook = False,
        num_threads: int | None = None,
        distributed: bool | None = None,
        numpy_rng: np.random.Generator | None = None,
        setting_names: dict[str, str] | None = None,
    ) -> None:
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            raise ValueError(f"`patience` must be a positive integer or None; got {patience!r}.")
        if shuffle not in ("torch", "numpy", "none"):
            raise ValueError(f"`shuffle` must be 'torch', 'numpy' or 'none'; got {shuffle!r}.")
        if loss_average not in ("items", "batches"):
            raise ValueError(f"`loss_average` must be 'items' or 'batches'; got {loss_average!r}.")
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = int(seed)
        self.patience = patience
        self.keep_best = keep_best
        self.shuffle = shuffle
        self.join_single = join_single
        self.loss_average = loss_average
        self.clip_grad_norm = clip_grad_norm
        self.device = resolve_device(device)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.resume = resume
        self.mismatch_hint = mismatch_hint
        self.progress = progress
        self.num_threads = num_threads
        self.distributed = distributed
        self.setting_names = dict(setting_names or {})
        self.generator = torch.Generator().manual_seed(self.seed)
        self.rng = numpy_rng if numpy_rng is not None else np.random.default_rng(self.seed)
        self._rng_given = numpy_rng is not None
        self.step = 0
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self._ddp_params: set[int] = set()

    # ------------------------------------------------------------------ distributed
    @property
    def is_distributed(self) -> bool:
        """Whether the fit runs on several processes."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and reports progress (rank 0)."""
        return self.rank == 0

    def _join_group(self) -> None:
        _, world, _ = distributed_env()
        if self.distributed is False or world <= 1:
            self.rank, self.world_size = 0, 1
            return
        dist = torch.distributed
        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend)
            # kept for later fits of the same process (re-creating a group is not reliable)
            # and destroyed when the process exits
            atexit.register(_destroy_group)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as a ``DistributedDataParallel`` under ``torchrun``, else itself.

        Call it in :meth:`TrainTask.setup` after moving the module to ``engine.device``, and
        run the training forward pass through the returned module.
        """
        if not self.is_distributed or not any(p.requires_grad for p in module.parameters()):
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped = DistributedDataParallel(module, device_ids=ids)
        self._ddp_params.update(id(p) for p in module.parameters())
        return wrapped

    def all_reduce_mean(self, values: list[float]) -> list[float]:
        """The means over ranks of ``values`` (the values themselves on one process)."""
        if not self.is_distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return (t / self.world_size).tolist()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """The sums over ranks of ``values`` (the values themselves on one process)."""
        if not self.is_distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return t.tolist()

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` of every rank concatenated along dim 0 (equal shapes on all ranks)."""
        if not self.is_distributed:
            return tensor
        t = tensor.to(self._comm_device())
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, t.contiguous())
        return torch.cat(parts).to(tensor.device)

    def barrier(self) -> None:
        """Wait for every rank (nothing on one process)."""
        if self.is_distributed:
            torch.distributed.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _sync_grads(self, params: list[nn.Parameter]) -> None:
        """Average the gradients DDP does not handle (e.g. a crowd layer) over ranks."""
        extra = [p for p in params if id(p) not in self._ddp_params and p.requires_grad]
        if not extra:
            return
        # a parameter without a gradient on every rank keeps none (the optimiser skips it)
        has = self.all_reduce_sum([float(p.grad is not None) for p in extra])
        for p, count in zip(extra, has, strict=True):
            if count == 0:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad /= self.world_size

    # ------------------------------------------------------------------ batches
    def _order(self, n: int) -> torch.Tensor:
        if self.shuffle == "torch":
            perm = torch.randperm(n, generator=self.generator)
        elif self.shuffle == "numpy":
            perm = torch.from_numpy(self.rng.permutation(n).astype(np.int64))
        else:
            perm = torch.arange(n)
        if self.world_size > 1:
            # DistributedSampler: pad to a multiple of the world size, then every W-th item
            total = math.ceil(n / self.world_size) * self.world_size
            if total > n:
                perm = torch.cat([perm, perm[: total - n]])
            perm = perm[self.rank : total : self.world_size]
        return perm

    def batches(self, perm: torch.Tensor) -> Iterator[torch.Tensor]:
        """Mini-batches of ``perm`` (a last batch of one joins the previous one)."""
        n, b = len(perm), self.batch_size
        starts = list(range(0, n, b))
        if self.join_single and len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else n
            yield perm[s:end]

    # ------------------------------------------------------------------ fit
    def fit(self, task: TrainTask) -> FitResult:
        """Train ``task`` until ``epochs`` or early stopping; see the class docstring.

        Returns:
            The history and the best epoch; the task's modules hold the best (or last)
            weights.

        Raises:
            CheckpointMismatchError: ``checkpoint`` belongs to a run with other settings
                (:class:`CheckpointEpochsError`: it holds more than ``epochs`` epochs).
            NonFiniteLossError: The loss or the weights became NaN or infinite (the fit
                stops; the checkpoint of the last finite epoch is kept).
            ValueError: ``checkpoint`` is corrupt.
        """
        threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        self._join_group()
        try:
            forked = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=forked):
                torch.manual_seed(self.seed)
                result = self._fit(task)
            self.barrier()  # not after an error: torchrun then stops every rank
            return result
        finally:
            if self.num_threads is not None:
                torch.set_num_threads(threads)

    def _run_config(self, task: TrainTask) -> dict[str, Any]:
        config = {
            "task": task.config(),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "patience": self.patience,
            "keep_best": self.keep_best,
            "shuffle": self.shuffle,
            "join_single": self.join_single,
            "world_size": self.world_size,
        }
        # compare what the checkpoint will hold after its JSON round trip
        normal: dict[str, Any] = json.loads(json.dumps(config, default=_json_default))
        return normal

    def _fit(self, task: TrainTask) -> FitResult:
        self.step = self.epoch = 0
        self.generator.manual_seed(self.seed)  # a second fit of this engine starts over
        if not self._rng_given:
            self.rng = np.random.default_rng(self.seed)
        task.setup(self)
        modules = task.modules()
        opt = task.optimizer()
        params = [p for g in opt.param_groups for p in g["params"]]
        config = self._run_config(task) if self.checkpoint is not None else {}
        result = FitResult()
        best_state: dict[str, dict[str, torch.Tensor]] | None = None
        ckpt = self.checkpoint
        if ckpt is not None and not self.resume and self.is_main:
            ckpt.unlink(missing_ok=True)
        self.barrier()
        if ckpt is not None and ckpt.exists():
            best_state = self._restore(ckpt, config, task, modules, opt, result)
        result.start_epoch = len(result.history)
        start = result.start_epoch
        bar, bar_task = self._progress_bar(task, start)
        try:
            last = start if result.stopped_early else self.epochs
            for epoch in range(start, last):
                self.epoch = epoch
                t0 = time.perf_counter()
                record = self._train_epoch(task, modules, opt, params, epoch)
                record.update(task.end_epoch(epoch, self))
                self._check_weights(modules, opt, epoch)
                val = task.validate(self)
                if val:
                    record.update(zip(val, self.all_reduce_mean(list(val.values())), strict=True))
                record["seconds"] = time.perf_counter() - t0
                result.history.append(record)
                score = float(task.score(record))
                if score > result.best_score or self.patience is None or not self.keep_best:
                    result.best_score, result.best_epoch = score, epoch + 1
                    if self.keep_best:
                        best_state = {k: copy.deepcopy(m.state_dict()) for k, m in modules.items()}
                result.stopped_early = (
                    self.patience is not None and epoch + 1 - result.best_epoch >= self.patience
                )
                result.step = self.step
                if ckpt is not None:
                    if self.is_main:
                        self._save(ckpt, config, task, modules, opt, result, best_state)
                    self.barrier()
                self._report(bar, bar_task, epoch + 1, record)
                if result.stopped_early:
                    break
        finally:
            if bar is not None:
                bar.stop()
        if self.keep_best and best_state is not None:
            for name, module in modules.items():
                module.load_state_dict(best_state[name])
        result.step = self.step
        return result

    def _train_epoch(
        self,
        task: TrainTask,
        modules: dict[str, nn.Module],
        opt: torch.optim.Optimizer,
        params: list[nn.Parameter],
        epoch: int,
    ) -> dict[str, float]:
        for m in modules.values():
            m.train()
        n = int(task.epoch_items(epoch, self))
        perm = self._order(n)
        sums: dict[str, float] = {"loss": 0.0}
        weight = 0.0
        for batch, idx in enumerate(self.batches(perm), start=1):
            out = task.train_batch(idx, self)
            loss, extras = out if isinstance(out, tuple) else (out, {})
            self._check_loss(loss, opt, epoch, batch)
            opt.zero_grad()
            loss.backward()
            if self.is_distributed:
                self._sync_grads(params)
            if self.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
            opt.step()
            self.step += 1
            w = float(len(idx)) if self.loss_average == "items" else 1.0
            sums["loss"] += float(loss.detach()) * w
            for key, value in extras.items():
                sums[key] = sums.get(key, 0.0) + float(value) * w
            weight += w
        keys = list(sums)
        totals = self.all_reduce_sum([sums[k] for k in keys] + [weight])
        denom = max(totals[-1], 1.0)
        record: dict[str, float] = {"epoch": epoch + 1}
        record.update({k: v / denom for k, v in zip(keys, totals[:-1], strict=True)})
        return record

    # ------------------------------------------------------------------ finite training
    def _check_loss(
        self, loss: torch.Tensor, opt: torch.optim.Optimizer, epoch: int, batch: int
    ) -> None:
        """Stop before the optimiser step of a NaN or infinite loss (on every rank)."""
        value = loss.detach()
        finite = bool(torch.isfinite(value).all())
        if self.is_distributed:  # every rank stops at the same step
            finite = self.all_reduce_sum([float(not finite)])[0] == 0
        if not finite:
            kind = "NaN" if bool(torch.isnan(value).any()) or value.numel() == 0 else "inf"
            raise self._kept(NonFiniteLossError(epoch + 1, batch, _first_lr(opt), kind))

    def _kept(self, err: NonFiniteLossError) -> NonFiniteLossError:
        """``err`` naming the checkpoint of the last finite epoch, when there is one."""
        if self.checkpoint is not None and self.checkpoint.is_file():
            err.checkpoint = self.checkpoint
        return err

    def _check_weights(
        self, modules: dict[str, nn.Module], opt: torch.optim.Optimizer, epoch: int
    ) -> None:
        """Stop when an epoch left NaN or infinite weights (never checkpointed)."""
        for module in modules.values():
            for t in module.state_dict().values():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
                    err = NonFiniteLossError(epoch + 1, 0, _first_lr(opt), kind, what="weights")
                    raise self._kept(err)

    # ------------------------------------------------------------------ checkpoints
    def _save(
        self,
        path: Path,
        config: dict[str, Any],
        task: TrainTask,
        modules: dict[str, nn.Module],
        opt: torch.optim.Optimizer,
        result: FitResult,
        best_state: dict[str, dict[str, torch.Tensor]] | None,
    ) -> None:
        from safetensors.torch import save_file

        from crowdmed._io import atomic_path

        tensors: dict[str, torch.Tensor] = {}
        for name, module in modules.items():
            for key, t in module.state_dict().items():
                tensors[f"modules/{name}/{key}"] = t
        if best_state is not None:
            for name, state in best_state.items():
                for key, t in state.items():
                    tensors[f"best/{name}/{key}"] = t
        opt_state = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, entry in opt_state["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{pid}/{key}"] = value
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        tensors["rng/generator"] = self.generator.get_state()
        tensors["rng/torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {
            "version": _CHECKPOINT_VERSION,
            "config": config,
            "history": result.history,
            "best_epoch": result.best_epoch,
            "best_score": result.best_score,
            "has_best_state": best_state is not None,
            "stopped_early": result.stopped_early,
            "step": self.step,
            "optimizer": {
                "param_groups": opt_state["param_groups"],
                "scalars": scalars,
                "state_ids": [str(k) for k in opt_state["state"]],
            },
            "numpy_rng": self.rng.bit_generator.state,
            "task_state": task.state_dict(),
        }
        plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        with atomic_path(path) as tmp:
            save_file(
                plain, str(tmp), metadata={_META_KEY: json.dumps(meta, default=_json_default)}
            )

    def _restore(
        self,
        path: Path,
        config: dict[str, Any],
        task: TrainTask,
        modules: dict[str, nn.Module],
        opt: torch.optim.Optimizer,
        result: FitResult,
    ) -> dict[str, dict[str, torch.Tensor]] | None:
        meta, tensors = read_checkpoint(path)
        old = meta.get("config", {})
        old = old if isinstance(old, dict) else {}
        old_task = old.get("task", {})
        old_task = old_task if isinstance(old_task, dict) else {}
        changed = sorted(
            {
                self.setting_names.get(k, k)
                for k in config
                if k != "task" and old.get(k) != config[k]
            }
            | {k for k in config["task"] if old_task.get(k) != config["task"][k]}
        )
        if changed:
            raise CheckpointMismatchError(
                f"Checkpoint {str(path)!r} belongs to another run (changed: {changed}); "
                f"{self.mismatch_hint}",
                path,
                changed,
            )
        try:
            for name, module in modules.items():
                prefix = f"modules/{name}/"
                state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                module.load_state_dict(state)
            best_state = None
            if meta["has_best_state"]:
                best_state = {
                    name: {
                        k[len(f"best/{name}/") :]: v.to(self.device)
                        for k, v in tensors.items()
                        if k.startswith(f"best/{name}/")
                    }
                    for name in modules
                }
            opt_meta = meta["optimizer"]
            opt_state: dict[int, dict[str, Any]] = {}
            for pid in opt_meta["state_ids"]:
                entry: dict[str, Any] = dict(opt_meta["scalars"].get(pid, {}))
                prefix = f"optimizer/{pid}/"
                entry.update(
                    {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                )
                opt_state[int(pid)] = entry
            opt.load_state_dict({"state": opt_state, "param_groups": opt_meta["param_groups"]})
            self.generator.set_state(tensors["rng/generator"])
            torch.set_rng_state(tensors["rng/torch"])
            if self.device.type == "cuda" and "rng/cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
            self.rng.bit_generator.state = meta["numpy_rng"]
            task.load_state_dict(meta.get("task_state", {}))
            history = [dict(r) for r in meta["history"]]
            best_epoch, best_score = int(meta["best_epoch"]), float(meta["best_score"])
            stopped_early, step = bool(meta["stopped_early"]), int(meta["step"])
            if not 0 <= best_epoch <= len(history) or step < 0:
                raise ValueError(f"best epoch {best_epoch} of {len(history)} epochs")
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            raise ValueError(
                f"Checkpoint '{path}' does not fit this run ({first or type(exc).__name__}); "
                f"{self.mismatch_hint}"
            ) from None
        if len(history) > self.epochs:
            raise CheckpointEpochsError(path, len(history), self.epochs, self.mismatch_hint)
        result.history = history
        result.best_epoch, result.best_score = best_epoch, best_score
        result.stopped_early = stopped_early
        self.step = result.step = step
        return best_state

    # ------------------------------------------------------------------ progress
    def _progress_bar(self, task: TrainTask, start: int) -> tuple[Any, Any]:
        if self.progress is not True or not self.is_main:
            return None, None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} epochs"),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        bar.start()
        handle = bar.add_task(task.name, total=self.epochs, completed=start, metrics="")
        return bar, handle

    def _report(self, bar: Any, handle: Any, epoch: int, record: dict[str, float]) -> None:
        if not self.is_main:
            return
        if callable(self.progress) and self.progress is not True:
            self.progress(epoch, self.epochs, record)
        elif bar is not None:
            shown = " ".join(
                f"{k}={v:.3f}" for k, v in record.items() if k not in ("epoch", "seconds")
            )
            bar.update(handle, completed=epoch, metrics=shown)


def _first_lr(opt: torch.optim.Optimizer) -> float:
    groups = opt.param_groups
    lr = groups[0].get("lr", math.nan) if groups else math.nan
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


def _destroy_group() -> None:
    """Destroy the process group at exit, every rank together.

    A gloo rank that closes its connections while its peer is still tearing down can make
    the peer abort ("terminate called without an active exception"), so that a finished run
    ends with a failed status; the ranks first meet at a barrier (bounded: a rank that stopped
    early does not hold the others).
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo":
        with contextlib.suppress(RuntimeError):
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
    dist.destroy_process_group()


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON state and the tensors of a checkpoint written by :class:`Engine`.

    Args:
        path: The checkpoint file.

    Returns:
        ``(state, tensors)`` with the tensors on the CPU.

    Raises:
        ValueError: One line naming the file when it is unreadable or not a checkpoint.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(p), device="cpu")
        meta = json.loads(metadata[_META_KEY])
    except Exception as exc:  # safetensors, JSON and key errors for a corrupt file
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise ValueError(
            f"Cannot read checkpoint '{p}' ({first or type(exc).__name__}); delete it to "
            "start over."
        ) from None
    if not isinstance(meta, dict) or meta.get("version", 0) > _CHECKPOINT_VERSION:
        raise ValueError(f"Checkpoint '{p}' is of a newer crowdmed; delete it to start over.")
    return meta, tensors


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (Path, torch.dtype)):
        return str(value)
    if hasattr(value, "value"):  # Enum
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON")
