# Wildcard constraints, target lists and input functions derived from the validated config.
import re

import advpipe.config
import advpipe.reference
import advpipe.sources
from advpipe.labels.study import attack_level, label_attack_name, label_kinds, label_model_name
from advpipe.pipeline.specs import attack_job, canonical, dx_estimator, model_job, train_job
from advpipe.projections import PROJECTIONS, estimator_options

R = config["results"]
VRAPI = config["vrapi"]
EXPLANATIONS = config["explanations"]
LABELS = config["labels"]
ROBUSTNESS = config["robustness"]
DIRECTION = config["direction"]
ESTIMATORS = config["estimators"]
LESCI = config["lesci"]
LABEL_KINDS = label_kinds(LABELS) if LABELS["enabled"] else {}


wildcard_constraints:
    model=r"[A-Za-z][A-Za-z0-9_-]*",
    attack=r"[A-Za-z][A-Za-z0-9_-]*",
    estimator=r"[A-Za-z][A-Za-z0-9_-]*",
    group=r"[A-Za-z][A-Za-z0-9_-]*",
    split="train|test",
    projection="|".join(sorted(PROJECTIONS, key=len, reverse=True)),
    trial=r"\d+",
    label=r"[A-Za-z][A-Za-z0-9_.=-]*",
    level=r"[0-9]+(\.[0-9]+)?",


def _names(names):
    """A wildcard regex matching exactly these model names (none: a regex that matches nothing)."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!x)x"


# Trained here, or built from another model (a defense): two rules write results/models/<model>, never both.
DEFENDED = {m: e["defense"]["lesci"] for m, e in config["models"].items() if "defense" in e}
DEFENDED_MODELS = _names(DEFENDED)
TRAINED_MODELS = _names(m for m, e in config["models"].items() if "defense" not in e and "checkpoint" not in e)


def model_dir(model):
    """A trained model's folder: the workflow's own, or the one a config model names as `checkpoint`
    (an imported published network, say)."""
    return advpipe.config.entry(config, "models", model).get("checkpoint") or f"{R}/models/{model}"


def model_files(wildcards):
    folder = model_dir(wildcards.model)
    return dict(model=f"{folder}/model.pt", spec=f"{folder}/model.json")


def clean_h5(model):
    return f"{R}/representations/{model}/test.h5"


def attack_h5(model, attack):
    return f"{R}/attacks/{model}/{attack}.h5"


def projection_h5(model, attack, projection, trial):
    return f"{R}/projections/{model}/{attack}/{projection}/{trial}.h5"


def vrapi_entries():
    """Every (model, attack, projection, trial) of the vrapi study with its projection file."""
    if not VRAPI["enabled"]:
        return []
    return [
        dict(model=m, attack=a, projection=p, trial=t, path=projection_h5(m, a, p, t),
             clean=clean_h5(m), attack_path=attack_h5(m, a))
        for m in VRAPI["models"]
        for a in VRAPI["attacks"]
        for p in VRAPI["projections"]
        for t in range(VRAPI["trials"])
    ]


def vrapi_plotted():
    chosen = VRAPI["plot"].get("projections") or VRAPI["projections"]
    return [(m, a, p) for m in VRAPI["models"] for a in VRAPI["attacks"] for p in chosen]


def vrapi_targets():
    """The study's results. Projection files are listed too: Snakemake (>= 7.7) does not rebuild a
    deleted intermediate file while everything downstream of it is present, so each one is a target."""
    if not VRAPI["enabled"]:
        return []
    return (
        [e["path"] for e in vrapi_entries()]
        + [f"{R}/scores/vrapi/scores.csv", f"{R}/scores/vrapi/score_stats.csv"]
        + [f"{R}/figures/vrapi/{m}/{a}/{p}" for m, a, p in vrapi_plotted()]
    )


def explanations_targets():
    if not EXPLANATIONS["enabled"] or not EXPLANATIONS["models"]:
        return []
    return [f"{R}/scores/explanations/ara.csv"] + [
        path for m in EXPLANATIONS["models"]
        for path in (f"{R}/figures/ara/{m}.pdf", f"{R}/explain/{m}", f"{R}/figures/explain/{m}.pdf")
    ]


def label_set(label):
    return f"{R}/labels/sets/{label}.npy"


def label_attack_dumps():
    """{label: {attack: dump}} of the label study's attacks on its models of the attacked level."""
    level = attack_level(LABELS)
    return {label: {a: attack_h5(label_model_name(label, level), label_attack_name(a))
                    for a in LABELS["attack"]["attacks"]} for label in LABEL_KINDS}


def label_attack_level():
    return attack_level(LABELS)


def labels_targets():
    if not LABEL_KINDS:
        return []
    figures = f"{R}/figures/labels"
    attacks = [f"{figures}/accuracy_vs_eps_{a}.{ext}" for a in LABELS["attack"]["attacks"] for ext in ("pdf", "png")]
    dumps = [d for by_attack in label_attack_dumps().values() for d in by_attack.values()]  # see vrapi_targets
    return [f"{R}/labels/label_stats.csv", f"{R}/labels/attacks.csv", f"{R}/labels/data_efficiency.csv"] + dumps + attacks + [
        f"{figures}/{name}.{ext}" for name in ("label_images", "data_efficiency") for ext in ("pdf", "png")]


def robustness_targets():
    """Curve, eps50 and figure of each (model, attack) of the robustness section, read from the attack dumps."""
    if not ROBUSTNESS["enabled"]:
        return []
    return [path for m in ROBUSTNESS["models"] for a in ROBUSTNESS["attacks"]
            for path in (f"{R}/robustness/{m}/{a}.csv", f"{R}/robustness/{m}/{a}_eps50.csv",
                         f"{R}/figures/robustness/{m}/{a}.pdf", f"{R}/figures/robustness/{m}/{a}.png")]


def all_targets():
    # Every hand-written model is represented; a study's generated models (labels) only where a study asks.
    targets = [f"{R}/representations/{m}/{s}.h5" for m, entry in config["models"].items() if "label" not in entry
               for s in config["represent"]["splits"]]
    return (targets + vrapi_targets() + explanations_targets() + labels_targets() + robustness_targets()
            + lesci_targets() + battery_targets() + direction_targets() + matrix_targets()
            + references_targets())


def lesci_targets():
    """Each defended model's test metrics; the grid search of those the study names."""
    if not LESCI["enabled"]:
        return []
    targets = [f"{R}/lesci/{m}/test_metrics.csv" for m in DEFENDED]
    for m in LESCI["grid"]["models"]:
        targets += [f"{R}/lesci/{m}/grid.csv", f"{R}/lesci/{m}/chosen.json", f"{R}/figures/lesci/{m}/grid.pdf",
                    f"{R}/figures/lesci/{m}/grid.png"]
    return targets


def lesci_activations(base, layer):
    return f"{R}/lesci/activations/{base}/{layer}.h5"


def get_lesci_export_params(wildcards):
    return canonical(dict(**model_job(config, wildcards.model), layer=wildcards.layer,
                          validation_fraction=LESCI["validation_fraction"], batch_size=LESCI["batch_size"]))


def get_lesci_inputs(wildcards):
    spec = DEFENDED[wildcards.model]
    folder = model_dir(spec["base"])
    return dict(model=f"{folder}/model.pt", spec=f"{folder}/model.json",
                activations=lesci_activations(spec["base"], spec["layer"]))


def get_lesci_params(wildcards):
    return canonical(dict(model_name=wildcards.model, lesci=DEFENDED[wildcards.model], seed=config["seed"]))


def get_lesci_eval_inputs(wildcards):
    base = model_dir(DEFENDED[wildcards.model]["base"])
    return dict(**model_files(wildcards), base_spec=f"{base}/model.json", base_model=f"{base}/model.pt")


def get_lesci_eval_params(wildcards):
    return canonical(dict(**model_job(config, wildcards.model), base_name=DEFENDED[wildcards.model]["base"],
                          batch_size=LESCI["batch_size"]))


def lesci_grid_layers(model):
    return LESCI["grid"].get("layers") or [DEFENDED[model]["layer"]]


def get_lesci_grid_inputs(wildcards):
    base = DEFENDED[wildcards.model]["base"]
    return {layer: lesci_activations(base, layer) for layer in lesci_grid_layers(wildcards.model)}


def get_lesci_grid_params(wildcards):
    grid = {**LESCI["grid"], "layers": lesci_grid_layers(wildcards.model)}
    grid.pop("models")
    return canonical(dict(model_name=wildcards.model, grid=grid, min_accuracy=LESCI["min_accuracy"],
                          center=DEFENDED[wildcards.model]["center"], seed=config["seed"], dpi=LESCI["plot"]["dpi"]))


# Input and param functions (no lambdas in rules). Params carry the config sections a job depends on,
# so Snakemake reruns a job when its part of the config changes.
def torch_threads(wildcards):
    """Threads of a torch job (config `threads`): two 1-thread jobs on 2 cores do more than one 2-thread job (the
    default run: 30 min with 2 threads a job, most of it one job at a time). The thread count is part of a job's CPU
    result, so it follows the config, not the machine."""
    return config["threads"]


def get_model_params(wildcards):
    return model_job(config, wildcards.model)


def get_train_params(wildcards):
    return train_job(config, wildcards.model)


def get_train_inputs(wildcards):
    """A label model trains on its label set, an input of the job, so a missing user file fails before any job; a
    model with the cosine penalty on estimated directions trains on its estimator's dump of the training split."""
    job = train_job(config, wildcards.model)
    inputs = {"labels": label_set(job["model"]["label"]["name"])} if "label" in job["model"] else {}
    if "dx_estimator" in job:
        inputs["dx"] = estimate_h5(job["dx_estimator"], "train")
    return inputs


def get_attack_inputs(wildcards):
    """The model, and the clean representation dump when only correctly classified images are attacked."""
    inputs = model_files(wildcards)
    if advpipe.config.entry(config, "attacks", wildcards.attack)["images"] == "correct":
        inputs["clean"] = clean_h5(wildcards.model)
    return inputs


def get_ara_params(wildcards):
    return canonical(dict(**get_model_params(wildcards), ara=config["ara"]))


def get_explain_params(wildcards):
    return canonical(dict(**get_model_params(wildcards), explain=EXPLANATIONS["explain"]))


def get_represent_params(wildcards):
    return canonical(dict(**get_model_params(wildcards), represent=config["represent"]))


def get_attack_params(wildcards):
    return attack_job(config, wildcards.model, wildcards.attack)


def get_projection_params(wildcards):
    # Only this projection's options: changing parametric_umap's must not rerun pca. A joint projection serves
    # one attack, an out-of-sample one every attack of the study.
    attacks = [wildcards.attack] if hasattr(wildcards, "attack") else VRAPI["attacks"]
    # `attacks` keeps the study's order (the order of the job's inputs and outputs); the entries are canonical.
    return dict(model_name=wildcards.model, model=canonical(advpipe.config.entry(config, "models", wildcards.model)),
                attacks={a: canonical(advpipe.config.entry(config, "attacks", a)) for a in attacks},
                options=canonical(estimator_options(wildcards.projection, VRAPI["projection_options"])),
                seed=config["seed"])


def get_score_inputs(wildcards):
    entries = vrapi_entries()
    return dict(
        projections=[e["path"] for e in entries],
        clean=sorted({e["clean"] for e in entries}),
        attacks=sorted({e["attack_path"] for e in entries}),
    )


def get_score_entries(wildcards):
    return vrapi_entries()


def get_plot_inputs(wildcards):
    w = wildcards
    return dict(
        spec=f"{model_dir(w.model)}/model.json",
        clean=clean_h5(w.model),
        attack=attack_h5(w.model, w.attack),
        projection=projection_h5(w.model, w.attack, w.projection, VRAPI["plot"]["trial"]),
    )


def get_robustness_input(wildcards):
    return attack_h5(wildcards.model, wildcards.attack)


def get_robustness_dpi(wildcards):
    return ROBUSTNESS["plot"]["dpi"]


def get_plot_params(wildcards):
    return dict(plot=VRAPI["plot"])


def get_label_set_params(wildcards):
    return dict(label=wildcards.label, kind=label_kinds_entry(wildcards.label),
                dataset=config["datasets"][LABELS["backbone"]["dataset"]], seed=config["seed"])


def get_label_stats_params(wildcards):
    return dict(dataset=config["datasets"][LABELS["backbone"]["dataset"]], seed=config["seed"])


def get_label_file_input(wildcards):
    """A user's label file (labels.label_files) is an input: a missing one fails before any job runs."""
    kind = label_kinds_entry(wildcards.label)
    return [kind.partition("=")[2]] if kind.startswith("file=") else []


def label_kinds_entry(label):
    if label not in LABEL_KINDS:
        raise ValueError(f"config key 'labels': no label {label!r} (known: {sorted(LABEL_KINDS)})")
    return LABEL_KINDS[label]


def get_label_stats_inputs(wildcards):
    return {name: label_set(name) for name in LABEL_KINDS}


def get_label_table_inputs(wildcards):
    return [d for by_attack in label_attack_dumps().values() for d in by_attack.values()]


def get_label_efficiency_inputs(wildcards):
    return [f"{model_dir(label_model_name(name, level))}/model.json" for name in LABEL_KINDS for level in LABELS["levels"]]


# The foolbox battery (issue 14 items 7-8): each model of the section gets each attack through the shared attack
# rule; rule battery_model reads the dumps of one model.
BATTERY = config["battery"]
BATTERY_MODELS = _names(BATTERY["models"])


def battery_targets():
    """Each battery model's table and flags; its dumps too (see vrapi_targets)."""
    if not BATTERY["enabled"] or not BATTERY["models"] or not BATTERY["attacks"]:
        return []
    return [path for m in BATTERY["models"]
            for path in ([f"{R}/battery/{m}.csv", f"{R}/battery/{m}_flags.csv"]
                         + [attack_h5(m, a) for a in BATTERY["attacks"]])]


def get_battery_inputs(wildcards):
    """The model (the zero-gradient check) and its dumps, in the battery's order."""
    return dict(**model_files(wildcards), dumps=[attack_h5(wildcards.model, a) for a in BATTERY["attacks"]])


def get_battery_order(wildcards):
    return list(BATTERY["attacks"])


def get_battery_params(wildcards):
    settings = {k: v for k, v in BATTERY.items() if k not in ("enabled", "models", "attacks")}
    return canonical(dict(**model_job(config, wildcards.model), battery=settings,
                          attacks={a: advpipe.config.entry(config, "attacks", a) for a in BATTERY["attacks"]}))


# ---- the gradient-direction study (SPEC 5) and the estimators of dx ----------------------------------------------

def estimate_h5(estimator, split):
    return f"{R}/estimators/{estimator}/{split}.h5"


def direction_pairs():
    """Every (model, attack) of the direction study's groups."""
    if not DIRECTION["enabled"]:
        return []
    return list(dict.fromkeys((m, a) for g in DIRECTION["groups"].values() for m in g["models"] for a in g["attacks"]))


def direction_models():
    if not DIRECTION["enabled"]:
        return []
    return list(dict.fromkeys(m for g in DIRECTION["groups"].values() for m in g["models"]))


def direction_targets():
    """Each group's table and figure; every model's alignment; every estimator's similarity to a ground truth."""
    if not DIRECTION["enabled"] or not DIRECTION["groups"]:
        return []
    targets = [f"{R}/direction/{g}.{ext}" for g in DIRECTION["groups"] for ext in ("csv",)]
    targets += [f"{R}/figures/direction/{g}.{ext}" for g in DIRECTION["groups"] for ext in ("pdf", "png")]
    targets += [f"{R}/alignment/{m}_summary.csv" for m in direction_models()]
    targets += [f"{R}/estimators/{e}/similarity.csv" for e, spec in ESTIMATORS.items()
                if advpipe.sources.has_ground_truth_dx(config["datasets"][spec["dataset"]])]
    return targets


def get_alignment_inputs(wildcards):
    """The model, and its dataset's estimate of dx where the dataset has no ground truth."""
    inputs = model_files(wildcards)
    estimator = dx_estimator(config, advpipe.config.entry(config, "models", wildcards.model)["dataset"])
    if estimator:
        inputs["dx"] = estimate_h5(estimator, DIRECTION["split"])
    return inputs


def get_alignment_params(wildcards):
    job = model_job(config, wildcards.model)
    return canonical(dict(**job, split=DIRECTION["split"], batch_size=DIRECTION["batch_size"],
                          dx_estimator=dx_estimator(config, job["model"]["dataset"])))


def estimator_job(wildcards):
    spec = advpipe.config.entry(config, "estimators", wildcards.estimator)
    return canonical(dict(estimator_name=wildcards.estimator, estimator=spec,
                          dataset=advpipe.config.entry(config, "datasets", spec["dataset"]), seed=config["seed"]))


def get_estimate_params(wildcards):
    return canonical(dict(**estimator_job(wildcards), split=wildcards.split))


def get_direction_table_inputs(wildcards):
    group = DIRECTION["groups"][wildcards.group]
    return dict(alignment=[f"{R}/alignment/{m}_summary.csv" for m in group["models"]],
                eps50=[f"{R}/robustness/{m}/{a}_eps50.csv" for m in group["models"] for a in group["attacks"]])


def get_direction_table_params(wildcards):
    group = DIRECTION["groups"][wildcards.group]
    return canonical(dict(models=group["models"], attacks=group["attacks"], dpi=DIRECTION["plot"]["dpi"]))


# ---- the cross-study matrix (issue 16) ------------------------------------------------------------------------------
MATRIX = config["matrix"]


def study_models():
    """Every model of every enabled study, in study order: the label study's at its attacked level."""
    names = []
    if VRAPI["enabled"]:
        names += VRAPI["models"]
    if EXPLANATIONS["enabled"]:
        names += EXPLANATIONS["models"]
    if LABEL_KINDS:
        names += [label_model_name(label, label_attack_level()) for label in LABEL_KINDS]
    if LESCI["enabled"]:
        names += [n for m, spec in DEFENDED.items() for n in (spec["base"], m)]
    if ROBUSTNESS["enabled"]:
        names += ROBUSTNESS["models"]
    if BATTERY["enabled"]:
        names += BATTERY["models"]
    names += direction_models()
    return list(dict.fromkeys(names))


def seed_copies(model):
    """A model's seed copies (`seeds:`), itself first; [model] without seeds."""
    return [model] + [m for m, e in config["models"].items() if e.get("seed_of") == model]


def matrix_models():
    """The matrix's models (matrix.models, else every study's), each followed by its seed copies."""
    if not MATRIX["enabled"]:
        return []
    base = MATRIX["models"] or study_models()
    return list(dict.fromkeys(c for m in base for c in seed_copies(m)))


# ---- the reference numbers beside the reproduced ones (issue 16; rules/reference.smk) ----

REFERENCE_CSVS = [str(p) for p in advpipe.reference.reference_files(Path(workflow.basedir) / "config" / "reference")]


def reference_tables():
    """{kind: study table} of the enabled studies (advpipe.reference.reproduced_long's keys); a study that is off
    is left out, so its rows come out with a reason."""
    tables = {}
    if f"{R}/scores/vrapi/score_stats.csv" in vrapi_targets():
        tables["vrapi"] = f"{R}/scores/vrapi/score_stats.csv"
    if f"{R}/scores/explanations/ara.csv" in explanations_targets():
        tables["explanations"] = f"{R}/scores/explanations/ara.csv"
    labels = labels_targets()
    for kind, name in (("labels_attacks", "attacks"), ("labels_efficiency", "data_efficiency"),
                       ("labels_stats", "label_stats")):
        if f"{R}/labels/{name}.csv" in labels:
            tables[kind] = f"{R}/labels/{name}.csv"
    direction = direction_targets()
    groups = {g: f"{R}/direction/{g}.csv" for g in (DIRECTION["groups"] if DIRECTION["enabled"] else {})}
    groups = {g: path for g, path in groups.items() if path in direction}
    if groups:
        tables["direction"] = groups
    return tables


def get_reference_inputs(wildcards):
    tables = reference_tables()
    flat = {k: v for k, v in tables.items() if k != "direction"}
    flat.update({f"direction_{g}": path for g, path in tables.get("direction", {}).items()})
    return flat


def get_reference_params(wildcards):
    return canonical(dict(tables=reference_tables(), context=advpipe.reference.run_context(config), dpi=100))


def references_targets():
    """The reference table and its figure, when any study whose numbers SPEC.md tables is enabled."""
    if not reference_tables():
        return []
    return [f"{R}/report/references.csv", f"{R}/report/references.html", f"{R}/figures/report/references.pdf",
            f"{R}/figures/report/references.png"]



# ---- the cross-study matrix's plan (rules/matrix.smk) ----
from advpipe.pipeline.matrix_plan import chosen_metrics, plan as matrix_plan_of, inputs as matrix_plan_inputs


def matrix_plan():
    return matrix_plan_of(config, matrix_models(), R, seed_copies)


def matrix_targets():
    if not MATRIX["enabled"] or not matrix_models():
        return []
    return [f"{R}/matrix/matrix.csv", f"{R}/matrix/flags.csv", f"{R}/matrix/agreement.csv", f"{R}/matrix/matrix.html",
            f"{R}/matrix/flags.html",
            f"{R}/figures/matrix/matrix.pdf", f"{R}/figures/matrix/matrix.png"]


def get_matrix_inputs(wildcards):
    return matrix_plan_inputs(matrix_plan(), chosen_metrics(MATRIX))


def get_matrix_params(wildcards):
    settings = {k: MATRIX[k] for k in ("black_box_margin", "zero_gradient_share")}
    the_plan = matrix_plan()
    return canonical(dict(plan=the_plan, models=list(the_plan), metrics=chosen_metrics(MATRIX), **settings))



# ---- implementation drift (issue 16; rules/drift.smk) ----
from advpipe.pipeline.drift import drift_job
from advpipe.pipeline.matrix_plan import drift_models as drift_models_of

DRIFT = config["drift"]


def drift_models():
    """The models that get a drift job (matrix_plan.drift_models: the matrix's reads the same list)."""
    return drift_models_of(config, matrix_models())


def drift_targets():
    return [f"{R}/drift/{m}.csv" for m in drift_models()]


def get_drift_params(wildcards):
    return drift_job(config, wildcards.model)
