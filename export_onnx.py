"""Entry point `export_onnx`: take a Spark pipeline out of Spark, exactly, for real-time serving.

    mlflow run . -e export_onnx -P model_uri=models:/sf_price@champion -P register_as=sf_price_onnx
    mlflow models serve -m runs:/<export run id>/model --env-manager local -h 127.0.0.1 -p 5001

The whole fitted pipeline (StringIndexer, VectorAssembler, the tree model and train's expm1 stage)
becomes one ONNX graph taking the raw columns. Before it is logged, its predictions are compared with
Spark's on the model's training data plus unseen and null categories; any difference above 1e-6
(relative) fails the export. The logged model is a pyfunc around onnxruntime with the Spark model's
signature, tagged with the model it came from.
"""

import click

from sparkmlops.core import cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.serve.export_onnx import ExportParams, export_and_log


@click.command(name="export_onnx")
@cli.model_uri_option
@cli.register_as_option
@click.option(
    "--parity_data_path",
    default="",
    help="Rows to check parity on; empty = the data the model was trained on (else the generated data).",
)
@cli.spark_master_option
def main(**options):
    """Export a logged Spark pipeline to ONNX and log it as a servable pyfunc model."""
    master = options.pop("spark_master")
    summary = run_entry_point("export_onnx", ExportParams(**options), master, export_and_log)
    print(
        f"export_onnx: {int(summary['parity_rows'])} rows, max relative difference to Spark "
        f"{summary['parity_max_rel_diff']:.2e}; model {summary['model_uri']} run_id={summary['run_id']}"
        + (f" registered version {summary['registered_version']}" if summary["registered_version"] else "")
    )


if __name__ == "__main__":
    cli.run(main)
