# advpipe: the workflow. A table of contents; rules live in rules/, logic in lib/advpipe.
from pathlib import Path

from snakemake.utils import min_version

import advpipe.config
import advpipe.errors

min_version("9.0")

# The config is read again here through advpipe's loader (a key given twice is an error; Snakemake's keeps the
# last), merged as Snakemake merges: the files in order, then --config overrides. The embedded default applies
# only when no --configfile is given: merging a given file into config.yaml would leak the default's models
# into, say, a paper config.
# Fails here, before any job, naming every bad key path; so does a results folder this user cannot write
# (naming the key, not a PermissionError from some job). One message, no traceback (ADVPIPE_DEBUG=1: traceback).
with advpipe.errors.exit_on_input_error():
    _raw = advpipe.config.compose(workflow.overwrite_configfiles or [Path(workflow.basedir) / "config.yaml"],
                                  workflow.config_settings.overwrite_config)
    # Cached under .snakemake/ by a key of the config, schema, code and library versions: a no-op rebuild skips
    # the cross-checks' imports of torch, scikit-learn and foolbox.
    _validated = advpipe.config.validate_cached(_raw, Path(workflow.basedir) / "config/schema.yaml",
                                                Path(".snakemake/advpipe/validated_config.json"))
    advpipe.config.check_before_jobs(_validated)
config.clear()
config.update(_validated)

report: "report/workflow.rst"


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
include: "rules/lesci.smk"
include: "rules/battery.smk"
include: "rules/direction.smk"
include: "rules/drift.smk"
include: "rules/matrix.smk"
include: "rules/reference.smk"
include: "rules/report.smk"


localrules:
    all,
    vrapi,
    explanations,
    labels,
    lesci,


rule all:
    input:
        all_targets(),
        REPORT_TARGETS,
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


rule lesci:
    input:
        lesci_targets(),


localrules:
    battery,
    direction,
    matrix,


rule battery:
    input:
        battery_targets(),


rule direction:
    input:
        direction_targets(),


rule matrix:
    input:
        matrix_targets(),
