"""Entry point `promote`: the validation gate of the model registry, with aliases instead of stages.

    mlflow run . -e promote -P model_name=sf_price                      # newest version vs @champion
    mlflow run . -e promote -P model_name=sf_price -P min_improvement=0.02
    mlflow run . -e promote -P model_name=sf_price -P version=3 -P force=true   # rollback to v3

The candidate and the current @champion are scored on the same held-out rows; the candidate becomes
@challenger, and @champion moves to it only if it is strictly better by at least min_improvement (or if
there is no champion). The decision and both results are printed, logged in this run and tagged on the
version. A rejection is a normal outcome (exit 0); bad input exits 2 and changes no alias.
"""

from sparkmlops.core import cli
from sparkmlops.registry.promote import PROMOTE

main = cli.command(PROMOTE)

if __name__ == "__main__":
    cli.run(main)
