"""What the Snakemake report needs from the config and the workflow (issue 16): the study a robustness curve
belongs to, and each rule's benchmark file pattern for the run cost. Closures over the config or the workflow, so
that the rule files hold no functions (snakemake --lint) and are read when the DAG is built, not when parsed."""
from __future__ import annotations

from typing import Any, Callable, Mapping

VRAPI = "1 Representation projection (vrapi)"
EXPLANATIONS = "2 Adversarial explanations"
LABELS = "3 Label representations"
LESCI = "4 LESCI"
DIRECTION = "5 Gradient direction"
CROSS_STUDY = "0 Cross-study"


def robustness_category(config: Mapping[str, Any]) -> Callable[[Any], str]:
    """wildcards (model, attack) -> the report category of that robustness curve (the rule serves several studies):
    a pair of a direction group; a label study's model; a LESCI defended model or its base; else cross-study."""
    def category(wildcards) -> str:
        model, attack = wildcards.model, wildcards.attack
        direction = config.get("direction", {})
        if direction.get("enabled", True) and any(
                model in g["models"] and attack in g["attacks"] for g in direction.get("groups", {}).values()):
            return DIRECTION
        entry = config["models"].get(model, {})
        if "label" in entry:
            return LABELS
        defended = {m: e["defense"]["lesci"]["base"] for m, e in config["models"].items() if "defense" in e}
        if model in defended or model in defended.values():
            return LESCI
        return CROSS_STUDY
    return category


def benchmark_patterns(workflow) -> Callable[[Any], dict[str, str]]:
    """wildcards -> {rule: its benchmark file pattern} of every rule of `workflow` that has one."""
    def patterns(wildcards) -> dict[str, str]:
        return {rule.name: str(rule.benchmark) for rule in workflow.rules if rule.benchmark}
    return patterns
