"""Shared networks and training pieces of the MAE self pre-training bundles."""

from shared_networks.classifier import ViTClassifier
from shared_networks.handoff import HandoffReport, interpolate_pos_embed, load_pretrained_encoder
from shared_networks.mae import MaskedAutoencoderViT, MaskedPatchLoss, patchify, random_masking, unpatchify
from shared_networks.optim import param_groups_lrd
from shared_networks.unetr import UNETR
from shared_networks.vit import PatchEmbed, ViTEncoder, sincos_pos_embed

__all__ = [
    "UNETR", "HandoffReport", "MaskedAutoencoderViT", "MaskedPatchLoss", "PatchEmbed", "ViTClassifier", "ViTEncoder",
    "interpolate_pos_embed", "load_pretrained_encoder", "param_groups_lrd", "patchify", "random_masking",
    "sincos_pos_embed", "unpatchify",
]  # fmt: skip
