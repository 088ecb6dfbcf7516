"""Rule lesci_eval: a LESCI model's metrics on the test split beside its base's accuracy (SPEC 4)."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import lesci

log = start_job(snakemake)
i = snakemake.input
lesci.evaluate(**snakemake.params.section, model_dir=Path(i.spec).parent, base_dir=Path(i.base_spec).parent,
               out_csv=snakemake.output[0], data_root=snakemake.config["data_root"],
               device=snakemake.config["device"], log=log)
