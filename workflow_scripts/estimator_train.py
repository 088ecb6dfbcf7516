"""Rule estimator_train: train one estimator of dx (SPEC 5: vrgan or cgan) on its dataset."""
from advpipe.jobs import start_job
from advpipe.pipeline import estimate

log = start_job(snakemake)
out = snakemake.output
estimate.train(**snakemake.params.section, out_generator=out.generator, out_spec=out.spec, out_log=out.log_csv,
               data_root=snakemake.config["data_root"], device=snakemake.config["device"], log=log)
