"""The benchmark harness's own logic (no timing): case resizing, the memory child's case, run_all's commands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_mae_step  # noqa: E402
import run_all  # noqa: E402


def test_with_batch_renames_the_case_and_base_case_finds_its_entry():
    case = bench_mae_step.CASES["3d_vitb16_96_b2"]
    assert bench_mae_step.with_batch(case, None) is case and bench_mae_step.with_batch(case, 2) is case
    big = bench_mae_step.with_batch(case, 32)
    assert big.name == "3d_vitb16_96_b32" and big.batch == 32
    assert (big.img_size, big.spatial_dims, big.decoder_hidden_size) == (96, 3, 384)
    assert bench_mae_step.make_input(bench_mae_step.with_batch(case, 3)).shape == (3, 1, 96, 96, 96)
    assert bench_mae_step.base_case(big) is case
    assert bench_mae_step.base_case(bench_mae_step.with_batch(bench_mae_step.CASES["2d_vitb16_224_b8"], 128)).name == (
        "2d_vitb16_224_b8"
    )
    with pytest.raises(SystemExit, match="--batch must be >= 1"):
        bench_mae_step.with_batch(case, 0)


def test_run_all_gives_monai_its_own_default_optimiser_per_device():
    cpu, cuda = run_all.commands("cpu", quick=False), run_all.commands("cuda", quick=False)
    assert set(cpu) == set(cuda) == set(run_all.PARTS)
    for cmd in cpu["mae"] + cpu["unetr"]:
        assert "--monai-optimizer" not in cmd  # the script's default: the for-loop, torch's default on the CPU
    for cmd in cuda["mae"] + cuda["unetr"]:
        assert cmd[cmd.index("--monai-optimizer") + 1] == "foreach"  # torch's default on CUDA
    assert [c[c.index("--precision") + 1] for c in cuda["mae"]] == ["bf16", "fp32"]
    assert cuda["data"] == [] and cpu["data"] == [["bench_data.py", "--repeats", "5"]]
    volumes = [c[c.index("--volume") + 1 : c.index("--volume") + 4] for c in cuda["sliding"]]
    assert volumes == [["512", "512", "100"], ["273", "273", "125"]]
