"""BatchAugment2d: MONAI's affine semantics, one draw per image, the probabilities, seeding, bad settings."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Affine

from shared_networks import BatchAugment2d


def _image(h: int = 40, w: int = 60) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(1, h, w)
    img[0, 10:30, 20:45] = 1.0
    return img + 0.1 * torch.rand(1, h, w, generator=g)


def test_resampling_matches_monai_affine():
    """Each image's affine is MONAI's Affine with the drawn rotation, scale and translation (non-square image)."""
    aug = BatchAugment2d(affine_prob=1.0, rotate_range=0.3, scale_range=0.2, translate_range=(4, 6))
    img = _image()
    torch.manual_seed(1)
    theta = aug.affines(4)
    torch.manual_seed(1)  # the same draws, in affines' order: angle, scale (2 axes), translation (2 axes)
    angle = aug._uniform(4, 0.3, torch.float64)
    scale = 1 + torch.stack([aug._uniform(4, 0.2, torch.float64) for _ in range(2)], 1)
    shift = torch.stack([aug._uniform(4, t, torch.float64) for t in (4, 6)], 1)
    assert angle.abs().max() > 0.01 and (scale - 1).abs().max() > 0.01 and shift.abs().max() > 0.1
    out = aug.resample(img[None].repeat(4, 1, 1, 1), theta)
    for i in range(4):
        ref = Affine(
            rotate_params=angle[i].item(),
            scale_params=scale[i].tolist(),
            translate_params=shift[i].tolist(),
            padding_mode="zeros",
            image_only=True,
        )(img)
        assert torch.allclose(out[i], torch.as_tensor(ref), atol=1e-4), i


def test_each_image_draws_its_own_affine_and_background_fills():
    aug = BatchAugment2d(affine_prob=1.0, rotate_range=0.3, scale_range=0.1, translate_range=5, background=-2.0)
    x = _image()[None].repeat(8, 1, 1, 1)
    out = aug.augment(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert all(not torch.allclose(out[0], out[i]) for i in range(1, 8))
    corners = out[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.isclose(corners, torch.tensor(-2.0), atol=1e-5).any()  # outside the image: the background, not 0
    assert not torch.isclose(corners, torch.tensor(0.0), atol=1e-3).any()


def test_nothing_drawn_leaves_the_batch_exact():
    x = torch.randn(16, 1, 32, 32)
    assert torch.equal(BatchAugment2d().augment(x), x)
    assert torch.equal(BatchAugment2d(affine_prob=0.0, rotate_range=0.5, translate_range=3).augment(x), x)


def test_probabilities_and_intensity_ranges():
    torch.manual_seed(0)
    x = torch.rand(2000, 1, 4, 4) + 1.0
    scaled = BatchAugment2d(scale_intensity_prob=0.5, scale_intensity=0.1).augment(x)
    ratio = (scaled / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # one factor per image
    assert ratio.min() >= 0.9 - 1e-6 and ratio.max() <= 1.1 + 1e-6
    assert 0.45 < (ratio[:, 0] != 1.0).float().mean() < 0.55
    shifted = BatchAugment2d(shift_intensity_prob=0.25, shift_intensity=0.1).augment(x)
    diff = (shifted - x).flatten(1)
    assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-5)
    assert diff.abs().max() <= 0.1 + 1e-6
    assert 0.2 < (diff[:, 0].abs() > 0).float().mean() < 0.3
    moved = BatchAugment2d(affine_prob=0.8, rotate_range=0.2).augment(x)
    assert 0.75 < (moved != x).flatten(1).any(1).float().mean() < 0.85


def test_flip():
    x = torch.randn(3, 1, 5, 7)
    assert torch.equal(BatchAugment2d(flip_prob=1.0, flip_axis=0).augment(x), x.flip(2))
    assert torch.equal(BatchAugment2d(flip_prob=1.0, flip_axis=1).augment(x), x.flip(3))


def test_collate_seeded_and_other_keys_untouched():
    aug = BatchAugment2d(
        keys=["image"], affine_prob=1.0, rotate_range=0.3, shift_intensity_prob=1.0, shift_intensity=0.1
    )
    items = [{"image": _image(), "label": torch.tensor([float(i), 1.0])} for i in range(4)]
    torch.manual_seed(3)
    a = aug(items)
    torch.manual_seed(3)
    b = aug(items)
    assert torch.equal(a["image"], b["image"]) and a["image"].shape == (4, 1, 40, 60)
    assert torch.equal(a["label"], torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]))
    torch.manual_seed(4)
    assert not torch.equal(aug(items)["image"], a["image"])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"affine_prob": 1.5}, "affine_prob"),
        ({"flip_prob": -0.1}, "flip_prob"),
        ({"rotate_range": -1}, "rotate_range"),
        ({"translate_range": (1, 2, 3)}, "translate_range"),
        ({"scale_intensity": float("nan")}, "scale_intensity"),
        ({"flip_axis": 2}, "flip_axis"),
    ],
)
def test_bad_settings_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BatchAugment2d(**kwargs)


def test_needs_a_2d_batch():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        BatchAugment2d().augment(torch.zeros(1, 8, 8))
