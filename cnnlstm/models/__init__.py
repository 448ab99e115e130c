"""The CNN -> RNN model family, built from config by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnlstm.models.config import ModelConfig

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["ModelConfig", "build_model", "param_groups"]


def build_model(
    cfg: ModelConfig,
    n_channels: int,
    n_outputs: int,
    horizon: int | None = None,
    n_channels2: int | None = None,
) -> nn.Module:
    """A model for `n_channels` inputs. Output (B, n_outputs), or (B, horizon, n_outputs) when
    horizon is given (multi-horizon forecasting)."""
    from cnnlstm.models.frame import FrameCNNRNN
    from cnnlstm.models.parallel import ParallelCNNRNN
    from cnnlstm.models.serial import SerialCNNRNN, SubseqCNNRNN

    if n_channels < 1:
        raise ValueError(f"n_channels must be >= 1 (got {n_channels})")
    if n_outputs < 1:
        raise ValueError(f"n_outputs must be >= 1 (got {n_outputs})")
    out_shape = (horizon, n_outputs) if horizon else (n_outputs,)
    if cfg.arch == "serial":
        return SerialCNNRNN(cfg, n_channels, out_shape)
    if cfg.arch == "subseq":
        return SubseqCNNRNN(cfg, n_channels, out_shape)
    if cfg.arch == "frame":
        return FrameCNNRNN(cfg, n_channels, out_shape)
    if cfg.arch == "auto":
        raise ValueError(
            "model: auto is resolved to a preset before training (cnnlstm train / cnnlstm run "
            "with MLflow tracking; cnnlstm.auto.auto_select)"
        )
    if cfg.arch == "minirocket":  # fitted in closed form (cnnlstm.baseline), not by SGD
        from cnnlstm.models.minirocket import MiniRocketRidge

        return MiniRocketRidge(n_channels, out_shape, cfg.minirocket)
    if cfg.arch == "parallel":
        return ParallelCNNRNN(cfg, n_channels, out_shape, n_channels2)
    raise ValueError(f"model.arch {cfg.arch!r} is unknown")


def param_groups(model: nn.Module) -> dict[str, list]:
    """Parameters split into cnn / rnn / head (fusion layers count as head)."""
    groups: dict[str, list] = {"cnn": [], "rnn": [], "head": []}
    for name, p in model.named_parameters():
        top = name.split(".", 1)[0]
        groups[top if top in ("cnn", "rnn") else "head"].append(p)
    return groups
