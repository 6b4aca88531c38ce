"""The claims report: JSON (schema, strict JSON), Markdown, self-contained HTML with figures."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pandas as pd
import pytest

from harness.claims import catalogue, judge, skipped
from harness.report import SCHEMA_VERSION, ReportError, build_report, load_report, write_report
from harness.report.figures import FIGURES, draw_all
from harness.report.html import render_html
from harness.report.markdown import render_markdown
from tests.test_claims_logic import BREAKS, paper_world

ENVIRONMENT = {"versions": {"torch": "2.x"}, "git": None, "device": "cpu", "python": "3.11"}


@pytest.fixture(scope="module")
def full_report() -> dict:
    """Every paper claim judged on the paper-like world (S3.12 broken), with one skip."""
    world = paper_world()
    results = [judge(cid, BREAKS["S3.12"](world) if cid == "S3.12" else world)
               for cid in catalogue() if not cid.startswith("X.") and cid != "S6.6"]
    results.append(skipped("S6.6", "MOT17 not found under DATA/mot17"))
    run_info = {"seeds": {"root": 0}, "conventions": {"blur": "centred box kernel on the 224 px tile"}}
    return build_report(results, run={"profile": "paper", "models": ["dino"]}, run_info=run_info,
                        rows=world.to_dict(orient="records"), environment=ENVIRONMENT)


def test_json_report_has_schema_run_and_every_claim(full_report):
    text = json.dumps(full_report, allow_nan=False)  # strict JSON: no NaN anywhere
    report = json.loads(text)
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["device"] == "cpu" and report["run_info"]["seeds"] == {"root": 0}
    ids = [c["id"] for c in report["claims"]]
    assert ids == list(catalogue())  # catalogue order, X.1-X.5 listed as not run
    verdicts = {c["id"]: c["verdict"] for c in report["claims"]}
    assert verdicts["S3.12"] == "contradicted" and verdicts["S6.6"] == "skipped" and verdicts["S3.1"] == "verified"
    assert report["summary"] == {"verified": 31, "contradicted": 1, "skipped": 1, "not run": 5}
    s48 = next(c for c in report["claims"] if c["id"] == "S4.8")
    assert s48["rows"] and {"metric", "model", "value"} <= set(s48["rows"][0])
    assert len(report["rows"]) >= len(paper_world())  # every row of the run once


def test_claims_without_result_are_listed_as_not_run():
    report = build_report([], environment=ENVIRONMENT)
    assert {c["verdict"] for c in report["claims"]} == {"not run"}
    assert len(report["claims"]) == 38


def test_the_run_conventions_are_recorded_in_markdown_and_html(full_report):
    assert "## Conventions of this run" in render_markdown(full_report)
    assert "centred box kernel on the 224 px tile" in render_markdown(full_report)
    assert "centred box kernel on the 224 px tile" in render_html(full_report)


def test_environment_is_measured_when_not_given():
    report = build_report([])
    assert set(report["versions"]) >= {"torch", "timm", "transformers", "faiss", "numpy", "sklearn", "harness"}
    assert report["versions"]["numpy"]
    assert report["git"] is None or len(report["git"]) == 40
    assert report["device"] == "cpu" or report["device"].startswith("cuda")


def test_markdown_groups_claims_by_section(full_report):
    text = render_markdown(full_report)
    for title in ("## S3 Few-shot patch classification", "## S4 Why MIM models", "## S5 Instance", "## S6 Object"):
        assert title in text
    line = next(row for row in text.splitlines() if row.startswith("| S3.8 "))
    assert "verified" in line and "bus_iou_layer12: 0.729" in line
    assert "| S6.6 " in text and "MOT17 not found" in text
    assert "### S3.12 — contradicted" in text


class PageScan(HTMLParser):
    """Collects images, figures and every attribute that could load something."""

    def __init__(self):
        super().__init__()
        self.images, self.figures, self.external, self.tags = [], 0, [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "figure":
            self.figures += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            value = attrs.get(name)
            if value and not value.startswith(("data:", "#")):
                self.external.append((tag, name, value))


def test_html_is_self_contained_with_embedded_figures(full_report):
    page = render_html(full_report)
    scan = PageScan()
    scan.feed(page)
    assert scan.figures == len(FIGURES)  # every figure drawn from the paper-like world
    assert scan.images and all(src.startswith("data:image/png;base64,") for src in scan.images)
    assert len(scan.images) == scan.figures
    assert scan.external == []
    assert not {"script", "link", "iframe"} & scan.tags
    assert "url(" not in page and "@import" not in page


def test_missing_data_omits_figures_with_a_note():
    world = paper_world()
    pruning = world[(world["model"] == "mae") & (world["probe"] == "knn") & (world["n_train"] == 72)
                    & (world["layer"].fillna(12) == 12) & (world["corruption"].fillna("none") == "none")]
    only_s4 = [judge("S4.2", pruning), judge("S4.6", world[world["metric"] == "r2"])]
    assert [r.verdict for r in only_s4] == ["verified", "verified"]
    page = render_html(build_report(only_s4, environment=ENVIRONMENT))
    scan = PageScan()
    scan.feed(page)
    assert scan.figures == 2  # pruning curve and the S4.6/S4.7 bars
    assert "Fig 7: association accuracy by frame gap (S6): omitted (no association accuracy by frame gap" in page


def test_odd_rows_never_crash_the_page():
    garbage = [judge("S3.3", pd.DataFrame([
        {"metric": "miou", "model": "mae", "probe": "knn", "value": 0.06, "layer": "twelve"},
        {"metric": "miou", "model": "mae", "probe": "linear_bn", "value": 0.4},
        {"metric": "rate", "model": "mae", "value": 0.4, "outcome": "original"},
        {"metric": "instance_acc", "model": "x", "value": 0.4, "gap": None}]))]
    page = render_html(build_report(garbage, environment=ENVIRONMENT))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert all(drawn.png is None for drawn in draw_all({"claims": []}))


def test_write_and_load_round_trip(tmp_path, full_report):
    paths = write_report(full_report, tmp_path / "out")
    assert [p.name for p in paths] == ["claims.json", "claims.md", "claims.html"]
    assert load_report(paths[0])["claims"] == full_report["claims"]


def test_load_report_rejects_other_schemas_and_non_reports(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema_version": 0, "claims": []}))
    with pytest.raises(ReportError, match=f"schema_version 0; this harness reads version {SCHEMA_VERSION}"):
        load_report(old)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ReportError, match="invalid JSON"):
        load_report(bad)
    with pytest.raises(ReportError, match="cannot read"):
        load_report(tmp_path / "absent.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ReportError, match="no 'schema_version'"):
        load_report(other)


def test_harness_report_rerenders_from_json(tmp_path, full_report):
    from harness.cli import main

    source = write_report(full_report, tmp_path / "run", json_only=True)[0]
    assert main(["report", str(source), "--out", str(tmp_path / "again")]) == 0
    assert "## S5 Instance" in (tmp_path / "again" / "claims.md").read_text()
    assert (tmp_path / "again" / "claims.html").read_text().count("data:image/png;base64,") == len(FIGURES)
    (tmp_path / "v9.json").write_text(json.dumps({"schema_version": 9, "claims": []}))
    assert main(["report", str(tmp_path / "v9.json")]) == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(tmp_path, full_report):
    page = tmp_path / "claims.html"
    page.write_text(render_html(full_report))
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,3000", page.as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000  # a page with figures, not a blank shot
