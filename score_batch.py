"""Entry point `score_batch`: score a parquet (or CSV) file or folder with a logged or registered Spark model.

    mlflow run . -e score_batch -P model_uri=runs:/<run_id>/model -P input_path=/data/in.parquet \
        -P output_path=/data/scored.parquet

The output (the input's columns plus `prediction`) appears at output_path only when complete.
"""

from sparkmlops.core import cli
from sparkmlops.score.score_batch import SCORE_BATCH

main = cli.command(SCORE_BATCH)

if __name__ == "__main__":
    cli.run(main)
