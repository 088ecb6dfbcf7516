# The gradient-direction study (SPEC 5): estimators of dx, every model's alignment, and each group's table. The
# attacks and eps50 come from the shared attack and robustness rules.


rule estimator_train:
    output:
        generator=f"{R}/estimators/{{estimator}}/generator.pt",
        spec=f"{R}/estimators/{{estimator}}/estimator.json",
        log_csv=f"{R}/estimators/{{estimator}}/train_log.csv",
    params:
        section=estimator_job,
    log:
        "logs/estimator_train/{estimator}.log",
    benchmark:
        "benchmarks/estimator_train/{estimator}.tsv"
    threads: torch_threads
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/estimator_train.py"


rule estimate:
    input:
        generator=f"{R}/estimators/{{estimator}}/generator.pt",
        spec=f"{R}/estimators/{{estimator}}/estimator.json",
    output:
        h5=f"{R}/estimators/{{estimator}}/{{split}}.h5",
    params:
        section=get_estimate_params,
        # the indirect method's projections are saved chunk by chunk here; a rerun of a killed job continues
        state=f"{R}/.estimate_state/{{estimator}}/{{split}}.h5",
    log:
        "logs/estimate/{estimator}/{split}.log",
    benchmark:
        "benchmarks/estimate/{estimator}/{split}.tsv"
    threads: torch_threads
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/estimate.py"


rule estimator_similarity:
    input:
        h5=f"{R}/estimators/{{estimator}}/test.h5",
    output:
        csv=f"{R}/estimators/{{estimator}}/similarity.csv",
    params:
        section=estimator_job,
    log:
        "logs/estimator_similarity/{estimator}.log",
    benchmark:
        "benchmarks/estimator_similarity/{estimator}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/estimator_similarity.py"


rule alignment:
    input:
        unpack(get_alignment_inputs),
    output:
        table=f"{R}/alignment/{{model}}.csv",
        summary=f"{R}/alignment/{{model}}_summary.csv",
    params:
        section=get_alignment_params,
    log:
        "logs/alignment/{model}.log",
    benchmark:
        "benchmarks/alignment/{model}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/alignment.py"


rule direction_table:
    input:
        unpack(get_direction_table_inputs),
    output:
        table=f"{R}/direction/{{group}}.csv",
        pdf=f"{R}/figures/direction/{{group}}.pdf",
        png=report(f"{R}/figures/direction/{{group}}.png", caption="../report/captions/direction.rst",
                   category="5 Gradient direction", subcategory="{group}"),
    params:
        section=get_direction_table_params,
    log:
        "logs/direction_table/{group}.log",
    benchmark:
        "benchmarks/direction_table/{group}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/direction_table.py"
