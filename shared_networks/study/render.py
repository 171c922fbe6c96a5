"""The study for people: ``study.md`` (Markdown tables), ``study.html`` (a ``<section>`` for an HTML report) and
``label_efficiency.png`` (each arm's metric and each paired difference against the label fraction, with CIs)."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared_networks.utils.files import atomic_write_text

__all__ = ["render_study", "study_html", "study_markdown", "write_png"]

Series = dict[str, list[tuple[float | None, Sequence[float | None]]]]
"""Per arm or difference: per fraction, its value and its CI."""


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _split_name(summary: Mapping[str, Any]) -> str:
    """What the study evaluated on: the test split, held-out training patients, or one fold or all folds of them."""
    folds = summary.get("tune_folds")
    if folds and "tune_fold" in summary:
        return f"Held-out training patients, fold {summary['tune_fold']} of {folds} (tuning, test split not read)"
    if folds:
        return f"Held-out training patients, pooled over {folds} folds (cross-validation, test split not read)"
    return "Held-out training patients (tuning, test split not read)" if summary.get("tune_fraction") else "Test split"


def study_markdown(summary: Mapping[str, Any]) -> str:
    """The study as Markdown: per fraction, each arm's mean ± sd over seeds and each difference with its CI."""
    m = summary["metric"]
    split = _split_name(summary)
    lines = [
        "## Study: MAE against scratch",
        "",
        f"{split}: {summary['n_test']} {'images' if summary['task'] == 'classification' else 'cases'}; "
        f"{m} (mean over classes); differences with the paired bootstrap {int(summary['confidence'] * 100)} % CI over "
        f"test cases ({summary['n_resamples']} resamples, seed {summary['bootstrap_seed']}).",
        "",
        *[line for n in summary["notes"] for line in (f"Note: {n}", "")],
        "![label efficiency](label_efficiency.png)",
        "",
        f"| fraction | training items (patients) | arm | {m} mean ± sd over seeds | seeds |",
        "|---|---|---|---|---|",
    ]
    for f, entry in summary["fractions"].items():
        for arm, values in entry["arms"].items():
            v = values[m]
            sd = "" if v["sd"] is None else f" ± {_fmt(v['sd'])}"
            lines.append(
                f"| {f} | {entry['n_train']} ({entry['n_train_groups']}) | {summary['arm_labels'][arm]} | "
                f"{_fmt(v['mean'])}{sd} | {len(values['seeds'])} |"
            )
    lines += ["", f"| fraction | difference | {m} difference | 95 % CI | verdict |", "|---|---|---|---|---|"]
    for f, entry in summary["fractions"].items():
        for name, comp in entry["comparisons"].items():
            c = comp[m]["mean"]
            lo, hi = c["ci95"]
            lines.append(f"| {f} | {name} | {_fmt(c['difference'])} | [{_fmt(lo)}, {_fmt(hi)}] | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def _html_rows(summary: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The rows of the HTML tables: each arm per fraction, each difference per fraction."""
    e = html.escape
    m = summary["metric"]
    rows = []
    for f, entry in summary["fractions"].items():
        for arm, values in entry["arms"].items():
            v = values[m]
            sd = "" if v["sd"] is None else f" ± {_fmt(v['sd'])}"
            rows.append(
                f"<tr><td>{e(f)}</td><td>{entry['n_train']} ({entry['n_train_groups']})</td>"
                f"<td>{e(summary['arm_labels'][arm])}</td><td>{_fmt(v['mean'])}{sd}</td></tr>"
            )
    diffs = []
    for f, entry in summary["fractions"].items():
        for name, comp in entry["comparisons"].items():
            c = comp[m]["mean"]
            lo, hi = c["ci95"]
            diffs.append(
                f"<tr><td>{e(f)}</td><td>{e(name)}</td><td>{_fmt(c['difference'])}</td>"
                f"<td>[{_fmt(lo)}, {_fmt(hi)}]</td><td>{e(c['verdict'])}</td></tr>"
            )
    return rows, diffs


def study_html(summary: Mapping[str, Any]) -> str:
    """The study as an HTML fragment (a ``<section>``), the PNG referred to by its name beside it."""
    e = html.escape
    m = summary["metric"]
    rows, diffs = _html_rows(summary)
    return (
        "\n".join(
            [
                '<section id="study">',
                "<h2>Study: MAE against scratch</h2>",
                f'<p class="note">{e(_split_name(summary))}: {summary["n_test"]} cases; {e(m)} = mean over classes; '
                "paired bootstrap "
                f"{int(summary['confidence'] * 100)} % CI over test cases ({summary['n_resamples']} resamples).</p>",
                *[f'<p class="note">Note: {e(n)}</p>' for n in summary["notes"]],
                '<img src="label_efficiency.png" alt="metric against label fraction per arm, with CI bars">',
                "<table><tr><th>fraction</th><th>training items (patients)</th><th>arm</th>"
                f"<th>{e(m)} mean ± sd</th></tr>",
                *rows,
                "</table>",
                f"<table><tr><th>fraction</th><th>difference</th><th>{e(m)}</th><th>95 % CI</th><th>verdict</th></tr>",
                *diffs,
                "</table>",
                "</section>",
            ]
        )
        + "\n"
    )


# the figure

_COLOURS = {"mae": (214, 39, 40), "scratch": (31, 119, 180), "probe_mae": (255, 127, 14), "probe_random": (44, 160, 44)}


def _arm_series(summary: Mapping[str, Any], fractions: Sequence[str]) -> Series:
    """Each arm's seed-averaged value and bootstrap CI per fraction."""
    m = summary["metric"]
    out = {}
    for arm in summary["arm_labels"]:
        out[arm] = [
            (
                (summary["fractions"][f]["arms"][arm][m].get("seed_averaged") or {}).get("value"),
                (summary["fractions"][f]["arms"][arm][m].get("seed_averaged") or {}).get("ci95", [None, None]),
            )
            for f in fractions
        ]
    return out


def _difference_series(summary: Mapping[str, Any], fractions: Sequence[str]) -> Series:
    """Each paired difference and its CI per fraction."""
    m = summary["metric"]
    out: Series = {}
    for f in fractions:
        for name, comp in summary["fractions"][f]["comparisons"].items():
            c = comp[m]["mean"]
            out.setdefault(name, []).append((c["difference"], c["ci95"]))
    return out


def _value_range(series: Series, zero: bool) -> tuple[float, float]:
    """The panel's value axis: every value and CI end (and 0 for a difference panel), padded by 8 % each side."""
    values = [v for s in series.values() for p, ci in s for v in (p, *ci) if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.08 * (hi - lo)
    return lo - pad, hi + pad


def _panel(draw: Any, font: Any, box: tuple[int, int, int, int], series: Series, fractions: Sequence[str],
           labels: Mapping[str, str], title: str, zero: bool) -> None:  # fmt: skip
    """One panel: axes, ticks and title, then each series as points joined by lines with CI bars, and its legend."""
    x0, y0, x1, y1 = box
    lo, hi = _value_range(series, zero)

    def px(i: int) -> float:
        return x0 + (i + 0.5) * (x1 - x0) / len(fractions)

    def py(v: float) -> float:
        return y1 - (v - lo) / (hi - lo) * (y1 - y0)

    draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    draw.text((x0, y0 - 28), title, fill=(0, 0, 0), font=font)
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        draw.line([x0 - 4, py(v), x0, py(v)], fill=(0, 0, 0))
        draw.text((x0 - 52, py(v) - 6), f"{v:.3f}", fill=(0, 0, 0), font=font)
    for i, f in enumerate(fractions):
        draw.text((px(i) - 12, y1 + 6), f"{float(f) * 100:g}%", fill=(0, 0, 0), font=font)
    draw.text(((x0 + x1) // 2 - 60, y1 + 24), "fraction of labelled training patients", fill=(0, 0, 0), font=font)
    if zero:
        draw.line([x0, py(0.0), x1, py(0.0)], fill=(150, 150, 150))
    for k, (name, points) in enumerate(series.items()):
        colour = _COLOURS.get(name.split(" - ")[0], (80, 80, 80))
        shift = (k - (len(series) - 1) / 2) * 6
        previous = None
        for i, (v, ci) in enumerate(points):
            x = px(i) + shift
            if ci[0] is not None and ci[1] is not None:
                draw.line([x, py(ci[0]), x, py(ci[1])], fill=colour, width=2)
                draw.line([x - 4, py(ci[0]), x + 4, py(ci[0])], fill=colour, width=2)
                draw.line([x - 4, py(ci[1]), x + 4, py(ci[1])], fill=colour, width=2)
            if v is not None:
                draw.ellipse([x - 4, py(v) - 4, x + 4, py(v) + 4], fill=colour)
                if previous is not None:
                    draw.line([previous, (x, py(v))], fill=colour, width=2)
                previous = (x, py(v))
        draw.line([x0, y1 + 50 + 14 * k, x0 + 20, y1 + 50 + 14 * k], fill=colour, width=3)
        draw.text((x0 + 26, y1 + 44 + 14 * k), labels.get(name, name), fill=colour, font=font)


def write_png(summary: Mapping[str, Any], path: Path) -> Path:
    """``label_efficiency.png``: left, the metric of each arm (seed-averaged, with its bootstrap CI) against the label
    fraction; right, each paired difference with its CI and the zero line."""
    from PIL import Image, ImageDraw, ImageFont

    m = summary["metric"]
    fractions = sorted(summary["fractions"], key=float)
    width, height, margin = 1000, 480, 60
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    bottom = height - 110  # room for the axis labels and the legend below
    panels = [(margin, 40, width // 2 - 20, bottom), (width // 2 + margin, 40, width - 20, bottom)]
    labels = summary["arm_labels"]
    _panel(draw, font, panels[0], _arm_series(summary, fractions), fractions, labels,
           f"{m} (mean over classes, seeds averaged; bootstrap 95% CI)", zero=False)  # fmt: skip
    _panel(draw, font, panels[1], _difference_series(summary, fractions), fractions, labels,
           f"paired difference of {m} (95% CI)", zero=True)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def render_study(summary: Mapping[str, Any], output_dir: Path) -> None:
    """Writes ``label_efficiency.png``, ``study.md`` and ``study.html`` of ``summary`` to ``output_dir``."""
    write_png(summary, output_dir / "label_efficiency.png")
    atomic_write_text(output_dir / "study.md", study_markdown(summary))
    atomic_write_text(output_dir / "study.html", study_html(summary))
