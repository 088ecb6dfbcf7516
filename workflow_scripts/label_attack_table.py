"""Rule label_attack_table: every label's attack rows in one table, an accuracy-vs-eps figure per attack."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import label_results

log = start_job(snakemake)
label_results.attack_table(list(snakemake.input), snakemake.output.csv, Path(snakemake.output.figures[0]).parent,
                           dpi=snakemake.params.plot["dpi"], log=log)
