"""What the bundle's evaluation writes, read back for the study: ``per_case.csv`` (with the class names of the
``summary.json`` beside it) or ``predictions.csv``, each run's metrics, and the folds' held-out evaluations pooled."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared_networks.study.bootstrap import auc_by_group, mean_resampled, nanmean_rows

__all__ = [
    "Evaluation",
    "evaluation_file",
    "pool_evaluations",
    "read_csv",
    "read_evaluation",
    "read_per_case",
    "read_predictions",
    "run_metrics",
]


@dataclass
class Evaluation:
    """What one evaluation wrote: per-case values per metric (segmentation) or per-image probabilities (classification).

    ``values[metric]`` is (n, K) with NaN where undefined; for classification ``values["auc"]`` holds the
    probabilities and ``labels`` the 0/1 labels.
    """

    path: Path
    cases: list[str]
    class_names: list[str]
    values: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None  # (n,) the fold of each case, for pooled cross-validation folds

    @property
    def task(self) -> str:
        return "classification" if self.labels is not None else "segmentation"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV file; ``FileNotFoundError`` naming it when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FileNotFoundError(f"evaluation file '{path}' cannot be read: {err}.") from err
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _float(value: str | None) -> float:
    try:
        v = float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan
    return v if math.isfinite(v) else math.nan


def _summary_classes(path: Path, metric: str) -> list[str] | None:
    """The class columns (``<metric>_<class>`` suffixes) named by the summary JSON beside ``per_case.csv``, if any."""
    try:
        per_class = json.loads(path.read_text(encoding="utf-8"))[metric]["per_class"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(c).replace(" ", "_") for c in per_class] if isinstance(per_class, dict) and per_class else None


def read_per_case(path: str | os.PathLike, metrics: Sequence[str] = ("dice", "hd95")) -> Evaluation:
    """Per-case values of ``per_case.csv`` (``MetricsReport``): columns ``case`` and ``<metric>_<class>``.

    The classes are those of ``summary.json`` beside it (``<metric>.per_class``) when it names them, else every
    ``<metric>_`` column. A metric without columns is left out (HD95 may be absent); every metric takes the classes of
    the first. Empty, ``nan`` or infinite values are undefined (NaN). Other columns are ignored.

    Raises:
        ValueError: naming the file when it has no ``case`` or no Dice column.
    """
    path = Path(path)
    header, rows = read_csv(path)
    if "case" not in header:
        raise ValueError(f"'{path}' has no 'case' column (columns: {header}).")
    names = _summary_classes(path.with_name("summary.json"), metrics[0])
    found: dict[str, list[str]] = {}
    for metric in metrics:
        columns = [c[len(metric) + 1 :] for c in header if c.startswith(metric + "_")]
        found[metric] = columns if names is None else [c for c in names if c in columns]
    classes = found[metrics[0]]
    if not classes:
        raise ValueError(f"'{path}' has no '{metrics[0]}_<class>' column (columns: {header}).")
    values = {}
    for metric in metrics:
        if found[metric]:
            values[metric] = np.array(
                [[_float(r.get(f"{metric}_{c}")) for c in classes] for r in rows], dtype=np.float64
            ).reshape(len(rows), len(classes))
    return Evaluation(path, [r["case"] for r in rows], classes, values)


def read_predictions(path: str | os.PathLike) -> Evaluation:
    """Per-image probabilities and labels of ``predictions.csv`` (``ClassificationReport``): ``image``, one column per
    class and ``label_<class>``.

    Raises:
        ValueError: naming the file when the image or label columns are missing or a value is not a number.
    """
    path = Path(path)
    header, rows = read_csv(path)
    classes = [c[len("label_") :] for c in header if c.startswith("label_")]
    if "image" not in header or not classes or any(c not in header for c in classes):
        raise ValueError(f"'{path}' needs the columns image, <class> and label_<class> (columns: {header}).")
    try:
        probs = np.array([[float(r[c]) for c in classes] for r in rows], dtype=np.float64).reshape(len(rows), -1)
        labels = np.array([[float(r[f"label_{c}"]) for c in classes] for r in rows]).reshape(len(rows), -1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"'{path}' holds a value that is not a number: {err}.") from err
    return Evaluation(path, [r["image"] for r in rows], classes, {"auc": probs}, labels)


def read_evaluation(folder: Path) -> Evaluation:
    """The evaluation written to ``folder``: ``predictions.csv`` (classification) or ``per_case.csv``."""
    if (folder / "predictions.csv").is_file():
        return read_predictions(folder / "predictions.csv")
    if (folder / "per_case.csv").is_file():
        return read_per_case(folder / "per_case.csv")
    raise FileNotFoundError(f"no predictions.csv or per_case.csv in '{folder}' (the evaluation's output folder).")


def evaluation_file(folder: Path) -> Path | None:
    """The evaluation file in ``folder`` (``predictions.csv`` or ``per_case.csv``), ``None`` when there is none."""
    for name in ("predictions.csv", "per_case.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def run_metrics(ev: Evaluation) -> dict[str, float | None]:
    """The metric values of one evaluation: per metric the mean over classes and each class (runs.csv's columns)."""
    ones = np.ones((1, len(ev.cases)), dtype=np.int64)
    out: dict[str, float | None] = {}
    for metric, values in ev.values.items():
        per_class = (
            auc_by_group(values, ev.labels, ones, ev.groups)[0] if metric == "auc" else mean_resampled(values, ones)[0]
        )
        mean = nanmean_rows(per_class[None])[0]
        out[metric] = None if not np.isfinite(mean) else float(mean)
        for name, v in zip(ev.class_names, per_class, strict=True):
            out[f"{metric}_{name.replace(' ', '_')}"] = None if not np.isfinite(v) else float(v)
    return out


def pool_evaluations(evaluations: Sequence[Evaluation]) -> Evaluation:
    """One evaluation of the cases of several (the folds' disjoint held-out cases, in the given order); ``groups``
    holds each case's position in ``evaluations`` (its fold), so an AUC is computed fold by fold and averaged.

    Raises:
        ValueError: naming the files when their classes differ or a case appears twice.
    """
    first = evaluations[0]
    for ev in evaluations[1:]:
        if ev.class_names != first.class_names or set(ev.values) != set(first.values):
            raise ValueError(f"'{ev.path}' has other classes or metrics than '{first.path}': they cannot be pooled.")
    cases = [c for ev in evaluations for c in ev.cases]
    if len(set(cases)) != len(cases):
        twice = sorted({c for c in cases if cases.count(c) > 1})[:3]
        raise ValueError(
            f"the folds' evaluations ({', '.join(str(e.path) for e in evaluations)}) share the cases "
            f"{twice}: folds must hold out disjoint patients."
        )
    values = {m: np.concatenate([ev.values[m] for ev in evaluations]) for m in first.values}
    labels = None if first.labels is None else np.concatenate([ev.labels for ev in evaluations])  # type: ignore[misc]
    groups = np.concatenate([np.full(len(ev.cases), k) for k, ev in enumerate(evaluations)])
    return Evaluation(first.path.parent, cases, first.class_names, values, labels, groups)
