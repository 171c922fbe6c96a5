"""The chest X-ray bundle's training augmentation (``augment``, on the collated batch): the random affine pads with
black, as SpatialPadd does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundle_configs import BundleConfigs
from PIL import Image

parser = BundleConfigs("cxr14_mae_classification").parser


@pytest.mark.parametrize("workflow", ["train", "pretrain"])
def test_affine_pads_with_normalised_black(workflow, tmp_path, monkeypatch):
    """A white 64 x 32 radiograph: SpatialPadd pads axis 1 to 64 with black (16 on each side) before the
    normalisation; an affine forced to shift axis 0 by 16 pixels must bring in black too, not 0 (mid-grey)."""
    path = tmp_path / "white.png"
    Image.fromarray(np.full((32, 64), 255, dtype=np.uint8)).save(path)  # PIL rows x columns: MONAI reads (64, 32)
    p = parser(workflow)
    p.update(
        {
            "augment#rotate_range": 0.0,
            "augment#scale_range": 0.0,
            "augment#translate_range": [16, 0],
            "augment#affine_prob": 1.0,
            "augment#scale_intensity_prob": 0.0,
            "augment#shift_intensity_prob": 0.0,
        }
    )
    p["img_size"] = [64, 64]
    preprocessing = p.get_parsed_content("train#preprocessing")
    augment = p.get_parsed_content("augment")
    monkeypatch.setattr(augment, "_uniform", lambda n, m, dtype: torch.full((n,), float(m), dtype=dtype))  # +16
    item = preprocessing({"image": str(path), "label": [0.0] * 14})
    assert item["image_meta_dict"]["filename_or_obj"] == str(path)
    out = augment([item])["image"][0]
    img = torch.as_tensor(out)[0]  # (64, 64)
    mean, std = p.get_parsed_content("intensity_mean"), p.get_parsed_content("intensity_std")
    black, white = (0.0 - mean) / std, (1.0 - mean) / std  # -2.22, 2.22
    assert img.shape == (64, 64)
    expected = torch.full((64, 64), white)
    expected[:, :16] = expected[:, 48:] = black  # SpatialPadd
    shifted = expected.clone()
    shifted[:16] = black  # the 16 rows the shift brings in from outside the image
    assert torch.allclose(img, shifted, atol=1e-4) or torch.allclose(img, shifted.flip(0), atol=1e-4), img[:, 32]
