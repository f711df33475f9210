"""The MLflow model of a variant folder, as MLflow's "models from code": tracking.log_model logs this file (not a
pickled object) with the folder as the artifact `model` and the bertcompress code beside it, and
`mlflow.pyfunc.load_model(uri)` runs it. Nothing in the project imports it.

predict(DataFrame with the task's text columns) -> DataFrame of label, label_name, probabilities (STS-B: score):
bertcompress.predict on the logged folder, encoded and batched as the evaluation was.
"""

import pandas as pd
from mlflow.pyfunc import PythonModel

import mlflow


class GlueModel(PythonModel):
    # typed as a DataFrame: MLflow then validates nothing by type hint (the logged signature says the columns)
    # and does not warn that the hint is missing
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from bertcompress.glue import get_task
        from bertcompress.predict import predict

        c = context.model_config
        rows = model_input[list(get_task(c["task"]).keys)].astype(str).values.tolist()
        return pd.DataFrame(predict(context.artifacts["model"], c["task"], rows, c["max_length"], c["batch_size"]))


mlflow.models.set_model(GlueModel())
