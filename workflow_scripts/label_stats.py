"""Rule label_stats: the label statistics table and the label-image figure."""
from pathlib import Path

from advpipe.data import dataset_info
from advpipe.jobs import start_job
from advpipe.labels import stages

log = start_job(snakemake)
p = snakemake.params.section
info = dataset_info(p["dataset"], snakemake.config["data_root"], p["seed"])
stages.label_stats(dict(snakemake.input.items()), info.num_classes, info.classes, snakemake.output.csv,
                   Path(snakemake.output.pdf).with_suffix(""), log=log)
