"""Entry point `score_stream`: score parquet files as they arrive in a folder, exactly once.

    mlflow run . -e score_stream -P model_uri=models:/price@champion -P input_path=/data/incoming \
        -P output_path=/data/scored -P checkpoint_path=/data/scored-checkpoint

trigger=available_now (default) drains the files present and stops; an interval such as '10 seconds'
runs until SIGINT/SIGTERM, which stop it cleanly (exit 130/143, run KILLED). Re-running the same command after a
crash resumes from the checkpoint.
Read the output with Spark (spark.read.parquet), which skips part files of uncommitted batches.
"""

from sparkmlops.core import cli
from sparkmlops.score.score_stream import SCORE_STREAM

main = cli.command(SCORE_STREAM)

if __name__ == "__main__":
    cli.run(main)
