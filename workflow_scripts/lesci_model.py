"""Rule lesci_model: a LESCI-defended model's folder and embedding, from its base's activations (SPEC 4)."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import lesci

log = start_job(snakemake)
out = snakemake.output
lesci.build(**snakemake.params.section, activations_h5=snakemake.input.activations,
            base_dir=Path(snakemake.input.spec).parent, out_dir=Path(out.spec).parent, out_embedding=out.embedding,
            device=snakemake.config["device"], log=log)
