"""Ignite/MONAI handlers used by the bundles' workflows, for what ``monai.handlers`` does not do itself."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.data.utils import set_rnd
from monai.handlers import CheckpointSaver, HausdorffDistance, ValidationHandler
from monai.utils import set_determinism

from shared_networks.handoff import load_pretrained_encoder
from shared_networks.io import atomic_write_text, write_json_atomic
from shared_networks.mae import patchify, unpatchify

__all__ = [
    "AtomicCheckpointSaver",
    "EpochSeeder",
    "HausdorffDistanceMM",
    "MetricsReport",
    "PretrainedEncoderLoader",
    "ReconstructionSaver",
    "ResumableCheckpointSaver",
    "ValidationEveryAndLast",
    "load_checkpoint",
    "prepare_image_as_target",
]

logger = logging.getLogger(__name__)


def prepare_image_as_target(
    batchdata: Mapping, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``prepare_batch`` for self-supervised training: the image is both input and target."""
    image = batchdata["image"].to(device=device, non_blocking=non_blocking, **kwargs)
    return image, image


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` that writes every file atomically (temporary file, then rename).

    MONAI's saver turns ignite's atomic writing off (to keep group/other read permission); a crash mid-save then
    leaves a truncated checkpoint. This saver turns it back on and restores the usual 0644 permissions.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in self._checkpoints():
            ckpt.save_handler._atomic = True

    def _checkpoints(self):
        return [c for c in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint) if c]

    def _fix_permissions(self) -> None:
        for ckpt in self._checkpoints():
            for item in ckpt._saved:
                path = Path(self.save_dir) / (ckpt.save_handler.filename or item.filename)
                if path.exists():
                    os.chmod(path, 0o644)

    def completed(self, engine: Engine) -> None:
        super().completed(engine)
        self._fix_permissions()

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        try:
            super().exception_raised(engine, e)
        finally:
            self._fix_permissions()

    def metrics_completed(self, engine: Engine) -> None:
        super().metrics_completed(engine)
        self._fix_permissions()

    def interval_completed(self, engine: Engine) -> None:
        super().interval_completed(engine)
        self._fix_permissions()


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


class _RemoveAfterSave(BaseSaveHandler):
    """Save handler that deletes the checkpoints ignite drops only after the next one is completely written.

    ignite's ``Checkpoint`` deletes the oldest of its ``n_saved`` files before writing the new one; a crash while
    writing would then leave one checkpoint fewer than asked for.
    """

    def __init__(self, inner: BaseSaveHandler) -> None:
        self.inner = inner
        self.pending: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        self.inner(checkpoint, filename, metadata)
        for old in self.pending:
            if old != filename:
                self.inner.remove(old)
        self.pending.clear()

    def remove(self, filename: str) -> None:
        self.pending.append(filename)


class ResumableCheckpointSaver(AtomicCheckpointSaver):
    """Training checkpoints for resuming: every ``save_interval`` epochs, atomically, the last ``n_saved`` kept.

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
        save_interval: epochs between checkpoints (0: none).
        n_saved: number of latest checkpoints kept.
        resume: continue from the latest checkpoint of ``save_dir`` (or ``load_path``).
        load_path: checkpoint to resume from instead of the latest; ``None``, ``""`` or ``"none"``: the latest.
        validator: evaluator whose ``best_metric`` is saved and restored.
        best_saver: the ``CheckpointSaver`` writing the best model (``save_key_metric=True``); its record is saved
            and restored.
        map_location: device for loading.
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
    ) -> None:
        reserved = {"trainer", "validation"} & set(save_dict)
        if reserved:
            raise ValueError(f"save_dict keys {sorted(reserved)} are reserved for the engine and validation state.")
        if not file_prefix:
            raise ValueError("file_prefix must not be empty: it tells the checkpoints of each workflow apart.")
        if int(n_saved) < 1:
            raise ValueError(f"n_saved must be at least 1, got {n_saved!r}.")
        self._engine_slot = _EngineStateSlot()
        full = {**save_dict, "trainer": self._engine_slot}
        if validator is not None or best_saver is not None:
            full["validation"] = _BestModelState(validator, best_saver)
        super().__init__(
            save_dir=str(save_dir), save_dict=full, file_prefix=file_prefix, save_interval=int(save_interval),
            n_saved=int(n_saved), epoch_level=True,
        )  # fmt: skip
        self.file_prefix = file_prefix
        self.n_saved = int(n_saved)
        if self._interval_checkpoint is not None:
            self._interval_checkpoint.save_handler = _RemoveAfterSave(self._interval_checkpoint.save_handler)
        self.resume = _as_bool(resume, "resume")
        self.load_path = None if load_path is None or str(load_path).strip().lower() in ("", "none") else load_path
        self.map_location = map_location
        self.resumed_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        self._engine_slot.engine = engine
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_latest)
        super().attach(engine)

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


class EpochSeeder:
    """Re-seeds every source of randomness at the start of each epoch from ``(seed, epoch)`` (and the process rank).

    ``monai.utils.set_determinism`` seeds torch, numpy and ``random`` once, and leaves the random state of MONAI's
    transforms alone; a run resumed from a checkpoint would then draw different crops, flips and masks from the
    uninterrupted run. This handler, at every ``EPOCH_STARTED``, calls ``set_determinism`` with a seed derived from
    ``(seed, epoch)`` and gives the training dataset's random transforms a state from the same seed
    (``monai.data.utils.set_rnd``, as MONAI's ``DataLoader`` does for its workers). The data loader's shuffle and
    its workers' seeds are drawn from torch's generator when the epoch's iterator is created, after this handler.
    So epoch ``k`` draws the same numbers whether or not the run was interrupted before it.

    Args:
        seed: the run's seed.
        dataset: dataset whose random transforms are re-seeded; default: the engine's ``data_loader.dataset``.
    """

    def __init__(self, seed: int, dataset: object | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}.")
        self.seed = int(seed)
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        if self.dataset is None:
            self.dataset = getattr(getattr(engine, "data_loader", None), "dataset", None)
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def epoch_seed(self, epoch: int, rank: int | None = None) -> int:
        """The seed of ``epoch``: a hash of ``(seed, epoch, rank)`` below 2**32, so distinct runs share no epoch seed
        and the processes of a distributed run (``rank``, default: this process's) draw different augmentations."""
        rank = idist.get_rank() if rank is None else rank
        return int(np.random.SeedSequence([self.seed, int(epoch), int(rank)]).generate_state(1)[0])

    def __call__(self, engine: Engine) -> None:
        seed = self.epoch_seed(engine.state.epoch)
        set_determinism(seed=seed)
        if self.dataset is not None:
            set_rnd(self.dataset, seed)


def _as_bool(value: object, name: str) -> bool:
    """``value`` as a bool; strings from a command line (``true``/``false``/``1``/``0``) are accepted."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}.")


class ValidationEveryAndLast(ValidationHandler):
    """``monai.handlers.ValidationHandler`` (epoch level) that also validates after the last epoch.

    With MONAI's handler, a run whose ``max_epochs`` is not a multiple of ``interval`` never validates its last
    epochs, and a run shorter than ``interval`` never selects (or writes) a best model at all.
    """

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        engine.add_event_handler(Events.COMPLETED, self._final)

    def _final(self, engine: Engine) -> None:
        if engine.state.epoch % self.interval != 0:
            self(engine)


class PretrainedEncoderLoader:
    """Loads an MAE checkpoint's encoder into ``network`` when the engine starts, and logs the key report.

    ``load_path=None`` (or an empty string) trains from scratch and says so; a path that does not exist raises,
    so a typo never silently becomes a from-scratch run.

    Args:
        network: fine-tuning network with an ``encoder`` (UNETR, ViTClassifier).
        load_path: MAE checkpoint, or None (also "" or "none": a command line cannot pass None) for from scratch.
        src_img_size: pre-training image size, only needed for a non-cubic pre-training ROI.
        map_location: device for loading.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        load_path: str | os.PathLike | None,
        src_img_size: Sequence[int] | None = None,
        map_location: str | torch.device = "cpu",
    ) -> None:
        self.network = network
        # "none" as well: `monai.bundle run` drops command-line overrides whose value is None (`--pretrained_ckpt None`)
        self.load_path = None if load_path is None or str(load_path).strip().lower() in ("", "none") else load_path
        self.src_img_size = tuple(src_img_size) if src_img_size is not None else None
        self.map_location = map_location
        self.report = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        if self.report is not None:  # already loaded (a resumed run restarts the engine)
            return
        if self.load_path is None:
            logger.warning("no pre-trained checkpoint given: fine-tuning from random initialisation (baseline)")
            self.report = False
            return
        net = getattr(self.network, "module", self.network)  # DistributedDataParallel
        self.report = load_pretrained_encoder(net, self.load_path, self.src_img_size, self.map_location)
        (engine.logger if engine is not None else logger).info(self.report.summary())


class ReconstructionSaver:
    """Saves a PNG of input, masked input and MAE reconstruction of one sample every ``interval`` epochs.

    Reads the trainer's last output (``image`` and ``pred`` = ``(pred, mask)``); shows channel 0 of a 2D image as
    loaded, or the middle slice of the last axis of a volume (axial in RAS, anterior up). Hidden patches of the
    masked input are drawn black; the reconstruction pastes the visible patches of the input and the predicted
    hidden ones, de-normalised with each patch's true mean and standard deviation when the loss normalises patches
    (as in MAE's visualisation).

    Args:
        output_dir: folder for ``reconstruction_epoch{N}.png``.
        patch_size: the MAE patch size (one per axis).
        norm_pix_loss: whether predictions are per-patch normalised.
        per_channel: whether normalisation is per channel.
        interval: epochs between images; the last epoch is always saved.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        patch_size: Sequence[int],
        norm_pix_loss: bool = True,
        per_channel: bool = False,
        interval: int = 1,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.patch_size = tuple(patch_size)
        self.norm_pix_loss = norm_pix_loss
        self.per_channel = per_channel
        self.interval = max(1, int(interval))
        self.last_path: Path | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        epoch, last = engine.state.epoch, engine.state.max_epochs
        if epoch % self.interval != 0 and epoch != last:
            return
        out = engine.state.output
        image = out["image"][:1].detach().float().cpu()  # (1, C, *S)
        pred, mask = (t[:1].detach().float().cpu() for t in out["pred"])
        panels = self.panels(image, pred, mask)
        self.last_path = self.save_png(panels, self.output_dir / f"reconstruction_epoch{epoch}.png")
        engine.logger.info(f"reconstruction image: {self.last_path}")

    def panels(self, image: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> list[np.ndarray]:
        """Input, masked input and reconstruction, each (1, C, *S) -> a 2D slice of channel 0."""
        c, spatial = image.shape[1], image.shape[2:]
        target = patchify(image, self.patch_size)  # (1, L, P * C)
        if self.norm_pix_loss:
            length, pc = target.shape[1:]
            t = target.reshape(1, length, pc // c, c) if self.per_channel else target.unsqueeze(-1)
            mean, std = t.mean(2, keepdim=True), (t.var(2, keepdim=True, correction=0) + 1e-6).sqrt()
            pred = (pred.reshape(t.shape) * std + mean).reshape(1, length, pc)
        hidden = mask.unsqueeze(-1)  # (1, L, 1)
        masked = unpatchify(target * (1 - hidden), self.patch_size, spatial, c)
        recon = unpatchify(target * (1 - hidden) + pred * hidden, self.patch_size, spatial, c)
        return [self._slice(v) for v in (image, masked, recon)]

    @staticmethod
    def _slice(volume: torch.Tensor) -> np.ndarray:
        x = volume[0, 0]
        if x.ndim == 2:  # MONAI's (x, y) image order: transposed to rows and columns
            return x.numpy().T
        # RAS volume: the middle axial slice, anterior at the top
        return x[..., x.shape[-1] // 2].numpy().T[::-1]

    @staticmethod
    def save_png(panels: Sequence[np.ndarray], path: Path) -> Path:
        from PIL import Image

        lo = float(np.percentile(panels[0], 0.5))
        hi = float(np.percentile(panels[0], 99.5))
        scale = 255.0 / max(hi - lo, 1e-6)
        gap = np.full((panels[0].shape[0], 4), 255, dtype=np.uint8)
        tiles = []
        for p in panels:
            tiles += [np.clip((p - lo) * scale, 0, 255).astype(np.uint8), gap]
        img = Image.fromarray(np.concatenate(tiles[:-1], axis=1))
        if img.width < 384:
            factor = math.ceil(384 / img.width)
            img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
        return path


class HausdorffDistanceMM(HausdorffDistance):
    """``monai.handlers.HausdorffDistance`` in millimetres: passes each label's own voxel spacing to the metric.

    MONAI's handler calls the metric without spacing (distances in voxels). Here every (pred, label) pair is
    measured with the spacing read from the label's affine (a ``MetaTensor``), so HD95 at native resolution is in mm.
    """

    def update(self, output: Sequence) -> None:
        y_pred, y = output
        for p, t in zip(y_pred, y, strict=True):
            spacing = None
            if hasattr(t, "pixdim"):
                spacing = [float(s) for s in t.pixdim[: t.ndim - 1]]
            self.metric_fn(p.unsqueeze(0), t.unsqueeze(0), spacing=spacing)


class MetricsReport:
    """Writes a per-case CSV and a summary JSON of per-class metrics when an evaluator completes.

    Uses the evaluator's ``metric_details`` (per case, per class, from handlers created with ``save_details=True``).
    Classes absent from a case's ground truth give NaN there (MONAI's ``ignore_empty``) and are left out of the
    means; the JSON holds, per metric, the mean over classes of the per-class means and each class's mean and count.

    Args:
        output_dir: folder for ``per_case.csv`` and ``summary.json``.
        class_names: names of the reported classes (background excluded), in channel order.
        metric_names: metric keys to report (as in ``engine.state.metric_details``).
    """

    def __init__(self, output_dir: str | os.PathLike, class_names: Sequence[str], metric_names: Sequence[str]) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.metric_names = list(metric_names)
        self.cases: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.cases.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record_cases)
        engine.add_event_handler(Events.COMPLETED, self)

    def _record_cases(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        for item in items:
            meta = getattr(item["image"], "meta", {})
            name = meta.get("filename_or_obj", f"case{len(self.cases)}")
            self.cases.append(os.path.basename(str(name if isinstance(name, str) else name[0])))

    def __call__(self, engine: Engine) -> None:
        details = {m: np.asarray(engine.state.metric_details[m].cpu(), dtype=float) for m in self.metric_names}
        for m, d in details.items():
            if d.shape != (len(self.cases), len(self.class_names)):
                raise ValueError(f"metric '{m}' has shape {d.shape}, expected ({len(self.cases)}, classes).")
        header = ["case"] + [f"{m}_{c.replace(' ', '_')}" for m in self.metric_names for c in self.class_names]
        rows = [",".join(header)]
        for i, case in enumerate(self.cases):
            values = [_fmt(details[m][i, j]) for m in self.metric_names for j in range(len(self.class_names))]
            rows.append(",".join([case] + values))
        atomic_write_text(self.output_dir / "per_case.csv", "\n".join(rows) + "\n")
        summary = {"n_cases": len(self.cases), "cases": self.cases}
        for m, d in details.items():
            per_class = {}
            for j, c in enumerate(self.class_names):
                col = d[:, j][np.isfinite(d[:, j])]
                per_class[c] = {"mean": float(col.mean()) if col.size else None, "n": int(col.size)}
            means = [v["mean"] for v in per_class.values() if v["mean"] is not None]
            summary[m] = {"mean": float(np.mean(means)) if means else None, "per_class": per_class}
        write_json_atomic(summary, self.output_dir / "summary.json")
        engine.logger.info(f"metrics written to {self.output_dir / 'summary.json'} and per_case.csv")
        for m in self.metric_names:
            engine.logger.info(f"{m}: mean over classes {summary[m]['mean']}")


def _fmt(v: float) -> str:
    return "nan" if not np.isfinite(v) else f"{v:.6g}"
