from __future__ import annotations

import pytest
import torch

from shared_networks.networks.mae import MaskedAutoencoderViT, MaskedPatchLoss, patchify, random_masking, unpatchify

SMALL = dict(
    patch_size=4,
    hidden_size=48,
    num_layers=2,
    num_heads=4,
    mlp_dim=96,
    decoder_hidden_size=24,
    decoder_num_layers=2,
    decoder_num_heads=2,
)
IMG = {2: (16, 8), 3: (8, 12, 16)}


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("channels", [1, 4])
def test_patchify_matches_patch_embedding(spatial_dims, channels):
    """A linear map of patchify(x) with the conv kernel equals the conv embedding: same token and voxel order."""
    torch.manual_seed(0)
    mae = MaskedAutoencoderViT(channels, IMG[spatial_dims], spatial_dims=spatial_dims, **SMALL)
    x = torch.randn(2, channels, *IMG[spatial_dims])
    conv = mae.encoder.patch_embed.proj
    w = conv.weight.movedim(1, -1).reshape(conv.weight.shape[0], -1)  # (D, p.., C) -> (D, P * C)
    linear = mae.patchify(x) @ w.T + conv.bias
    torch.testing.assert_close(linear, mae.encoder.patch_embed(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_unpatchify_inverts_patchify(spatial_dims):
    x = torch.randn(3, 2, *IMG[spatial_dims])
    p = (4,) * spatial_dims
    patches = patchify(x, p)
    assert patches.shape == (3, torch.Size(IMG[spatial_dims]).numel() // 4**spatial_dims, 4**spatial_dims * 2)
    torch.testing.assert_close(unpatchify(patches, p, IMG[spatial_dims], 2), x)
    # token 1 is the second patch along the last axis; its first voxel, channel 1
    assert patches[0, 1, 1] == x[(0, 1) + (0,) * (spatial_dims - 1) + (4,)]


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.9, 0.3])
def test_masking_keeps_exact_count(ratio):
    x = torch.randn(4, 37, 8)
    kept, mask, ids_restore = random_masking(x, ratio)
    keep = int(37 * (1 - ratio))
    assert kept.shape == (4, keep, 8)
    assert torch.equal(mask.sum(1), torch.full((4,), 37.0 - keep))
    # kept tokens are exactly the unmasked ones, in shuffled order
    for b in range(4):
        vis = x[b, mask[b] == 0]
        assert torch.equal(torch.sort(vis, 0).values, torch.sort(kept[b], 0).values)
    assert torch.equal(torch.sort(ids_restore, 1).values, torch.arange(37).expand(4, -1))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("cls_token", [False, True])
def test_forward_shapes_and_gradients(spatial_dims, cls_token):
    torch.manual_seed(0)
    mae = MaskedAutoencoderViT(2, IMG[spatial_dims], spatial_dims=spatial_dims, cls_token=cls_token, **SMALL)
    x = torch.randn(2, 2, *IMG[spatial_dims])
    pred, mask = mae(x)
    n = torch.Size(IMG[spatial_dims]).numel() // 4**spatial_dims
    assert pred.shape == (2, n, 4**spatial_dims * 2)
    assert mask.shape == (2, n) and int(mask[0].sum()) == n - int(n * 0.25)
    assert mae.unpatchify(pred).shape == x.shape
    MaskedPatchLoss(4, spatial_dims)((pred, mask), x).backward()
    for name, p in mae.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not mae.encoder.pos_embed.requires_grad and not mae.decoder_pos_embed.requires_grad


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_mask_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedAutoencoderViT(1, (16, 16), spatial_dims=2, mask_ratio=ratio, **SMALL)


def test_mask_ratio_leaving_no_patch():
    with pytest.raises(ValueError, match="no visible patch"):
        MaskedAutoencoderViT(1, (8, 8), spatial_dims=2, mask_ratio=0.8, **SMALL)  # 4 patches, int(0.8) = 0 kept


def test_loss_hand_computed():
    """One 2D image 1 x 4 x 2, patch 2: two patches, the second hidden."""
    img = torch.tensor([[[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0], [2.0, 4.0]]]])  # (B=1, C=1, H=4, W=2)
    pred = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]])  # (B, L=2, P=4)
    mask = torch.tensor([[0.0, 1.0]])
    # patch 2 = [0, 0, 2, 4]: mean 1.5, population var (2.25 + 2.25 + 0.25 + 6.25) / 4 = 2.75
    t = (torch.tensor([0.0, 0.0, 2.0, 4.0]) - 1.5) / (2.75 + 1e-6) ** 0.5
    expected = ((1.0 - t) ** 2).mean()
    loss = MaskedPatchLoss(2, spatial_dims=2)((pred, mask), img)
    torch.testing.assert_close(loss, expected)
    # without normalisation: mean of (1 - [0, 0, 2, 4])^2 = (1 + 1 + 1 + 9) / 4 = 3
    raw = MaskedPatchLoss(2, spatial_dims=2, norm_pix_loss=False)((pred, mask), img)
    torch.testing.assert_close(raw, torch.tensor(3.0))


def test_loss_per_channel_normalisation():
    """With per_channel, a channel scaled by 100 gives the same target as the unscaled one."""
    torch.manual_seed(0)
    a = torch.randn(1, 1, 8, 8)
    img = torch.cat([a, 100 * a + 5], dim=1)  # (1, 2, 8, 8)
    t = MaskedPatchLoss(4, 2, per_channel=True).target(img).reshape(1, 4, 16, 2)
    torch.testing.assert_close(t[..., 0], t[..., 1], rtol=1e-4, atol=1e-4)
    joint = MaskedPatchLoss(4, 2, per_channel=False).target(img).reshape(1, 4, 16, 2)
    assert not torch.allclose(joint[..., 0], joint[..., 1], atol=1e-2)


def test_masking_draws_on_input_device_and_is_seeded():
    torch.manual_seed(3)
    a = random_masking(torch.randn(2, 10, 4), 0.5)[1]
    torch.manual_seed(3)
    b = random_masking(torch.randn(2, 10, 4), 0.5)[1]
    assert torch.equal(a, b)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("channels", [1, 3])
def test_visible_only_embedding_equals_conv_then_gather(spatial_dims, channels):
    """Embedding only the kept patches gives the conv embedding of the whole image gathered at those patches."""
    torch.manual_seed(0)
    enc = MaskedAutoencoderViT(channels, IMG[spatial_dims], spatial_dims=spatial_dims, **SMALL).encoder
    x = torch.randn(2, channels, *IMG[spatial_dims])
    ids = torch.stack([torch.randperm(enc.num_patches)[:3] for _ in range(2)])  # (B, 3)
    full = enc.embed(x)  # (B, L, D) through the convolution
    expected = torch.gather(full, 1, ids.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(enc.embed_subset(x, ids), expected, rtol=1e-5, atol=1e-5)
    # the gradient reaches the conv kernel and bias through the matrix form
    enc.embed_subset(x, ids).sum().backward()
    assert enc.patch_embed.proj.weight.grad.abs().sum() > 0 and enc.patch_embed.proj.bias.grad.abs().sum() > 0


def test_forward_encoder_keeps_the_unmasked_tokens():
    """The encoder input is exactly the conv embedding of the patches the mask leaves visible."""
    torch.manual_seed(0)
    mae = MaskedAutoencoderViT(1, IMG[3], spatial_dims=3, **SMALL)
    x = torch.randn(2, 1, *IMG[3])
    seen = []
    mae.encoder.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    _, mask, ids_restore = mae.forward_encoder(x)
    full = mae.encoder.embed(x)
    for b in range(2):
        vis = full[b, mask[b] == 0]  # visible tokens in token order
        torch.testing.assert_close(torch.sort(seen[0][b], 0).values, torch.sort(vis, 0).values, rtol=1e-5, atol=1e-5)
    keep = int(mae.encoder.num_patches * 0.25)
    assert torch.equal(mask, (ids_restore >= keep).float())
