"""A Typer app with the MLflow commands and `train` (as cnnlstm.cli registers them)."""

import typer

from cnnlstm.cli_mlflow import COMMANDS
from cnnlstm.cli_train import train_command

app = typer.Typer()
for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)
app.command("train")(train_command)
