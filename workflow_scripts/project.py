"""Rule project: one projection trial of clean and adversarial representations."""
from advpipe.jobs import start_job
from advpipe.pipeline import project

log = start_job(snakemake)
w = snakemake.wildcards
project.run(snakemake.config, w.model, w.attack, w.projection, int(w.trial),
            clean_h5=snakemake.input.clean, attack_h5=snakemake.input.attack, out_h5=snakemake.output.h5, log=log)
