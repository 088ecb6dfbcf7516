# Joint projections (fit on [clean; adversarial]) are one job per attack; out-of-sample ones fit on
# clean only, so one job per trial fits once and transforms every attack's points (as vrapi does).
JOINT = [p for p in PROJECTIONS if not p.endswith("_oos")]
OOS = [p for p in PROJECTIONS if p.endswith("_oos")]


rule project:
    input:
        clean=f"{R}/representations/{{model}}/test.h5",
        attacks=[f"{R}/attacks/{{model}}/{{attack}}.h5"],
    output:
        f"{R}/projections/{{model}}/{{attack}}/{{projection}}/{{trial}}.h5",
    wildcard_constraints:
        projection="|".join(JOINT),
    params:
        section=get_projection_params,
    log:
        "logs/project/{model}/{attack}/{projection}/{trial}.log",
    benchmark:
        "benchmarks/project/{model}/{attack}/{projection}/{trial}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        # 1 when the projection's backend is cuml (vrapi.projection_options.<projection>.backend), else 0
        gpu=advpipe.projections.gpu_request(VRAPI["projection_options"]),
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/project.py"


if VRAPI["attacks"]:

    rule project_oos:
        input:
            clean=f"{R}/representations/{{model}}/test.h5",
            attacks=expand(f"{R}/attacks/{{{{model}}}}/{{attack}}.h5", attack=VRAPI["attacks"]),
        output:
            expand(f"{R}/projections/{{{{model}}}}/{{attack}}/{{{{projection}}}}/{{{{trial}}}}.h5", attack=VRAPI["attacks"]),
        wildcard_constraints:
            projection="|".join(OOS),
        params:
            section=get_projection_params,
        log:
            "logs/project/{model}/{projection}/{trial}.log",
        benchmark:
            "benchmarks/project/{model}/{projection}/{trial}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
            gpu=advpipe.projections.gpu_request(VRAPI["projection_options"]),
        conda:
            "../envs/advpipe.yaml"
        script:
            "../workflow_scripts/project.py"
