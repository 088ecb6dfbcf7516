# The adversarial-explanations study (SPEC 2): ARA of any model, explanation images, the study's table.


rule ara:
    input:
        unpack(model_files),
    output:
        h5=f"{R}/ara/{{model}}/distances.h5",
        csv=f"{R}/ara/{{model}}/ara.csv",
        pdf=f"{R}/figures/ara/{{model}}.pdf",
        png=report(f"{R}/figures/ara/{{model}}.png", caption="../report/captions/ara.rst",
                   category="2 Adversarial explanations", subcategory="{model}"),
    params:
        section=get_ara_params,
    log:
        "logs/ara/{model}.log",
    benchmark:
        "benchmarks/ara/{model}.tsv"
    threads: torch_threads
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/ara.py"


rule ara_table:
    input:
        expand(f"{R}/ara/{{model}}/ara.csv", model=EXPLANATIONS["models"]),
    output:
        f"{R}/scores/explanations/ara.csv",
    log:
        "logs/ara_table.log",
    benchmark:
        "benchmarks/ara_table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/ara_table.py"


rule explain:
    input:
        unpack(model_files),
    output:
        images=directory(f"{R}/explain/{{model}}"),
        pdf=f"{R}/figures/explain/{{model}}.pdf",
        png=report(f"{R}/figures/explain/{{model}}.png", caption="../report/captions/explain.rst",
                   category="2 Adversarial explanations", subcategory="{model}"),
    params:
        section=get_explain_params,
    log:
        "logs/explain/{model}.log",
    benchmark:
        "benchmarks/explain/{model}.tsv"
    threads: torch_threads
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/explain.py"
