import advpipe.pipeline.report


rule robustness:
    input:
        attack=get_robustness_input,
    output:
        curve=f"{R}/robustness/{{model}}/{{attack}}.csv",
        eps50=f"{R}/robustness/{{model}}/{{attack}}_eps50.csv",
        pdf=f"{R}/figures/robustness/{{model}}/{{attack}}.pdf",
        png=report(f"{R}/figures/robustness/{{model}}/{{attack}}.png", caption="../report/captions/robustness.rst",
                   category=advpipe.pipeline.report.robustness_category(config), subcategory="{model}"),
    params:
        dpi=get_robustness_dpi,
    log:
        "logs/robustness/{model}/{attack}.log",
    benchmark:
        "benchmarks/robustness/{model}/{attack}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/robustness.py"
