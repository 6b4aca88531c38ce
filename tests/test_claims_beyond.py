"""X.4 (the family findings for added backbones), X.5 (Scale-MAE on FAIR1M) and the report's
backbone x finding matrix, tested both ways on planted tables."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.claims import judge
from harness.claims.families import Backbones, matrix
from harness.measurements import Measurements
from harness.report import build_report
from harness.report.html import render_html
from harness.report.markdown import render_markdown
from tests.test_claims_logic import paper_world

ENVIRONMENT = {"versions": {}, "git": None, "device": "cpu", "python": "3"}
ADDED = {"dinov3": "contrastive", "eva02_mim": "MIM", "deit": "supervised"}
GAPS = (1, 5, 10, 30)


def added_rows(dinov3_knn=0.50, eva_knn=0.10, eva_variance=60.0, dinov3_assoc=0.9) -> list[dict]:
    """Cityscapes and BDD100K rows of three added backbones, each behaving like its family."""
    city = {"dataset": "cityscapes", "n_train": 72, "layer": 12}
    rows = []
    for model, knn, linear, linear_bn, knn_200, variance in (
            ("dinov3", dinov3_knn, 0.55, None, dinov3_knn * 1.02, 2.5),
            ("eva02_mim", eva_knn, 0.30, 0.40, eva_knn * 2.2, eva_variance),
            ("deit", 0.40, 0.50, None, 0.40, 1.5)):
        rows += [{"metric": "miou", "model": model, "probe": "knn", "value": knn, **city},
                 {"metric": "miou", "model": model, "probe": "linear", "value": linear, **city},
                 {"metric": "miou", "model": model, "probe": "knn", "m": 200, "value": knn_200, **city},
                 {"metric": "variance_ratio", "model": model, "value": variance, **city}]
        if linear_bn is not None:
            rows.append({"metric": "miou", "model": model, "probe": "linear_bn", "value": linear_bn, **city})
    for model, acc in (("dinov3", dinov3_assoc), ("eva02_mim", 0.6), ("deit", 0.7)):
        rows += [{"metric": "instance_acc", "model": model, "gap": g, "value": acc - 0.001 * g,
                  "dataset": dataset} for g in GAPS for dataset in ("bdd100k_mot", "mot17")]
    return rows


def backbones(**planted) -> Backbones:
    world = pd.concat([paper_world(), pd.DataFrame(added_rows(**planted))], ignore_index=True)
    world = world[world["dataset"].isin(["cityscapes", "bdd100k_mot", "mot17"])].reset_index(drop=True)
    return Backbones.of(Measurements.from_table(world), ADDED, ADDED)


def test_family_findings_of_added_backbones_hold():
    result = judge("X.4", backbones=backbones())
    assert result.verdict == "verified", result.message
    assert any("dinov3" in label for label in result.measured)


@pytest.mark.parametrize(("planted", "failing"), [
    ({"dinov3_knn": 0.20}, "dinov3: kNN vs linear"),  # kNN no longer comparable to linear
    ({"eva_knn": 0.25}, "eva02_mim: linear vs kNN"),  # MIM k-NN not far below its linear probe
    ({"eva_variance": 5.0}, "eva02_mim: variance spectrum"),  # no high-variance features
    ({"dinov3_assoc": 0.55}, "dinov3: association"),  # below the MIM model at association
])
def test_breaking_one_family_finding_contradicts_x4_naming_it(planted, failing):
    result = judge("X.4", backbones=backbones(**planted))
    assert result.verdict == "contradicted"
    assert failing in result.message
    assert result.message.count(": assert") == 1


def test_only_supervised_additions_are_not_judged():
    only_deit = Backbones.of(backbones(), {"deit": "supervised"}, ADDED)
    result = judge("X.4", backbones=only_deit)
    assert result.verdict == "not judged" and "only supervised" in result.skip_reason


def test_missing_association_rows_leave_x4_not_judged():
    rows = [r for r in added_rows() if r["metric"] != "instance_acc"]
    world = pd.concat([paper_world()[lambda t: t["dataset"] == "cityscapes"], pd.DataFrame(rows)])
    result = judge("X.4", backbones=Backbones.of(Measurements.from_table(world.reset_index(drop=True)),
                                                 ADDED, ADDED))
    assert result.verdict == "not judged" and "instance_acc" in result.skip_reason


def scale_mae_world(ratio=80.0, pruned_gain=0.2) -> pd.DataFrame:
    rows = [{"metric": "variance_ratio", "model": "scale_mae", "value": ratio, "dataset": "fair1m"},
            {"metric": "variance_ratio", "model": "dino", "value": 2.0, "dataset": "fair1m"}]
    for kind in ("shift", "blur", "noise"):
        for level, rate in zip((1, 2, 3, 4), (0.5, 0.4, 0.3, 0.2), strict=True):
            common = {"metric": "rate", "model": "scale_mae", "outcome": "original", "corruption": kind,
                      "level": level, "dataset": "fair1m"}
            rows += [{**common, "value": rate}, {**common, "variant": "pruned", "value": rate + pruned_gain}]
    return pd.DataFrame(rows)


def test_scale_mae_x5_both_ways():
    assert judge("X.5", scale_mae_world()).verdict == "verified"
    assert judge("X.5", scale_mae_world(ratio=15.0)).verdict == "contradicted"  # 15 < 10 x 2
    assert judge("X.5", scale_mae_world(pruned_gain=-0.05)).verdict == "contradicted"
    without_weights = Measurements([], unavailable={"scale_mae": "Scale-MAE: put scalemae-vitlarge-800.pth in ..."})
    skipped = judge("X.5", without_weights)
    assert skipped.verdict == "skipped" and "scalemae-vitlarge-800.pth" in skipped.skip_reason


def test_the_matrix_shows_every_model_with_its_familys_thresholds():
    cells = matrix({**ADDED, "dino": "contrastive", "mae": "MIM"}, judge_thresholds(), backbones())
    by = {(c["model"], c["finding"]): c for c in cells}
    assert by["dinov3", "knn_over_linear"]["holds"] is True and by["dinov3", "knn_over_linear"]["relation"] == ">= 0.75"
    assert by["eva02_mim", "pruning_gain"]["holds"] is True and by["eva02_mim", "pruning_gain"]["relation"] == ">= 1.5"
    assert by["dinov3", "pruning_gain"]["relation"] == "<= 1.1"
    assert by["deit", "knn_over_linear"]["holds"] is None and by["deit", "knn_over_linear"]["value"] == pytest.approx(0.8)
    assert by["mae", "linear_over_knn"]["holds"] is True and by["mae", "linear_over_knn"]["paper_model"]


def judge_thresholds() -> dict:
    from harness.claims import catalogue

    return catalogue()["X.4"].thresholds


def test_the_report_renders_the_matrix_grouped_by_family():
    world = pd.concat([paper_world(), pd.DataFrame(added_rows())], ignore_index=True)
    families = {"dino": "contrastive", "dinov2": "contrastive", "mae": "MIM", "simmim": "MIM",
                "supervised": "supervised", **ADDED}
    report = build_report([judge("X.4", backbones=backbones())], run_info={"families": families},
                          rows=world.to_dict(orient="records"), environment=ENVIRONMENT)
    markdown = render_markdown(report)
    assert "## Backbone x finding matrix" in markdown
    table = markdown.split("## Backbone x finding matrix")[1].split("\n## ")[0]
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[1].strip() for line in lines][:5] == ["dino", "dinov2", "mae", "simmim", "supervised"]
    assert "| dinov3 " in table and "✓" in table
    page = render_html(report)
    assert 'id="matrix"' in page and "rgb(" in page


CHROMIUM = __import__("shutil").which("chromium") or __import__("shutil").which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_the_matrix_heat_map_renders_in_headless_chromium(tmp_path):
    """The heat map as a person sees it: a screenshot with green (holds) and red (does not hold)
    cells."""
    import subprocess

    import numpy as np
    from PIL import Image

    from harness.report.html import STYLE
    from harness.report.matrix import render_html as matrix_html

    cells = matrix({**ADDED, "dino": "contrastive", "mae": "MIM"}, judge_thresholds(), backbones(eva_variance=5.0))
    page = tmp_path / "matrix.html"
    page.write_text(f"<html><head><style>{STYLE}</style></head><body>{matrix_html(cells)}</body></html>")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1250,500",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    green = ((pixels[:, 1] - pixels[:, 0] > 40) & (pixels[:, 1] - pixels[:, 2] > 40)).sum()
    red = ((pixels[:, 0] - pixels[:, 1] > 40) & (pixels[:, 0] - pixels[:, 2] > 40)).sum()
    assert green > 2000 and red > 2000, (green, red)
