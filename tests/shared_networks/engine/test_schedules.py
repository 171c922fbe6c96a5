from __future__ import annotations

import pytest
from torch.utils.data import DataLoader

from shared_networks.engine.schedules import epoch_steps, pretrain_or_finetune, scaled_lr


@pytest.mark.parametrize(("base_lr", "batch_size"), [(1.5e-4, 256), (6.4e-3, 6), (0.768, 2), (3.44e-2, 2), (0.012, 32)])
def test_scaled_lr_is_the_linear_scaling_rule_bit_for_bit(base_lr, batch_size):
    assert scaled_lr(base_lr, batch_size) == base_lr * batch_size / 256  # the configs' former expression


def test_epoch_steps_counts_the_loader_batches():
    loader = DataLoader(list(range(10)), batch_size=4)  # 3 batches, the last incomplete
    assert epoch_steps(5, loader) == 15 and epoch_steps(0, loader) == 0


def test_pretrain_or_finetune_picks_by_the_checkpoint_prefix():
    assert pretrain_or_finetune("pretrain", 300, 60) == 300
    assert pretrain_or_finetune("train", 300, 60) == 60
    assert pretrain_or_finetune("linear_probe", 20, 5) == 5
