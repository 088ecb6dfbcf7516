"""Rule matrix_table: the cross-study matrix, its flags, the metrics' rank agreement and the heat map."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import matrix

log = start_job(snakemake)
out = snakemake.output
matrix.run(**snakemake.params.section, out_csv=out.csv, out_flags=out.flags, out_agreement=out.agreement,
           out_html=out.html, out_flags_html=out.flags_html,
           figure_stem=str(Path(out.png).with_suffix("")), dpi=snakemake.params.dpi, log=log)
