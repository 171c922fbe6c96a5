"""How a workflow uses the machine: the split of CPU cores between data loading and compute, and bf16 autocast for
inference on CPUs that compute in bf16 natively.

The bundles' ``initialize`` calls :func:`configure_threads` (after ``check_overrides``); their data loaders start each
worker with :func:`loader_worker_init`; their inference configs wrap the sliding-window inferer in
:class:`AutocastInferer`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from monai.data.utils import worker_init_fn as monai_worker_init_fn
from monai.inferers import Inferer

from shared_networks.utils.flags import as_bool

__all__ = [
    "BF16_CPU_FLAGS",
    "AutocastInferer",
    "available_cores",
    "loader_workers",
    "configure_threads",
    "cpu_bf16_supported",
    "cpu_flags",
    "default_device",
    "loader_worker_init",
    "resolve_cpu_bf16",
    "thread_split",
]

logger = logging.getLogger(__name__)

# /proc/cpuinfo flags of CPUs with bf16 arithmetic in hardware (AVX-512 BF16: Zen 4, Cooper Lake; AMX: Sapphire
# Rapids and later); without them oneDNN emulates bf16, slower than fp32
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or ``taskset``'s share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def default_device() -> torch.device:
    """The device of a one-process workflow: the first GPU where CUDA is available, else the CPU
    (``multi_gpu_train.yaml`` gives each process its own: :func:`~shared_networks.local_device`)."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def loader_workers(num_workers: int | str, cores: int | None = None, device: torch.device | str | None = None) -> int:
    """Data-loader worker processes of a training workflow: ``num_workers`` itself, or for ``"auto"``:

    - on a CPU (``device`` None or a CPU): one worker per four cores, at most 4 (0 on 2–3 cores: there every worker
      takes a core from the network, and measured on 2 cores the workflows ran 1.4–2.1× faster per epoch without
      workers; ``benchmarks/README.md``);
    - on a GPU: every core of this process's share of the node (``cores`` divided by ``LOCAL_WORLD_SIZE``, the
      processes that ``torchrun`` started on it) but two, at least 1. The network runs on the GPU, and the main
      process needs one core to launch its kernels and one for the loader's pinning and collation; the others are
      what keeps the GPU fed (16 cores, one GPU: 14 workers; ``benchmarks/README.md``, "Full-size data").

    Raises:
        ValueError: neither ``"auto"`` nor a whole number >= 0.
    """
    if isinstance(num_workers, str) and num_workers.strip().lower() == "auto":
        cores = available_cores() if cores is None else int(cores)
        if device is not None and torch.device(device).type == "cuda":
            try:
                processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
            except ValueError:
                processes = 1
            return max(1, cores // processes - 2)
        return max(0, min(4, cores // 4))
    try:
        workers = int(num_workers)
    except (TypeError, ValueError):
        workers = -1
    if isinstance(num_workers, bool) or workers < 0 or str(workers) != str(num_workers).strip():
        raise ValueError(f"num_workers must be 'auto' or a whole number >= 0, got {num_workers!r}.")
    return workers


def thread_split(
    cores: int, num_workers: int, torch_threads: int | str | None = "auto", dedicated_workers: bool = True
) -> int:
    """Torch threads of the main (compute) process, given the cores and the data-loader workers.

    ``"auto"``: every core not taken by a loader worker (each worker runs one thread), at least one:
    ``max(1, cores - num_workers)``; with ``dedicated_workers=False`` (workers that mostly wait, as in inference,
    where one volume is read per many seconds of compute) every core. A number: that many, whatever the cores.

    Args:
        cores: CPU cores available to the run.
        num_workers: data-loader worker processes.
        torch_threads: ``"auto"`` (or ``None``, ``""``, ``0``), or a positive number of threads.
        dedicated_workers: whether ``auto`` keeps a core per loader worker.

    Raises:
        ValueError: naming the setting, for a negative ``num_workers`` or a ``torch_threads`` that is no positive
            number.
    """
    if int(num_workers) < 0:
        raise ValueError(f"num_workers must be 0 or more, got {num_workers!r}.")
    if torch_threads is None or str(torch_threads).strip().lower() in ("auto", "", "0", "none"):
        return max(1, int(cores) - (int(num_workers) if dedicated_workers else 0))
    try:
        threads = int(str(torch_threads).strip())
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"torch_threads must be 'auto' or a positive number of threads, got {torch_threads!r}.")
    return threads


def configure_threads(
    num_workers: int, torch_threads: int | str | None = "auto", cores: int | None = None, dedicated_workers: bool = True
) -> int:
    """Set the main process's torch threads by :func:`thread_split` and log the choice; returns the thread count.

    Args:
        num_workers: the workflow's data-loader workers.
        torch_threads: the workflow's ``torch_threads`` setting (``"auto"`` or a number).
        cores: available cores; default :func:`available_cores`.
        dedicated_workers: see :func:`thread_split` (``False`` in inference).
    """
    cores = available_cores() if cores is None else int(cores)
    threads = thread_split(cores, num_workers, torch_threads, dedicated_workers)
    torch.set_num_threads(threads)
    auto = thread_split(cores, num_workers, "auto", dedicated_workers)
    how = ("auto: cores - workers" if dedicated_workers else "auto: every core") if threads == auto else "torch_threads"
    logger.info(
        f"CPU threads: {threads} torch thread(s) in the main process ({how}), {int(num_workers)} data-loader"
        f" worker(s) with 1 thread each, {cores} core(s)"
    )
    return threads


def loader_worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the bundles' data loaders: one torch thread per worker, then MONAI's own worker seeding
    (``monai.data.utils.worker_init_fn``: each worker's random transforms get the worker's seed)."""
    torch.set_num_threads(1)
    monai_worker_init_fn(worker_id)


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The ``flags`` of the first processor in ``cpuinfo`` (empty where the file does not exist: not Linux)."""
    path = Path(cpuinfo)
    if not path.is_file():
        return frozenset()
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_bf16_supported(flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU computes in bf16 natively (a flag of :data:`BF16_CPU_FLAGS`) and torch's CPU kernels use
    AVX-512 (``torch.backends.cpu.get_cpu_capability()``)."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    return bool(BF16_CPU_FLAGS & flags) and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_cpu_bf16(setting: bool | str, device: torch.device | str) -> bool:
    """Whether inference on ``device`` runs under bf16 autocast, from the ``cpu_bf16`` setting.

    ``auto``: on a CPU with native bf16 (:func:`cpu_bf16_supported`), fp32 otherwise. ``true``: bf16 on any CPU (with a
    warning where the CPU emulates it, which is slower than fp32). ``false``: fp32. Never on another device: there
    the network runs as it is.

    Raises:
        ValueError: for a setting that is neither ``auto`` nor true/false.
    """
    if torch.device(device).type != "cpu":
        return False
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        return cpu_bf16_supported()
    try:
        wanted = as_bool(setting, "cpu_bf16")
    except ValueError as err:
        raise ValueError(f"cpu_bf16 must be auto, true or false, got {setting!r}.") from err
    if wanted and not cpu_bf16_supported():
        warnings.warn(
            "cpu_bf16: this CPU has no native bf16 (avx512_bf16/amx_bf16); bf16 is emulated and slower.", stacklevel=2
        )
    return wanted


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    return out


class AutocastInferer(Inferer):
    """An inferer (e.g. ``SlidingWindowInferer``) whose network runs under bf16 autocast on the CPU.

    The network's output is cast back to fp32 per call, so the sliding window's gaussian weighting and sums stay in
    fp32; only the network's matrix products and convolutions run in bf16. MONAI's evaluators autocast on CUDA only
    (``amp``), hence this wrapper for the CPU.

    Args:
        inferer: the inferer to run.
        device: the workflow's device; autocast applies on a CPU only.
        cpu_bf16: ``auto`` (bf16 where the CPU has it natively), ``true`` or ``false``, see :func:`resolve_cpu_bf16`.
    """

    def __init__(self, inferer: Inferer, device: torch.device | str = "cpu", cpu_bf16: bool | str = "auto") -> None:
        super().__init__()
        self.inferer = inferer
        self.bf16 = resolve_cpu_bf16(cpu_bf16, device)
        logger.info(f"network precision: {'bf16 autocast' if self.bf16 else 'fp32'} (cpu_bf16={cpu_bf16})")

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.bf16:
            return self.inferer(inputs, network, *args, **kwargs)

        def fp32_out(*a: Any, **k: Any) -> Any:
            return _to_float(network(*a, **k))

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.inferer(inputs, fp32_out, *args, **kwargs)
