"""Rule estimate: one estimator's dx for every image of one split (resumable for the indirect method)."""
from advpipe.jobs import start_job
from advpipe.pipeline import estimate

log = start_job(snakemake)
estimate.estimate(**snakemake.params.section, generator_pt=snakemake.input.generator, spec_json=snakemake.input.spec,
                  out_h5=snakemake.output.h5, state_path=snakemake.params.state,
                  data_root=snakemake.config["data_root"], device=snakemake.config["device"], log=log)
