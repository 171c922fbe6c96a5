from __future__ import annotations

import pytest
from torch.utils.data import DistributedSampler

from shared_networks.data.options import (
    drop_last_batch,
    image_items,
    interp_modes,
    keep_workers,
    normalized_value,
    prefetch_batches,
    scaled_sizes,
)


@pytest.mark.parametrize("workers", [0, 1, 3])
@pytest.mark.parametrize("keep", [True, False, "true", "false", 1, 0])
def test_keep_workers_only_with_workers(keep, workers):
    wanted = keep in (True, "true", 1)
    assert keep_workers(keep, workers) is (wanted and workers > 0)


def test_keep_workers_refuses_a_value_that_is_no_flag():
    with pytest.raises(ValueError, match="persistent_workers"):
        keep_workers("sometimes", 2)


def test_prefetch_only_with_workers():
    assert prefetch_batches(2, 0) is None and prefetch_batches(2, 3) == 2


def test_drop_last_batch_only_when_more_than_one_batch():
    data = list(range(40))
    assert drop_last_batch(data, 32) is True and drop_last_batch(data, 40) is False
    assert drop_last_batch(data, 256) is False
    share = DistributedSampler(data, num_replicas=2, rank=1, shuffle=False)  # one process's 20 items
    assert drop_last_batch(share, 16) is True and drop_last_batch(share, 32) is False


def test_interp_modes_bilinear_for_the_image_nearest_for_labels():
    assert interp_modes(["image", "label"]) == ["bilinear", "nearest"]
    assert interp_modes(["image"]) == ["bilinear"] and interp_modes(("label",)) == ["nearest"]


def test_scaled_sizes_and_normalized_value_match_the_former_expressions():
    assert scaled_sizes([224, 224], 0.05) == [0.05 * s for s in [224, 224]]
    assert scaled_sizes((64, 48), 0.05) == [3.2, 2.4000000000000004]
    assert normalized_value(0.0, 0.5, 0.225) == -0.5 / 0.225  # black after (x - 0.5) / 0.225


def test_image_items():
    assert image_items(["a.nii.gz", "b"]) == [{"image": "a.nii.gz"}, {"image": "b"}]
    assert image_items([]) == []
