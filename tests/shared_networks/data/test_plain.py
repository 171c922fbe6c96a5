"""ComposeWithoutMeta: the same values as with metadata tracking, plain tensors out, the file names kept, the
tracking setting restored, the cached item never changed."""

from __future__ import annotations

import pytest
import torch
from monai.data import CacheDataset, DataLoader, MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import Compose, EnsureChannelFirstd, Lambdad, LoadImaged, RandAffined, RandScaleIntensityd

from shared_networks import ComposeWithoutMeta
from shared_networks.engine.finite import batch_files


def _random():
    return [
        RandAffined("image", prob=1.0, rotate_range=0.3, scale_range=0.1, padding_mode="zeros"),
        RandScaleIntensityd("image", factors=0.2, prob=1.0),
    ]


def _item(name="a.png"):
    return {"image": MetaTensor(torch.rand(1, 24, 32), meta={"filename_or_obj": name}), "label": torch.tensor([1.0])}


def test_same_values_plain_tensors_and_file_name():
    tracked, plain = Compose(_random()), ComposeWithoutMeta(_random())
    tracked.set_random_state(seed=7)
    plain.set_random_state(seed=7)
    item = _item()
    a, b = tracked(dict(item)), plain(dict(item))
    assert isinstance(a["image"], MetaTensor)
    assert type(b["image"]) is torch.Tensor and type(b["label"]) is torch.Tensor
    assert torch.allclose(torch.as_tensor(a["image"]), b["image"], atol=1e-6)
    assert b["image_meta_dict"] == {"filename_or_obj": "a.png"}
    assert get_track_meta()


def test_tracking_restored_after_an_error():
    def fail(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        ComposeWithoutMeta([Lambdad("image", fail)])(_item())
    assert get_track_meta()


def test_cached_item_never_changed_and_batch_names_its_files(tmp_path):
    import numpy as np
    from PIL import Image

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(np.full((8, 8), 10 * i, dtype=np.uint8)).save(paths[-1])
    in_place = Lambdad("image", lambda x: x.mul_(0.0).add_(5.0))  # changes its input in place
    transform = Compose(
        [LoadImaged("image", image_only=True), EnsureChannelFirstd("image"), ComposeWithoutMeta([in_place])]
    )
    ds = CacheDataset(
        [{"image": p} for p in paths], transform=transform, cache_rate=1.0, copy_cache=False, progress=False
    )
    for _ in range(2):
        batch = next(iter(DataLoader(ds, batch_size=3, shuffle=False)))
        assert torch.all(batch["image"] == 5.0)
    assert [float(ds._cache[i]["image"].max()) for i in range(3)] == [0.0, 10.0, 20.0]
    assert batch_files(batch) == paths
