"""Entry point `export_onnx`: take a Spark pipeline out of Spark, exactly, for real-time serving.

    mlflow run . -e export_onnx -P model_uri=models:/sf_price@champion -P register_as=sf_price_onnx
    mlflow models serve -m runs:/<export run id>/model --env-manager local -h 127.0.0.1 -p 5001

The whole fitted pipeline (StringIndexer, VectorAssembler, the tree model and train's expm1 stage)
becomes one ONNX graph taking the raw columns. Before it is logged, its predictions are compared with
Spark's on the model's training data plus unseen and null categories; any difference above 1e-6
(relative) fails the export. The logged model is a pyfunc around onnxruntime with the Spark model's
signature, tagged with the model it came from.
"""

from sparkmlops.core import cli
from sparkmlops.serve.export_onnx import EXPORT_ONNX

main = cli.command(EXPORT_ONNX)

if __name__ == "__main__":
    cli.run(main)
