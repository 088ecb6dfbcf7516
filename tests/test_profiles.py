"""profiles/slurm agrees with the rules: the GPU rules it names (comment and the gpu=0 override line) and the
paper-scale resources it gives are derived from the `gpu=1` resources declared in Snakefile and rules/*.smk,
so a rule that gains, loses or renames its GPU request fails here until the profile follows."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles/slurm/config.yaml"
_RULE = re.compile(r"^(\s*)(?:rule|checkpoint)\s+(\w+)\s*:")   # indented too: rules under `if ...:`
_RESOURCE = re.compile(r"^(\w+)\s*=\s*([^,#]+)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _body(lines: list[str], i: int) -> list[str]:
    """The lines indented under lines[i] (blank and comment lines included), up to the first that is not."""
    body = []
    for line in lines[i + 1:]:
        if line.strip() and not line.lstrip().startswith("#") and _indent(line) <= _indent(lines[i]):
            break
        body.append(line)
    return body


def workflow_rules() -> dict[str, dict[str, str]]:
    """{rule name: {resource: value text}} of every rule in the Snakefile and rules/*.smk."""
    rules = {}
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = _RULE.match(line)
            if not m:
                continue
            name, block = m.group(2), _body(lines, i)
            assert name not in rules, f"rule {name} defined twice"
            res = next((_body(block, j) for j, ln in enumerate(block) if ln.strip() == "resources:"), [])
            rules[name] = {k: v.strip() for k, v in (_RESOURCE.match(ln.strip()).groups() for ln in res
                                                        if _RESOURCE.match(ln.strip()))}
    return rules


RULES = workflow_rules()
GPU_RULES = {name for name, res in RULES.items() if res.get("gpu") == "1"}


def profile_comment() -> str:
    """The profile's comment lines joined into one text (so a wrapped list still reads as one)."""
    lines = [ln.strip() for ln in PROFILE.read_text().splitlines() if ln.strip().startswith("#")]
    return " ".join(ln.lstrip("#").strip() for ln in lines)


@pytest.fixture(scope="module")
def profile():
    return yaml.safe_load(PROFILE.read_text())


def test_rules_are_parsed():
    # Sanity: the parser sees the rules and their resources (train has always been a GPU rule).
    assert {"all", "train", "represent", "attack", "score", "plot", "project_oos"} <= set(RULES)
    assert "train" in GPU_RULES and "score" not in GPU_RULES and "all" not in GPU_RULES
    assert RULES["train"]["runtime"].isdigit() and RULES["train"]["mem_mb"].isdigit()


def test_parser_sees_every_rule_snakemake_sees(tmp_path):
    # The parser above is a regex reading; snakemake's own list (default config) keeps it honest.
    snakemake = Path(sys.executable).with_name("snakemake")
    out = subprocess.run([str(snakemake), "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--list-rules"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listed = {ln.strip() for ln in out.stdout.splitlines() if re.fullmatch(r"\w+", ln.strip())}
    assert listed == set(RULES)


def test_profile_comment_names_exactly_the_gpu_rules():
    m = re.search(r"Rules that want a GPU \(([^)]*)\)", profile_comment())
    assert m, "profiles/slurm/config.yaml should list the GPU rules: 'Rules that want a GPU (a, b, ...)'"
    named = {n.strip() for n in m.group(1).split(",") if n.strip()}
    assert named == GPU_RULES


def test_profile_gpu_override_names_exactly_the_gpu_rules():
    lines = [ln for ln in PROFILE.read_text().splitlines() if "--set-resources" in ln and ":gpu=0" in ln]
    assert len(lines) == 1, "one `--set-resources <rule>:gpu=0 ...` line for clusters without GPUs"
    named = re.findall(r"(\w+):gpu=0", lines[0])
    assert len(named) == len(set(named)) and set(named) == GPU_RULES


def test_every_gpu_rule_has_paper_scale_resources(profile):
    set_resources = profile.get("set-resources") or {}
    defaults = profile["default-resources"]
    for rule in sorted(GPU_RULES):
        res = set_resources.get(rule)
        assert res and "runtime" in res and "mem_mb" in res, f"set-resources lacks runtime/mem_mb for {rule}"
        # Paper scale: never below what the rule itself asks for (tiny-config values) or the defaults.
        assert res["runtime"] >= max(int(RULES[rule]["runtime"]), defaults["runtime"]), rule
        assert res["mem_mb"] >= max(int(RULES[rule]["mem_mb"]), defaults["mem_mb"]), rule


def test_set_resources_name_existing_rules(profile):
    # A renamed or merged rule must not leave a stale entry that snakemake would silently ignore.
    assert set(profile.get("set-resources") or {}) <= set(RULES)
