"""Per-epoch seeding, so that a resumed run draws the same augmentations and masks as an uninterrupted one."""

from __future__ import annotations

import ignite.distributed as idist
import numpy as np
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.utils import set_determinism

__all__ = ["EpochSeeder"]


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
