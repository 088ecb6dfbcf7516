rule attack:
    input:
        unpack(get_attack_inputs),
    output:
        h5=f"{R}/attacks/{{model}}/{{attack}}.h5",
        norms_stats=f"{R}/attacks/{{model}}/{{attack}}_norms_stats.csv",
        eval=f"{R}/attacks/{{model}}/{{attack}}_eval.csv",
        confusion=f"{R}/attacks/{{model}}/{{attack}}_confusion.csv",
        images=directory(f"{R}/attacks/{{model}}/{{attack}}_images"),
    params:
        section=get_attack_params,
    log:
        "logs/attack/{model}/{attack}.log",
    benchmark:
        "benchmarks/attack/{model}/{attack}.tsv"
    threads: torch_threads
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/attack.py"
