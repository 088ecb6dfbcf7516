"""Rule ara_table: the study's models' ARA rows in one table."""
from advpipe.jobs import start_job
from advpipe.pipeline import ara

log = start_job(snakemake)
ara.collect(list(snakemake.input), snakemake.output[0], log=log)
