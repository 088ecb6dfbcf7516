# The label-representations study (SPEC 3): label sets, one model per (label, level), attacks, summaries.


rule label_set:
    input:
        get_label_file_input,
    output:
        label_set("{label}"),
    params:
        section=get_label_set_params,
    log:
        "logs/labels/set/{label}.log",
    benchmark:
        "benchmarks/labels/set/{label}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/label_set.py"


rule label_stats:
    input:
        unpack(get_label_stats_inputs),
    output:
        csv=f"{R}/labels/label_stats.csv",
        pdf=f"{R}/figures/labels/label_images.pdf",
        png=f"{R}/figures/labels/label_images.png",
    log:
        "logs/labels/label_stats.log",
    benchmark:
        "benchmarks/labels/label_stats.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/label_stats.py"


rule label_train:
    input:
        labels=label_set("{label}"),
    output:
        model=f"{R}/labels/models/{{label}}/level{{level}}/model.pt",
        spec=f"{R}/labels/models/{{label}}/level{{level}}/model.json",
        log_csv=f"{R}/labels/models/{{label}}/level{{level}}/train_log.csv",
    params:
        section=get_label_train_params,
        state=f"{R}/.train_state/labels/{{label}}/level{{level}}.pt",  # resumable state (see rule train)
    log:
        "logs/labels/train/{label}/level{level}.log",
    benchmark:
        "benchmarks/labels/train/{label}/level{level}.tsv"
    threads: 1  # small per-label jobs: two 1-thread jobs beat one 2-thread job (x2 vs x1.4 on 2 cores)
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/label_train.py"


rule label_attack:
    input:
        unpack(get_label_attack_inputs),
    output:
        csv=label_attacks_csv("{label}"),
        h5=f"{R}/labels/attacks/{{label}}.h5",
    params:
        section=get_label_attack_params,
    log:
        "logs/labels/attack/{label}.log",
    benchmark:
        "benchmarks/labels/attack/{label}.tsv"
    threads: 1  # small per-label jobs: two 1-thread jobs beat one 2-thread job (x2 vs x1.4 on 2 cores)
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/label_attack.py"


rule label_attack_table:
    input:
        get_label_table_inputs,
    output:
        csv=f"{R}/labels/attacks.csv",
        figures=[f"{R}/figures/labels/accuracy_vs_eps_{a}.{ext}" for a in LABELS["attack"]["attacks"]
                 for ext in ("pdf", "png")],
    params:
        plot=LABELS["plot"],
    log:
        "logs/labels/attack_table.log",
    benchmark:
        "benchmarks/labels/attack_table.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/label_attack_table.py"


rule label_efficiency:
    input:
        get_label_efficiency_inputs,
    output:
        csv=f"{R}/labels/data_efficiency.csv",
        pdf=f"{R}/figures/labels/data_efficiency.pdf",
        png=f"{R}/figures/labels/data_efficiency.png",
    params:
        plot=LABELS["plot"],
    log:
        "logs/labels/data_efficiency.log",
    benchmark:
        "benchmarks/labels/data_efficiency.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/label_efficiency.py"
