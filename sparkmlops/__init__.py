"""Reproducible Spark ML entry points tracked with MLflow (Learning Spark, 2nd ed., chapter 11).

The top-level scripts (``train.py``, ``generate_data.py``, ...) only parse their options and call the
functions of this package; every function that needs Spark takes the SparkSession as its first argument.
"""

__version__ = "0.1.0"
