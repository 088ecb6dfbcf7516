"""Rule label_set: one label kind's (classes, ...) target tensors."""
from advpipe.jobs import start_job
from advpipe.labels import stages

log = start_job(snakemake)
stages.make_label_set(**snakemake.params.section, out_path=snakemake.output[0],
                      data_root=snakemake.config["data_root"], log=log)
