"""Ignite/MONAI handlers of the training loop, for what ``monai.handlers`` does not do itself: batch preparation of
self-supervised training, validation cadence, pre-trained encoder loading and MAE reconstruction images."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler

from shared_networks.networks.handoff import load_pretrained_encoder
from shared_networks.networks.mae import normalize_patches, patchify, unpatchify

__all__ = [
    "EncoderFreeze",
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
    """Loads an MAE checkpoint's encoder into ``network`` when attached to the trainer, and logs the key report.

    It loads at :meth:`attach` (while the trainer is built), not at ``Events.STARTED``: every checkpoint loader that
    fires when the engine starts (``monai.handlers.CheckpointLoader`` as MONAI Label's bundle train task inserts it to
    continue from ``models/model.pt``, a resume from a training checkpoint) then loads after it and wins, whatever the
    order of the handler list. It loads once: attaching again (or calling it) does nothing.

    The position embedding is laid out on the pre-training token grid the checkpoint records and interpolated to the
    network's when they differ (:func:`~shared_networks.networks.handoff.load_pretrained_encoder`).

    ``load_path=None`` (or an empty string) trains from scratch and says so; a path that does not exist raises
    ``FileNotFoundError`` when the engine starts (building the workflow, e.g. to check its properties, still works),
    so a typo never silently becomes a from-scratch run.

    Args:
        network: fine-tuning network with an ``encoder`` (UNETR, ViTClassifier).
        load_path: MAE checkpoint, or None (also "" or "none": a command line cannot pass None) for from scratch.
        map_location: device for loading.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        load_path: str | os.PathLike | None,
        map_location: str | torch.device = "cpu",
    ) -> None:
        self.network = network
        # "none" as well: `monai.bundle run` drops command-line overrides whose value is None (`--pretrained_ckpt None`)
        self.load_path = None if load_path is None or str(load_path).strip().lower() in ("", "none") else load_path
        self.map_location = map_location
        self.report = None

    def attach(self, engine: Engine) -> None:
        if self.load_path is not None and not os.path.exists(self.load_path):
            engine.add_event_handler(Events.STARTED, self)  # raises there, naming the file
            return
        self(engine)

    def __call__(self, engine: Engine | None = None) -> None:
        if self.report is not None:  # already loaded
            return
        if self.load_path is None:
            logger.warning("no pre-trained checkpoint given: fine-tuning from random initialisation (baseline)")
            self.report = False
            return
        net = getattr(self.network, "module", self.network)  # DistributedDataParallel
        self.report = load_pretrained_encoder(net, self.load_path, self.map_location)
        (engine.logger if engine is not None else logger).info(self.report.summary())


class EncoderFreeze:
    """Linear probing, then fine-tuning (LP-FT, Kumar et al., ICLR 2022): the encoder is frozen for the first
    ``epochs`` epochs, so only the head learns on the pre-trained features, then the whole network trains.

    Fine-tuning a small labelled set end to end from the start lets the random head's large early gradients rewrite
    the pre-trained features; a head fitted first starts fine-tuning near the probe's solution. Frozen parameters get
    no gradient, so the optimiser (built before, on every parameter) skips them, weight decay included; the lr
    schedule runs on unchanged. Only parameters trainable when the run starts are touched: a linear probe's encoder
    (frozen by ``linear_probe.yaml``) stays frozen. ``epochs <= 0`` does nothing. It is set again at every epoch
    start from the epoch number, so a resumed run is in the right phase; the run's end leaves the encoder trainable.

    Args:
        network: fine-tuning network with an ``encoder`` (ViTClassifier, UNETR); not DistributedDataParallel-wrapped
            (the reducer of DDP expects a gradient for every parameter it was built with).
        epochs: number of first epochs with the encoder frozen.
    """

    def __init__(self, network: torch.nn.Module, epochs: int = 0) -> None:
        if int(epochs) < 0:
            raise ValueError(f"freeze_encoder_epochs {epochs!r} must be 0 (off) or more.")
        self.network = network
        self.epochs = int(epochs)
        self._params: list[torch.nn.Parameter] | None = None

    def attach(self, engine: Engine) -> None:
        if self.epochs <= 0:
            return
        if isinstance(self.network, torch.nn.parallel.DistributedDataParallel):
            raise ValueError(
                "freeze_encoder_epochs > 0 needs single-process training: DistributedDataParallel expects a gradient "
                "for every parameter. Set freeze_encoder_epochs 0 for multi-GPU runs."
            )
        if not hasattr(self.network, "encoder"):
            raise ValueError(f"freeze_encoder_epochs: {type(self.network).__name__} has no 'encoder' to freeze.")
        self._params = [p for p in self.network.encoder.parameters() if p.requires_grad]
        engine.add_event_handler(Events.EPOCH_STARTED, self)
        engine.add_event_handler(Events.COMPLETED, self.release)

    def release(self, engine: Engine | None = None) -> None:
        """Makes the encoder trainable again (at the run's end, also when it ended within the frozen epochs)."""
        for p in self._params or ():
            p.requires_grad_(True)

    def __call__(self, engine: Engine) -> None:
        frozen = engine.state.epoch <= self.epochs
        for p in self._params or ():
            p.requires_grad_(not frozen)
        if engine.state.epoch == 1 or engine.state.epoch == self.epochs + 1:
            engine.logger.info(
                "epoch %d: encoder %s",
                engine.state.epoch,
                f"frozen until epoch {self.epochs} (head only)" if frozen else "trainable (whole network)",
            )


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
            _, mean, std = normalize_patches(target, c, self.per_channel)
            pred = pred * std + mean
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
