"""Entry point `score_per_group`: score each group's rows with its own model from a train_per_group run.

    mlflow run . -e score_per_group -P run_id=<train_per_group run> -P input_path=/data/in.parquet \
        -P output_path=/data/scored.parquet -P unknown_groups=fallback

Rows of groups without a model are scored by the run's fallback model (fallback), left without a
prediction (null), or refused (error). The output is the input's columns plus `prediction` and
`scored_with` (group, fallback or null), written atomically.
"""

from sparkmlops.core import cli
from sparkmlops.score.score_per_group import SCORE_PER_GROUP

main = cli.command(SCORE_PER_GROUP)

if __name__ == "__main__":
    cli.run(main)
