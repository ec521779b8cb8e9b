"""Entry point `score_stream`: score parquet files as they arrive in a folder, exactly once.

    mlflow run . -e score_stream -P model_uri=models:/price@champion -P input_path=/data/incoming \
        -P output_path=/data/scored -P checkpoint_path=/data/scored-checkpoint

trigger=available_now (default) drains the files present and stops; an interval such as '10 seconds'
runs until SIGINT/SIGTERM, which stop it cleanly (exit 130/143, run KILLED). Re-running the same command after a
crash resumes from the checkpoint.
Read the output with Spark (spark.read.parquet), which skips part files of uncommitted batches.
"""

import click

from sparkmlops.core import cli
from sparkmlops.core.jobs import run_entry_point
from sparkmlops.score.score_stream import StreamParams, run_stream


@click.command(name="score_stream")
@cli.model_uri_option
@click.option("--input_path", default="", help="Folder that receives parquet files.")
@click.option("--output_path", default="", help="Parquet folder the file sink writes.")
@click.option("--checkpoint_path", default="", help="Checkpoint folder of this stream (one per model and output).")
@click.option("--max_files_per_trigger", type=int, default=1, show_default=True, help="New files per micro-batch.")
@click.option(
    "--trigger",
    default="available_now",
    show_default=True,
    help="available_now, or an interval such as '10 seconds' (runs until stopped).",
)
@cli.spark_master_option
def main(**options):
    """Score a stream of parquet files."""
    master = options.pop("spark_master")
    params = StreamParams(**options)
    summary = run_entry_point("score_stream", params, master, lambda spark, model: run_stream(spark, params, model))
    print(
        f"score_stream: {summary['rows_scored']} rows in {summary['batches']} micro-batches, {summary['seconds']:.1f} s"
    )


if __name__ == "__main__":
    cli.run(main)
