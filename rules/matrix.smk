# The cross-study matrix (issue 16): every model under every metric that applies, read from the dumps of the shared
# rules (attack, ara, alignment, project, lesci_eval, drift); advpipe.pipeline.matrix_plan says which file gives
# which metric, or why none does. Asking for the matrix builds the missing dumps through those rules.

rule matrix_table:
    input:
        get_matrix_inputs,
    output:
        csv=f"{R}/matrix/matrix.csv",
        flags=f"{R}/matrix/flags.csv",
        agreement=f"{R}/matrix/agreement.csv",
        pdf=f"{R}/figures/matrix/matrix.pdf",
        png=report(f"{R}/figures/matrix/matrix.png", caption="../report/captions/matrix.rst",
                   category="0 Cross-study", subcategory="matrix"),
        html=report(f"{R}/matrix/matrix.html", caption="../report/captions/matrix_table.rst",
                    category="0 Cross-study", subcategory="matrix"),
        flags_html=report(f"{R}/matrix/flags.html", caption="../report/captions/flags.rst",
                          category="0 Cross-study", subcategory="flags"),
    params:
        section=get_matrix_params,
        dpi=MATRIX["plot"]["dpi"],
    log:
        "logs/matrix.log",
    benchmark:
        "benchmarks/matrix.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        "../envs/advpipe.yaml"
    script:
        "../workflow_scripts/matrix.py"
