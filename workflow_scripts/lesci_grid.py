"""Rule lesci_grid: SPEC 4's search over (layer, r, k, t) of a LESCI model's base, table, choice and heat maps."""
from advpipe.jobs import start_job
from advpipe.pipeline import lesci

log = start_job(snakemake)
out = snakemake.output
lesci.grid(**snakemake.params.section, activations_h5s=dict(snakemake.input.items()), out_csv=out.csv,
           out_chosen=out.chosen, figure_stem=out.pdf.removesuffix(".pdf"), log=log)
