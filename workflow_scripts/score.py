"""Rule score: POP scores of every projection file, long table and per-projection statistics."""
from advpipe.jobs import start_job
from advpipe.pipeline import score

log = start_job(snakemake)
score.run(snakemake.params.entries, snakemake.output.scores, snakemake.output.stats, log=log)
