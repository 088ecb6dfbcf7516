"""Rule label_set: one label kind's (classes, ...) target tensors."""
from advpipe.jobs import start_job
from advpipe.pipeline import label_train

log = start_job(snakemake)
label_train.make_label_set(snakemake.config, snakemake.wildcards.label, snakemake.output[0], log=log)
