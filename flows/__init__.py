"""Prefect flows: thin orchestration around the ``cnnlstm`` library.

Each task is a few lines around one library function and passes paths and ids, never frames or
tensors. The library's log records (logger ``cnnlstm``) reach the Prefect run logs.
"""

import os

# must be set before prefect is imported: library loggers appear in the flow run logs
_extra = os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "")
if "cnnlstm" not in _extra.split(","):
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(p for p in (_extra, "cnnlstm") if p)

# the library's loggers go to the API (above) and are used outside flow runs as well (the CLI's
# own commands, a sweep before the pipeline starts, tests): such a record has no run to go to and
# is not sent, which is expected, not a problem to warn about (it is still logged locally)
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

# the embedded defaults run offline: no usage telemetry from the ephemeral Prefect API or MLflow
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# a first start migrates the ephemeral API's database: slower than Prefect's 20 s default on a
# busy 2-core machine (over 120 s once, in a fresh-clone make run at load 10)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
