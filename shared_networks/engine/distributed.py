"""Training on several processes (GPUs, machines) with ``torch.distributed``, as launched by ``torchrun``.

The pieces each bundle's ``multi_gpu_train.yaml`` needs beyond what PyTorch and MONAI provide: joining the process
group that torchrun describes in the environment, the device of this process, a ``SupervisedTrainer`` that trains
its network in ``DistributedDataParallel``, the linear lr scaling rule, and keeping the handlers that write files on
rank 0. Data sharding is MONAI's ``DistributedSampler`` (its epoch is set by ``monai.engines.Workflow``), metric
reduction MONAI's cumulative metrics (they all-gather their buffers).

    torchrun --standalone --nproc_per_node=2 -m monai.bundle run \
        --config_file "['configs/train.yaml','configs/multi_gpu_train.yaml']" --dataset_dir <data>
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from monai.engines import SupervisedTrainer
from monai.handlers import (
    CheckpointSaver,
    ClassificationSaver,
    ClearMLHandler,
    MetricsSaver,
    MLFlowHandler,
    StatsHandler,
    TensorBoardHandler,
)
from monai.utils import set_determinism
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from shared_networks.engine.handlers import ReconstructionSaver
from shared_networks.engine.metrics import ClassificationReport, MetricsReport

__all__ = [
    "RANK0_ONLY_TYPES",
    "DistributedTrainer",
    "destroy_process_group",
    "init_process_group",
    "is_not_rank0",
    "local_device",
    "rank0_only",
    "scale_lr",
    "set_rank_determinism",
]

logger = logging.getLogger(__name__)

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# handlers that write files or logs: only rank 0 runs them (checkpoints, TensorBoard, PNGs, metric reports, console
# statistics, experiment trackers). Everything else (lr schedules, validation, weight loaders, ...) runs on every rank.
RANK0_ONLY_TYPES: tuple[type, ...] = (
    CheckpointSaver,
    TensorBoardHandler,
    StatsHandler,
    MLFlowHandler,
    ClearMLHandler,
    MetricsSaver,
    ClassificationSaver,
    ReconstructionSaver,
    MetricsReport,
    ClassificationReport,
)


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (torchrun's per-machine process index) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_process_group(backend: str | None = None) -> None:
    """Joins the process group torchrun describes in the environment (``env://``); does nothing when already joined.

    Args:
        backend: ``nccl`` / ``gloo``; default nccl when CUDA is available (and this process's GPU is made current),
            gloo on the CPU.

    Raises:
        RuntimeError: when the torchrun environment variables are absent (the config was run without torchrun).
    """
    if dist.is_initialized():
        return
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"configs/multi_gpu_train.yaml needs the environment torchrun sets ({', '.join(missing)} missing): launch "
            "it with `torchrun --nproc_per_node=N -m monai.bundle run ...`, or leave multi_gpu_train.yaml out for one "
            "device."
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend)
    logger.info(
        f"rank {dist.get_rank()} of {dist.get_world_size()} (local rank {os.environ['LOCAL_RANK']}), backend {backend}"
    )


def destroy_process_group() -> None:
    """Leaves the process group (the ``finalize`` step of a distributed run); does nothing when not joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_not_rank0() -> bool:
    """True in a process of a joined group whose rank is above 0 (the handlers that write skip it: ``_disabled_``);
    False on rank 0 and outside any process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_rank() > 0


def set_rank_determinism(seed: int) -> None:
    """MONAI's ``set_determinism`` with ``seed + rank``: each process draws its own augmentation, crops and masks.

    Raises:
        ValueError: when no process group is joined (torch's error; run :func:`init_process_group` first).
    """
    set_determinism(seed=seed + dist.get_rank())


def scale_lr(optimizer: Optimizer, factor: float) -> Optimizer:
    """Multiplies the learning rate of every parameter group by ``factor``, once, before any lr scheduler is built.

    The bundles set ``lr = base_lr * (samples per iteration of one process) / 256``, samples being images in 2D and
    volumes in 3D (each giving ``num_samples`` crops, the reference's rule); with N processes an iteration sees N times
    as many, so the linear scaling rule asks for ``factor = N``. Layer-wise decay ratios are kept.

    Raises:
        RuntimeError: when a scheduler already holds the old rates (``initial_lr`` set) or the groups were scaled.
    """
    for group in optimizer.param_groups:
        if "initial_lr" in group or "lr_world_factor" in group:
            raise RuntimeError("scale_lr must run once, before the lr scheduler is built (it reads the groups' lr).")
    for group in optimizer.param_groups:
        group["lr"] *= factor
        group["lr_world_factor"] = factor
    optimizer.defaults["lr"] *= factor
    if factor != 1 and (not dist.is_initialized() or dist.get_rank() == 0):
        logger.info(f"learning rates multiplied by {factor} (global batch = {factor} x the per-process batch)")
    return optimizer


def rank0_only(handlers: Sequence | None, rank: int | None = None) -> list:
    """The handlers this process attaches: all on rank 0; on the other ranks, those that write nothing.

    Handlers of :data:`RANK0_ONLY_TYPES` are left out on ranks above 0 (the others: lr schedules, validation,
    weight loading, ... run everywhere, so every rank stays in step), except a checkpoint saver that resumes a run
    (``resume`` true): it loads the state on every rank, and ignite saves its files on rank 0 only. A left-out
    TensorBoard handler has already opened an (empty) event file when it was built; it is closed and removed, so
    rank 0's file is the only one.

    Args:
        handlers: the handler list of a trainer or evaluator (None: no handlers).
        rank: this process's global rank (default: from the process group; 0 when there is none).
    """
    handlers = list(handlers or [])
    if rank is None:
        rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        return handlers
    kept = []
    for h in handlers:
        if not isinstance(h, RANK0_ONLY_TYPES) or _restores_state(h):
            kept.append(h)
        elif isinstance(h, TensorBoardHandler) and h.internal_writer:
            _discard_event_file(h)
    return kept


def _restores_state(handler: object) -> bool:
    """A checkpoint saver that also resumes (``resume`` true) loads the training state every rank needs.

    It stays on every rank; ignite's ``DiskSaver`` behind MONAI's ``CheckpointSaver`` writes on rank 0 only.
    """
    return isinstance(handler, CheckpointSaver) and bool(getattr(handler, "resume", False))


def _discard_event_file(handler: TensorBoardHandler) -> None:
    """Closes the SummaryWriter of a TensorBoard handler that logged nothing and removes the event file it created."""
    file_writer = getattr(handler._writer, "file_writer", None)
    path = getattr(getattr(file_writer, "event_writer", None), "_file_name", None)
    handler.close()
    if path is not None:
        Path(path).unlink(missing_ok=True)


class DistributedTrainer(SupervisedTrainer):
    """``monai.engines.SupervisedTrainer`` whose network trains inside ``DistributedDataParallel``.

    Only the trainer sees the wrapper: the optimizer, the handlers (pre-trained weight loading, checkpoints) and the
    evaluator keep the bare network, which shares its parameters, so checkpoints hold the network's own keys and
    validation runs without collective calls. DDP averages the gradients of all ranks at every step and starts from
    rank 0's weights, so all ranks hold the same weights throughout. Needs an initialised process group
    (:func:`init_process_group`).

    Args:
        device: this process's device (:func:`local_device`).
        network: the bare network (already on ``device``).
        find_unused_parameters: DDP's option for networks with parameters that get no gradient in some steps.
        kwargs: the other arguments of ``SupervisedTrainer``.
    """

    def __init__(
        self, device: str | torch.device, network: torch.nn.Module, find_unused_parameters: bool = False, **kwargs
    ) -> None:
        device = torch.device(device)
        ddp = DistributedDataParallel(
            network,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters,
        )
        super().__init__(device=device, network=ddp, **kwargs)
