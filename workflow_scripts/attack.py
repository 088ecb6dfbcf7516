"""Rule attack: one configured attack on one model's test images."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import attack

log = start_job(snakemake)
i, out = snakemake.input, snakemake.output
attack.run(**snakemake.params.section, model_dir=Path(i.spec).parent, clean_h5=i.get("clean"), out_h5=out.h5,
           out_norms_stats=out.norms_stats, out_eval=out.eval, out_confusion=out.confusion, images_dir=out.images,
           data_root=snakemake.config["data_root"], device=snakemake.config["device"], log=log)
