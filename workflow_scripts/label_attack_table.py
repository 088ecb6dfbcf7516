"""Rule label_attack_table: every label's attack rows (from the shared attack dumps) in one table, an
accuracy-vs-eps figure per attack."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.labels import stages

log = start_job(snakemake)
stages.attack_table(snakemake.params.dumps, snakemake.params.level, snakemake.output.csv,
                    Path(snakemake.output.figures[0]).parent, dpi=snakemake.params.plot["dpi"], log=log)
