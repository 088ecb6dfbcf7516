"""Rule robustness: robustness curve, eps50 and figure of one attack dump (read only; nothing is attacked again)."""
from advpipe.jobs import start_job
from advpipe.pipeline import robustness

log = start_job(snakemake)
out = snakemake.output
w = snakemake.wildcards
robustness.run(attack_h5=snakemake.input.attack, out_csv=out.curve, out_eps50=out.eps50,
               figure_stem=out.pdf[: -len(".pdf")], dpi=snakemake.params.dpi, title=f"{w.model}: {w.attack}", log=log)
