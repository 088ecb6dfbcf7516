# advpipe: the workflow. A table of contents; rules live in rules/, logic in lib/advpipe.
from pathlib import Path

import yaml
from snakemake.utils import min_version, update_config

import advpipe.config

min_version("9.0")

# The embedded default applies only when no --configfile is given: Snakemake would otherwise merge the
# given file into config.yaml and leak the default's models into, say, a paper config.
if not workflow.overwrite_configfiles:
    _base = yaml.safe_load((Path(workflow.basedir) / "config.yaml").read_text())
    update_config(_base, config)  # --config key=value overrides still win
    config.clear()
    config.update(_base)
# Fails here, before any job, naming every bad key path.
_validated = advpipe.config.validate(config, advpipe.config.load_schema(Path(workflow.basedir) / "config/schema.yaml"))
config.clear()
config.update(_validated)
# So does a results folder this user cannot write (naming the key, not a PermissionError from some job).
advpipe.config.check_results_folder(config["results"])


include: "rules/common.smk"
include: "rules/train.smk"
include: "rules/represent.smk"
include: "rules/attack.smk"
include: "rules/project.smk"
include: "rules/score.smk"
include: "rules/plot.smk"
include: "rules/explanations.smk"
include: "rules/labels.smk"
include: "rules/robustness.smk"


localrules:
    all,
    vrapi,
    explanations,
    labels,


rule all:
    input:
        all_targets(),
    default_target: True


rule vrapi:
    input:
        vrapi_targets(),


rule explanations:
    input:
        explanations_targets(),


rule labels:
    input:
        labels_targets(),
