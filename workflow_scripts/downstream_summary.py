from vitlib.jobserver import delegate

delegate(snakemake, __file__)  # a fork of the run's job server runs this script, if one is up

from vitlib.downstream.summary import summary_from_files, write_paper_tables
from vitlib.logs import finish, log_to
from vitlib.plots.downstream import best_layer_figure

log_to(snakemake.log[0])
table = summary_from_files(snakemake.input)
table.to_csv(snakemake.output.table, index=False)
write_paper_tables(
    table,
    table1=snakemake.output.table1,
    table5=snakemake.output.table5,
    table4_path=snakemake.output.table4,
    rst=snakemake.output.text,
    models=snakemake.params.models,
    main_models=snakemake.params.main_models,
)
best_layer_figure(table, snakemake.output.figure, dpi=snakemake.params.dpi)
finish()
