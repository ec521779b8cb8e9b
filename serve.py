"""Entry point `serve`: a model behind MLflow's scoring protocol, following a registry alias.

    mlflow run . -e serve -P model_uri=models:/sf_price_onnx@champion -P port=5001
    curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d '{"dataframe_records": [...]}'

Every client of `mlflow models serve` works unchanged (/invocations, /ping, /health, /version). An
export_onnx model answers in about a millisecond; given models:/<name>@<alias>, the server follows the
alias: a new version is loaded, checked and swapped in without a restart or a failed request, and each
response names its version (X-Model-Version). Prometheus metrics at /metrics; SIGTERM stops it gracefully.
"""

from sparkmlops.core import cli
from sparkmlops.serve.serve import SERVE

main = cli.command(SERVE)

if __name__ == "__main__":
    cli.run(main)
