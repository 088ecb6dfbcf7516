"""Which dump gives which metric of which model in the cross-study matrix (issue 16), or why none does. Torch-free:
the Snakefile imports it to list the matrix's inputs, and the stage (pipeline/matrix.py) reads what it names."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from advpipe.pipeline.drift import drift_reason
from advpipe.pipeline.specs import dx_estimator
from advpipe.sources import has_ground_truth_dx

METRICS = ("accuracy", "robust_accuracy_linf", "eps50_linf", "robust_accuracy_l2", "eps50_l2", "ara_attack",
           "ara_btr", "alpha_x", "alpha_dx", "pop", "lesci_accuracy", "masking", "drift")


def chosen_metrics(matrix: Mapping[str, Any]) -> list[str]:
    return list(matrix["metrics"]) or list(METRICS)


def drift_models(config: Mapping[str, Any], matrix_models: Sequence[str]) -> list[str]:
    """The models with a drift job: drift.models (else the matrix's), those whose dataset's linf grid gives an eps
    (FGSM and PGD run at its middle one; pipeline.drift.drift_reason)."""
    if not config["drift"]["enabled"]:
        return []
    names = config["drift"]["models"] or matrix_models
    return [m for m in dict.fromkeys(names) if drift_reason(config, m) is None]


def copy_sources(config: Mapping[str, Any], name: str, results: str, drifted: Sequence[str]
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """({source key: path}, {metric: why it does not apply}) of one model (or seed copy) `name`."""
    entry = config["models"][name]
    dataset = entry["dataset"]
    grids = config["matrix"]["grids"].get(dataset, {})
    files: dict[str, Any] = {"accuracy": f"{results}/representations/{name}/test.h5",
                             "alignment": f"{results}/alignment/{name}_summary.csv"}
    reasons: dict[str, str] = {}
    if "defense" in entry:  # measured: the search never reaches a misclassification on LESCI (tiny matrix run)
        reasons["ara_attack"] = reasons["ara_btr"] = (
            "ARA's search follows input gradients, and LESCI's vote has none where it projects (masking_zero_gradient)")
    else:
        files["ara"] = f"{results}/ara/{name}/ara.csv"
    for norm in ("linf", "l2"):
        if grids.get(norm):
            files[norm] = f"{results}/attacks/{name}/{grids[norm]}.h5"
        else:
            why = f"matrix.grids.{dataset} names no {norm} attack"
            reasons[f"robust_accuracy_{norm}"] = reasons[f"eps50_{norm}"] = why
    if grids.get("black_box") and grids.get("linf"):
        files["black_box"] = f"{results}/attacks/{name}/{grids['black_box']}.h5"
    if not (has_ground_truth_dx(config["datasets"][dataset]) or dx_estimator(config, dataset)):
        reasons["alpha_dx"] = (f"dataset {dataset!r} has no ground-truth dx and direction.estimates names no "
                               "estimator for it")
    if grids.get("pop"):
        projection = config["matrix"]["pop_projection"]
        files["pop"] = {"projection": f"{results}/projections/{name}/{grids['pop']}/{projection}/0.h5",
                        "clean": files["accuracy"], "attack": f"{results}/attacks/{name}/{grids['pop']}.h5"}
    else:
        reasons["pop"] = f"matrix.grids.{dataset} names no pop attack"
    if "defense" in entry:
        reasons["lesci_accuracy"] = "a LESCI model itself: its accuracy is `accuracy`"
    else:
        defended = [m for m, e in config["models"].items() if e.get("defense", {}).get("lesci", {}).get("base") == name]
        if defended and config["lesci"]["enabled"]:
            files["lesci"] = {m: f"{results}/lesci/{m}/test_metrics.csv" for m in defended}
        else:
            reasons["lesci_accuracy"] = (f"no LESCI defense of {name!r} in `models` (add one: "
                                         f"{{defense: {{lesci: {{base: {name}}}}}}})")
    if name in drifted:
        files["drift"] = f"{results}/drift/{name}.csv"
    else:
        reasons["drift"] = ("drift is disabled" if not config["drift"]["enabled"] else
                            drift_reason(config, name) or "not in drift.models")
    return files, reasons


def plan(config: Mapping[str, Any], models: Sequence[str], results: str,
         copies: Callable[[str], Sequence[str]]) -> dict[str, Any]:
    """{model: {copy: {"files": ..., "reasons": ...}}} over `models` (seed copies excluded: `copies(model)` lists
    a model's own), for the matrix's metrics."""
    everything = [c for m in models for c in copies(m)]
    drifted = drift_models(config, everything)
    return {m: {c: dict(zip(("files", "reasons"), copy_sources(config, c, results, drifted))) for c in copies(m)}
            for m in models if "seed_of" not in config["models"][m]}


def inputs(the_plan: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    """Every file the matrix reads for `metrics` (the rule's input: what is missing gets built first)."""
    wanted = {"accuracy": ["accuracy"], "robust_accuracy_linf": ["linf"], "eps50_linf": ["linf"],
              "robust_accuracy_l2": ["l2"], "eps50_l2": ["l2"], "ara_attack": ["ara"], "ara_btr": ["ara"],
              "alpha_x": ["alignment"], "alpha_dx": ["alignment"], "pop": ["pop"], "lesci_accuracy": ["lesci"],
              "masking": ["linf", "black_box", "alignment"], "drift": ["drift"]}
    keys = {k for m in metrics for k in wanted[m]}
    out = []
    for copies in the_plan.values():
        for spec in copies.values():
            for key, value in spec["files"].items():
                if key in keys:
                    out += list(value.values()) if isinstance(value, Mapping) else [value]
    return list(dict.fromkeys(out))
