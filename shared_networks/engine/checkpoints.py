"""Checkpoints of the bundles' workflows: atomic writes, resumable training state, and loading with errors that name
the file."""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler, DiskSaver
from monai.handlers import CheckpointSaver

from shared_networks.networks.handoff import NonFiniteError, check_finite
from shared_networks.utils.files import atomic_write
from shared_networks.utils.flags import as_bool

__all__ = ["AtomicCheckpointSaver", "ResumableCheckpointSaver", "load_checkpoint"]


class _RefuseNonFinite(BaseSaveHandler):
    """Save handler that refuses (:class:`NonFiniteError`, naming the file and the tensor) a checkpoint holding NaN
    or infinite values before anything is written or deleted, and deletes the files ignite drops only after the new
    one is completely written.

    ignite's ``Checkpoint`` deletes the oldest of its ``n_saved`` files (with MONAI's fixed file names: the file
    itself) before writing the new one; a crash or a refusal while writing would then leave one checkpoint fewer than
    asked for, or no best model at all.
    """

    def __init__(self, inner: BaseSaveHandler, save_dir: str | os.PathLike) -> None:
        self.inner = inner
        self.save_dir = save_dir
        self.pending: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        fixed = getattr(self.inner, "filename", None)  # MONAI's saver: a fixed final/best file name
        check_finite(
            checkpoint,
            f"refusing to write '{Path(self.save_dir) / (fixed or filename)}'",
            "the weights diverged (see the training log); the previous file, if any, is kept",
        )
        self.inner(checkpoint, filename, metadata)
        for old in self.pending:
            if old != filename and not fixed:  # a fixed name was just replaced by the new file
                self.inner.remove(old)
        self.pending.clear()

    def remove(self, filename: str) -> None:
        self.pending.append(filename)


def _save_atomically(handler: DiskSaver, checkpoint: Mapping, path: Path, func: Callable) -> None:
    """``DiskSaver._save_func`` of :class:`AtomicCheckpointSaver`: ``func(checkpoint, file)`` (``torch.save``) into a
    temporary file, fsync, the mode of a plain ``open()`` (0o666 less the umask), then a rename over ``path``."""
    atomic_write(path, lambda f: func(checkpoint, f, **handler.kwargs))


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` that writes every file atomically (temporary file, fsync, then rename), with
    the permissions the user's umask gives, and never writes non-finite weights.

    MONAI's saver turns ignite's atomic writing off (a crash mid-save then leaves a truncated checkpoint), and
    ignite's atomic writing makes every file group- and world-readable after the rename, whatever the umask. This
    saver writes each file with :func:`~shared_networks.utils.files.atomic_write`: the file gets the mode a plain
    ``open()`` would give (``0644`` under umask ``022``, ``0600`` under ``077``) before it appears under its name.
    A checkpoint with a NaN or infinite tensor is refused with :class:`NonFiniteError` naming the file and the tensor
    (the file already there is kept), and with ``save_final`` a run stopped by a ``NonFiniteError`` (e.g. from
    :class:`~shared_networks.engine.finite.StopOnNonFinite`) writes no final checkpoint "on exception".
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in self._checkpoints():
            handler = ckpt.save_handler  # MONAI's DiskSaver: its rank and file name logic kept, the writing replaced
            handler._save_func = functools.partial(_save_atomically, handler)
            ckpt.save_handler = _RefuseNonFinite(handler, self.save_dir)

    def _checkpoints(self):
        return [c for c in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint) if c]

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        if isinstance(e, NonFiniteError):  # the weights may be bad: no "last checkpoint" of them
            raise e
        super().exception_raised(engine, e)


class _EngineStateSlot:
    """Checkpointable stand-in for the engine a saver is attached to (known only at ``attach``)."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def state_dict(self) -> dict:
        if self.engine is None:
            raise RuntimeError("the checkpoint saver is not attached to an engine.")
        return self.engine.state_dict()

    def load_state_dict(self, state_dict: Mapping) -> None:
        if self.engine is None:
            raise RuntimeError("the checkpoint saver is not attached to an engine.")
        self.engine.load_state_dict(state_dict)


class _BestModelState:
    """Checkpointable best-metric record of a validator and of the saver that writes its best model.

    Without it a resumed run forgets the best metric so far: its first validation would overwrite the best model
    with a worse one.
    """

    def __init__(self, validator: Engine | None, best_saver: CheckpointSaver | None) -> None:
        self.validator = validator
        self.best_saver = best_saver

    def state_dict(self) -> dict:
        state: dict = {}
        if self.validator is not None:
            state["best_metric"] = float(getattr(self.validator.state, "best_metric", -1))
            state["best_metric_epoch"] = int(getattr(self.validator.state, "best_metric_epoch", -1))
        saver = getattr(self.best_saver, "_key_metric_checkpoint", None)
        if saver is not None:  # plain floats and strings: a metric may be a numpy scalar, which weights_only refuses
            state["best_saver"] = {k: [(float(p), str(f)) for p, f in v] for k, v in saver.state_dict().items()}
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        if self.validator is not None and "best_metric" in state_dict:
            self.validator.state.best_metric = state_dict["best_metric"]
            self.validator.state.best_metric_epoch = state_dict["best_metric_epoch"]
        if self.best_saver is not None and "best_saver" in state_dict:
            self.best_saver.load_state_dict(state_dict["best_saver"])


class ResumableCheckpointSaver(AtomicCheckpointSaver):
    """Training checkpoints for resuming: every ``save_interval`` epochs and/or every ``save_every_minutes``, and at
    the last epoch; atomically, the last ``n_saved`` kept.

    Checkpoints are written at the end of an epoch: of every ``save_interval``-th epoch, of the first epoch that ends
    ``save_every_minutes`` or more after the previous checkpoint (or the start of the run), and of the last epoch
    (``max_epochs``); with both ``save_interval`` and ``save_every_minutes`` 0, never. The time trigger bounds the
    work a crash loses without writing a checkpoint after every short epoch.

    A checkpoint ``{file_prefix}_checkpoint_epoch={N}.pt`` in ``save_dir`` holds the objects of ``save_dict``
    (network, optimizer, lr scheduler), the state of the engine this saver is attached to (``trainer``: epoch and
    iteration) and, when ``validator`` is given, the best validation metric so far and the record of ``best_saver``
    (``validation``), so that a resumed run selects the same best model as an uninterrupted one. The oldest file is
    deleted only once the newest is completely written.

    With ``resume=True`` the checkpoint of the latest epoch (or ``load_path``) is loaded when the engine starts,
    with ``torch.load(weights_only=True)``, and training continues at the next epoch. A run with ``resume=True`` and
    no checkpoint, or with a checkpoint that cannot be read (truncated, corrupt, or from another workflow), stops
    with an error naming the file: it never silently trains from scratch. Attach it after the handlers whose state
    it must overwrite at start (the pre-trained encoder loader) and after the validation handler, so that the
    epoch's validation is in the epoch's checkpoint. Together with :class:`EpochSeeder`, a run interrupted at an
    epoch boundary and resumed ends with the same weights as an uninterrupted run.

    Args:
        save_dir: folder of the checkpoints.
        save_dict: objects to save and restore, e.g. ``{"network": net, "optimizer": opt, "lr_scheduler": sched}``.
        file_prefix: file name prefix, one per workflow (``pretrain``, ``train``, ...).
        save_interval: epochs between checkpoints (0: no epoch trigger).
        save_every_minutes: minutes of training after which the next epoch's end writes a checkpoint (0: no time
            trigger).
        n_saved: number of latest checkpoints kept.
        resume: continue from the latest checkpoint of ``save_dir`` (or ``load_path``).
        load_path: checkpoint to resume from instead of the latest; ``None``, ``""`` or ``"none"``: the latest.
        validator: evaluator whose ``best_metric`` is saved and restored.
        best_saver: the ``CheckpointSaver`` writing the best model (``save_key_metric=True``); its record is saved
            and restored.
        map_location: device for loading.
        clock: seconds of a monotonic clock (default ``time.monotonic``), for the time trigger.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping,
        file_prefix: str = "train",
        save_interval: int = 1,
        n_saved: int = 2,
        resume: bool = False,
        load_path: str | os.PathLike | None = None,
        validator: Engine | None = None,
        best_saver: CheckpointSaver | None = None,
        map_location: str | torch.device = "cpu",
        save_every_minutes: float = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        reserved = {"trainer", "validation"} & set(save_dict)
        if reserved:
            raise ValueError(f"save_dict keys {sorted(reserved)} are reserved for the engine and validation state.")
        if not file_prefix:
            raise ValueError("file_prefix must not be empty: it tells the checkpoints of each workflow apart.")
        if int(n_saved) < 1:
            raise ValueError(f"n_saved must be at least 1, got {n_saved!r}.")
        if int(save_interval) < 0 or float(save_every_minutes) < 0:
            raise ValueError(
                f"save_interval and save_every_minutes must be 0 (off) or more, got {save_interval!r} and"
                f" {save_every_minutes!r}."
            )
        self._engine_slot = _EngineStateSlot()
        full = {**save_dict, "trainer": self._engine_slot}
        if validator is not None or best_saver is not None:
            full["validation"] = _BestModelState(validator, best_saver)
        enabled = int(save_interval) > 0 or float(save_every_minutes) > 0
        super().__init__(
            save_dir=str(save_dir),
            save_dict=full,
            file_prefix=file_prefix,
            save_interval=1 if enabled else 0,
            n_saved=int(n_saved),
            epoch_level=True,
        )
        self.epoch_interval = int(save_interval)
        self.save_every_s = 60.0 * float(save_every_minutes)
        self.clock = clock
        self._last_save = clock()
        self.file_prefix = file_prefix
        self.n_saved = int(n_saved)
        self.resume = as_bool(resume, "resume")
        self.load_path = None if load_path is None or str(load_path).strip().lower() in ("", "none") else load_path
        self.map_location = map_location
        self.resumed_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        self._engine_slot.engine = engine
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_latest)
        super().attach(engine)  # with a trigger on, MONAI's saver calls interval_completed at every epoch's end
        if self._interval_checkpoint is not None:
            engine.add_event_handler(Events.STARTED, self.start_clock)

    def start_clock(self, engine: Engine) -> None:
        """The time trigger counts from the start (or resumption) of the run."""
        self._last_save = self.clock()

    def due(self, engine: Engine) -> bool:
        """Whether the epoch that just ended gets a checkpoint (epoch interval, time, or the last epoch)."""
        epoch = engine.state.epoch
        if self.epoch_interval > 0 and epoch % self.epoch_interval == 0:
            return True
        if self.save_every_s > 0 and self.clock() - self._last_save >= self.save_every_s:
            return True
        return engine.state.max_epochs is not None and epoch >= engine.state.max_epochs

    def interval_completed(self, engine: Engine) -> None:
        """Writes the epoch's checkpoint when :meth:`due` (called at every epoch's end)."""
        if self.due(engine):
            super().interval_completed(engine)
            self._last_save = self.clock()

    def checkpoint_files(self) -> list[tuple[int, Path]]:
        """``(epoch, path)`` of this saver's checkpoints in ``save_dir``, oldest first."""
        pattern = re.compile(rf"^{re.escape(self.file_prefix)}_checkpoint_epoch=(\d+)\.pt$")
        folder = Path(self.save_dir)
        found = [(int(m[1]), p) for p in folder.iterdir() if (m := pattern.match(p.name))] if folder.is_dir() else []
        return sorted(found)

    def load_latest(self, engine: Engine) -> None:
        """Restore every saved object from the latest checkpoint (or ``load_path``); raises naming the file."""
        if self.load_path is not None:
            path = Path(self.load_path)
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint '{path}' to resume from does not exist.")
        else:
            files = self.checkpoint_files()
            if not files:
                raise FileNotFoundError(
                    f"resume=True but '{self.save_dir}' holds no checkpoint '{self.file_prefix}_checkpoint_epoch=N.pt'"
                    " to resume from; run without --resume to start a new run."
                )
            path = files[-1][1]
        checkpoint = load_checkpoint(path, self.map_location, self.save_dict)
        check_finite(
            checkpoint,
            f"checkpoint '{path}' to resume from",
            "that run diverged; resume from an earlier checkpoint with --resume_ckpt, or start again",
        )
        max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load=self.save_dict, checkpoint=checkpoint, strict=True)
        if max_epochs is not None and engine.state.epoch > max_epochs:
            raise ValueError(
                f"checkpoint '{path}' is at epoch {engine.state.epoch}, beyond max_epochs={max_epochs}: give a larger"
                " max_epochs to continue this run."
            )
        engine.state.max_epochs = max_epochs
        # keep deleting the oldest of the last n_saved files as the uninterrupted run would
        if self._interval_checkpoint is not None:
            kept = [(e, p.name) for e, p in self.checkpoint_files() if e <= engine.state.epoch][-self.n_saved :]
            self._interval_checkpoint.load_state_dict({"_saved": kept})
        self.resumed_from = path
        engine.logger.info(f"resumed from '{path}' at epoch {engine.state.epoch}, iteration {engine.state.iteration}")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", expected_keys=()) -> dict:
    """``torch.load(path, weights_only=True)`` with errors that name the file.

    Args:
        path: checkpoint file.
        map_location: device for loading.
        expected_keys: keys the checkpoint must hold.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if it is truncated, corrupt, not a checkpoint dictionary, or lacks an expected key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, unsupported global: torch raises several types
        reason = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        raise ValueError(
            f"checkpoint '{path}' cannot be read ({reason});"
            " it is truncated or corrupt. Resume from an earlier checkpoint with --resume_ckpt, or delete it."
        ) from err
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint '{path}' holds a {type(checkpoint).__name__}, not a dictionary of states.")
    missing = sorted(set(expected_keys) - set(checkpoint))
    if missing:
        raise ValueError(
            f"checkpoint '{path}' lacks {missing} (it holds {sorted(checkpoint)}): it was written by another workflow."
        )
    return dict(checkpoint)
