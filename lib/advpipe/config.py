"""Config loading: JSON-schema validation with defaults filled in, then cross-reference checks.

Used by the Snakefile before any job runs. jsonschema does the validation; we add default filling
(recursing through $ref, additionalProperties and if/then, which snakemake.utils.validate does not)
and messages that name the key path.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema
import yaml

from advpipe import yamlio
from advpipe.errors import InputError
from advpipe.schema_words import Validator, accepted, explain, names_a_key, resolve
from advpipe.sources import has_ground_truth_dx, resolve_space

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


# Set by the workflow from the dataset, never by a config's arch_args.
_SHAPE_ARGS = {"in_channels", "num_classes", "image_size", "mean", "std"}


class ConfigError(InputError, ValueError):
    """The config is invalid; the message names every offending key path and what was expected."""


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    with open(path or SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _fill_defaults(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> None:
    schema = resolve(schema, root)
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        sub = resolve(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in set(instance) - set(schema.get("properties", {})):
            _fill_defaults(instance[key], extra, root)
    for branch in schema.get("allOf", []):
        if "if" in branch and Validator(branch["if"]).is_valid(instance):
            _fill_defaults(instance, branch.get("then", {}), root)


def _path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        # Name the unknown key itself, not only its parent.
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        parts.append(extra[0] if len(extra) == 1 else "{" + ",".join(extra) + "}")
    return ".".join(parts) or "<top level>"


def _schema_problem(error: jsonschema.ValidationError, schema: Mapping[str, Any]) -> str:
    if error.validator in ("oneOf", "anyOf") and error.context:
        # A mapping or list that matched a branch's shape but failed inside it: name the key inside.
        inner = max(error.context, key=lambda e: len(e.absolute_path))
        if len(inner.absolute_path) > len(error.absolute_path):
            return _schema_problem(inner, schema)
    if names_a_key(error):  # a bad name under models/attacks/datasets: the name is the instance
        where = ".".join([*map(str, error.absolute_path), str(error.instance)])
        return (f"config key {where!r}: the name {error.instance!r} is not allowed (names become file paths and "
                f"Snakemake wildcards); expected {accepted(error.schema, schema)}")
    return f"config key '{_path(error)}': {explain(error, schema)}"


def _non_finite(value: Any, path: str = "") -> list[str]:
    """inf and nan anywhere (YAML's .inf, .nan): the schema's "number" lets them through."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"config key '{path or '<top level>'}': got {value!r}; expected a finite number"]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [p for k, v in items for p in _non_finite(v, f"{path}.{k}" if path else str(k))]


def validate(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return a copy of `config` with defaults filled in; raise ConfigError naming each bad key path."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"invalid config: the top level is a {type(config).__name__}; expected a mapping of "
                          "config keys (datasets, models, ...)")
    schema = schema or load_schema()
    config = copy.deepcopy(dict(config))
    problems = _non_finite(config)
    _fill_defaults(config, schema, schema)
    _inherit_datasets(config)
    errors = sorted(Validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    for err in errors:
        # if/then failures are reported twice by jsonschema (the branch and its detail): keep the detail.
        if err.validator in ("allOf", "if"):
            continue
        problems.append(_schema_problem(err, schema))
    problems += _cross_check(config) if not problems else []
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(dict.fromkeys(problems)))
    from advpipe.labels.study import expand  # a study's generated models and attacks join the shared sections
    try:
        expand(config)
        expand_seeds(config)
    except ValueError as err:
        raise ConfigError(f"invalid config:\n  {err}") from None
    _fill_defaults(config, schema, schema)  # the generated entries, as if written by hand: validate is idempotent
    problems = _check_matrix(config)  # after the expansion: the matrix may name generated models
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(dict.fromkeys(problems)))
    return config


def _check_matrix(config: Mapping[str, Any]) -> list[str]:
    """The matrix's and the drift check's names resolve: models (generated ones included), datasets, attacks, the
    POP projection; a POP attack has one eps (its dump holds one adversarial representation per image)."""
    from advpipe.projections import PROJECTIONS

    problems = []
    matrix = config["matrix"]
    for section, key in (("matrix", "models"), ("drift", "models")):
        for i, name in enumerate(config[section][key]):
            if name not in config["models"]:
                problems.append(_unknown(f"{section}.{key}.{i}", name, "model", config["models"]))
    for dataset, grid in matrix["grids"].items():
        if dataset not in config["datasets"]:
            problems.append(_unknown(f"matrix.grids.{dataset}", dataset, "dataset", config["datasets"]))
        for role, name in grid.items():
            if name not in config["attacks"]:
                problems.append(_unknown(f"matrix.grids.{dataset}.{role}", name, "attack", config["attacks"]))
            elif role == "pop" and isinstance(config["attacks"][name].get("eps"), list):
                problems.append(f"config key 'matrix.grids.{dataset}.pop': attack {name!r} has an eps grid; expected "
                                "an attack with one eps (its dump holds one adversarial representation per image)")
    if matrix["pop_projection"] not in PROJECTIONS or matrix["pop_projection"].endswith("_oos"):
        joint = sorted(p for p in PROJECTIONS if not p.endswith("_oos"))
        problems.append(_unknown("matrix.pop_projection", matrix["pop_projection"], "joint projection", joint))
    return problems


def seed_copy_name(model: str, seed: int) -> str:
    return f"{model}_s{seed}"


def expand_seeds(config: dict[str, Any]) -> dict[str, Any]:
    """Add a model entry per further seed of each `seeds:` list (issue 16): `<model>_s<seed>`, the same entry with
    `seed_of` and its own training stream. The first seed's copy is the entry itself, trained as it always was, so
    adding `seeds` retrains nothing. ValueError when a copy's name is taken, or on a defense or checkpoint."""
    models = config["models"]
    for name, model in list(models.items()):
        seeds = model.get("seeds")
        if not seeds or "seed_of" in model:
            continue
        if "defense" in model or "checkpoint" in model:
            raise ValueError(f"config key 'models.{name}.seeds': only a trained model has seed copies; "
                             f"{name!r} is {'a defense' if 'defense' in model else 'a checkpoint'}")
        for seed in seeds[1:]:
            copy_name = seed_copy_name(name, seed)
            if copy_name in models and models[copy_name].get("seed_of") != name:
                raise ValueError(f"config key 'models.{name}.seeds': the copy for seed {seed} would be "
                                 f"{copy_name!r}, which is taken by another model")
            copy_entry = {k: copy.deepcopy(v) for k, v in model.items() if k != "seeds"}
            copy_entry["seed_of"] = name
            copy_entry["streams"] = {**model.get("streams", {}), "train": f"train/{name}/seed{seed}"}
            models[copy_name] = copy_entry
    return config


def _unknown(path: str, name: str, what: str, known) -> str:
    return f"config key '{path}': unknown {what} {name!r} (known: {sorted(known)})"


def _check_model(path: str, model: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Cross-checks of one model entry at key `path` (models.<name>, labels.backbone)."""
    from advpipe.models.registry import ARCHS  # imported late: the schema check needs no torch

    problems = []
    if model["dataset"] not in config["datasets"]:
        problems.append(_unknown(f"{path}.dataset", model["dataset"], "dataset", config["datasets"]))
    objective = model["train"]["objective"]
    if objective["l2_min"] and not objective["adversarial_training"]:
        problems.append(f"config key '{path}.train.objective.l2_min': needs adversarial_training: true")
    if objective.get("alp"):
        others = [k for k in ("adversarial_training", "robust_additions") if objective[k]]
        if others:
            problems.append(f"config key '{path}.train.objective.alp': adversarial logit pairing has its own "
                            f"adversary and loss; it does not combine with {' or '.join(others)} (set "
                            f"{'them' if len(others) > 1 else 'it'} false)")
        if path.startswith("labels."):
            problems.append(f"config key '{path}.train.objective.alp': the label study trains with its own loss "
                            "(CE or SmoothL1); expected alp: false")
    if "checkpoint" in model:
        if "arch" in model:
            problems.append(f"config key '{path}': give arch (to train) or checkpoint (a trained-model "
                            f"folder), not both")
        return problems
    if "arch" not in model:
        problems.append(f"config key '{path}.arch': required unless the model names a checkpoint")
    elif model["arch"] not in ARCHS:
        problems.append(_unknown(f"{path}.arch", model["arch"], "architecture", ARCHS))
    else:
        accepted = set(inspect.signature(ARCHS[model["arch"]]).parameters) - _SHAPE_ARGS
        for key in sorted(set(model["arch_args"]) - accepted):
            problems.append(_unknown(f"{path}.arch_args.{key}", key, f"argument of {model['arch']}",
                                     accepted))
    return problems


def _inherit_datasets(config: dict[str, Any]) -> None:
    """A defended model runs on its base's data: its `dataset` is the base's (an explicit one must agree)."""
    models = config.get("models")
    if not isinstance(models, dict):
        return
    for model in models.values():
        try:  # a malformed entry is left to the schema, which names it
            base = models.get(model["defense"]["lesci"]["base"])
        except (KeyError, TypeError):
            continue
        if isinstance(base, dict) and "dataset" in base:
            model.setdefault("dataset", base["dataset"])


def _check_defense(path: str, model: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """A LESCI model: its base must be a plain model (trained or a checkpoint) of the same dataset."""
    spec = model["defense"]["lesci"]
    base = config["models"].get(spec["base"])
    if base is None:
        return [_unknown(f"{path}.defense.lesci.base", spec["base"], "model", config["models"])]
    problems = []
    if "defense" in base:
        problems.append(f"config key '{path}.defense.lesci.base': {spec['base']!r} is itself a defended model; "
                        "expected a trained model or a checkpoint")
    if model["dataset"] != base["dataset"]:
        problems.append(f"config key '{path}.dataset': got {model['dataset']!r}, but its base {spec['base']!r} runs on "
                        f"{base['dataset']!r}; expected the base's dataset (or no dataset key)")
    for key in sorted({"arch", "checkpoint", "label"} & set(model)):
        problems.append(f"config key '{path}.{key}': a defended model is built from its base; expected no {key}")
    return problems


def _check_labels(study: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The label-representations study: its backbone, label kinds, files and attack level."""
    from advpipe.labels import LabelError, parse_label_kind

    if not study["enabled"] or not (study["kinds"] or study["label_files"]):
        return []
    if "backbone" not in study:
        return ["config key 'labels.backbone': required when the study has labels (a model entry: dataset, arch, "
                "train)"]
    problems = _check_model("labels.backbone", study["backbone"], config)
    if "checkpoint" in study["backbone"]:
        problems.append("config key 'labels.backbone.checkpoint': the study trains its backbone once per label; "
                        "give arch instead")
    objective = study["backbone"]["train"]["objective"]
    if any(objective[k] for k in ("adversarial_training", "robust_additions")):
        problems.append("config key 'labels.backbone.train.objective': the label study trains with its own loss "
                        "(CE or SmoothL1); expected no adversarial_training or robust_additions")
    for i, kind in enumerate(study["kinds"]):
        try:
            name, _ = parse_label_kind(kind)
        except LabelError as err:
            problems.append(f"config key 'labels.kinds.{i}': {err}")
            continue
        if name == "file":
            problems.append(f"config key 'labels.kinds.{i}': give label files a name under labels.label_files")
    for name in sorted(set(study["label_files"]) & set(study["kinds"])):
        problems.append(f"config key 'labels.label_files.{name}': the name {name!r} is also a label kind")
    from advpipe.labels.study import format_level

    for i, lvl in enumerate(study["levels"]):
        if float(format_level(lvl)) != lvl:  # the level is written into paths and read back from them
            problems.append(f"config key 'labels.levels.{i}': {lvl} has more digits than a path keeps "
                            f"({format_level(lvl)}); expected at most 6 significant digits")
    level = study["attack"].get("level")
    if level is not None and level not in study["levels"]:
        problems.append(f"config key 'labels.attack.level': {level} is not one of labels.levels {study['levels']}")
    return problems


def _declared_shape(dataset: Mapping[str, Any]) -> tuple[int, ...] | None:
    """(C, H, W) of a dataset's images, (1, D) of its vectors, where the config tells (None for an npz file: its
    data will)."""
    from advpipe.data.datasets import _TORCHVISION, TINYIMAGENET_SHAPE

    source = dataset["source"]
    if source == "digits":
        return 1, 8, 8
    if source == "tinyimagenet":  # 64x64 RGB; other sizes are refused when the images are read
        return TINYIMAGENET_SHAPE
    if source in _TORCHVISION:
        info = _TORCHVISION[source]
        return info.in_channels, info.image_size, info.image_size
    if source == "imagefolder":
        return 1 if dataset["grayscale"] else 3, dataset["image_size"], dataset["image_size"]
    if source == "spheres":  # vectors: one "channel" of dim values
        return 1, dataset.get("dim", 500)
    if source == "squares":  # always 224 (SPEC 5); image_size sizes square32 only
        return 1, 224, 224
    if source == "square32":
        return 1, dataset["image_size"], dataset["image_size"]
    return None


def _check_budgets(config: Mapping[str, Any]) -> list[str]:
    """Budgets the input box cannot hold (advpipe.attacks.budget), for every model each attack is run on."""
    from advpipe.attacks.budget import budget_problems, space_widths

    paired: dict[str, list[str]] = {name: [] for name in config["attacks"]}
    for section in ("vrapi", "robustness", "battery"):
        study = config[section]
        if study["enabled"]:
            for attack in study["attacks"]:
                paired.setdefault(attack, []).extend(m for m in study["models"] if m in config["models"])
    if config["direction"]["enabled"]:
        for group in config["direction"]["groups"].values():
            for attack in group["attacks"]:
                paired.setdefault(attack, []).extend(m for m in group["models"] if m in config["models"])
    problems: dict[tuple[str, str], str] = {}
    for name, attack in config["attacks"].items():
        for model_name in dict.fromkeys(paired.get(name) or [None]):
            model = config["models"].get(model_name, {})
            dataset = config["datasets"][model["dataset"]] if model else None
            space = resolve_space(attack, dataset).get("space", "pixels") if dataset else attack.get("space", "pixels")
            if space == "data":  # no model to tell the range: the attack job checks it on the data
                break
            shape = _declared_shape(dataset) if model else None
            if isinstance(space, list) and space[0] >= space[1]:
                break  # reported as a bad space
            normalize = model.get("normalize", "none") if "arch" in model else None  # a checkpoint's: in its json
            widths = space_widths(space, normalize, shape[0] if shape else None) if model or space != "normalized" \
                else None
            for key, problem in budget_problems(attack, widths, math.prod(shape[1:]) if shape else None):
                on = f" (on model {model_name!r}, dataset {model['dataset']!r})" if model else ""
                problems.setdefault((name, key), f"config key 'attacks.{name}.{key}': {problem}{on}")
    return list(problems.values())


def _check_ranges(config: Mapping[str, Any]) -> list[str]:
    """[lo, hi] pairs (an attack's space and clamp) must have lo < hi."""
    problems = []
    for name, attack in config["attacks"].items():
        for key in ("space", "clamp"):
            value = attack.get(key)
            if isinstance(value, list) and value[0] >= value[1]:
                problems.append(f"config key 'attacks.{name}.{key}': got {value}; expected a range [lo, hi] with "
                                "lo < hi")
    return problems


def _check_paths(config: Mapping[str, Any]) -> list[str]:
    """The results folder: inside the project (the working directory), unless an absolute path says otherwise."""
    results = config["results"]
    if not os.path.isabs(results) and os.path.normpath(results).split(os.sep)[0] == "..":
        return [f"config key 'results': got {results!r}, which climbs out of the project folder; expected a folder "
                "inside it, or an absolute path to write elsewhere on purpose"]
    if os.path.normpath(results) == ".":
        return [f"config key 'results': got {results!r}, the project folder itself; expected a sub-folder such as "
                "results (outputs would mix with the workflow's files)"]
    return []


def _check_battery(config: Mapping[str, Any]) -> list[str]:
    """The foolbox battery: its models and attacks exist, its attacks state eps in pixels (it measures L2 in [0,1]
    units); every foolbox entry of `attacks:` names a foolbox-3 class that takes its options (and an eps when it
    is a fixed-budget attack)."""
    problems = []
    study = config.get("battery") or {}
    if study.get("enabled"):
        for key, what in (("models", "model"), ("attacks", "attack")):
            for i, name in enumerate(study.get(key, [])):
                if name not in config[key]:
                    problems.append(_unknown(f"battery.{key}.{i}", name, what, config[key]))
        for i, name in enumerate(study.get("attacks", [])):
            space = config["attacks"].get(name, {}).get("space", "pixels")
            if space != "pixels":
                problems.append(f"config key 'attacks.{name}.space': got {space!r}, but battery.attacks.{i} lists "
                                "it; expected pixels (the battery measures L2 in [0,1] pixel units)")
    for name, attack in config["attacks"].items():
        if attack.get("method") != "foolbox":
            continue
        from advpipe.attacks.foolbox_attacks import FoolboxAttack  # imports foolbox when a config uses it

        params = {k: v for k, v in attack.items() if k in ("attack", "eps", "options", "criterion")}
        try:
            FoolboxAttack(**params)
        except ValueError as err:
            field, sep, what = str(err).partition(": ")
            key = f"attacks.{name}.{field}" if sep and field in attack else f"attacks.{name}"
            problems.append(f"config key '{key}': {what if sep and field in attack else err}")
    return problems


def _check_direction(config: Mapping[str, Any]) -> list[str]:
    """SPEC 5's parts: the names the direction study, the estimators and the models' training refer to; a one-logit
    model or a vrgan estimator on a dataset that is not binary; a cosine penalty without a source of dx."""
    problems = []
    models, attacks, datasets = config["models"], config["attacks"], config["datasets"]
    for g, group in config["direction"]["groups"].items():
        for key, known, what in (("models", models, "model"), ("attacks", attacks, "attack")):
            for i, name in enumerate(group.get(key, [])):
                if name not in known:
                    problems.append(_unknown(f"direction.groups.{g}.{key}.{i}", name, what, known))
    for name, est in config["estimators"].items():
        if est["dataset"] not in datasets:
            problems.append(_unknown(f"estimators.{name}.dataset", est["dataset"], "dataset", datasets))
    for ds, est in config["direction"]["estimates"].items():
        if ds not in datasets:
            problems.append(_unknown(f"direction.estimates.{ds}", ds, "dataset", datasets))
        elif est not in config["estimators"]:
            problems.append(_unknown(f"direction.estimates.{ds}", est, "estimator", config["estimators"]))
        elif config["estimators"][est]["dataset"] != ds:
            problems.append(f"config key 'direction.estimates.{ds}': estimator {est!r} is trained on "
                            f"{config['estimators'][est]['dataset']!r}; expected one trained on {ds!r}")
    for name, model in models.items():
        if "defense" in model:
            continue
        path = f"models.{name}.train"
        recipe = model["train"]
        objective = recipe["objective"]
        for key, where in (("attack_training", f"{path}.objective.attack_training"),
                           ("select_attack", f"{path}.select_attack")):
            value = objective.get(key) if key == "attack_training" else recipe.get(key)
            if value is not None and value not in attacks:
                problems.append(_unknown(where, value, "attack", attacks))
        if objective.get("attack_training") and (objective["adversarial_training"] or objective.get("alp")):
            problems.append(f"config key '{path}.objective.attack_training': trains on the attack's adversarials; "
                            "it does not combine with adversarial_training or alp (set those false)")
        dataset = datasets.get(model["dataset"])
        if objective.get("cosine_penalty") and dataset is not None and not has_ground_truth_dx(dataset) \
                and model["dataset"] not in config["direction"]["estimates"]:
            problems.append(f"config key '{path}.objective.cosine_penalty': dataset {model['dataset']!r} has no "
                            "ground-truth dx; expected direction.estimates to name an estimator for it")
    return problems


def _cross_check(config: Mapping[str, Any]) -> list[str]:
    """Checks a schema cannot express: names that must refer to other entries or to registries, budgets the inputs
    cannot hold, ranges and paths."""
    from advpipe.projections import PROJECTIONS
    from advpipe.projections.project import accepted_options

    problems = _check_paths(config) + _check_ranges(config)
    for name, ds in config["datasets"].items():
        if ds["source"] in ("imagefolder", "npz") and "path" not in ds:
            problems.append(f"config key 'datasets.{name}.path': required for source {ds['source']}")
    for name, model in config["models"].items():
        if "defense" in model:
            problems += _check_defense(f"models.{name}", model, config)
        else:
            problems += _check_model(f"models.{name}", model, config)
    problems += _check_labels(config["labels"], config)
    for i, name in enumerate(config["explanations"]["models"]):
        if name not in config["models"]:
            problems.append(_unknown(f"explanations.models.{i}", name, "model", config["models"]))
    for key, what in (("models", "model"), ("attacks", "attack")):
        for i, name in enumerate(config["robustness"][key]):
            if name not in config[key] and not name.startswith("labels_"):  # the label study generates those
                problems.append(_unknown(f"robustness.{key}.{i}", name, what, config[key]))
    problems += _check_battery(config)
    problems += _check_direction(config)
    study = config["vrapi"]
    if study["enabled"]:
        if not study["models"] or not study["attacks"]:
            problems.append("config key 'vrapi': an enabled study needs at least one model and one attack")
        for i, name in enumerate(study["models"]):
            if name not in config["models"]:
                problems.append(_unknown(f"vrapi.models.{i}", name, "model", config["models"]))
        for i, name in enumerate(study["attacks"]):
            if name not in config["attacks"]:
                problems.append(_unknown(f"vrapi.attacks.{i}", name, "attack", config["attacks"]))
        from advpipe.projections import BACKENDS, backend

        for name, options in study["projection_options"].items():
            if name not in PROJECTIONS:
                problems.append(_unknown(f"vrapi.projection_options.{name}", name, "projection", PROJECTIONS))
                continue
            base = name.removesuffix("_oos")
            if options.get("backend", BACKENDS[base][0]) not in BACKENDS[base]:  # the library that fits it
                problems.append(_unknown(f"vrapi.projection_options.{name}.backend", options["backend"],
                                         f"backend of {name}", BACKENDS[base]))
                continue
            # The other keys are arguments of the backend's constructor. An entry reaches every projection it
            # applies to (umap's: umap and umap_oos), each on its own backend: check them against each.
            reached: dict[str, list[str]] = {}  # backend -> the projections this entry reaches on it
            for target in [name, f"{name}_oos"] if f"{name}_oos" in PROJECTIONS else [name]:
                reached.setdefault(backend(target, study["projection_options"]), []).append(target)
            for on, targets in reached.items():
                if on not in BACKENDS[base]:
                    continue  # the variant's own bad backend, reported at its entry
                accepted = accepted_options(name, on)  # imports the backend's library, only when it has options
                for key in sorted(set(options) - accepted):
                    problems.append(_unknown(f"vrapi.projection_options.{name}.{key}", key,
                                             f"option of {' and '.join(targets)} (backend {on})", accepted))
        for i, name in enumerate(study["plot"].get("projections") or []):
            if name not in study["projections"]:
                problems.append(_unknown(f"vrapi.plot.projections.{i}", name, "projection", study["projections"]))
        if study["plot"]["trial"] >= study["trials"]:
            problems.append(f"config key 'vrapi.plot.trial': trial {study['plot']['trial']} does not exist "
                            f"(vrapi.trials is {study['trials']})")
    if not problems:  # the budgets need every name above to resolve
        problems += _check_budgets(config)
    return problems


def read(path: str | Path) -> Any:
    """The YAML document at `path` (advpipe.yamlio: a key given twice is an error), or ConfigError naming it."""
    try:
        return yamlio.load_file(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror}); expected a YAML file") from None
    except yamlio.DuplicateKeyError as err:
        raise ConfigError(f"{path}: line {err.problem_mark.line + 1}: {err.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML; expected a YAML mapping of config keys. {err}") from None


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    raw = read(path)
    try:
        return validate(raw if raw is not None else {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def compose(paths: Iterable[str | Path], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What Snakemake makes of --configfile A B --config k=v: the files merged in order, then the overrides;
    each file read by `read` (Snakemake's own loader keeps the last of two equal keys)."""
    from snakemake.utils import update_config

    merged: dict[str, Any] = {}
    for path in paths:
        raw = read(path)
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level is a {type(raw).__name__}; expected a mapping of config keys "
                              "(datasets, models, ...)")
        update_config(merged, raw or {})
    update_config(merged, copy.deepcopy(dict(overrides or {})))
    return merged


# Libraries whose classes and signatures the cross-checks read (architectures, foolbox attacks, projection
# estimators): part of the validation cache's key with the code and the schema.
_CHECKED_LIBRARIES = ("torch", "torchvision", "foolbox", "scikit-learn", "umap-learn", "openTSNE")


def _validation_key(raw: Mapping[str, Any], schema_path: Path) -> str:
    from importlib import metadata
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=repr).encode())
    digest.update(schema_path.read_bytes())
    for source in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(source.as_posix().encode() + source.read_bytes())
    for name in _CHECKED_LIBRARIES:
        try:
            digest.update(f"{name}=={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name} missing".encode())
    return digest.hexdigest()


def validate_cached(raw: Mapping[str, Any], schema_path: str | Path, cache: str | Path) -> dict[str, Any]:
    """validate(raw) through a one-entry cache file: a no-op rebuild should not pay for the cross-checks' imports
    (torch, scikit-learn, foolbox: 4-8 s of the Snakefile's parse on 2 cores). validate is a pure function of the
    config, the schema, this package's code and the checked libraries' versions, which make the key; a config that
    fails is never cached, so its errors are always reported. An unreadable cache file is recomputed."""
    import json

    from advpipe.io.atomic import atomic_path

    schema_path, cache = Path(schema_path), Path(cache)
    key = _validation_key(raw, schema_path)
    try:
        stored = json.loads(cache.read_text())
        if stored.get("key") == key:
            return stored["config"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    config = validate(raw, load_schema(schema_path))
    if json.loads(json.dumps(config)) != config:  # only what JSON gives back as it was (no int keys, no tuples)
        return config
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps({"key": key, "config": config}))
    except OSError:  # a read-only working directory only loses the cache
        pass
    return config


def check_before_jobs(config: Mapping[str, Any]) -> None:
    """What a validated config needs from this machine before any job: folders it can write."""
    check_results_folder(config["results"])
    if any(ds.get("download") for ds in config["datasets"].values()):
        check_results_folder(config["data_root"], key="data_root", what="the downloaded datasets")


def entry(config: Mapping[str, Any], section: str, name: str) -> dict[str, Any]:
    """config[section][name] (a model, attack or dataset), or ConfigError naming the key path."""
    entries = config.get(section) or {}
    if name not in entries:
        raise ConfigError(f"config key '{section}.{name}': not defined; expected one of {sorted(entries)}")
    return entries[name]


def check_results_folder(path: str | os.PathLike, key: str = "results", what: str = "the outputs") -> None:
    """ConfigError unless `path` is a folder this process may write into, or can be created.

    Called by the Snakefile before any job, so that the error names the config key and the folder instead of
    a bare PermissionError on whichever output folder Snakemake (or a job) creates first.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:  # the folder that would hold it
        existing = existing.parent
    where = f"{path}" if existing == path else f"{path} cannot be created: {existing}"
    if not existing.is_dir():
        raise ConfigError(f"config key '{key}': {where} is not a folder; expected a folder for {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"config key '{key}': folder {where} is not writable (read-only for this user); "
                          f"expected a folder this user can write {what} into")
