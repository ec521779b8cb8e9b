"""Reproducible Spark ML entry points tracked with MLflow (Learning Spark, 2nd ed., chapter 11).

The top-level scripts (``train.py``, ``generate_data.py``, ...) only parse their options and call the
package; entry point X's logic is in ``sparkmlops/<capability>/X.py`` and every function that needs
Spark takes the SparkSession as its first argument. The package imports itself at module level;
pyspark, mlflow, pandas and the model libraries are imported inside the functions that use them, so
that a bad parameter is refused before they load (mlflow alone takes about 4 s to import).
"""

__version__ = "0.1.0"
