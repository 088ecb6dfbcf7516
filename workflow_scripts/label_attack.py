"""Rule label_attack: one label's model under the study's attacks over the eps grid."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import label_attack

log = start_job(snakemake)
label_attack.run(snakemake.config, snakemake.wildcards.label, snakemake.params.section["level"],
                 Path(snakemake.input.model).parent, snakemake.output.csv, snakemake.output.h5, log=log)
