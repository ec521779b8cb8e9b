"""The reference for bench_train.py: chapter 11's training code written the straightforward way.

SparkSession at import, the book's pipeline, MLflow's defaults for model logging (requirement
inference, no signature). Run: python bench/book_train.py <sf-airbnb-clean.parquet>
"""

import os
import sys
import tempfile

import mlflow
import mlflow.spark
import pandas as pd
from pyspark.ml import Pipeline
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.ml.regression import RandomForestRegressor
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("book-train").getOrCreate()

filePath = sys.argv[1]
airbnbDF = spark.read.parquet(filePath)
(trainDF, testDF) = airbnbDF.randomSplit([0.8, 0.2], seed=42)

categoricalCols = [field for (field, dataType) in trainDF.dtypes if dataType == "string"]
indexOutputCols = [x + "Index" for x in categoricalCols]
stringIndexer = StringIndexer(inputCols=categoricalCols, outputCols=indexOutputCols, handleInvalid="skip")
numericCols = [field for (field, dataType) in trainDF.dtypes if ((dataType == "double") & (field != "price"))]
assemblerInputs = indexOutputCols + numericCols
vecAssembler = VectorAssembler(inputCols=assemblerInputs, outputCol="features")
rf = RandomForestRegressor(labelCol="price", maxBins=40, maxDepth=5, numTrees=100, seed=42)
pipeline = Pipeline(stages=[stringIndexer, vecAssembler, rf])

with mlflow.start_run(run_name="random-forest") as run:
    mlflow.log_param("num_trees", rf.getNumTrees())
    mlflow.log_param("max_depth", rf.getMaxDepth())
    pipelineModel = pipeline.fit(trainDF)
    mlflow.spark.log_model(pipelineModel, "model")
    predDF = pipelineModel.transform(testDF)
    regressionEvaluator = RegressionEvaluator(predictionCol="prediction", labelCol="price")
    rmse = regressionEvaluator.setMetricName("rmse").evaluate(predDF)
    r2 = regressionEvaluator.setMetricName("r2").evaluate(predDF)
    mlflow.log_metrics({"rmse": rmse, "r2": r2})
    rfModel = pipelineModel.stages[-1]
    pandasDF = pd.DataFrame(
        list(zip(vecAssembler.getInputCols(), rfModel.featureImportances)), columns=["feature", "importance"]
    ).sort_values(by="importance", ascending=False)
    path = os.path.join(tempfile.mkdtemp(), "feature-importance.csv")
    pandasDF.to_csv(path, index=False)
    mlflow.log_artifact(path)
    print(f"book: rmse={rmse:.2f} r2={r2:.3f} test_rows={predDF.count()} of {testDF.count()} run_id={run.info.run_id}")
