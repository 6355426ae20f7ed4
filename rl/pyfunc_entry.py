"""MLflow "models from code" entry point: ``mlflow.pyfunc.log_model(python_model=<this file>)``.

MLflow copies this file into the logged model and runs it at load time; it names the model class
(``tradebot.rl.mlflow_model.PolicyModel``), so nothing is pickled but the policy checkpoint itself.
"""

from mlflow.models import set_model

from tradebot.rl.mlflow_model import PolicyModel

set_model(PolicyModel())
