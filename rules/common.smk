# Wildcard constraints, target lists and input functions derived from the validated config.
import advpipe.config
from advpipe.labels.study import format_level, label_kinds
from advpipe.projections import PROJECTIONS, estimator_options

R = config["results"]
VRAPI = config["vrapi"]
EXPLANATIONS = config["explanations"]
LABELS = config["labels"]
LABEL_KINDS = label_kinds(LABELS) if LABELS["enabled"] else {}


wildcard_constraints:
    model=r"[A-Za-z][A-Za-z0-9_-]*",
    attack=r"[A-Za-z][A-Za-z0-9_-]*",
    split="train|test",
    projection="|".join(sorted(PROJECTIONS, key=len, reverse=True)),
    trial=r"\d+",
    label=r"[A-Za-z][A-Za-z0-9_.=-]*",
    level=r"[0-9]+(\.[0-9]+)?",


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


def label_model_dir(label, level):
    return f"{R}/labels/models/{label}/level{format_level(level)}"


def label_attack_level():
    level = LABELS["attack"].get("level")
    return max(LABELS["levels"]) if level is None else level


def label_attacks_csv(label):
    return f"{R}/labels/attacks/{label}.csv"


def labels_targets():
    if not LABEL_KINDS:
        return []
    figures = f"{R}/figures/labels"
    attacks = [f"{figures}/accuracy_vs_eps_{a}.{ext}" for a in LABELS["attack"]["attacks"] for ext in ("pdf", "png")]
    dumps = [f"{R}/labels/attacks/{name}.h5" for name in LABEL_KINDS]  # listed: see vrapi_targets
    return [f"{R}/labels/label_stats.csv", f"{R}/labels/attacks.csv", f"{R}/labels/data_efficiency.csv"] + dumps + attacks + [
        f"{figures}/{name}.{ext}" for name in ("label_images", "data_efficiency") for ext in ("pdf", "png")]


def all_targets():
    targets = [f"{R}/representations/{m}/{s}.h5" for m in config["models"] for s in config["represent"]["splits"]]
    return targets + vrapi_targets() + explanations_targets() + labels_targets()


# Input and param functions (no lambdas in rules). Params carry the config sections a job depends on,
# so Snakemake reruns a job when its part of the config changes.
def get_model_params(wildcards):
    model = advpipe.config.entry(config, "models", wildcards.model)
    return dict(model=model, dataset=config["datasets"][model["dataset"]], seed=config["seed"])


def get_ara_params(wildcards):
    return dict(**get_model_params(wildcards), ara=config["ara"])


def get_explain_params(wildcards):
    return dict(**get_model_params(wildcards), explain=EXPLANATIONS["explain"])


def get_represent_params(wildcards):
    return dict(**get_model_params(wildcards), represent=config["represent"])


def get_attack_params(wildcards):
    return dict(attack=config["attacks"][wildcards.attack], seed=config["seed"],
                num_saved_images=config["represent"]["num_saved_images"])


def get_projection_params(wildcards):
    # Only this projection's options: changing parametric_umap's must not rerun pca.
    return dict(options=estimator_options(wildcards.projection, VRAPI["projection_options"]), seed=config["seed"])


def get_one_attack(wildcards):
    return [wildcards.attack]


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


def get_plot_params(wildcards):
    return dict(plot=VRAPI["plot"])


def get_label_set_params(wildcards):
    backbone = LABELS["backbone"]
    return dict(kind=label_kinds_entry(wildcards.label), dataset=config["datasets"][backbone["dataset"]],
                seed=config["seed"])


def get_label_file_input(wildcards):
    """A user's label file (labels.label_files) is an input: a missing one fails before any job runs."""
    kind = label_kinds_entry(wildcards.label)
    return [kind.partition("=")[2]] if kind.startswith("file=") else []


def label_kinds_entry(label):
    if label not in LABEL_KINDS:
        raise ValueError(f"config key 'labels': no label {label!r} (known: {sorted(LABEL_KINDS)})")
    return LABEL_KINDS[label]


def get_label_train_params(wildcards):
    return dict(**get_label_set_params(wildcards), backbone=LABELS["backbone"],
                validation_fraction=LABELS["validation_fraction"])


def get_label_attack_inputs(wildcards):
    folder = label_model_dir(wildcards.label, label_attack_level())
    return dict(model=f"{folder}/model.pt", spec=f"{folder}/model.json")


def get_label_attack_params(wildcards):
    return dict(**get_label_train_params(wildcards), attack=LABELS["attack"], level=label_attack_level())


def get_label_stats_inputs(wildcards):
    return {name: label_set(name) for name in LABEL_KINDS}


def get_label_table_inputs(wildcards):
    return [label_attacks_csv(name) for name in LABEL_KINDS]


def get_label_efficiency_inputs(wildcards):
    return [f"{label_model_dir(name, level)}/model.json" for name in LABEL_KINDS for level in LABELS["levels"]]
