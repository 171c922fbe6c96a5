"""3D inference on a CPU: the BTCV bundle's own inference workflow, exact fp32 setting against its defaults.

Three parts, each printing JSON lines:

* ``workflow``: ``configs/inference.yaml`` of ``bundles/btcv_mae_segmentation`` (``monai.bundle.ConfigWorkflow``, in
  this process) on one generated BTCV-sized CT (273 x 273 x 125 voxels, already at the bundle's 1.5 x 1.5 x 2 mm, so
  that the sliding window sees exactly that grid), timed per arm from ``run()`` (read, pre-process, sliding window,
  invert, write): ``exact`` (``cpu_bf16 false``, ``sw_overlap 0.5``, ``sw_batch_size 4``: the setting before the
  speed levers) against ``default`` (the config's own defaults), alternately; with ``--levers`` also each lever
  alone (``bf16``, ``overlap_0.25``, ``sw_batch_8``).
* ``network`` (``--network-levers``): one batch of ``sw_batch_size`` 96^3 windows through the UNETR, the levers
  that are no workflow setting: fp32 under ``no_grad`` and ``inference_mode``, fp32 and bf16 channels-last, bf16
  autocast, ONNX Runtime on the exported fp32 network (``--onnx``) and ``torch.compile`` (``--compile``); time and
  agreement of the argmax with fp32.
* ``real``: the workflow on every CT of ``--data`` (``imagesTr/``, labels in ``labelsTr/``) with the ``exact`` and
  the ``default`` setting (with ``--levers`` each lever alone too); per-organ and mean Dice of each label map against
  the ground truth, and the per-organ Dice between each label map and the exact one (their agreement).

Weights: ``--model`` (a ``model.pt`` of the bundle), else the network's random initialisation with seed 0, saved
once and loaded by every arm (say which in the JSON: ``weights``). With random weights the Dice against the ground
truth is near 0 for both settings; the agreement between them is the measure that matters.

Usage::

    python benchmarks/bench_cpu_inference.py [--repeats 1] [--levers]
        [--network-levers [--onnx] [--compile]] [--data ../shared/data/btcv] [--model models/model.pt] [--skip-real]
        [--quick --model <model.pt of a configs/quick.yaml run>]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mae_step import device_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "btcv_mae_segmentation"
SEED = 0
# the setting before the levers: fp32, overlap 0.5, 4 windows per batch
EXACT = {"cpu_bf16": "false", "sw_overlap": 0.5, "sw_batch_size": 4}
LEVERS = {"bf16": {"cpu_bf16": "true"}, "overlap_0.25": {"sw_overlap": 0.25}, "sw_batch_8": {"sw_batch_size": 8}}
# the inference config files, in merge order (--quick adds configs/quick.yaml: the demo's tiny network)
CONFIG_FILES = ["inference.yaml"]


def inference_config(bundle: Path) -> ConfigParser:
    """The inference config as the workflow merges it (``CONFIG_FILES``), not run."""
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / f) for f in CONFIG_FILES])
    parser["bundle_root"] = str(bundle)
    return parser


def config_defaults(bundle: Path) -> dict:
    """The inference config's own values of the levers' settings."""
    parser = inference_config(bundle)
    return {k: parser[k] for k in EXACT}


def build_network(bundle: Path) -> torch.nn.Module:
    return inference_config(bundle).get_parsed_content("network_def").eval()


def random_weights(bundle: Path, folder: Path) -> Path:
    """The network's initialisation with seed 0 as a bundle ``model.pt``."""
    torch.manual_seed(SEED)
    path = folder / "model.pt"
    torch.save({"model": build_network(bundle).state_dict()}, path)
    return path


def write_ct(path: Path, shape: Sequence[int] = (273, 273, 125), pixdim: Sequence[float] = (1.5, 1.5, 2.0)) -> Path:
    """A CT-like volume in HU (soft tissue with smooth structure and noise everywhere, so that the foreground crop
    keeps the whole grid), RAS at ``pixdim``: the bundle's pre-processing leaves its grid as it is."""
    rng = np.random.default_rng(SEED)
    coarse = rng.uniform(-100, 300, [max(2, s // 16) for s in shape]).astype(np.float32)
    vol = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None, None], size=tuple(shape), mode="trilinear")
    hu = vol[0, 0].numpy() + rng.normal(0, 20, shape).astype(np.float32)
    affine = np.diag([*pixdim, 1.0])
    affine[:2, :2] *= -1  # NIfTI's RAS+ world with LPS-stored axes flipped, as scanners write: Orientationd's work
    nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), str(path))
    return path


def make_workflow(bundle: Path, inputs: Path, out: Path, model: Path, setting: dict) -> ConfigWorkflow:
    configs = bundle / "configs"
    wf = ConfigWorkflow(
        config_file=[str(configs / f) for f in CONFIG_FILES],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(bundle),
        dataset_dir=str(inputs),
        output_dir=str(out),
        model_path=str(model),
        **setting,
    )
    wf.initialize()
    return wf


def run_workflow(bundle: Path, inputs: Path, out: Path, model: Path, setting: dict) -> float:
    """Seconds of the workflow's ``run()`` (initialize, i.e. building the network, excluded). Its log goes to
    stderr: stdout carries the JSON lines only."""
    with contextlib.redirect_stdout(sys.stderr):
        wf = make_workflow(bundle, inputs, out, model, setting)
        start = time.perf_counter()
        wf.run()
        elapsed = time.perf_counter() - start
        wf.finalize()
    return elapsed


def arms(bundle: Path, levers: bool, overrides: dict) -> dict[str, dict]:
    """The settings per arm (``overrides``, e.g. ``torch_threads``, added to each)."""
    out = {"exact": dict(EXACT), "default": config_defaults(bundle)}
    if levers:
        out.update({name: {**EXACT, **change} for name, change in LEVERS.items()})
    return {arm: {**setting, **overrides} for arm, setting in out.items()}


def time_workflow(args: argparse.Namespace, bundle: Path, model: Path, work: Path) -> dict:
    (work / "ct").mkdir()
    ct = write_ct(work / "ct" / "ct_273x273x125.nii.gz")
    settings = arms(bundle, args.levers, args.overrides)
    times: dict[str, list[float]] = {a: [] for a in settings}
    for _ in range(args.warmup):
        for arm, setting in settings.items():
            run_workflow(bundle, ct.parent, work / "out" / arm, model, setting)
    for _ in range(args.repeats):
        for arm, setting in settings.items():
            times[arm].append(run_workflow(bundle, ct.parent, work / "out" / arm, model, setting))
    med = {a: statistics.median(t) for a, t in times.items()}
    return {
        "name": "cpu_inference_btcv_workflow",
        "device": device_name(torch.device("cpu")),
        "volume": [273, 273, 125],
        "settings": settings,
        **{f"{a}_s": round(m, 2) for a, m in med.items()},
        **{f"{a}_times_s": [round(t, 2) for t in ts] for a, ts in times.items()},
        "speedup_default": round(med["exact"] / med["default"], 2),
        "target_s": 30.0,
        "target_met": med["default"] <= 30.0,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _nanmean(values: list[float]) -> float | None:
    kept = [v for v in values if not np.isnan(v)]
    return round(float(np.mean(kept)), 4) if kept else None


def real_cases(data: Path) -> list[tuple[Path, Path]]:
    labels = {re.findall(r"\d+", p.name)[0]: p for p in (data / "labelsTr").glob("*.nii.gz")}
    cases = []
    for img in sorted((data / "imagesTr").glob("*.nii.gz")):
        case = re.findall(r"\d+", img.name)[0]
        if case in labels:
            cases.append((img, labels[case]))
    return cases


def real_dice(args: argparse.Namespace, bundle: Path, model: Path, work: Path) -> list[dict]:
    """Per case: Dice of each arm's label map against the labels, and (agreement) between each arm's map and the
    exact one. The arms: ``exact`` and ``default``; with ``--levers`` each lever alone too."""
    cases = real_cases(Path(args.data))
    if not cases:
        raise SystemExit(f"no image/label pairs under '{args.data}' (imagesTr/, labelsTr/)")
    num_classes = int(inference_config(bundle)["num_classes"])
    settings = arms(bundle, args.levers, args.overrides)
    records = []
    for img, label in cases:
        maps, seconds = {}, {}
        for arm, setting in settings.items():
            folder = work / "real" / img.name.split(".")[0]
            (folder / "in").mkdir(parents=True, exist_ok=True)
            link = folder / "in" / img.name
            if not link.exists():
                link.symlink_to(img.resolve())
            seconds[arm] = run_workflow(bundle, link.parent, folder / arm, model, setting)
            (pred,) = (folder / arm).glob("*_seg.nii.gz")
            maps[arm] = np.asarray(nib.load(str(pred)).dataobj)
        gt = np.asarray(nib.load(str(label)).dataobj).astype(np.int64)
        organs = range(1, num_classes)
        name = "cpu_inference_btcv_real_dice" + ("_quick" if "quick.yaml" in CONFIG_FILES else "")
        rec = {"name": name, "case": img.name, "shape": list(gt.shape)}
        for arm, pred in maps.items():
            per = [dice(pred == c, gt == c) if (gt == c).any() else float("nan") for c in organs]
            rec[f"{arm}_mean_dice"] = _nanmean(per)
            rec[f"{arm}_dice"] = [None if np.isnan(v) else round(v, 4) for v in per]
            rec[f"{arm}_s"] = round(seconds[arm], 2)
            if arm == "exact":
                continue
            prefix = "" if arm == "default" else f"{arm}_"
            agree = [dice(maps["exact"] == c, pred == c) for c in organs]
            rec[f"{prefix}agreement_dice"] = [None if np.isnan(v) else round(v, 4) for v in agree]
            rec[f"{prefix}agreement_mean_dice"] = _nanmean(agree)
            rec[f"{prefix}voxel_agreement"] = round(float((maps["exact"] == pred).mean()), 6)
            both = (rec["exact_mean_dice"], rec[f"{arm}_mean_dice"])
            rec[f"{prefix}mean_dice_change"] = None if None in both else round(abs(both[1] - both[0]), 4)
        records.append(rec)
    return records


def _timed(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (oneDNN primitives, compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def network_levers(args: argparse.Namespace, bundle: Path, model: Path, work: Path) -> dict:
    """One batch of windows through the network, per lever; time and argmax agreement with fp32."""
    net = build_network(bundle)
    net.load_state_dict(torch.load(model, weights_only=True)["model"])
    parser = inference_config(bundle)
    roi, channels = parser["roi_size"], int(parser["in_channels"])
    gen = torch.Generator().manual_seed(SEED)
    x = torch.rand(int(args.sw_batch_size), channels, *roi, generator=gen)

    def bf16() -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16)

    fns: dict[str, Callable[[], torch.Tensor]] = {}
    rec_errors: dict[str, str] = {}

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return net(x)

    def inference_mode() -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    def bf16_autocast() -> torch.Tensor:
        with torch.inference_mode(), bf16():
            return net(x).float()

    fns.update({"fp32_no_grad": plain, "fp32_inference_mode": inference_mode, "bf16": bf16_autocast})
    net_cl = build_network(bundle)
    net_cl.load_state_dict(net.state_dict())
    net_cl = net_cl.to(memory_format=torch.channels_last_3d)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)

    def bf16_channels_last() -> torch.Tensor:
        with torch.inference_mode(), bf16():
            return net_cl(x_cl).float()

    def fp32_channels_last() -> torch.Tensor:
        with torch.inference_mode():
            return net_cl(x_cl)

    fns.update({"fp32_channels_last": fp32_channels_last, "bf16_channels_last": bf16_channels_last})
    if args.onnx:
        import onnxruntime as ort

        # the dynamo exporter: the TorchScript one writes a Transpose with a negative axis, which ONNX Runtime refuses
        path = work / "unetr.onnx"
        try:
            torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=True)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            fns["onnxruntime_fp32"] = lambda: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        except Exception as err:  # reported, not fatal
            rec_errors["onnxruntime_fp32_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    if args.compile:
        compiled = torch.compile(net)

        def compiled_bf16() -> torch.Tensor:
            with torch.inference_mode(), bf16():
                return compiled(x).float()

        fns["compile_bf16"] = compiled_bf16
    rec: dict = {
        "name": "cpu_inference_btcv_network_levers",
        "device": device_name(torch.device("cpu")),
        "windows": int(args.sw_batch_size),
        "roi": list(roi),
        **rec_errors,
    }
    ref = None
    for lever, fn in fns.items():
        try:
            seconds, out = _timed(fn, args.repeats)
        except Exception as err:  # a lever that does not run here is reported, not fatal
            rec[f"{lever}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            continue
        rec[f"{lever}_s"] = round(seconds, 3)
        if ref is None:
            ref = out.float()
        rec[f"{lever}_agreement"] = round(float((out.float().argmax(1) == ref.argmax(1)).float().mean()), 6)
    base = rec.get("fp32_no_grad_s")
    for lever in fns:
        if base and f"{lever}_s" in rec:
            rec[f"{lever}_speedup"] = round(base / rec[f"{lever}_s"], 2)
    rec["threads"] = torch.get_num_threads()
    rec["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return rec


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0, help="untimed workflow rounds before the timed ones")
    parser.add_argument("--levers", action="store_true", help="each workflow lever alone (timing and real CTs)")
    parser.add_argument("--network-levers", action="store_true", help="one batch of windows per network-level lever")
    parser.add_argument("--onnx", action="store_true", help="network levers: ONNX Runtime on the exported network")
    parser.add_argument("--compile", action="store_true", help="network levers: torch.compile")
    parser.add_argument("--sw-batch-size", type=int, default=4, help="network levers: windows per batch")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "btcv"))
    parser.add_argument("--model", default=None, help="the bundle's model.pt; default: random weights, seed 0")
    parser.add_argument("--skip-workflow", action="store_true", help="no workflow timing on the generated CT")
    parser.add_argument("--skip-real", action="store_true", help="no Dice on the real CTs")
    parser.add_argument("--quick", action="store_true", help="configs/quick.yaml merged last (e.g. with its --model)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the workflow's choice)")
    args = parser.parse_args(argv)
    args.overrides = {} if args.threads is None else {"torch_threads": args.threads}
    return args


def json_stdout() -> Callable[[dict], None]:
    """A printer of JSON lines to this process's stdout; everything else written to stdout from here on (the
    workflows' logs, whose handlers hold ``sys.stdout``) goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return lambda rec: print(json.dumps(rec), file=out, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    emit = json_stdout()
    if args.quick:
        CONFIG_FILES.append("quick.yaml")
    logging.getLogger("ignite").setLevel(logging.WARNING)
    bundle = BUNDLE
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # the network levers; the workflows set their own from torch_threads
    with tempfile.TemporaryDirectory(prefix="bench_cpu_inference_") as tmp:
        work = Path(tmp)
        model = Path(args.model) if args.model else random_weights(bundle, work)
        weights = str(model) if args.model else "random init, seed 0"
        if not args.skip_workflow:
            rec = time_workflow(args, bundle, model, work)
            emit({**rec, "weights": weights})
        if not args.skip_real:
            for rec in real_dice(args, bundle, model, work):
                bound = rec["mean_dice_change"] is not None and rec["mean_dice_change"] <= 0.005
                emit({**rec, "dice_bound_0.005_met": bound, "weights": weights})
        if args.network_levers:
            emit({**network_levers(args, bundle, model, work), "weights": weights})


if __name__ == "__main__":
    main()
