rule train:
    output:
        model=f"{R}/models/{{model}}/model.pt",
        spec=f"{R}/models/{{model}}/model.json",
        log_csv=f"{R}/models/{{model}}/train_log.csv",
    params:
        section=get_model_params,
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/train/{model}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/train.py"
