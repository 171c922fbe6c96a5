"""One study, start to end (:func:`run_study`): check the arguments, record the settings, write the subsets, pre-train
once, run what is missing, summarise and render. K-fold cross-validation runs this once per fold
(:mod:`shared_networks.study.crossval`); nothing here calls back up to it."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_networks.study.render import render_study
from shared_networks.study.runs import (
    Run,
    Runner,
    Study,
    parse_overrides,
    pretrain_once,
    pretrain_seconds,
    run_plan,
    subprocess_runner,
    write_datalist,
)
from shared_networks.study.subsets import check_fractions, check_held_out, group_key, nested_subsets, tuning_split
from shared_networks.study.summary import summarise, write_summary
from shared_networks.utils.files import write_json_atomic

__all__ = ["as_list", "run_study"]

logger = logging.getLogger(__name__)


def as_list(value: Any, what: str, cast: Callable[[Any], Any]) -> list:
    """A comma-separated string, a number or a sequence, as a list (fire gives any of these)."""
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
    elif isinstance(value, Iterable):
        parts = list(value)
    else:
        parts = [value]
    try:
        return [cast(p) for p in parts]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} {value!r}: {err}.") from err


def _set_up(
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    fractions: Any,
    seeds: Any,
    config_overrides: Any,
    extras: tuple[str | Sequence[str], str | Sequence[str], str | Sequence[str]],
    arms: Any,
    n_resamples: int,
) -> tuple[Study, list[float], list[int], list[str]]:
    """The study's files and commands, its fractions, seeds and arms; ``ValueError`` or ``FileNotFoundError`` naming
    a bad argument. ``extras``: the overrides of every command, of pre-training, of fine-tuning."""
    bundle = Path(bundle_root).expanduser().resolve()
    out = Path(output_dir).expanduser().resolve()
    fractions = check_fractions(as_list(fractions, "fractions", float))
    seeds = list(dict.fromkeys(as_list(seeds, "seeds", int)))
    if not seeds:
        raise ValueError("no seed given.")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples {n_resamples!r} must be at least 1.")
    overrides = [str(o) for o in as_list(config_overrides or (), "config_overrides", str)]
    dataset = str(Path(dataset_dir).expanduser().resolve())
    extra, pretrain_extra, train_extra = extras
    study = Study(
        bundle,
        dataset,
        out,
        overrides,
        parse_overrides(extra),
        parse_overrides(pretrain_extra),
        parse_overrides(train_extra),
    )
    chosen = study.arms(None if arms is None else as_list(arms, "arms", str))
    return study, fractions, seeds, chosen


def _record_settings(study: Study, mae_ckpt: Any, subset_seed: int, held_out: tuple[float, int, int | None]) -> dict:
    """``study.json``: the settings that decide the runs, refused (``ValueError``) when an earlier call in the same
    folder recorded others. ``held_out``: tune_fraction, tune_folds, tune_fold."""
    tune_fraction, tune_folds, tune_fold = held_out
    out = study.output_dir
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "bundle_root": str(study.bundle_root),
        "dataset_dir": study.dataset_dir,
        "config_overrides": [str(p) for p in study.overrides],
        "extra": study.extra,
        "pretrain_extra": study.pretrain_extra,
        "train_extra": study.train_extra,
        "mae_ckpt": None if mae_ckpt is None else str(Path(mae_ckpt).expanduser().resolve()),
        "subset_seed": int(subset_seed),
        "tune_fraction": float(tune_fraction),
        **({"tune_folds": int(tune_folds), "tune_fold": int(tune_fold)} if int(tune_folds) else {}),  # type: ignore[arg-type]
    }
    settings_file = out / "study.json"
    if settings_file.is_file():
        before = json.loads(settings_file.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings if before.get(k, 0.0 if k == "tune_fraction" else None) != settings[k])
        if changed:
            raise ValueError(
                f"'{settings_file}' records a study with other settings ({', '.join(changed)}): its runs "
                "would not compare. Use a new output_dir, or delete the folder to start over."
            )
    write_json_atomic(settings, settings_file)
    return settings


def _write_subsets(
    study: Study, fractions: Sequence[float], subset_seed: int, held_out: tuple[float, int, int | None]
) -> tuple[dict[str, list], dict[float, list], dict[float, Path], Path]:
    """The datalists of the study in ``output_dir/datalists``: one per fraction (nested training subsets by patient;
    validation, test and pre-training lists unchanged) and ``full.json``. With held-out training patients
    (``held_out``: tune_fraction, tune_folds, tune_fold) they are the test split instead of the real one.

    Returns:
        The base datalist, the subsets and datalist file per fraction, and the full datalist's file.
    """
    tune_fraction, tune_folds, tune_fold = held_out
    base = study.base_datalist()
    if float(tune_fraction) > 0 or int(tune_folds):
        base = tuning_split(base, float(tune_fraction), int(subset_seed), int(tune_folds), int(tune_fold or 0))
        logger.info(
            "tuning: %d training items held out as the test split (%s); the real test split is not read",
            len(base["test"]),
            f"fold {tune_fold} of {tune_folds}" if int(tune_folds) else f"tune_fraction {float(tune_fraction):g}",
        )
    subsets = nested_subsets(base["training"], fractions, int(subset_seed))
    datalists = {}
    for f, items in subsets.items():
        path = study.output_dir / "datalists" / f"fraction{f:g}.json"
        write_datalist(path, {**base, "training": items})
        datalists[f] = path
    full_list = study.output_dir / "datalists" / "full.json"
    write_datalist(full_list, base)
    return base, subsets, datalists, full_list


def _log_plan(
    study: Study, base: Mapping[str, list], fractions: list[float], seeds: list[int], arms: list[str]
) -> None:
    """Logs what the study holds and will run."""
    logger.info(
        "study of %s: %d training patient groups (%d items), %d validation, %d test items; fractions %s, "
        "seeds %s, arms %s",
        study.bundle_root.name,
        len({group_key(i) for i in base["training"]}),
        len(base["training"]),
        len(base["validation"]),
        len(base["test"]),
        fractions,
        seeds,
        arms,
    )


def _finish(
    summary: dict[str, Any], out: Path, new: int, held_out: tuple[float, int, int | None], started: float
) -> None:
    """Adds this call's facts to the summary and writes ``summary.json``, the PNG, ``study.md`` and ``study.html``."""
    tune_fraction, tune_folds, tune_fold = held_out
    summary["runs_this_call"] = new
    summary["tune_fraction"] = float(tune_fraction)  # > 0: evaluated on held-out training patients, not the test split
    if int(tune_folds):
        summary["tune_folds"], summary["tune_fold"] = int(tune_folds), int(tune_fold or 0)
    seconds = pretrain_seconds(out)
    if seconds is not None:
        summary["pretrain_wall_s"] = round(seconds, 1)
    summary["wall_s_this_call"] = round(time.monotonic() - started, 1)
    write_summary(summary, out)
    render_study(summary, out)


def _check_one_fold(tune_fraction: float, tune_folds: int, tune_fold: int | None) -> None:
    check_held_out(tune_fraction, tune_folds)
    if int(tune_folds) and tune_fold is None:
        raise ValueError(
            f"tune_folds {tune_folds!r} without tune_fold: run_study runs one fold; run_folds (the cross-validation "
            "driver, python -m shared_networks.cli.study --tune_folds) runs them all."
        )


def run_study(
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    fractions: Any = (1.0, 0.5, 0.25, 0.1),
    seeds: Any = (0, 1, 2),
    mae_ckpt: str | os.PathLike | None = None,
    config_overrides: Any = (),
    extra: str | Sequence[str] = "",
    pretrain_extra: str | Sequence[str] = "",
    train_extra: str | Sequence[str] = "",
    arms: Any = None,
    n_resamples: int = 2000,
    bootstrap_seed: int = 0,
    subset_seed: int = 0,
    tune_fraction: float = 0.0,
    tune_folds: int = 0,
    tune_fold: int | None = None,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Run (or complete) the study and write its outputs; returns the summary (``summary.json``'s content).

    Args:
        bundle_root: the bundle folder (``bundles/<name>``).
        dataset_dir: the data set, as for the bundle's workflows.
        output_dir: folder of the study; a second call with the same folder runs only the runs not finished.
        fractions: fractions of the labelled training patients, e.g. ``1,0.5,0.25,0.1``.
        seeds: seeds of the runs; each (fraction, seed) trains every arm with that seed.
        mae_ckpt: an MAE checkpoint to use; ``None`` pre-trains once with ``pretrain.yaml`` (in
            ``output_dir/pretrain``).
        config_overrides: config files merged last into every workflow: names in the bundle's ``configs/``
            (``quick``) or paths.
        extra: ``--key value`` overrides added to every command (e.g. ``--max_epochs 5``).
        pretrain_extra: overrides added to the pre-training command only.
        train_extra: overrides added to the fine-tuning and linear-probe commands only.
        arms: the arms to run among ``ARMS`` (default: all the bundle offers; the probes need ``linear_probe.yaml``).
        n_resamples: bootstrap resamples.
        bootstrap_seed: seed of the resamples.
        subset_seed: seed of the order in which patients enter the subsets.
        tune_fraction: 0 (default) evaluates on the test split. A fraction in (0, 1) chooses settings without it:
            that share of the training patients (seeded by ``subset_seed``) is held out and evaluated on instead,
            and no run reads the test split (:func:`~shared_networks.study.subsets.tuning_split`).
        tune_folds, tune_fold: fold ``tune_fold`` of K = ``tune_folds`` >= 2 held out instead (every K-th patient of
            the seeded order), in ``output_dir`` itself. Every fold, pooled: :func:`shared_networks.study.run_folds`.
        runner: runs one ``monai.bundle run`` command (default: :func:`~shared_networks.study.runs.subprocess_runner`).

    Raises:
        RuntimeError: a command failed (the message names its log file); finished runs stay recorded.
        ValueError, FileNotFoundError: bad arguments, naming the value or file.
    """
    _check_one_fold(tune_fraction, tune_folds, tune_fold)
    started = time.monotonic()
    runner = runner or subprocess_runner
    held_out = (tune_fraction, tune_folds, tune_fold)
    overrides = (extra, pretrain_extra, train_extra)
    study, fractions, seeds, chosen = _set_up(
        bundle_root, dataset_dir, output_dir, fractions, seeds, config_overrides, overrides, arms, n_resamples
    )
    out = study.output_dir
    settings = _record_settings(study, mae_ckpt, subset_seed, held_out)
    base, subsets, datalists, full_list = _write_subsets(study, fractions, subset_seed, held_out)
    _log_plan(study, base, fractions, seeds, chosen)
    mae = pretrain_once(study, out, full_list, settings["mae_ckpt"], chosen, runner)
    plan = [Run(arm, f, s) for f in fractions for s in seeds for arm in chosen]
    new = run_plan(study, out, plan, subsets, datalists, mae, runner)
    summary = summarise(out, plan, subsets, int(n_resamples), int(bootstrap_seed), bundle=study.bundle_root.name)
    _finish(summary, out, new, held_out, started)
    minutes = summary["wall_s_this_call"] / 60
    logger.info(
        f"study finished: {len(plan)} runs ({new} new in this call) in {minutes:.1f} min; {out / 'summary.json'}"
    )
    return summary
