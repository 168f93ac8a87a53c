"""Score-model checkpoints: a `ScoreModel` (network + noise process + prediction) rebuilt
from its config, saved as safetensors weights + JSON config (`sbm.io`), never pickle.

The network is rebuilt by a `NetBuilder` (config dict -> module): `net_from_config` knows the
unconditional architectures; the text layer passes its own, which also knows text nets.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from sbm import io
from sbm.core.model import ScoreModel
from sbm.core.processes import process_from_config
from sbm.nets.score import net_from_config

NetBuilder = Callable[[dict], nn.Module]


def model_from_config(cfg: dict, build_net: NetBuilder = net_from_config) -> ScoreModel:
    """Rebuild an (untrained) ScoreModel from `ScoreModel.to_config()`; build_net makes the
    network from its config (`sbm.text.net.text_net_from_config` also knows text nets)."""
    return ScoreModel(build_net(cfg["net"]), process_from_config(cfg["process"]), cfg["prediction"],
                      cfg.get("data_std", 1.0))


def save_model(path, model: ScoreModel, extra: dict | None = None) -> None:
    """A trained ScoreModel as one safetensors file: weights (net.*) + its config (JSON header)."""
    io.save_module(path, model, "score_model", {"model": model.to_config(), **(extra or {})})


def load_model(path, build_net: NetBuilder = net_from_config) -> tuple[ScoreModel, dict]:
    """Rebuild a ScoreModel from `save_model`'s file -> (model in eval mode, meta).
    Raises io.CheckpointError naming the file if it is missing, corrupt or not a score model."""
    return io.load_module(path, "score_model", lambda meta: model_from_config(meta["model"], build_net), "score model")
