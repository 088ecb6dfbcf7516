"""Rule drift: the engine's FGSM, PGD and C&W against foolbox and torchattacks on one model's test images."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import drift

log = start_job(snakemake)
drift.run(**snakemake.params.section, model_dir=Path(snakemake.input.spec).parent, out_csv=snakemake.output[0],
          data_root=snakemake.config["data_root"], device=snakemake.config["device"], log=log)
