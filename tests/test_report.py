"""Forecast reports: every shipped scenario's report builds, parses, has its sections, asks
for nothing over the network, and renders in a real headless browser without errors."""

from __future__ import annotations

import io
from datetime import date
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import ROOT

import funnelsim
from funnelsim import report
from funnelsim.report import Numbers

SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
FETCHING = {"src", "href", "xlink:href", "action", "poster", "data", "srcset", "background"}
needs_chromium = pytest.mark.skipif(
    report.find_chromium() is None,
    reason="no Chromium on this machine (apt install chromium; .ci/run installs it)",
)


class Page(HTMLParser):
    """What a report is made of: tags, section ids, fetching attributes, styles, text."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.sections: list[str] = []
        self.links: list[str] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id", ""))
        self.links += [v for k, v in attrs.items() if k in FETCHING and v is not None]
        if "style" in attrs:
            self.styles.append(attrs["style"] or "")
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        else:
            self.text.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def external_references(page: Page) -> list[str]:
    """Anything that would make the browser fetch something that is not in the file."""
    bad = [link for link in page.links if not link.startswith(("#", "data:"))]
    for css in page.styles:
        if "@import" in css:
            bad.append("@import")
        for start in range(len(css)):
            if css.startswith("url(", start):
                target = css[start + 4 :].lstrip("'\" ")
                if not target.startswith(("#", "data:")):
                    bad.append(css[start : start + 40])
    bad += [tag for tag in page.tags if tag in ("script", "link", "iframe", "object", "embed")]
    return bad


@pytest.fixture(scope="module")
def reports() -> dict[str, tuple[funnelsim.Scenario, str]]:
    out = {}
    for path in SCENARIOS:
        scenario = funnelsim.load_scenario(path)
        forecast = funnelsim.run(scenario, replications=40, workers=1)
        out[path.stem] = (scenario, report.build_report(scenario, forecast))
    return out


@pytest.mark.parametrize("name", [p.stem for p in SCENARIOS])
def test_every_shipped_scenario_has_a_complete_self_contained_report(reports, name):
    scenario, text = reports[name]
    page = parse(text)
    expected = ["summary", "revenue", "funnel", "assumptions", "method"]
    if scenario.repeat is not None:
        expected.append("repeat")
    if scenario.costs is not None:
        expected.append("economics")
    if scenario.sales_team is not None:
        expected.append("team")
    assert sorted(page.sections) == sorted(expected)
    for metric in scenario.targets or {}:  # the probability of reaching each target
        assert f"P({report._metric_name(metric)} target)" in " ".join(page.text)
    assert page.tags.count("svg") >= 2  # the fan chart and the funnel at least
    assert external_references(page) == []
    words = " ".join(page.text)
    assert scenario.title in words
    # the method names what reproduces the numbers
    for item in (scenario.sha256, str(scenario.seed), "40"):
        assert item in words


def test_the_check_for_external_references_can_fail():
    page = parse(
        "<html><head><style>body{background:url(https://x.example/a.png)}</style>"
        "<link rel=stylesheet href='https://x.example/s.css'></head><body>"
        "<img src='http://x.example/i.png'><svg><use xlink:href='#g1'/></svg></body></html>"
    )
    bad = external_references(page)
    assert "http://x.example/i.png" in bad and "https://x.example/s.css" in bad
    assert any("url(https://x.example" in b for b in bad) and "link" in bad
    assert "#g1" not in bad


def test_the_same_forecast_gives_the_same_report():
    scenario = funnelsim.load_scenario(ROOT / "scenarios" / "agency.yaml")
    forecast = funnelsim.run(scenario, replications=30, workers=1)
    one = report.build_report(scenario, forecast, prepared=date(2027, 1, 5))
    two = report.build_report(scenario, forecast, prepared=date(2027, 1, 5))
    assert one == two


def test_numbers_are_formatted_for_people():
    usd, eur, sek = Numbers("USD"), Numbers("EUR"), Numbers("SEK")
    assert usd.money(3_793_352.4) == "$3.79M"
    assert usd.money(23_456.7) == "$23,500"
    assert usd.money(-1_234) == "−$1,230"
    assert usd.money_exact(1_234_567.8) == "$1,234,568"
    assert eur.money(58.2) == "€58"
    assert sek.money(1_000) == "SEK 1,000"
    assert usd.money(None) == "n/a" and usd.money(float("nan")) == "n/a"
    assert usd.money(0.0) == "$0" and usd.money(-1e-9) == "$0" and usd.money(7.5) == "$7.50"
    assert Numbers.share(0.4137) == "41.4%"
    assert Numbers.month("2027-03") == "Mar 2027"
    assert Numbers.count(44_523.6) == "44,524"


def test_the_summary_states_the_forecast_in_plain_words(reports):
    scenario, text = reports["b2b_saas"]
    words = "".join(parse(text).text)
    assert "can expect about $" in words and "in 90% of the simulated futures" in words
    assert "Jan 2027" in words  # months by name


@needs_chromium
def test_the_report_renders_in_a_real_browser(tmp_path, reports):
    import matplotlib.image
    from browser import render

    _, text = reports["saas_sales_team"]
    path = tmp_path / "report.html"
    path.write_text(text, encoding="utf-8")
    page = render(path)
    pixels = matplotlib.image.imread(io.BytesIO(page.screenshot), format="png")[..., :3]
    background = np.median(pixels.reshape(-1, 3), axis=0)
    inked = np.abs(pixels - background).sum(axis=2) > 0.1
    assert inked.mean() > 0.03, f"the screenshot is nearly blank ({inked.mean():.1%} inked)"
    assert page.console_errors == []
    assert page.requests == [path.resolve().as_uri()]
    # the harness does see errors, requests and blank pages (so the checks above can fail)
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><img src='http://example.invalid/x.png'>"
        "<script>console.error('boom')</script></body></html>"
    )
    seen = render(bad)
    assert "boom" in seen.console_errors and "http://example.invalid/x.png" in seen.requests
    blank = matplotlib.image.imread(io.BytesIO(seen.screenshot), format="png")[..., :3]
    assert (np.abs(blank - np.median(blank.reshape(-1, 3), axis=0)).sum(axis=2) > 0.1).mean() < 0.03


@needs_chromium
def test_the_pdf_has_the_same_content(tmp_path, reports):
    _, text = reports["b2b_saas"]
    written = report.write_report(text, tmp_path / "b2b.html", pdf=True)
    assert [p.name for p in written] == ["b2b.html", "b2b.pdf"]
    pdf = (tmp_path / "b2b.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert _pages(pdf) >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b2b.html", "b2b.pdf"]  # no leftovers


def _pages(pdf: bytes) -> int:
    import re

    return len(re.findall(rb"/Type\s*/Page[^s]", pdf))


def test_without_a_browser_the_pdf_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNNELSIM_CHROMIUM", str(tmp_path / "no-such-browser"))
    with pytest.raises(report.ReportError, match="apt install chromium"):
        report.write_report("<html></html>", tmp_path / "out" / "r.html", pdf=True)
    assert list((tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------- the command


def invoke(*args: str):
    from click.testing import CliRunner

    from funnelsim.cli import main

    return CliRunner().invoke(main, list(args))


def test_report_command_with_levers_and_variants(tmp_path):
    out = tmp_path / "client" / "agency.html"
    result = invoke(
        "report",
        str(ROOT / "scenarios" / "agency.yaml"),
        "--levers",
        "--variant",
        "bigger:deal_value.median=30000",
        "-n",
        "30",
        "--workers",
        "1",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert f"Wrote {out}" in result.output
    page = parse(out.read_text(encoding="utf-8"))
    assert {"levers", "variants"} <= set(page.sections)
    words = "".join(page.text)
    assert "Larger deals" in words and "Bigger" in words
    assert "funnelsim report" in words and "--levers" in words  # how to reproduce it


def test_report_goes_to_reports_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("report", str(ROOT / "scenarios" / "agency.yaml"), "-n", "20")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "agency.html").is_file()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--step", "10%"], "--step: applies to the levers"),
        (["-o", "report.txt"], "expected a file name ending in .html"),
        (["--set", "channels.nowhere.leads_per_month=3"], "nowhere"),
        (["--levers", "--step", "0"], "--step"),
        (["--variant", "broken"], "NAME:PATH=VALUE"),
    ],
)
def test_bad_report_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    result = invoke("report", str(ROOT / "scenarios" / "agency.yaml"), "-n", "5", *args)
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_pdf_without_a_browser_exits_2_before_simulating(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUNNELSIM_CHROMIUM", str(tmp_path / "none"))
    result = invoke("report", str(ROOT / "scenarios" / "agency.yaml"), "--pdf")
    assert result.exit_code == 2
    assert "apt install chromium" in result.output
    assert list(tmp_path.iterdir()) == []
