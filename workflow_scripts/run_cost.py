"""Rule run_cost: the run's cost per rule from the benchmark files (the last job of a run)."""
from advpipe.jobs import start_job
from advpipe.pipeline import run_cost

log = start_job(snakemake)
out = snakemake.output
run_cost.run(benchmarks=snakemake.params.benchmarks, patterns=snakemake.params.patterns, out_csv=out.csv,
             figure_stem=out.pdf[: -len(".pdf")], dpi=snakemake.params.dpi, log=log)
