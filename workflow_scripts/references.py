"""Rule references: SPEC.md's reference numbers beside the reproduced ones (advpipe.reference), table and figure."""
from advpipe.jobs import start_job
from advpipe.reference import run

log = start_job(snakemake)
p = snakemake.params.section
run(references=list(snakemake.input.reference), tables=p["tables"], context=p["context"],
    out_csv=snakemake.output.table, out_html=snakemake.output.html, figure_stem=snakemake.output.pdf[: -len(".pdf")], dpi=p["dpi"], log=log)
