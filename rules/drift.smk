# Implementation drift (issue 16 item 3b): the engine's FGSM, PGD and C&W against foolbox's and torchattacks' on the
# same test images of each model, as an agreement rate per attack and peer (advpipe.metrics.drift).

rule drift:
    input:
        unpack(model_files),
    output:
        f"{R}/drift/{{model}}.csv",
    params:
        section=get_drift_params,
    log:
        "logs/drift/{model}.log",
    benchmark:
        "benchmarks/drift/{model}.tsv"
    wildcard_constraints:
        model=_names(drift_models()),
    threads: torch_threads
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/drift.py"
