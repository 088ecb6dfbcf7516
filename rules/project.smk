rule project:
    input:
        clean=f"{R}/representations/{{model}}/test.h5",
        attack=f"{R}/attacks/{{model}}/{{attack}}.h5",
    output:
        h5=f"{R}/projections/{{model}}/{{attack}}/{{projection}}/{{trial}}.h5",
    params:
        section=get_projection_params,
    log:
        "logs/project/{model}/{attack}/{projection}/{trial}.log",
    benchmark:
        "benchmarks/project/{model}/{attack}/{projection}/{trial}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/project.py"
