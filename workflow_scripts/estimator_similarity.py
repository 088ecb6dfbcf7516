"""Rule estimator_similarity: sim(dx, dx_hat) of an estimator against its dataset's ground truth (SPEC 5)."""
from advpipe.jobs import start_job
from advpipe.pipeline import estimate

log = start_job(snakemake)
estimate.similarity(**snakemake.params.section, estimate_h5=snakemake.input.h5, out_csv=snakemake.output.csv,
                    data_root=snakemake.config["data_root"], log=log)
