"""Rule label_stats: the label statistics table and the label-image figure."""
from pathlib import Path

from advpipe.config import entry
from advpipe.data import dataset_info
from advpipe.jobs import start_job
from advpipe.pipeline import label_results

log = start_job(snakemake)
config = snakemake.config
info = dataset_info(entry(config, "datasets", config["labels"]["backbone"]["dataset"]), config["data_root"],
                    config["seed"])
label_results.label_stats(dict(snakemake.input.items()), info.num_classes, info.classes, snakemake.output.csv,
                          Path(snakemake.output.pdf).with_suffix(""), log=log)
