"""What the experiment trackers (``configs/mlflow.yaml``) and the loss loggers of the workflows record.

    run_name: $shared_networks.run_name(@output_dir)
    output_transform: $shared_networks.iteration_loss
    artifacts: $shared_networks.evaluation_artifacts(@save_execute_config, @output_dir)

Which ranks log is :func:`~shared_networks.is_not_rank0` (the handlers' ``_disabled_``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["EVALUATION_FILES", "evaluation_artifacts", "iteration_loss", "run_name"]

EVALUATION_FILES = ("summary.json", "per_case.csv", "predictions.csv")
"""The files an evaluation writes into its ``output_dir`` (segmentation: summary and per-case; chest X-ray: summary
and predictions); those that exist are logged as artifacts."""


def run_name(output_dir: str | os.PathLike) -> str:
    """The tracked run's name: the last folder of ``output_dir`` (``pretrain``, ``train``, ``evaluate``, ...)."""
    return os.path.basename(os.path.normpath(output_dir))


def iteration_loss(output: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> float:
    """The loss of one training iteration as a float, from a trainer's output: a dict (``decollate: false``) or the
    decollated list of dicts, each holding the batch's loss."""
    first = output[0] if isinstance(output, list) else output
    return float(torch.as_tensor(first["loss"]).detach())


def evaluation_artifacts(
    config_file: str | os.PathLike | None, output_dir: str | os.PathLike, names: Sequence[str] = EVALUATION_FILES
) -> list:
    """The artifacts of an evaluation run: the config it ran (MONAI's ``save_execute_config``), then ``names`` in
    ``output_dir``."""
    return [config_file] + [os.path.join(output_dir, n) for n in names]
