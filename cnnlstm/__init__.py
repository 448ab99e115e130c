"""cnnlstm: sensor time-series analytics - validated Parquet lake, CNN+LSTM/GRU models, MLflow."""

__version__ = "0.1.0"
