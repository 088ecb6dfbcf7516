# The label-representations study (SPEC 3): what only it has, the label sets and their statistics, and its
# summaries. Its (label, level) models and its attacks are entries of `models:` and `attacks:`
# (advpipe.labels.study.expand), built by the shared train and attack rules.


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
    params:
        section=get_label_stats_params,
    output:
        csv=f"{R}/labels/label_stats.csv",
        pdf=f"{R}/figures/labels/label_images.pdf",
        png=report(f"{R}/figures/labels/label_images.png", caption="../report/captions/label_images.rst",
                   category="3 Label representations"),
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


rule label_attack_table:
    input:
        get_label_table_inputs,
    output:
        csv=f"{R}/labels/attacks.csv",
        figures=[report(path, caption="../report/captions/label_attack.rst", category="3 Label representations")
                 if path.endswith(".png") else path
                 for path in (f"{R}/figures/labels/accuracy_vs_eps_{a}.{ext}" for a in LABELS["attack"]["attacks"]
                              for ext in ("pdf", "png"))],
    params:
        dumps=label_attack_dumps(),
        level=label_attack_level(),
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
        png=report(f"{R}/figures/labels/data_efficiency.png", caption="../report/captions/data_efficiency.rst",
                   category="3 Label representations"),
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
