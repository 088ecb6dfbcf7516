"""Rule direction_table: one group's table of accuracy, eps50 per attack and alignment (SPEC 5), and its figure."""
from advpipe.jobs import start_job
from advpipe.pipeline import direction

log = start_job(snakemake)
p = snakemake.params.section
direction.run(models=p["models"], attacks=p["attacks"], alignment=list(snakemake.input.alignment),
              eps50=list(snakemake.input.eps50), out_table=snakemake.output.table,
              figure_stem=snakemake.output.pdf[: -len(".pdf")], title=snakemake.wildcards.group, dpi=p["dpi"], log=log)
