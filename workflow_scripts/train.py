"""Rule train: train one config model into its results folder."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import train

log = start_job(snakemake)
train.run(**snakemake.params.section, out_dir=Path(snakemake.output.model).parent,
          label_path=snakemake.input.get("labels"), dx_path=snakemake.input.get("dx"), data_root=snakemake.config["data_root"],
          device=snakemake.config["device"], state_path=snakemake.params.state, log=log)
