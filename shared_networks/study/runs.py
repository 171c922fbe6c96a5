"""Running the bundle's workflows for the study: each step a ``python -m monai.bundle run`` command (as the bundle
docs give them) with its subset passed as a datalist JSON, the one MAE pre-training, every fine-tuning or
linear-probe run and its evaluation, recorded in ``runs.csv`` so that a second call runs only what is missing."""

from __future__ import annotations

import csv
import io
import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_networks.study.evaluations import evaluation_file, read_csv, read_evaluation, run_metrics
from shared_networks.study.subsets import group_key
from shared_networks.utils.files import atomic_write_text, write_json_atomic

__all__ = [
    "ARMS",
    "ARM_LABELS",
    "MODEL_FILES",
    "RUN_COLUMNS",
    "Run",
    "Runner",
    "Study",
    "cell",
    "parse_overrides",
    "pretrain_once",
    "pretrain_seconds",
    "read_runs",
    "run_plan",
    "subprocess_runner",
    "time_left",
    "write_datalist",
    "write_runs",
]

logger = logging.getLogger(__name__)

ARMS = ("mae", "scratch", "probe_mae", "probe_random")
"""Fine-tuning from the MAE encoder, from scratch; linear probe on the MAE encoder, on a random encoder."""
ARM_LABELS = {
    "mae": "fine-tuned, MAE encoder",
    "scratch": "fine-tuned, from scratch",
    "probe_mae": "linear probe, MAE encoder",
    "probe_random": "linear probe, random encoder",
}
MODEL_FILES = {
    "mae": "model.pt",
    "scratch": "model.pt",
    "probe_mae": "linear_probe.pt",
    "probe_random": "linear_probe.pt",
}
# (linear_probe.yaml's model_file is linear_probe.pt)

Runner = Callable[[Sequence[str], Path], None]
"""Runs ``python -m monai.bundle run`` with the given arguments (after ``run``), its output to the log file; raises on
failure."""


def subprocess_runner(args: Sequence[str], log_file: Path) -> None:
    """``python -m monai.bundle run ARGS`` with its output to ``log_file``; ``RuntimeError`` naming the log on
    failure."""
    command = [sys.executable, "-m", "monai.bundle", "run", *args]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w", encoding="utf-8") as log:
        log.write(shlex.join(command) + "\n\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"command failed (exit {code}); its output is in '{log_file}':\n{tail}")


def parse_overrides(extra: str | Sequence[str]) -> list[str]:
    """``--key value`` pairs of a string (shell words) or a list; ``ValueError`` for a stray word."""
    words = shlex.split(extra) if isinstance(extra, str) else [str(w) for w in extra]
    i = 0
    while i < len(words):
        if not words[i].startswith("--") or i + 1 >= len(words) or "=" in words[i]:
            raise ValueError(f"overrides must be '--key value' pairs, got {words[i:]!r} in {extra!r}.")
        i += 2
    return words


def _override_dict(words: Sequence[str]) -> dict[str, Any]:
    """The overrides as ``monai.bundle run`` reads them (fire's parsing of each value)."""
    from fire.parser import DefaultParseValue

    return {words[i][2:]: DefaultParseValue(words[i + 1]) for i in range(0, len(words), 2)}


def _config_list(files: Sequence[Path]) -> str:
    return "[" + ",".join(repr(str(f)) for f in files) + "]"


@dataclass(frozen=True)
class Run:
    """One fine-tuning or linear-probe run and its evaluation."""

    arm: str
    fraction: float
    seed: int

    @property
    def name(self) -> str:
        return f"fraction{self.fraction:g}_seed{self.seed}_{self.arm}"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.arm, f"{self.fraction:g}", str(self.seed)


class Study:
    """The files of a study and the commands of its runs (see :func:`shared_networks.study.run_study`)."""

    def __init__(
        self,
        bundle_root: Path,
        dataset_dir: str,
        output_dir: Path,
        config_overrides: Sequence[str],
        extra: Sequence[str],
        pretrain_extra: Sequence[str] = (),
        train_extra: Sequence[str] = (),
    ) -> None:
        self.bundle_root = bundle_root
        self.configs = bundle_root / "configs"
        for name in ("pretrain", "train", "evaluate"):
            if not (self.configs / f"{name}.yaml").is_file():
                raise FileNotFoundError(
                    f"'{self.configs / f'{name}.yaml'}' does not exist: is '{bundle_root}' a "
                    "bundle folder of this project?"
                )
        self.has_probe = (self.configs / "linear_probe.yaml").is_file()
        self.overrides = [self._override_file(o) for o in config_overrides]
        self.dataset_dir = dataset_dir
        self.output_dir = output_dir
        self.extra = list(extra)
        self.pretrain_extra = list(pretrain_extra)
        self.train_extra = list(train_extra)

    def _override_file(self, name: str) -> Path:
        path = Path(name) if ("/" in name or name.endswith((".yaml", ".json"))) else self.configs / f"{name}.yaml"
        path = path.expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"config override '{name}': '{path}' does not exist.")
        return path

    def arms(self, wanted: Sequence[str] | None = None) -> list[str]:
        """The arms of the study: ``wanted`` (default: every arm the bundle offers) in :data:`ARMS` order."""
        offered = ARMS if self.has_probe else ARMS[:2]
        wanted = list(offered) if wanted is None else list(wanted)
        bad = [a for a in wanted if a not in offered]
        if bad or not wanted:
            raise ValueError(
                f"arms {wanted!r}: choose among {list(offered)} (linear probes need configs/linear_probe.yaml)."
            )
        return [a for a in offered if a in wanted]

    def base_datalist(self) -> dict[str, list[dict[str, Any]]]:
        """The bundle's own datalist (train.yaml with the overrides), as every workflow of it would read it."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config([str(self.configs / "train.yaml"), *map(str, self.overrides)])
        parser.update({"bundle_root": str(self.bundle_root), "dataset_dir": self.dataset_dir})
        parser.update(_override_dict(self.extra + self.train_extra))
        datalist = parser.get_parsed_content("datalist")
        for key in ("training", "validation", "test"):
            if not datalist.get(key):
                raise ValueError(
                    f"the datalist of '{self.dataset_dir}' has no '{key}' items: the study needs training, "
                    "validation and test cases."
                )
        return {k: [dict(i) for i in v] for k, v in datalist.items()}

    def common(self, datalist_file: Path, ckpt_dir: Path, output_dir: Path) -> list[str]:
        return [
            "--bundle_root",
            str(self.bundle_root),
            "--dataset_dir",
            self.dataset_dir,
            "--datalist_file",
            str(datalist_file),
            "--ckpt_dir",
            str(ckpt_dir),
            "--output_dir",
            str(output_dir),
        ]

    def pretrain_args(self, datalist_file: Path, folder: Path) -> list[str]:
        """``pretrain.yaml`` with the overrides, on the whole training list (``datalist_file``'s ``pretrain``)."""
        files = [self.configs / "pretrain.yaml", *self.overrides]
        return [
            "--config_file",
            _config_list(files),
            *self.common(datalist_file, folder / "models", folder / "logs"),
            *self.extra,
            *self.pretrain_extra,
        ]

    def train_args(self, run: Run, datalist_file: Path, folder: Path, mae_ckpt: Path) -> list[str]:
        """``train.yaml`` (and ``linear_probe.yaml`` for a probe) from the MAE encoder or from none."""
        probe = run.arm.startswith("probe")
        files = [self.configs / "train.yaml", *([self.configs / "linear_probe.yaml"] if probe else []), *self.overrides]
        pretrained = str(mae_ckpt) if run.arm in ("mae", "probe_mae") else "none"
        return [
            "--config_file",
            _config_list(files),
            *self.common(datalist_file, folder / "models", folder / "train"),
            "--seed",
            str(run.seed),
            "--pretrained_ckpt",
            pretrained,
            *self.extra,
            *self.train_extra,
        ]

    def evaluate_args(self, run: Run, datalist_file: Path, folder: Path) -> list[str]:
        """``evaluate.yaml`` over ``train.yaml``: the run's model on the test split."""
        files = [self.configs / "train.yaml", self.configs / "evaluate.yaml", *self.overrides]
        model = folder / "models" / MODEL_FILES[run.arm]
        return [
            "--config_file",
            _config_list(files),
            *self.common(datalist_file, folder / "models", folder / "evaluate"),
            "--seed",
            str(run.seed),
            "--model_path",
            str(model),
            *self.extra,
        ]


def write_datalist(path: Path, datalist: Mapping[str, Any]) -> None:
    """Writes the datalist JSON; ``ValueError`` when an earlier call of the study wrote a different one there."""
    text = json.dumps(datalist, indent=4) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        raise ValueError(
            f"'{path}' holds another subset than this call draws (another data set, split or "
            "subset_seed?): use a new output_dir, or delete the folder to start over."
        )
    atomic_write_text(path, text)


# runs.csv: one row per finished run, what a second call keeps

RUN_COLUMNS = [
    "arm",
    "fraction",
    "seed",
    "n_train",
    "n_train_groups",
    "wall_s",
    "status",
    "evaluation",
    "run_dir",
    "datalist",
]


def read_runs(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """The rows of ``runs.csv`` by :attr:`Run.key` (none when the file does not exist)."""
    if not path.is_file():
        return {}
    _, rows = read_csv(path)
    out = {}
    for row in rows:
        try:
            key = (row["arm"], f"{float(row['fraction']):g}", str(int(row["seed"])))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"'{path}' has a malformed row {row!r}: delete the file to start over.") from err
        out[key] = row
    return out


def write_runs(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """``runs.csv``: :data:`RUN_COLUMNS`, then every other column of the rows (the metrics) in order of appearance."""
    rows = list(rows)
    columns = RUN_COLUMNS + list(dict.fromkeys(k for r in rows for k in r if k not in RUN_COLUMNS))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: cell(v) for k, v in row.items()})
    atomic_write_text(path, text.getvalue())


def cell(v: Any) -> str:
    """A value as ``runs.csv`` writes it: empty for ``None``, 6 significant digits for a float."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# the steps


def pretrain_once(
    study: Study, out: Path, datalist_file: Path, mae_ckpt: str | None, arms: Sequence[str], runner: Runner
) -> Path:
    """The MAE checkpoint of the study: ``mae_ckpt`` (resolved) when given, else ``pretrain.yaml`` run once in
    ``out/pretrain`` (an unfinished pre-training starts again from nothing; a finished one is kept)."""
    pre = out / "pretrain"
    done = pre / "finished.json"
    mae = pre / "models" / "mae.pt"
    if not any(a in ("mae", "probe_mae") for a in arms):
        logger.info("no arm starts from the MAE encoder: no pre-training")
    elif mae_ckpt is None:
        if not (done.is_file() and mae.is_file()):
            if pre.exists():
                logger.info("pre-training was not finished: starting it again in %s", pre)
                shutil.rmtree(pre)
            logger.info("pre-training the MAE once (log: %s)", pre / "log.txt")
            t0 = time.monotonic()
            runner(study.pretrain_args(datalist_file, pre), pre / "log.txt")
            if not mae.is_file():
                raise RuntimeError(f"pre-training finished without writing '{mae}' (log: '{pre / 'log.txt'}').")
            write_json_atomic({"mae_ckpt": str(mae), "wall_s": time.monotonic() - t0}, done)
        else:
            logger.info("pre-training already finished: %s", mae)
    else:
        mae = Path(mae_ckpt)
        if not mae.is_file():
            raise FileNotFoundError(f"MAE checkpoint '{mae}' does not exist.")
    return mae


def pretrain_seconds(out: Path) -> float | None:
    """The seconds of the study's own pre-training in ``out/pretrain`` (``None`` when it did not pre-train)."""
    done = out / "pretrain" / "finished.json"
    if not done.is_file():
        return None
    return json.loads(done.read_text(encoding="utf-8"))["wall_s"]


def _train_and_evaluate(
    study: Study, run: Run, datalist_file: Path, folder: Path, mae: Path, runner: Runner, what: str
) -> Path:
    """Trains the run in ``folder`` and evaluates its model; returns the evaluation file (``RuntimeError`` when a
    step wrote nothing)."""
    runner(study.train_args(run, datalist_file, folder, mae), folder / "train.log")
    model = folder / "models" / MODEL_FILES[run.arm]
    if not model.is_file():
        raise RuntimeError(f"{what}: training finished without writing '{model}' (log: '{folder / 'train.log'}').")
    runner(study.evaluate_args(run, datalist_file, folder), folder / "evaluate.log")
    found = evaluation_file(folder / "evaluate")
    if found is None:
        raise RuntimeError(
            f"{what}: evaluation wrote no per_case.csv or predictions.csv in "
            f"'{folder / 'evaluate'}' (log: '{folder / 'evaluate.log'}')."
        )
    return found


def run_plan(
    study: Study,
    out: Path,
    plan: Sequence[Run],
    subsets: Mapping[float, Sequence[Mapping[str, Any]]],
    datalists: Mapping[float, Path],
    mae: Path,
    runner: Runner,
) -> int:
    """Runs every run of ``plan`` not finished before (its row in ``out/runs.csv`` and its evaluation file), in
    ``out/runs/<run>``, recording each in ``runs.csv`` as it finishes; returns how many ran."""
    runs_csv = out / "runs.csv"
    records = read_runs(runs_csv)
    new = 0
    for number, run in enumerate(plan, 1):
        folder = out / "runs" / run.name
        row = records.get(run.key)
        items = subsets[run.fraction]
        what = (
            f"run {number}/{len(plan)}: {run.arm} fraction {run.fraction:g} seed {run.seed} "
            f"({len(items)} training items)"
        )
        if row is not None and row.get("status") == "finished" and evaluation_file(folder / "evaluate") is not None:
            logger.info("%s: finished before, kept", what)
            continue
        if folder.exists():
            shutil.rmtree(folder)  # an unfinished run starts again from nothing
        logger.info("%s ...", what)
        t0 = time.monotonic()
        found = _train_and_evaluate(study, run, datalists[run.fraction], folder, mae, runner, what)
        wall = time.monotonic() - t0
        metrics = run_metrics(read_evaluation(folder / "evaluate"))
        records[run.key] = {
            "arm": run.arm,
            "fraction": f"{run.fraction:g}",
            "seed": run.seed,
            "n_train": len(items),
            "n_train_groups": len({group_key(i) for i in items}),
            "wall_s": round(wall, 1),
            "status": "finished",
            "evaluation": str(found),
            "run_dir": str(folder),
            "datalist": str(datalists[run.fraction]),
            **metrics,
        }
        write_runs(runs_csv, records.values())
        new += 1
        main = next(iter(metrics))
        left = [r for r in plan[number:] if records.get(r.key, {}).get("status") != "finished"]
        eta = time_left(records.values(), [(r.arm, len(subsets[r.fraction])) for r in left])
        logger.info(
            "%s done in %.0f s: %s %s; %d run(s) left%s",
            what,
            wall,
            main,
            cell(metrics[main]),
            len(left),
            "" if eta is None else f", about {eta / 60:.0f} min",
        )
    write_runs(runs_csv, records.values())
    return new


def time_left(finished: Iterable[Mapping[str, Any]], left: Sequence[tuple[str, int]]) -> float | None:
    """Seconds the runs ``left`` ((arm, training items) each) should take, from the finished runs' rows of
    ``runs.csv``: per arm its seconds per training item (any arm's where that arm has no finished run yet);
    ``None`` before any run finished."""
    seconds: dict[str, float] = {}
    items: dict[str, int] = {}
    for row in finished:
        if row.get("status") == "finished" and row.get("wall_s") and row.get("n_train"):
            arm = str(row["arm"])
            seconds[arm] = seconds.get(arm, 0.0) + float(row["wall_s"])
            items[arm] = items.get(arm, 0) + int(row["n_train"])
    if not items:
        return None
    overall = sum(seconds.values()) / max(sum(items.values()), 1)
    return sum(n * (seconds[a] / max(items[a], 1) if a in items else overall) for a, n in left)
