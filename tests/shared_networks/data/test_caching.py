"""The memory cache, the disk cache for the cases that do not fit, what runs after both, and the budget's checks of
processes and disk."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.transforms import CastToTyped, Compose, Lambdad, RandFlipd

from shared_networks.data import cache_budget
from shared_networks.data.cache_budget import check_disk_cache, choose_cache_rate, estimate_item_bytes, local_processes
from shared_networks.data.caching import AfterCache, MemoryThenDiskDataset

GIB = 1024**3


class Counting:
    """A deterministic 'pre-processing' that counts its calls: 10 * the item's value, as float32."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return torch.full((1, 4, 4), 10.0 * float(x), dtype=torch.float32)


def _pipeline(counter: Counting, after: list) -> Compose:
    return Compose([Lambdad("image", counter), CastToTyped("image", "float16"), *after])


def _data(n: int) -> list[dict]:
    return [{"image": i + 0.3} for i in range(n)]


def test_the_cases_beyond_the_memory_share_are_written_once_to_disk_and_read_back(tmp_path):
    counter = Counting()
    ds = MemoryThenDiskDataset(
        _data(5),
        _pipeline(counter, [AfterCache([CastToTyped("image", "float32")])]),
        cache_rate=0.4,
        cache_dir=tmp_path,
    )
    assert ds.cache_num == 2 and counter.calls == 2  # two cases pre-processed into memory
    assert not list(tmp_path.iterdir())  # the disk cache is written at the first use of a case beyond the memory's
    first = [ds[i]["image"] for i in range(5)]
    assert counter.calls == 5 and len(list(tmp_path.glob("*.pt"))) == 3  # three cases written to disk at first use
    again = [ds[i]["image"] for i in range(5)]
    assert counter.calls == 5  # every later use reads a cache
    for i, (a, b) in enumerate(zip(first, again, strict=True)):
        assert a.dtype == torch.float32 and torch.equal(a, b)  # the cast after the caches ran on every item
        assert float(a[0, 0, 0]) == pytest.approx(10 * (i + 0.3), rel=2**-11)  # within float16's precision
    assert ds[-1]["image"][0, 0, 0] == first[4][0, 0, 0]  # negative indices reach the disk cache too


def test_without_a_disk_cache_the_rest_is_pre_processed_at_each_use(tmp_path):
    counter = Counting()
    ds = MemoryThenDiskDataset(_data(4), _pipeline(counter, []), cache_rate=0.5, cache_dir="none")
    for _ in range(2):
        _ = [ds[i] for i in range(4)]
    assert counter.calls == 2 + 2 * 2 and not list(tmp_path.iterdir())


def test_a_changed_pre_processing_writes_new_files_instead_of_reading_stale_ones(tmp_path):
    ds = MemoryThenDiskDataset(_data(1), _pipeline(Counting(), []), cache_rate=0.0, cache_dir=tmp_path)
    assert float(ds[0]["image"][0, 0, 0]) == pytest.approx(3.0, rel=1e-3)
    changed = Compose([Lambdad("image", Counting()), CastToTyped("image", "float64")])
    ds2 = MemoryThenDiskDataset(_data(1), changed, cache_rate=0.0, cache_dir=tmp_path)
    assert ds2[0]["image"].dtype == torch.float64 and len(list(tmp_path.glob("*.pt"))) == 2


def test_random_transforms_run_after_either_cache_with_the_same_draws(tmp_path):
    """The same seed gives the same random flips whether a case comes from memory or from disk."""
    flips = [RandFlipd("image", prob=0.5, spatial_axis=0)]
    data = [{"image": torch.arange(16.0).reshape(1, 4, 4)}] * 3
    outs = []
    for rate in (1.0, 0.0):
        ds = MemoryThenDiskDataset(data, Compose([CastToTyped("image", "float16"), *flips]), rate, tmp_path / str(rate))
        ds.transform.set_random_state(seed=7)
        outs.append(torch.stack([ds[i]["image"] for i in range(3)]))
    assert torch.equal(outs[0], outs[1])
    assert not all(torch.equal(outs[0][i], outs[0][0]) for i in range(3))  # the flips did draw


def test_after_cache_is_not_cached():
    counter = Counting()
    data = [{"image": torch.tensor(float(i))} for i in range(2)]
    ds = MemoryThenDiskDataset(
        data, Compose([CastToTyped("image", "float16"), AfterCache([Lambdad("image", counter)])])
    )
    assert counter.calls == 0
    _ = ds[0], ds[1], ds[0]
    assert counter.calls == 3


def test_the_estimate_counts_each_keys_type(tmp_path):
    import nibabel as nib

    path = str(tmp_path / "mr.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 14, 4), np.int16), np.eye(4)), path)
    item = {"image": path, "label": path}
    voxels = 10 * 12 * 14
    compact = estimate_item_bytes(item, {"image": 4, "label": 1}, [1.0] * 3, {"image": "float16", "label": "uint8"})
    assert compact == voxels * (4 * 2 + 1)
    assert estimate_item_bytes(item, {"image": 4, "label": 3}, [1.0] * 3) == voxels * 7 * 4  # float32, as before


def test_processes_on_one_node_share_the_budget(monkeypatch, caplog):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert local_processes() == 4
    with caplog.at_level(logging.INFO, logger=cache_budget.__name__):
        assert choose_cache_rate("auto", 20 * GIB, 100 * GIB, 0.5, processes=4) == pytest.approx(12.5 / 20)
    assert "4 processes on this node" in caplog.text
    with pytest.raises(ValueError, match="4 processes") as err:
        choose_cache_rate(1.0, 30 * GIB, 100 * GIB, 0.5, processes=4)  # 4 copies of 30 GiB in 100 GiB
    assert "at most 0.417" in str(err.value)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "x")
    assert local_processes() == 1


def test_a_disk_cache_too_small_is_refused_before_any_image_is_read(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(cache_budget, "_free_disk", lambda folder: 2 * GIB)
    with pytest.raises(ValueError) as err:
        check_disk_cache(0.25, 4 * GIB, tmp_path / "cache", name="train")
    message = str(err.value)
    assert "3.00 GiB" in message and "2.00 GiB free" in message and "--cache_dir none" in message
    assert str(tmp_path / "cache") in message and "no image was read" in message
    assert not (tmp_path / "cache").exists()
    with caplog.at_level(logging.INFO, logger=cache_budget.__name__):
        check_disk_cache(0.75, 4 * GIB, tmp_path / "cache", name="train")  # 1 GiB fits in 2
        check_disk_cache(0.25, 4 * GIB, None, name="train")
    assert "1.00 GiB of cases written to the disk cache" in caplog.text
    assert "pre-processed from the files at each use" in caplog.text


def test_free_disk_of_a_folder_not_yet_made(tmp_path):
    from shared_networks.data.cache_budget import _free_disk

    assert _free_disk(tmp_path / "a" / "b") > 0
