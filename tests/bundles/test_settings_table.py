"""Each bundle's docs table "Settings against the reference" states the full-size config values: every value in
backticks in the "this bundle" column of a mapped row equals, in order, the config value it is mapped to here, so the
table cannot drift from pretrain.yaml, train.yaml, linear_probe.yaml and inference.yaml (quick.yaml not merged)."""

from __future__ import annotations

import re

import pytest
import yaml
from bundle_configs import REPO, BundleConfigs

SECTION = "## Settings against the reference"
COLUMNS = ["setting", "this bundle", "reference config (file: arg)", "paper where stated", "why they differ"]
ENCODER = [("train", "hidden_size"), ("train", "num_layers"), ("train", "num_heads"), ("train", "mlp_dim")]
DECODER = [("pretrain", "decoder_hidden_size"), ("pretrain", "decoder_num_layers"), ("pretrain", "decoder_num_heads")]
MAE_3D = {
    "ROI (`roi_size`)": [("train", "roi_size")],
    "spacing, mm (`pixdim`)": [("pretrain", "pixdim")],
    "patch (`patch_size`)": [("train", "patch_size")],
    "mask ratio (`mask_ratio`)": [("pretrain", "mask_ratio")],
    "encoder width / depth / heads / MLP": ENCODER,
    "MAE decoder width / depth / heads": DECODER,
    "MAE epochs / warmup": [("pretrain", "max_epochs"), ("pretrain", "warmup_epochs")],
    "MAE batch": [("pretrain", "batch_size"), ("pretrain", "num_samples")],
    "MAE lr": [("pretrain", "base_lr"), ("pretrain", "lr")],
    "MAE AdamW betas / weight decay": [("pretrain", "optimizer#betas"), ("pretrain", "weight_decay")],
    "fine-tuning epochs / warmup": [("train", "max_epochs"), ("train", "warmup_epochs")],
    "fine-tuning batch": [("train", "batch_size"), ("train", "num_samples")],
    "fine-tuning lr": [("train", "base_lr"), ("train", "lr")],
    "fine-tuning AdamW betas / weight decay": [("train", "optimizer#betas"), ("train", "weight_decay")],
    "layer-wise lr decay": [("train", "layer_decay")],
    "drop path": [("train", "drop_path_rate")],
    "UNETR feature size / skip blocks": [("train", "feature_size"), ("train", "skip_indices")],
    "loss (smooth_nr / smooth_dr)": [("train", "loss#smooth_nr"), ("train", "loss#smooth_dr")],
    "sliding window (inference.yaml)": [
        ("inference", "roi_size"),
        ("inference", "sw_overlap"),
        ("inference", "sw_batch_size"),
        ("inference", "inferer#inferer#mode"),
    ],
}
# table row (first column, exactly) -> the (workflow, config id) of each value in backticks in "this bundle"
ROWS = {
    "btcv_mae_segmentation": {**MAE_3D, "intensity (`a_min`, `a_max`)": [("train", "a_min"), ("train", "a_max")]},
    "brats_mae_segmentation": {**MAE_3D, "channels (`in_channels`)": [("train", "in_channels")]},
    "cxr14_mae_classification": {
        "input size (`img_size`)": [("train", "img_size")],
        "channels (`in_channels`)": [("train", "in_channels")],
        "intensity (`intensity_mean`, `intensity_std`)": [("train", "intensity_mean"), ("train", "intensity_std")],
        "patch (`patch_size`)": [("train", "patch_size")],
        "mask ratio (`mask_ratio`)": [("pretrain", "mask_ratio")],
        "encoder width / depth / heads / MLP": ENCODER,
        "MAE decoder width / depth / heads": DECODER,
        "MAE epochs / warmup": [("pretrain", "max_epochs"), ("pretrain", "warmup_epochs")],
        "MAE batch": [("pretrain", "batch_size")],
        "MAE lr (`mae_base_lr`)": [("pretrain", "mae_base_lr"), ("pretrain", "lr")],
        "MAE AdamW betas / weight decay": [("pretrain", "optimizer#betas"), ("pretrain", "weight_decay")],
        "fine-tuning epochs / warmup": [("train", "max_epochs"), ("train", "warmup_epochs")],
        "fine-tuning batch": [("train", "batch_size")],
        "fine-tuning lr (`base_lr`)": [("train", "base_lr"), ("train", "lr")],
        "fine-tuning AdamW betas / weight decay": [("train", "optimizer#betas"), ("train", "weight_decay")],
        "layer-wise lr decay": [("train", "layer_decay")],
        "drop path": [("train", "drop_path_rate")],
        "fine-tuning augmentation (`flip_prob`)": [("train", "flip_prob")],
        "linear probe epochs / warmup": [("linear_probe", "max_epochs"), ("linear_probe", "warmup_epochs")],
        "linear probe lr (`probe_base_lr`) / weight decay": [
            ("linear_probe", "probe_base_lr"),
            ("linear_probe", "lr"),
            ("linear_probe", "weight_decay"),
        ],
    },
}


def settings_table(bundle: str) -> dict[str, list[str]]:
    """The rows of the bundle's settings table: first column -> the cells of the row."""
    path = REPO / "bundles" / bundle / "docs" / "README.md"
    text = path.read_text(encoding="utf-8")
    assert text.count(SECTION + "\n") == 1, f"{path}: no single '{SECTION}' section"
    section = text.split(SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == COLUMNS, f"{path}: table columns {header}"
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == len(COLUMNS), f"{path}: row with {len(cells)} cells: {line}"
        assert cells[0] not in rows, f"{path}: row '{cells[0]}' twice"
        rows[cells[0]] = cells
    return rows


def table_value(token: str):
    """A value written in backticks: YAML (numbers, lists, words), '1e-3'-style numbers included."""
    value = yaml.safe_load(token)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def same(written, configured) -> bool:
    if isinstance(configured, (list, tuple)):
        return isinstance(written, list) and len(written) == len(configured) and all(map(same, written, configured))
    if isinstance(configured, (bool, str)):
        return written == configured
    # numbers as the table writes them: 3 significant digits are enough (1.68e-5 for 4.3e-3 / 256)
    return isinstance(written, (int, float)) and written == pytest.approx(configured, rel=5e-3)


@pytest.mark.parametrize("bundle", list(ROWS))
def test_this_bundle_column_matches_the_full_size_configs(bundle):
    rows = settings_table(bundle)
    missing = sorted(set(ROWS[bundle]) - set(rows))
    assert not missing, f"bundles/{bundle}/docs/README.md: settings table lacks rows {missing}"
    configs = BundleConfigs(bundle)
    parsers = {}
    for name, ids in ROWS[bundle].items():
        written = [table_value(t) for t in re.findall(r"`([^`]+)`", rows[name][1])]
        assert len(written) == len(ids), f"{bundle} '{name}': {len(written)} values in backticks, {len(ids)} mapped"
        for value, (workflow, config_id) in zip(written, ids, strict=True):
            if workflow not in parsers:
                parsers[workflow] = configs.parser(workflow, quick=False)
            configured = parsers[workflow].get_parsed_content(config_id)
            where = f"{bundle} '{name}': table says {value!r}, {workflow} {config_id} is {configured!r}"
            assert same(value, configured), where


def test_a_changed_config_value_is_caught():
    """The check fails when the table and a config differ (here: the decoder heads as they were, 16)."""
    rows = settings_table("btcv_mae_segmentation")
    written = [table_value(t) for t in re.findall(r"`([^`]+)`", rows["MAE decoder width / depth / heads"][1])]
    assert written == [384, 8, 12]
    assert not same(16, BundleConfigs("btcv_mae_segmentation").parser("pretrain", quick=False)["decoder_num_heads"])
    assert same(1.68e-5, 4.3e-3 / 256) and not same(1.7e-5, 4.3e-3 / 256) and not same([0.9, 0.999], [0.9, 0.95])
