"""The temporal value model of RFTF (arXiv 2505.19767, section 3.2): V_phi(s_t, l) -> a scalar.

Its architecture is the VLA's (section 3.2: "with only the action tokens of the VLA model
replaced by value tokens"; section 4.1.4: "replacing the original VLA's action tokens and action
decoder with value tokens and a value decoder"): the same `VLABody` (camera or state encoders,
instruction projection, transformer backbone) with its own learned value query tokens, whose
outputs go through a small MLP to one raw value. Training starts from the BC model's weights
(`ValueModel.from_vla`: every body tensor except the query tokens is copied) or from scratch.

Values are raw: their range differs between tasks, and consumers normalise them within an
episode (section 3.3).

Example:
    >>> model = ValueModel(VLAConfig(obs_mode="state"))
    >>> obs = {"robot_obs": np.zeros((2, 15)), "scene_obs": np.zeros((2, 24))}
    >>> model.predict(obs, ["open the drawer", "lift the red block"]).shape
    (2,)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rftf_gym.models import (
    PRECOMPUTED_TEXT,
    VLA,
    VLABody,
    VLAConfig,
    check_state_dict,
    load_safetensors_checkpoint,
    save_safetensors_checkpoint,
)
from rftf_gym.text_encoder import make_text_encoder

VALUE_MODEL_TYPE = "rftf_value"
"""The ``policy_type`` a value checkpoint's config.json names (it is not a policy: `load_policy`
refuses it with a message listing the registered policy types)."""
QUERY_PARAMETER = "queries"
"""Name of the query-token parameter in `VLABody`: the one body tensor not copied from a VLA."""


class ValueModel(nn.Module):
    """`VLABody` with value query tokens and a scalar value head.

    Args:
        config: The body's architecture (the BC model's `VLAConfig`; its ``num_action_queries``
            and action-head fields are not used).
        num_value_queries: Value query tokens; their outputs are concatenated for the head.
        head_hidden: Hidden width of the value head MLP.
    """

    def __init__(self, config: VLAConfig, num_value_queries: int = 1, head_hidden: int = 256) -> None:
        super().__init__()
        if num_value_queries < 1 or head_hidden < 1:
            raise ValueError(f"num_value_queries and head_hidden must be >= 1, got {num_value_queries}, {head_hidden}")
        self.config = config
        self.num_value_queries = int(num_value_queries)
        self.head_hidden = int(head_hidden)
        self.body = VLABody(config, self.num_value_queries)
        width = self.num_value_queries * config.d_model
        self.value_head = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, head_hidden), nn.GELU(), nn.Linear(head_hidden, 1)
        )
        self.text_encoder = None
        if config.text_encoder != PRECOMPUTED_TEXT:
            self.text_encoder = make_text_encoder(config.text_encoder)
            if self.text_encoder.dim != config.text_dim:
                raise ValueError(
                    f"text encoder {config.text_encoder!r} has dim {self.text_encoder.dim}, config.text_dim is {config.text_dim}"
                )

    # The VLA's input pipeline, unchanged: it reads only config, device and text_encoder, which
    # this model has under the same names, so observations and instructions are prepared
    # exactly as for the policy the values will reward.
    preprocess = VLA.preprocess

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw values (B,) of a `preprocess` batch."""
        return self.value_head(self.body(batch).flatten(1)).squeeze(-1)

    @torch.no_grad()
    def predict(self, obs: Mapping[str, Any], instructions: Sequence[str] | None = None) -> np.ndarray:
        """Raw values of a batch of env observations in one forward pass.

        Args:
            obs: Arrays stacked on a batch axis (the config's ``obs_keys``; optional ``lang_emb``).
            instructions: One sentence per row (None when ``obs["lang_emb"]`` is given).

        Returns:
            float32 array (B,).
        """
        was_training = self.training
        self.eval()
        try:
            return self(self.preprocess(obs, instructions)).float().cpu().numpy()
        finally:
            self.train(was_training)

    @classmethod
    def from_vla(cls, vla: VLA, num_value_queries: int = 1, head_hidden: int = 256) -> ValueModel:
        """A value model whose body starts from a BC model's body (RFTF section 3.2).

        Every body tensor (encoders, instruction projection, backbone, state normalisation) is
        copied; the value query tokens replace the action query tokens and start fresh, as does
        the value head.
        """
        model = cls(vla.config, num_value_queries, head_hidden)
        source = {k: v for k, v in vla.body.state_dict().items() if k != QUERY_PARAMETER}
        missing, unexpected = model.body.load_state_dict(source, strict=False)
        if set(missing) != {QUERY_PARAMETER} or unexpected:
            raise ValueError(f"VLA body does not match the value body: missing {missing}, unexpected {unexpected}")
        return model.to(vla.device)

    def checkpoint_config(self) -> dict[str, Any]:
        """The JSON config saved next to the weights."""
        return {
            "policy_type": VALUE_MODEL_TYPE,
            "vla_config": self.config.to_dict(),
            "value": {"num_value_queries": self.num_value_queries, "head_hidden": self.head_hidden},
            "observation": {
                "obs_mode": self.config.obs_mode,
                "keys": list(self.config.obs_keys),
                "static_size": self.config.static_size,
                "gripper_size": self.config.gripper_size,
            },
        }


def save_value_model(directory: str | Path, model: ValueModel, metadata: Mapping[str, Any] | None = None) -> Path:
    """Save ``model.safetensors`` + ``config.json`` atomically (weights first, config last).

    Args:
        directory: The checkpoint directory (created if missing).
        model: The value model.
        metadata: JSON-serialisable facts stored under ``metadata`` (data, step, scores).

    Returns:
        The directory.
    """
    config = model.checkpoint_config()
    config["metadata"] = dict(metadata or {})
    return save_safetensors_checkpoint(directory, model.state_dict(), config)


def load_value_model(directory: str | Path, device: str | torch.device = "cpu") -> ValueModel:
    """Load a value model saved by `save_value_model`, checking every part.

    Raises:
        FileNotFoundError: The directory, config.json or weights file is missing.
        ValueError: Not a value checkpoint, an invalid config, or weights that do not fit the
            architecture in the config (the message names the tensors that differ).
    """
    config, tensors = load_safetensors_checkpoint(directory, VALUE_MODEL_TYPE)
    where = Path(directory) / "config.json"
    try:
        vla_config = VLAConfig.from_dict(config.get("vla_config"))
        value = config["value"]
        model = ValueModel(vla_config, int(value["num_value_queries"]), int(value["head_hidden"]))
    except (TypeError, KeyError, ValueError) as err:
        raise ValueError(f"{where}: invalid value model config: {err!r}") from err
    check_state_dict(model, tensors, f"value checkpoint {str(directory)!r}")
    model.load_state_dict(tensors)
    model.checkpoint_metadata = config.get("metadata", {})
    return model.to(device).eval()
