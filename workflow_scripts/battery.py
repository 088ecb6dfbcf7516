"""Rule battery_model: the foolbox battery's table and gradient-masking flags of one model, from its attack dumps."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import battery

log = start_job(snakemake)
i, out = snakemake.input, snakemake.output
battery.run(**snakemake.params.section, attack_h5=dict(zip(snakemake.params.order, i.dumps)),
            model_dir=Path(i.spec).parent, out_csv=out.table, out_flags=out.flags,
            data_root=snakemake.config["data_root"], device=snakemake.config["device"], log=log)
