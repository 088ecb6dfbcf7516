"""Rules project and project_oos: one projection trial, for one attack (joint) or all (out-of-sample)."""
from advpipe.jobs import start_job
from advpipe.pipeline import project

log = start_job(snakemake)
w = snakemake.wildcards
project.run(**snakemake.params.section, projection=w.projection, trial=int(w.trial),
            trials=snakemake.config["vrapi"]["trials"], clean_h5=snakemake.input.clean,
            attack_h5s=snakemake.input.attacks, out_h5s=snakemake.output, log=log)
