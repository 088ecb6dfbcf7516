"""Rule lesci_activations: one layer's activations of a trained model's training images (SPEC 4)."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import lesci

log = start_job(snakemake)
lesci.export(**snakemake.params.section, model_dir=Path(snakemake.input.spec).parent, out_h5=snakemake.output[0],
             data_root=snakemake.config["data_root"], device=snakemake.config["device"], log=log)
