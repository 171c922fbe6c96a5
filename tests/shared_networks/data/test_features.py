"""A linear probe's features (shared_networks/data/features.py) and the head trained on them
(shared_networks/networks/classifier.py FeatureHead): the same logits as the whole classifier on the image."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from shared_networks import EncoderFeaturesd, FeatureHead, ViTClassifier


def classifier(pool: str = "avg", drop_path_rate: float = 0.2) -> ViTClassifier:
    torch.manual_seed(0)
    net = ViTClassifier(
        1,
        14,
        (32, 32),
        pool=pool,
        patch_size=8,
        hidden_size=48,
        num_layers=2,
        num_heads=3,
        mlp_dim=96,
        drop_path_rate=drop_path_rate,
        spatial_dims=2,
    )
    torch.nn.init.normal_(net.head.weight, std=0.1)  # a head initialised near zero would make every logit alike
    return net


@pytest.mark.parametrize("pool", ["avg", "cls"])
def test_the_head_on_the_features_gives_the_classifiers_logits(pool):
    net = classifier(pool).eval()
    images = torch.randn(3, 1, 32, 32)
    features = net.features(images)
    assert features.shape == (3, 48)
    torch.testing.assert_close(FeatureHead(net)(features), net(images), rtol=0, atol=1e-6)
    assert {n for n, _ in FeatureHead(net).named_parameters()} == {f"classifier.{n}" for n, _ in net.named_parameters()}


def test_features_of_one_image_in_eval_mode_named_by_its_file():
    net = classifier()  # drop path 0.2: in training mode two passes differ
    net.encoder.requires_grad_(False)
    net.train()
    image = MetaTensor(torch.randn(1, 32, 32), meta={"filename_or_obj": "/data/images/00000001_000.png"})
    out = EncoderFeaturesd("image", net)({"image": image, "label": torch.zeros(14)})
    assert net.training and all(m.training for m in net.modules())  # the modes are restored
    assert type(out["image"]) is torch.Tensor and out["image"].shape == (48,) and out["image"].dtype == torch.float32
    assert out["image_meta_dict"] == {"filename_or_obj": "/data/images/00000001_000.png"}
    torch.testing.assert_close(out["image"], net.eval().features(image.as_tensor()[None])[0], rtol=0, atol=0)
    assert not out["image"].requires_grad


def test_an_encoder_that_trains_is_refused():
    net = classifier()
    with pytest.raises(RuntimeError, match="not frozen"):
        EncoderFeaturesd("image", net)({"image": torch.randn(1, 32, 32)})
    with pytest.raises(TypeError, match="ViTClassifier"):
        EncoderFeaturesd("image", torch.nn.Linear(2, 2))
