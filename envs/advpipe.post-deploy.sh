#!/usr/bin/env bash
# Run by Snakemake inside the new conda env (--sdm conda), from the workflow's working directory:
# install the advpipe library from this checkout. ADVPIPE_ROOT overrides where the checkout is.
set -euo pipefail
pip install --no-deps -e "${ADVPIPE_ROOT:-$PWD}"
