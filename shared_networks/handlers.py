"""Ignite/MONAI handlers used by the bundles' workflows, for what ``monai.handlers`` does not do itself."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver, HausdorffDistance, ValidationHandler

from shared_networks.handoff import load_pretrained_encoder
from shared_networks.io import atomic_write_text, write_json_atomic
from shared_networks.mae import patchify, unpatchify

__all__ = [
    "AtomicCheckpointSaver",
    "HausdorffDistanceMM",
    "MetricsReport",
    "PretrainedEncoderLoader",
    "ReconstructionSaver",
    "ValidationEveryAndLast",
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
