"""Rule label_train: the study's backbone trained on one label at one data level."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import label_train

log = start_job(snakemake)
w = snakemake.wildcards
label_train.train_label_model(snakemake.config, w.label, float(w.level), snakemake.input.labels,
                              Path(snakemake.output.model).parent, log=log,
                              state_path=snakemake.params.state)
