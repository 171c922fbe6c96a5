"""Core split between data loading and compute, and bf16 autocast for CPU inference (engine.runtime)."""

from __future__ import annotations

import logging

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from shared_networks.engine import runtime
from shared_networks.engine.runtime import (
    AutocastInferer,
    configure_threads,
    cpu_bf16_supported,
    cpu_flags,
    resolve_cpu_bf16,
    thread_split,
)
from shared_networks.networks.unetr import UNETR


@pytest.mark.parametrize(
    "cores, workers, setting, expected",
    [
        (2, 0, "auto", 2),
        (2, 1, "auto", 1),
        (2, 2, "auto", 1),  # never below one thread
        (16, 4, "auto", 12),
        (64, 8, None, 56),
        (8, 2, 0, 6),  # 0: auto
        (2, 2, 2, 2),  # an explicit number wins
        (16, 4, "3", 3),  # from the command line as text
    ],
)
def test_thread_split(cores, workers, setting, expected):
    assert thread_split(cores, workers, setting) == expected


def test_thread_split_with_waiting_workers_uses_every_core():
    assert thread_split(2, 2, "auto", dedicated_workers=False) == 2
    assert thread_split(16, 4, "auto", dedicated_workers=False) == 16
    assert thread_split(16, 4, 3, dedicated_workers=False) == 3


@pytest.mark.parametrize("setting", ["-1", "many", 1.5])
def test_thread_split_refuses_bad_settings(setting):
    with pytest.raises(ValueError, match="torch_threads must be 'auto' or a positive number"):
        thread_split(4, 1, setting)


def test_configure_threads_sets_torch_and_logs(caplog):
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger=runtime.__name__):
            assert configure_threads(3, "auto", cores=4) == 1 and torch.get_num_threads() == 1
            assert configure_threads(1, 2, cores=4) == 2 and torch.get_num_threads() == 2
            assert configure_threads(2, "auto", cores=2, dedicated_workers=False) == 2
        assert "1 torch thread(s) in the main process (auto: cores - workers), 3 data-loader worker(s)" in caplog.text
        assert "2 torch thread(s) in the main process (torch_threads), 1 data-loader worker(s)" in caplog.text
        assert "2 torch thread(s) in the main process (auto: every core), 2 data-loader worker(s)" in caplog.text
    finally:
        torch.set_num_threads(before)


def test_cpu_flags_reads_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_bf16_detection_needs_the_flag_and_avx512(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert cpu_bf16_supported({"avx512f", "avx512_bf16"}) and cpu_bf16_supported({"amx_bf16"})
    assert not cpu_bf16_supported({"avx512f", "avx2"})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not cpu_bf16_supported({"avx512_bf16"})


def test_autocast_setting_falls_back_to_fp32_where_unsupported(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda flags=None: False)
    assert resolve_cpu_bf16("auto", "cpu") is False
    assert AutocastInferer(SlidingWindowInferer(8), "cpu", "auto").bf16 is False
    with pytest.warns(UserWarning, match="no native bf16"):
        assert resolve_cpu_bf16(True, "cpu") is True  # asked for explicitly: emulated, with a warning
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda flags=None: True)
    assert resolve_cpu_bf16("auto", "cpu") is True and resolve_cpu_bf16("false", "cpu") is False
    assert resolve_cpu_bf16("auto", "cuda:0") is False  # CUDA runs the network as it is
    with pytest.raises(ValueError, match="cpu_bf16 must be auto, true or false, got 'fast'"):
        resolve_cpu_bf16("fast", "cpu")


def test_fp32_path_is_the_plain_inferer(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda flags=None: False)
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1).eval()
    x = torch.rand(1, 1, 12, 12, 12)
    inferer = SlidingWindowInferer(8, sw_batch_size=2, overlap=0.5, mode="gaussian")
    with torch.no_grad():
        assert torch.equal(AutocastInferer(inferer, "cpu", "auto")(x, net), inferer(x, net))


def test_bf16_label_maps_agree_with_fp32(monkeypatch):
    """A fixed-seed small UNETR on a smooth synthetic volume: the argmax label maps under bf16 autocast agree with
    fp32 at >= 97% of voxels, and the output is fp32 (the sliding window sums in fp32)."""
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda flags=None: True)
    torch.manual_seed(0)
    net = UNETR(
        in_channels=1,
        out_channels=3,
        img_size=(32, 32, 32),
        patch_size=8,
        hidden_size=48,
        num_layers=4,
        num_heads=4,
        mlp_dim=96,
        skip_indices=(1, 3),
        feature_size=8,
    ).eval()
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in (40, 36, 32)], indexing="ij"))
    x = ((grid**2).sum(0) < 0.5).float()[None, None] + 0.1 * torch.rand(1, 1, 40, 36, 32)
    inferer = SlidingWindowInferer((32, 32, 32), sw_batch_size=2, overlap=0.25, mode="gaussian")
    bf16 = AutocastInferer(inferer, "cpu", "auto")
    assert bf16.bf16
    with torch.no_grad():
        ref, out = inferer(x, net), bf16(x, net)
    assert out.dtype == torch.float32 and out.shape == ref.shape == (1, 3, 40, 36, 32)
    assert not torch.equal(out, ref)  # bf16 did run
    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert agreement >= 0.97, agreement


@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 0), (3, 0), (4, 1), (8, 2), (16, 4), (64, 4)])
def test_loader_workers_auto_leaves_small_machines_without_workers(cores, expected):
    assert runtime.loader_workers("auto", cores=cores) == expected
    assert runtime.loader_workers(" AUTO ", cores=cores) == expected


@pytest.mark.parametrize(
    ("cores", "processes", "expected"), [(16, None, 14), (2, None, 1), (64, "8", 6), (16, "x", 14)]
)
def test_loader_workers_auto_on_a_gpu_gives_the_cores_to_the_loader(monkeypatch, cores, processes, expected):
    if processes is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
    assert runtime.loader_workers("auto", cores=cores, device="cuda:0") == expected
    assert runtime.loader_workers("auto", cores=cores, device=torch.device("cuda", 1)) == expected
    assert runtime.loader_workers("auto", cores=cores, device="cpu") == min(4, cores // 4)
    assert runtime.loader_workers(3, cores=cores, device="cuda:0") == 3  # a number is kept


def test_loader_workers_takes_a_number_and_refuses_anything_else():
    assert runtime.loader_workers(3, cores=2) == 3 and runtime.loader_workers("0") == 0
    for bad in (-1, "two", 1.5, True, None):
        with pytest.raises(ValueError, match="num_workers must be 'auto' or a whole number"):
            runtime.loader_workers(bad)


def test_default_device_is_the_first_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")  # one process: not the torchrun rank's device (local_device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.default_device() == torch.device("cuda:0")
