rule train:
    input:
        unpack(get_train_inputs),
    output:
        model=f"{R}/models/{{model}}/model.pt",
        spec=f"{R}/models/{{model}}/model.json",
        log_csv=f"{R}/models/{{model}}/train_log.csv",
    wildcard_constraints:
        model=TRAINED_MODELS,
    params:
        section=get_train_params,
        # resumable state, saved every epoch outside the outputs; a rerun of a killed job continues from it
        state=f"{R}/.train_state/models/{{model}}.pt",
    log:
        "logs/train/{model}.log",
    benchmark:
        "benchmarks/train/{model}.tsv"
    threads: torch_threads
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/train.py"
