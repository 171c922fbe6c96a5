"""Stops on non-finite values: a training loss or gradient with NaN/inf stops the run (naming epoch, iteration and
the batch's files), and a checkpoint loaded for evaluation or inference is refused when its weights are non-finite.

ignite's ``TerminateOnNan`` ends the run as if it had completed (exit status 0, final checkpoints written); these
raise :class:`~shared_networks.networks.handoff.NonFiniteError` instead, so ``python -m monai.bundle run`` exits
non-zero and no checkpoint saver of this project writes the bad weights (see
:class:`~shared_networks.engine.checkpoints.AtomicCheckpointSaver`).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointLoader
from monai.utils import CommonKeys

from shared_networks.networks.handoff import NonFiniteError, check_finite, describe_non_finite, first_non_finite

__all__ = ["FiniteCheckpointLoader", "StopOnNonFinite", "batch_files"]

logger = logging.getLogger(__name__)

_FILE_KEY = "filename_or_obj"


def _names(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [str(value)]
    return [str(v) for v in value]


def batch_files(batch, keys: Sequence[str] = ("image",)) -> list[str]:
    """The source files of a (collated) batch, each once, in order: ``filename_or_obj`` of the ``keys`` items'
    metadata (MetaTensor ``.meta`` or ``<key>_meta_dict``), else of any item of the batch that has one."""
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes, torch.Tensor)):  # decollated: one per sample
        return list(dict.fromkeys(f for item in batch for f in batch_files(item, keys)))
    if not isinstance(batch, Mapping):
        return []
    order = [k for k in keys if k in batch] + [k for k in batch if k not in keys]
    for key in order:
        value = batch[key]
        meta = getattr(value, "meta", None)
        if isinstance(meta, Mapping) and meta.get(_FILE_KEY) is not None:
            return list(dict.fromkeys(_names(meta[_FILE_KEY])))
        meta = batch.get(f"{key}_meta_dict")
        if isinstance(meta, Mapping) and meta.get(_FILE_KEY) is not None:
            return list(dict.fromkeys(_names(meta[_FILE_KEY])))
    return []


def _loss_of(output):
    if isinstance(output, Mapping):
        return output.get(CommonKeys.LOSS)
    if isinstance(output, Sequence) and output and isinstance(output[0], Mapping):  # decollated output
        return output[0].get(CommonKeys.LOSS)
    return output if isinstance(output, (torch.Tensor, float)) else None


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and (torch.distributed.get_world_size() > 1)
    )


def _is_finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value.detach()).all())
    return math.isfinite(float(value))


class StopOnNonFinite:
    """Stops training at the first non-finite loss or gradient with a :class:`NonFiniteError` naming the epoch, the
    iteration and the batch's files; attach it first (after the seeding) to every trainer.

    On a ``monai.engines.SupervisedTrainer`` the loss is checked when it is computed (``LOSS_COMPLETED``, before the
    backward pass) and the gradients when they are (``BACKWARD_COMPLETED``, before the optimiser step): the weights
    are never updated from a bad batch. The gradient check is one norm over all gradients; only when it is not
    finite are the tensors searched for the first bad one. With mixed precision (a ``GradScaler``) infinite scaled
    gradients are the scaler's business (it skips the step), so gradients are not checked there. On other engines
    the loss and gradients are checked at ``ITERATION_COMPLETED``. In a multi-process run a rank with a bad loss
    raises after the backward pass, when the all-reduced gradients are bad on every rank, so all ranks stop together
    (none waits forever in the all-reduce). At every ``EPOCH_COMPLETED`` the network's weights
    are checked too (before the epoch's validation and checkpoints when attached first).

    The error goes up through ``engine.run()`` (``monai.bundle run`` exits non-zero): while it is raised this handler
    is the first ``EXCEPTION_RAISED`` handler and re-raises it at once, so a saver with ``save_final`` that would
    save the weights "on exception" never runs. Other exceptions go on to the handlers attached after it.

    Args:
        network: the trained network, for the gradient and weight checks (the trainer's ``network`` if omitted).
        check_grads: check gradients after the backward pass.
        check_weights: check the weights after each epoch.
        file_keys: batch keys whose metadata names the files (``image``; any other key with metadata as fallback).
    """

    def __init__(
        self,
        network: torch.nn.Module | None = None,
        check_grads: bool = True,
        check_weights: bool = True,
        file_keys: Sequence[str] = ("image",),
    ) -> None:
        self.network = network
        self.check_grads = check_grads
        self.check_weights = check_weights
        self.file_keys = tuple(file_keys)
        self._deferred = False  # loss checked before the backward pass, gradients after it
        self._pending: NonFiniteError | None = None

    def _network(self, engine: Engine) -> torch.nn.Module | None:
        # the trainer's network is set only after its handlers are attached
        return self.network if self.network is not None else getattr(engine, "network", None)

    def attach(self, engine: Engine) -> None:
        allowed = getattr(engine, "_allowed_events", [])
        if IterationEvents.LOSS_COMPLETED in allowed and IterationEvents.BACKWARD_COMPLETED in allowed:
            engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.check_loss)
            if self.check_grads:
                engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.check_gradients)
                self._deferred = True
        else:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_loss)
            if self.check_grads:
                engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_gradients)
        if self.check_weights:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.check_parameters)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def _where(self, engine: Engine) -> str:
        state = engine.state
        length = getattr(state, "epoch_length", None)
        within = f" ({(state.iteration - 1) % length + 1} of {length} in the epoch)" if length else ""
        files = batch_files(getattr(state, "batch", None), self.file_keys)
        shown = ", ".join(files) if files else "unknown (the batch has no filename_or_obj metadata)"
        return f"at epoch {state.epoch}, iteration {state.iteration}{within}; the batch's files: {shown}"

    def _hint(self) -> str:
        return (
            "Training stopped and wrote no final or best model. Check the data (python -m shared_networks.cli.validate"
            " ...: NaN/inf voxels, empty images), or lower the learning rate."
        )

    def check_loss(self, engine: Engine) -> None:
        loss = _loss_of(engine.state.output)
        if loss is None or _is_finite(loss):
            return
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
        error = NonFiniteError(f"non-finite training loss ({value}) {self._where(engine)}. {self._hint()}")
        if self._deferred and _distributed():
            # the other ranks wait in the backward pass's all-reduce: raise after it, when all ranks see the bad
            # gradients and stop together
            self._pending = error
            return
        raise error

    def _skip_grads(self, engine: Engine) -> bool:
        scaler = getattr(engine, "scaler", None)
        return bool(getattr(engine, "amp", False)) and scaler is not None and scaler.is_enabled()

    def check_gradients(self, engine: Engine) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            raise pending
        network = self._network(engine)
        if network is None or self._skip_grads(engine):
            return
        named = [(n, p.grad) for n, p in network.named_parameters() if p.grad is not None]
        if not named:
            return
        norms = torch._foreach_norm([g.detach() for _, g in named])
        if bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):
            return
        name, grad = next((n, g) for n, g in named if not bool(torch.isfinite(g).all()))
        raise NonFiniteError(
            f"non-finite gradient of '{name}' ({describe_non_finite(grad)}) {self._where(engine)}. {self._hint()}"
        )

    def check_parameters(self, engine: Engine) -> None:
        network = self._network(engine)
        if network is None:
            return
        params = [p.detach() for p in network.parameters() if p.is_floating_point()]
        if params and bool(torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(params)])).all()):
            return  # one fused pass (an elementwise check per tensor took 9 % of a 1-iteration ViT-B epoch)
        key = first_non_finite(dict(network.named_parameters()))
        if key is not None:
            param = dict(network.named_parameters())[key]
            raise NonFiniteError(
                f"non-finite weights in '{key}' ({describe_non_finite(param)}) after epoch {engine.state.epoch}, "
                f"iteration {engine.state.iteration}. {self._hint()}"
            )

    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        if isinstance(e, NonFiniteError):
            raise e
        # the only EXCEPTION_RAISED handler: ignite would swallow the error, as it does not re-raise when one exists
        handlers = engine._event_handlers.get(Events.EXCEPTION_RAISED, [])
        if all(h == self.exception_raised for h, *_ in handlers):
            raise e


class FiniteCheckpointLoader(CheckpointLoader):
    """``monai.handlers.CheckpointLoader`` that refuses weights with NaN or infinite values.

    It loads as MONAI's loader does (at ``Events.STARTED``, same arguments), then checks the state of every loaded
    object and raises :class:`NonFiniteError` naming the file and the first bad tensor, before any image is
    processed (a NaN model would otherwise write empty label maps, or NaN scores, and exit 0).
    """

    def __call__(self, engine: Engine) -> None:
        if not os.path.isfile(self.load_path):
            raise FileNotFoundError(f"checkpoint '{self.load_path}' does not exist (model_path / load_path).")
        try:
            super().__call__(engine)
        except NonFiniteError:  # refused by the network itself (its load hook names this file and the tensor)
            raise
        except (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as err:
            message = f"checkpoint '{self.load_path}' cannot be loaded: {type(err).__name__}: {err}"
            try:
                named = type(err)(message)
            except TypeError:  # an exception type with another signature
                named = RuntimeError(message)
            raise named from err
        objects = self.load_dict
        for name, obj in objects.items():
            state = obj.state_dict() if hasattr(obj, "state_dict") else obj
            if isinstance(obj, torch.optim.Optimizer):
                continue
            source = f"checkpoint '{self.load_path}'" + (f" ('{name}')" if len(objects) > 1 else "")
            check_finite(
                state,
                source,
                "these weights come from a run that diverged or read bad images; refusing to use them "
                "(retrain after checking the data with python -m shared_networks.cli.validate)",
            )
