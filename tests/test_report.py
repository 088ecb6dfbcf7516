"""The Snakemake HTML report (issue 16): a tiny run of all five studies and the matrix (tests/configs/report_tiny.yaml),
`snakemake --report`, and the report opened in a real headless Chromium through Selenium: no console errors, every
study's category with a figure that loads, the matrix, and the run cost per rule read from the benchmark files.

Debian's chromium and chromium-driver are installed when missing and this is root (tests/system_packages.py); the
driver is /usr/bin/chromedriver, so Selenium Manager downloads nothing. Screenshots go to $ADVPIPE_TEST_ARTIFACTS
(default test-artifacts/ in the repository).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from advpipe.pipeline.run_cost import COLUMNS, pattern_regex, read_benchmark, rule_of, run_cost_table
from system_packages import ensure_debian_packages, which
from wf import ROOT

CATEGORIES = {
    "0 Cross-study": ["results/figures/matrix/matrix.png", "results/figures/report/run_cost.png"],
    "1 Representation projection (vrapi)": ["results/figures/vrapi/cnn/fgsm/pca/non_adversarial_with_legend.png"],
    "2 Adversarial explanations": ["results/figures/ara/cnn.png", "results/figures/explain/cnn.png"],
    "3 Label representations": ["results/figures/labels/label_images.png",
                                "results/figures/labels/accuracy_vs_eps_fgsm.png"],
    "4 LESCI": ["results/figures/lesci/cnn_lesci/grid.png"],
    "5 Gradient direction": ["results/figures/direction/digits.png"],
}
CHROMEDRIVER = "/usr/bin/chromedriver"


def artifacts() -> Path:
    folder = ROOT / os.environ.get("ADVPIPE_TEST_ARTIFACTS", "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- run_cost on files written here (fast) --------------------------------------------------------------------------

def _bench(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\n" + "".join(f"{s}\t0:00:01\t{rss}\t1\n" for s, rss in rows))


def test_pattern_regex_matches_snakemake_patterns():
    assert pattern_regex("benchmarks/plot/{model}/{attack}/{projection}.tsv").match("benchmarks/plot/a/b/pca.tsv")
    assert not pattern_regex("benchmarks/ara/{model}.tsv").match("benchmarks/ara_table.tsv")
    assert pattern_regex("benchmarks/x/{n,[0-9]+}.tsv").match("benchmarks/x/12.tsv")
    assert not pattern_regex("benchmarks/x/{n,[0-9]+}.tsv").match("benchmarks/x/ab.tsv")
    # the most literal pattern wins where several match
    patterns = {"any": "benchmarks/{x}/{y}.tsv", "labels": "benchmarks/labels/set/{label}.tsv"}
    assert rule_of("benchmarks/labels/set/lowdim.tsv", patterns) == "labels"
    assert rule_of("benchmarks/gone/m.tsv", {}) == "[gone]"


def test_run_cost_table_sums_each_rules_files(tmp_path):
    root = tmp_path / "benchmarks"
    _bench(root / "train" / "a.tsv", [("10.0", "500.5")])
    _bench(root / "train" / "b.tsv", [("2.0", "NA"), ("4.0", "NA")])  # two repeats: their mean, no RSS measured
    _bench(root / "ara_table.tsv", [("1.5", "80")])
    _bench(root / "old_rule" / "x.tsv", [("7", "-")])
    table = run_cost_table(root, {"train": "benchmarks/train/{model}.tsv", "ara_table": "benchmarks/ara_table.tsv",
                                  "ara": "benchmarks/ara/{model}.tsv"})
    assert list(table.columns) == COLUMNS
    rows = table.set_index("rule")
    assert list(table["rule"]) == ["train", "[old_rule]", "ara_table"]  # costliest first
    assert rows.loc["train", "jobs"] == 2 and rows.loc["train", "total_s"] == 13.0
    assert rows.loc["train", "mean_s"] == 6.5 and rows.loc["train", "max_s"] == 10.0
    assert rows.loc["train", "max_rss_mb"] == 500.5
    assert pd.isna(rows.loc["[old_rule]", "max_rss_mb"])
    assert rows.loc["ara_table", "total_s"] == 1.5


def test_a_file_that_is_not_a_benchmark_is_named(tmp_path):
    bad = tmp_path / "benchmarks" / "x.tsv"
    bad.parent.mkdir()
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match=str(bad)):
        read_benchmark(bad)


# ---- the real run, report and browser ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report_run(five_studies_run):
    return five_studies_run


@pytest.mark.slow
def test_run_cost_has_every_job_that_ran(report_run):
    """Every rule that ran (but `all`, a local rule without a benchmark, and run_cost itself, whose benchmark is
    written after it reads the folder) has one benchmark file per job, and the table sums them."""
    workdir, counts = report_run
    table = pd.read_csv(workdir / "results/report/run_cost.csv").set_index("rule")
    expected = {rule: n for rule, n in counts.items() if rule not in ("all", "run_cost", "total")}
    assert expected, counts
    assert table["jobs"].to_dict() == expected
    files = sorted((workdir / "benchmarks").rglob("*.tsv"))
    seconds = sum(read_benchmark(p)[0] for p in files if p.name != "run_cost.tsv")
    assert table["total_s"].sum() == pytest.approx(seconds, abs=0.01 * len(table))
    assert (workdir / "results/figures/report/run_cost.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def browser():
    why = ensure_debian_packages(["chromium", "chromium-driver"], ["chromium", "chromedriver"])
    if why:
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def _click(driver, xpath: str) -> None:
    driver.find_element(By.XPATH, xpath).click()


def _show_figure(driver, category: str, path: str) -> dict:
    """Navigate the report as a reader does: the category in the menu, the figure's subcategory, the figure's eye
    button; returns the displayed image's (src prefix, natural width) and the figure's caption (info button)."""
    _click(driver, "//nav//ol/li[1]/a")  # the breadcrumbs' home: back to the menu
    _click(driver, f"//nav//a[normalize-space()={_xpath_str(category)}]")
    subcategory = driver.execute_script(
        "const c = categories[arguments[0]]; return Object.keys(c).find(s => c[s].includes(arguments[1]));",
        category, path)
    assert subcategory is not None, f"{path} is not in category {category!r} of the report"
    if len(driver.execute_script("return Object.keys(categories[arguments[0]])", category)) > 1:
        _click(driver, f"//nav//ul//a[normalize-space()={_xpath_str(subcategory)}]")
    row = f"//nav//tr[td[normalize-space()={_xpath_str(path)}]]"
    _click(driver, f"{row}//a[@iconname='eye']")
    img = WebDriverWait(driver, 10).until(lambda d: next(
        (i for i in d.find_elements(By.XPATH, "//div[@id='app']/div/div[last()]//img")
         if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)), None))
    shown = {"src": img.get_attribute("src")[:40], "width": driver.execute_script("return arguments[0].naturalWidth", img)}
    _click(driver, f"{row}//a[@iconname='information-circle']")
    shown["info"] = driver.find_element(By.TAG_NAME, "nav").text
    return shown


def _xpath_str(text: str) -> str:
    return f'"{text}"' if '"' not in text else f"'{text}'"


@pytest.mark.slow
def test_report_opens_in_chromium_with_every_study(report_run, browser):
    workdir, _ = report_run
    report = workdir / "report.html"
    assert report.stat().st_size > 100_000
    browser.get(report.as_uri())
    WebDriverWait(browser, 20).until(lambda d: "RESULTS" in d.find_element(By.TAG_NAME, "nav").text.upper())
    folder = artifacts()
    browser.save_screenshot(str(folder / "report_start.png"))
    menu = browser.find_element(By.TAG_NAME, "nav").text
    categories = browser.execute_script("return categories")
    problems = []
    # the workflow's description (report/workflow.rst, the Snakefile's `report:`) on the start page
    if "five adversarial-robustness studies" not in browser.find_element(By.ID, "app").text:
        problems.append("no workflow description (report/workflow.rst) on the start page")
    for category, figures in CATEGORIES.items():
        if category not in menu or category not in categories:
            problems.append(f"category {category!r} not in the report's menu")
            continue
        for path in figures:
            try:
                shown = _show_figure(browser, category, path)
            except Exception as err:  # collect every missing figure, not only the first
                problems.append(f"{category}: {path}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                continue
            if not shown["src"].startswith("data:image/png") or shown["width"] < 100:
                problems.append(f"{category}: {path}: shown as {shown}")
            if "DESCRIPTION" not in shown["info"].upper():
                problems.append(f"{category}: {path}: no caption in its info panel")
            browser.save_screenshot(str(folder / f"report_{Path(path).parent.name}_{Path(path).stem}.png"))
    # the matrix, its flags and the references as tables (HTML results, shown inline)
    listed = {p for subcategories in categories.get("0 Cross-study", {}).values() for p in subcategories}
    for table in ("results/matrix/matrix.html", "results/matrix/flags.html", "results/report/references.html"):
        if table not in listed:
            problems.append(f"{table} is not in the report's 0 Cross-study category")
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    assert not problems, "\n".join(problems)


def test_a_robustness_curve_goes_under_the_study_that_asks_for_it():
    from types import SimpleNamespace as W

    from advpipe.pipeline.report import robustness_category
    config = {"models": {"cnn": {}, "cnn_lesci": {"defense": {"lesci": {"base": "base"}}}, "base": {},
                         "lab": {"label": {"name": "x"}}, "other": {}},
              "direction": {"groups": {"g": {"models": ["cnn"], "attacks": ["pgd"]}}}}
    category = robustness_category(config)
    assert category(W(model="cnn", attack="pgd")) == "5 Gradient direction"
    assert category(W(model="cnn", attack="fgsm")) == "0 Cross-study"
    assert category(W(model="lab", attack="pgd")) == "3 Label representations"
    assert category(W(model="cnn_lesci", attack="pgd")) == "4 LESCI"
    assert category(W(model="base", attack="pgd")) == "4 LESCI"
    assert category(W(model="other", attack="pgd")) == "0 Cross-study"
