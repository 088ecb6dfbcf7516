rule plot:
    input:
        unpack(get_plot_inputs),
    output:
        # the folder's top-level PNGs in the report (a folder itself only goes into a .zip report)
        figures=report(directory(f"{R}/figures/vrapi/{{model}}/{{attack}}/{{projection}}"),
                       patterns=["{figure,[^/]+}.png"], caption="../report/captions/vrapi_projection.rst",
                       category="1 Representation projection (vrapi)", subcategory="{model} {attack} {projection}"),
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
