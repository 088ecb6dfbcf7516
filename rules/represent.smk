rule represent:
    input:
        unpack(model_files),
    output:
        h5=f"{R}/representations/{{model}}/{{split}}.h5",
        eval=f"{R}/representations/{{model}}/{{split}}_eval.csv",
        confusion=f"{R}/representations/{{model}}/{{split}}_confusion.csv",
        images=directory(f"{R}/representations/{{model}}/images_{{split}}"),
    params:
        section=get_represent_params,
    log:
        "logs/represent/{model}/{split}.log",
    benchmark:
        "benchmarks/represent/{model}/{split}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/represent.py"
