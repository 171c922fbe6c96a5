"""Weights for export tests: freshly initialised networks of a bundle's configs/quick.yaml, saved as state dicts."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.bundle import ConfigParser

# weight file -> (workflow config, network id)
NETWORKS = {"model.pt": ("inference", "network_def"), "mae.pt": ("pretrain", "mae_def")}


def write_quick_weights(bundle: Path, which=("model.pt", "mae.pt"), seed: int = 0) -> dict[str, torch.nn.Module]:
    """Save ``which`` of the quick-size networks of ``bundle`` (seeded initialisation) in ``bundle/models``.

    Returns:
        The networks saved, by file name (in eval mode).
    """
    (bundle / "models").mkdir(exist_ok=True)
    nets = {}
    for name in which:
        workflow, net_id = NETWORKS[name]
        p = ConfigParser()
        p.read_config([str(bundle / "configs" / f) for f in (f"{workflow}.yaml", "quick.yaml")])
        p["bundle_root"] = str(bundle)
        torch.manual_seed(seed)
        nets[name] = p.get_parsed_content(net_id).eval()
        torch.save(nets[name].state_dict(), bundle / "models" / name)
    return nets
