rule score:
    input:
        unpack(get_score_inputs),
    output:
        scores=f"{R}/scores/vrapi/scores.csv",
        stats=f"{R}/scores/vrapi/score_stats.csv",
    params:
        entries=get_score_entries,
    log:
        "logs/score/vrapi.log",
    benchmark:
        "benchmarks/score/vrapi.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/score.py"
