"""advpipe: a reproducible Snakemake pipeline for five adversarial-robustness studies."""

__version__ = "0.1.0"
