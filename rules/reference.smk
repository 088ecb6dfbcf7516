# The studies' reference numbers (config/reference/*.csv, SPEC.md's tables) beside the reproduced ones (issue 16):
# results/report/references.csv and its figure. Reads the study tables of the enabled studies only; the paper rows
# are mapped to the run's models by the config section `references` (advpipe.reference).

rule references:
    input:
        unpack(get_reference_inputs),
        reference=REFERENCE_CSVS,
    output:
        table=f"{R}/report/references.csv",
        html=report(f"{R}/report/references.html", caption="../report/captions/references_table.rst",
                    category="0 Cross-study", subcategory="references"),
        pdf=f"{R}/figures/report/references.pdf",
        png=report(f"{R}/figures/report/references.png", caption="../report/captions/references.rst",
                   category="0 Cross-study"),
    params:
        section=get_reference_params,
    log:
        "logs/report/references.log",
    benchmark:
        "benchmarks/report/references.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/references.py"
