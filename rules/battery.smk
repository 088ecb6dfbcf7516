# The foolbox battery (issue 14 items 7-8): one model's attack dumps (the shared attack rule) -> its table and
# gradient-masking flags. The target rule `battery` (Snakefile) asks for every model of the section.
rule battery_model:
    input:
        unpack(get_battery_inputs),
    output:
        table=f"{R}/battery/{{model}}.csv",
        flags=f"{R}/battery/{{model}}_flags.csv",
    wildcard_constraints:
        model=BATTERY_MODELS,
    params:
        section=get_battery_params,
        order=get_battery_order,
    log:
        "logs/battery/{model}.log",
    benchmark:
        "benchmarks/battery/{model}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
        gpu=1,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/battery.py"
