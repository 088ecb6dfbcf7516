# The Snakemake report's own results (issue 16): what the run cost per rule, read from every job's benchmark file.
# `snakemake --report results/report.html` then gathers every output wrapped in report() (captions: report/captions).
import advpipe.pipeline.report

REPORT_TARGETS = [f"{R}/report/run_cost.csv", f"{R}/figures/report/run_cost.pdf", f"{R}/figures/report/run_cost.png"]


rule run_cost:
    input:
        # every other target of the run, so that this job runs last and sees every job's benchmark file
        all_targets(),
    output:
        csv=REPORT_TARGETS[0],
        pdf=REPORT_TARGETS[1],
        png=report(REPORT_TARGETS[2], caption="../report/captions/run_cost.rst", category="0 Cross-study",
                   subcategory="Run cost"),
    params:
        benchmarks="benchmarks",
        # {rule: benchmark pattern} of every rule, read when the DAG is built (every rule defined by then)
        patterns=advpipe.pipeline.report.benchmark_patterns(workflow),
        dpi=100,
    log:
        "logs/run_cost.log",
    benchmark:
        "benchmarks/run_cost.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/run_cost.py"
