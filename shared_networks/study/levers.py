"""A recipe search's lever table: settings, each an arm of a study folder (a cross-validated one or a single study),
compared with a reference setting on the same held-out images by a paired bootstrap.

Every study of a search must hold out the same images (the same data set, ``--tune_folds`` and ``--subset_seed``),
so each setting's predictions pair with the reference's image by image; the resamples are drawn within each fold, as
in the study itself, and an AUC is the mean of the folds' AUCs. A setting run with several seeds enters with its
probabilities averaged over the seeds, as the study's comparisons do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared_networks.study.bootstrap import paired_bootstrap
from shared_networks.study.evaluations import Evaluation, pool_evaluations, read_evaluation
from shared_networks.study.runs import Run
from shared_networks.utils.files import atomic_write_text, write_json_atomic

__all__ = [
    "LEVER_VERDICTS",
    "Setting",
    "lever_markdown",
    "lever_table",
    "read_setting",
    "settings_from_spec",
    "write_lever_table",
]

LEVER_VERDICTS = ("better", "worse", "within noise (CI contains 0)")


@dataclass(frozen=True)
class Setting:
    """One row of a lever table: an arm of the study in ``study_dir`` at ``fraction``, over ``seeds`` (all the seeds
    the study ran when ``None``)."""

    label: str
    study_dir: Path
    arm: str
    fraction: float = 1.0
    seeds: tuple[int, ...] | None = None


def _fold_dirs(study_dir: Path) -> list[Path]:
    """The folds' folders of a cross-validated study (``fold0``, ``fold1``, ...), else the study folder itself."""
    folds = sorted((p for p in study_dir.glob("fold*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))
    return folds or [study_dir]


def _seeds(folder: Path, setting: Setting) -> list[int]:
    if setting.seeds is not None:
        return list(setting.seeds)
    prefix = f"fraction{setting.fraction:g}_seed"
    found = sorted(
        int(p.name[len(prefix) :].split("_", 1)[0])
        for p in (folder / "runs").glob(f"{prefix}*_{setting.arm}")
        if p.name[len(prefix) :].split("_", 1)[0].isdigit()
    )
    if not found:
        raise FileNotFoundError(f"'{folder}' has no run of arm {setting.arm!r} at fraction {setting.fraction:g}.")
    return found


def read_setting(setting: Setting) -> Evaluation:
    """The setting's held-out predictions: per fold the seeds' probabilities averaged, the folds pooled.

    Raises:
        FileNotFoundError: naming the folder of a run that is missing or not evaluated.
        ValueError: when the seeds of a fold were evaluated on different images.
    """
    folds = []
    for folder in _fold_dirs(Path(setting.study_dir)):
        evs = [
            read_evaluation(folder / "runs" / Run(setting.arm, setting.fraction, s).name / "evaluate")
            for s in _seeds(folder, setting)
        ]
        for ev in evs[1:]:
            if ev.cases != evs[0].cases:
                raise ValueError(f"'{ev.path}' and '{evs[0].path}' were evaluated on different images.")
        values = {m: np.mean([ev.values[m] for ev in evs], axis=0) for m in evs[0].values}
        folds.append(Evaluation(evs[0].path, evs[0].cases, evs[0].class_names, values, evs[0].labels))
    return pool_evaluations(folds)


def _check_paired(a: Evaluation, b: Evaluation, label_a: str, label_b: str) -> None:
    same = a.cases == b.cases and np.array_equal(a.groups, b.groups) and a.class_names == b.class_names
    if not same:
        raise ValueError(
            f"settings '{label_a}' ({a.path}) and '{label_b}' ({b.path}) were not evaluated on the same held-out "
            "images in the same folds: run every study of a lever table with the same data set, --tune_folds and "
            "--subset_seed."
        )


def _lever_verdict(ci: Sequence[float | None]) -> str:
    lo, hi = ci
    if lo is None or hi is None:
        return LEVER_VERDICTS[2]
    return LEVER_VERDICTS[0] if lo > 0 else LEVER_VERDICTS[1] if hi < 0 else LEVER_VERDICTS[2]


def lever_table(
    reference: Setting, settings: Sequence[Setting], n_resamples: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """Per setting (the reference first): its mean AUC over the findings with the bootstrap CI, and its difference
    from the reference with the paired bootstrap 95 % CI and a verdict (``better``/``worse``/``within noise``).

    Raises:
        ValueError: when a setting's held-out images differ from the reference's.
    """
    ref = read_setting(reference)
    if ref.labels is None:
        raise ValueError(f"'{ref.path}' holds per-case values: lever tables compare classification AUCs.")
    rows = []
    for s in [reference, *settings]:
        ev = ref if s is reference else read_setting(s)
        _check_paired(ev, ref, s.label, reference.label)
        result = paired_bootstrap(
            ev.values["auc"],
            ref.values["auc"],
            ref.class_names,
            "auc",
            labels=ref.labels,
            n_resamples=n_resamples,
            seed=seed,
            groups=ref.groups,
        )
        diff = result["mean"]
        rows.append(
            {
                "label": s.label,
                "study_dir": str(s.study_dir),
                "arm": s.arm,
                "fraction": s.fraction,
                "auc": result["arms"]["a"]["value"],
                "auc_ci95": result["arms"]["a"]["ci95"],
                "difference": None if s is reference else diff["difference"],
                "difference_ci95": None if s is reference else diff["ci95"],
                "verdict": "reference" if s is reference else _lever_verdict(diff["ci95"]),
                "n_images": len(ref.cases),
                "n_folds": int(len(np.unique(ref.groups))),
            }
        )
    return rows


def _fmt(v: float | None, sign: bool = False) -> str:
    return "–" if v is None else f"{v:+.3f}" if sign else f"{v:.3f}"


def lever_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The lever table in Markdown: setting, arm, mean AUC [CI], difference from the reference [CI], verdict."""
    ref = rows[0]
    lines = [
        f"Held-out images: {ref['n_images']} in {ref['n_folds']} fold(s); reference: {ref['label']} ({ref['arm']}).",
        "",
        "| setting | arm | mean AUC [95 % CI] | − reference [95 % CI] | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["auc_ci95"]
        auc = f"{_fmt(r['auc'])} [{_fmt(lo)}, {_fmt(hi)}]"
        if r["difference_ci95"] is None:
            diff = "–"
        else:
            dlo, dhi = r["difference_ci95"]
            diff = f"{_fmt(r['difference'], True)} [{_fmt(dlo, True)}, {_fmt(dhi, True)}]"
        lines.append(f"| {r['label']} | {r['arm']} | {auc} | {diff} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def _setting(entry: Mapping[str, Any], base: Path, where: str) -> Setting:
    unknown = set(entry) - {"label", "study_dir", "arm", "fraction", "seeds"}
    missing = {"label", "study_dir", "arm"} - set(entry)
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} / missing keys {sorted(missing)}.")
    folder = Path(os.path.expanduser(str(entry["study_dir"])))
    seeds = entry.get("seeds")
    return Setting(
        str(entry["label"]),
        folder if folder.is_absolute() else base / folder,
        str(entry["arm"]),
        float(entry.get("fraction", 1.0)),
        None if seeds is None else tuple(int(s) for s in seeds),
    )


def settings_from_spec(path: str | os.PathLike) -> tuple[Setting, list[Setting]]:
    """The reference and the settings of a JSON spec ``{"reference": {...}, "settings": [{...}, ...]}``, each entry
    ``{"label", "study_dir", "arm"[, "fraction", "seeds"]}``; a relative ``study_dir`` is read from the spec's folder.

    Raises:
        ValueError: naming the file and the entry for a malformed spec.
    """
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"'{path}': not a readable JSON lever spec ({err}).") from err
    if not isinstance(spec, dict) or not isinstance(spec.get("settings"), list) or "reference" not in spec:
        raise ValueError(f"'{path}': a lever spec is an object with 'reference' and a list 'settings'.")
    base = path.parent
    reference = _setting(spec["reference"], base, f"'{path}' reference")
    settings = [_setting(e, base, f"'{path}' settings[{i}]") for i, e in enumerate(spec["settings"])]
    return reference, settings


def write_lever_table(
    spec: str | os.PathLike, output_dir: str | os.PathLike, n_resamples: int = 2000, seed: int = 0
) -> Path:
    """``levers.json`` and ``levers.md`` of the spec's settings in ``output_dir``; returns the Markdown path."""
    reference, settings = settings_from_spec(spec)
    rows = lever_table(reference, settings, n_resamples, seed)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"n_resamples": n_resamples, "bootstrap_seed": seed, "rows": rows}, out / "levers.json")
    atomic_write_text(out / "levers.md", lever_markdown(rows))
    return out / "levers.md"
