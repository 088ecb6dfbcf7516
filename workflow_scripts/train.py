"""Rule train: train one config model into its results folder."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import train

log = start_job(snakemake)
train.run(snakemake.config, snakemake.wildcards.model, Path(snakemake.output.model).parent, log=log,
          state_path=snakemake.params.state)
