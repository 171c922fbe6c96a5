"""The study rendered: study.md and study.html from a summary, and the HTML report's section of the study."""

from __future__ import annotations

import pytest

from shared_networks.study.orchestrate import run_study
from shared_networks.study.render import study_html, study_markdown

SUMMARY = {
    "metric": "dice",
    "task": "segmentation",
    "n_test": 4,
    "confidence": 0.95,
    "n_resamples": 10,
    "bootstrap_seed": 0,
    "notes": ["a <note>"],
    "arm_labels": {"mae": "fine-tuned, MAE encoder", "scratch": "fine-tuned, from scratch"},
    "fractions": {
        "1": {
            "n_train": 8,
            "n_train_groups": 4,
            "arms": {
                "mae": {"seeds": [0, 1], "dice": {"mean": 0.71234, "sd": 0.01}},
                "scratch": {"seeds": [0, 1], "dice": {"mean": 0.6, "sd": None}},
            },
            "comparisons": {
                "mae - scratch": {"dice": {"mean": {"difference": 0.11234, "ci95": [0.05, None], "verdict": "x & y"}}}
            },
        }
    },
}


def test_markdown_and_html_tables():
    text = study_markdown(SUMMARY)
    assert text.startswith("## Study: MAE against scratch\n\nTest split: 4 cases; dice (mean over classes)")
    assert "| 1 | 8 (4) | fine-tuned, MAE encoder | 0.712 ± 0.010 | 2 |" in text
    assert "| 1 | 8 (4) | fine-tuned, from scratch | 0.600 | 2 |" in text
    assert "| 1 | mae - scratch | 0.112 | [0.050, -] | x & y |" in text and "Note: a <note>" in text
    page = study_html({**SUMMARY, "tune_folds": 3, "tune_fold": 2})
    assert page.startswith('<section id="study">') and page.endswith("</section>\n")
    assert "fold 2 of 3" in page and "a &lt;note&gt;" in page and "<td>x &amp; y</td>" in page


def test_the_report_shows_the_study(tmp_path, fake_bundle, fake_runner):
    from shared_networks.tools.report import study_fragment

    bundle = fake_bundle(tmp_path / "bundle")
    out = tmp_path / "study"
    run_study(bundle, "/d", out, runner=fake_runner(), fractions="1,0.5", seeds=0, n_resamples=50)
    files_dir, copies = tmp_path / "report_files", []
    fragment = study_fragment(out, files_dir, "ct", copies)
    assert copies == [(out / "label_efficiency.png", files_dir / "ct_label_efficiency.png")]
    assert 'src="report_files/ct_label_efficiency.png"' in fragment and 'src="label_efficiency.png"' not in fragment
    assert '<section id="ct-study">' in fragment and "<h3>Study: MAE against scratch</h3>" in fragment
    assert "<h2>" not in fragment
    with pytest.raises(ValueError, match="no study.html"):
        study_fragment(tmp_path / "nothing", files_dir, "ct", [])


def test_the_label_efficiency_table_follows_the_differences():
    efficiency = {
        "0.25": {
            "comparison": "mae at 0.25 - scratch at 1",
            "dice": {"mean": {"difference": -0.0123, "ci95": [-0.04, 0.01], "verdict": "within <noise>"}},
        }
    }
    assert "Label efficiency" not in study_markdown(SUMMARY)
    text = study_markdown({**SUMMARY, "label_efficiency": efficiency})
    assert text.index("| 1 | mae - scratch |") < text.index("Label efficiency")
    assert "| mae at 0.25 - scratch at 1 | -0.012 | [-0.040, 0.010] | within <noise> |" in text
    page = study_html({**SUMMARY, "label_efficiency": efficiency})
    assert (
        "<td>mae at 0.25 - scratch at 1</td><td>-0.012</td><td>[-0.040, 0.010]</td><td>within &lt;noise&gt;</td>"
        in page
    )
