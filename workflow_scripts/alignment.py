"""Rule alignment: alpha_dx and alpha_x (SPEC 5) of one model, per example and on average."""
from pathlib import Path

from advpipe.jobs import start_job
from advpipe.pipeline import alignment

log = start_job(snakemake)
alignment.run(**snakemake.params.section, model_dir=str(Path(snakemake.input.spec).parent),
              dx_h5=snakemake.input.get("dx"), out_table=snakemake.output.table,
              out_summary=snakemake.output.summary, data_root=snakemake.config["data_root"],
              device=snakemake.config["device"], log=log)
