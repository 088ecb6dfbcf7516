# The LESCI study (SPEC 4): a defended model is a model like any other (results/models/<model>), built from its
# base's activations; the shared rules (represent, attack, ara, robustness) apply to it unchanged.


rule lesci_activations:
    input:
        unpack(model_files),
    output:
        f"{R}/lesci/activations/{{model}}/{{layer}}.h5",
    params:
        section=get_lesci_export_params,
    log:
        "logs/lesci_activations/{model}/{layer}.log",
    benchmark:
        "benchmarks/lesci_activations/{model}/{layer}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/lesci_activations.py"


rule lesci_model:
    input:
        unpack(get_lesci_inputs),
    output:
        model=f"{R}/models/{{model}}/model.pt",
        spec=f"{R}/models/{{model}}/model.json",
        embedding=f"{R}/lesci/{{model}}/embedding.h5",
    wildcard_constraints:
        model=DEFENDED_MODELS,
    params:
        section=get_lesci_params,
    log:
        "logs/lesci_model/{model}.log",
    benchmark:
        "benchmarks/lesci_model/{model}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/lesci_model.py"


rule lesci_eval:
    input:
        unpack(get_lesci_eval_inputs),
    output:
        f"{R}/lesci/{{model}}/test_metrics.csv",
    params:
        section=get_lesci_eval_params,
    log:
        "logs/lesci_eval/{model}.log",
    benchmark:
        "benchmarks/lesci_eval/{model}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/lesci_eval.py"


rule lesci_grid:
    input:
        unpack(get_lesci_grid_inputs),
    output:
        csv=f"{R}/lesci/{{model}}/grid.csv",
        chosen=f"{R}/lesci/{{model}}/chosen.json",
        pdf=f"{R}/figures/lesci/{{model}}/grid.pdf",
        png=report(f"{R}/figures/lesci/{{model}}/grid.png", caption="../report/captions/lesci_grid.rst",
                   category="4 LESCI", subcategory="{model}"),
    params:
        section=get_lesci_grid_params,
    log:
        "logs/lesci_grid/{model}.log",
    benchmark:
        "benchmarks/lesci_grid/{model}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/lesci_grid.py"
