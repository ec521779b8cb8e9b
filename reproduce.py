"""Entry point `reproduce`: re-run a logged run at its git commit with its parameters and data, then compare.

    mlflow run . -e reproduce -P run_id=<id>
    python reproduce.py --run_id <id> --env_manager uv --tolerance 1e-9

Refuses, before anything runs, a run made from a dirty tree or without a commit, code from a source that
is not https, ssh or a local path, or that only the run's tags name and is not trusted (--trusted_sources),
and data whose content digest changed since the run (unless --allow_data_change true). The new run is tagged
``reproduction_of=<id>``; this run logs reproduction/metrics.csv (metric, original, reproduced,
difference) and ends FAILED, exit code 4, when a metric differs by more than the tolerance.
"""

from sparkmlops.core import cli
from sparkmlops.reproduce.reproduce import REPRODUCE

main = cli.command(REPRODUCE)

if __name__ == "__main__":
    cli.run(main)
