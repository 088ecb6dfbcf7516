rule plot:
    input:
        unpack(get_plot_inputs),
    output:
        figures=directory(f"{R}/figures/vrapi/{{model}}/{{attack}}/{{projection}}"),
    params:
        section=get_plot_params,
    log:
        "logs/plot/{model}/{attack}/{projection}.log",
    benchmark:
        "benchmarks/plot/{model}/{attack}/{projection}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/plot.py"
