@dataclass(frozen=True)
class BatchParams:
    model_uri: str = ""
    input_path: str = ""
    output_path: str = ""
    mode: str = "error"

    def validate(self) -> models.ResolvedModel:
        """Everything checkable without Spark; returns the resolved model."""
        check_batch_paths(self.input_path, self.output_path, self.mode)
        return models.resolve_model(self.model_uri)

    def as_dict(self) -> dict:
        return asdict(self)


def predict_batch(spark, params: BatchParams, model: models.ResolvedModel) -> dict:
    """Score ``params.input_path`` into ``params.output_path``; log and return rows, seconds, rate."""
    return score_input_to_output(spark, params, model, lambda input_df: score_frame(load_spark_model(model),
                                                                                     input_df, model))
