"""The temporal value model of RFTF (arXiv 2505.19767, section 3.2): V_phi(s_t, l) -> a scalar.

Its architecture is the VLA's (section 3.2: "with only the action tokens of the VLA model
replaced by value tokens"; section 4.1.4: "replacing the original VLA's action tokens and action
decoder with value tokens and a value decoder"): the same `VLABody` (camera or state encoders,
instruction projection, transformer backbone) with its own learned value query tokens, whose
outputs go through a small MLP to one raw value. Training starts from the BC model's weights
(`ValueModel.from_vla`: every body tensor except the query tokens is copied) or from scratch.

Values are raw: their range differs between tasks, and consumers normalise them within an
episode (section 3.3).

Context. By default (``context="none"``) the model sees one frame, V(s_t, l). With
``context="start"`` (state variant) it also sees the frame where the instruction started,
V(s_t | s_start, l): "progress since the instruction was given". A frame alone cannot show how
far a block has turned or moved relative to where it started; the paper's value model is built
on a VLA body that reads a short history of observations (sections 3.2 and 4.1.4), and this
conditions on the one frame of history that fixes the task's starting point. The difference
s_t - s_start (positions and articulations subtracted, Euler angles as the wrapped angle
difference) enters as five extra tokens (robot, articulation, three blocks), each normalised by
the spread of such differences in the training data. The start observation is passed in the
same observation batch under ``start_robot_obs`` / ``start_scene_obs`` (`START_PREFIX`); in a
demonstration window it is the window's first frame, in an env episode the reset observation.
With ``context="recent"`` the model sees the frame k = ``recent_lag`` steps back instead,
V(s_t | s_{t-k}, l): how the scene moved lately, as a VLA body reading a short history of frames
would (section 4.1.4); five more tokens of s_t - s_{t-k}, under ``recent_robot_obs`` /
``recent_scene_obs`` (`RECENT_PREFIX`; the episode's first frame while t < k).
``context="start+recent"`` reads both. ``relative=True`` (with a start context) feeds the body
s_t - s_start in place of s_t, so that no absolute position reaches the model: a held-out scene
places the drawer, slider and switches elsewhere (CALVIN's calvin_env conf/scene/calvin_scene_*.yaml
load a different table per scene), and motion relative to the start transfers where absolute
positions do not. The reward wrappers supply the start frame only, so a
recent-context model is for the offline diagnostics (`rftf_gym.value_diagnostics`).

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
from rftf_gym.wrappers import CONTEXT_KEYS, CONTEXTS, RECENT_PREFIX, START_PREFIX, value_context  # noqa: F401  (re-exported)

VALUE_MODEL_TYPE = "rftf_value"
"""The ``policy_type`` a value checkpoint's config.json names (it is not a policy: `load_policy`
refuses it with a message listing the registered policy types)."""
# CONTEXTS (what a value model is conditioned on besides the current frame and the instruction),
# the start frame's keys (`START_PREFIX` + `CONTEXT_KEYS`: ``start_robot_obs``, ``start_scene_obs``),
# the recent frame's (`RECENT_PREFIX`) and `value_context` live in `rftf_gym.wrappers`, which
# supplies them without importing torch.
DEFAULT_RECENT_LAG = 4
"""Frames between s_t and the recent frame s_{t-k} of a ``recent`` context model."""
# Layout of the raw difference features (robot_obs 15, scene_obs 24; CALVIN's
# conf/observation/state_obs ordering as in rftf_gym.conventions): Euler angles are wrapped.
_ROBOT_ANGLES = slice(3, 6)
_BLOCK_ANGLE_OFFSETS = (9, 10, 11, 15, 16, 17, 21, 22, 23)
CONTEXT_TOKEN_SIZES = (15, 6, 6, 6, 6)
"""Widths of the five context tokens: robot, articulations, red / blue / pink block."""
QUERY_PARAMETER = "queries"
"""Name of the query-token parameter in `VLABody`: the one body tensor not copied from a VLA."""


class ValueModel(nn.Module):
    """`VLABody` with value query tokens and a scalar value head.

    Args:
        config: The body's architecture (the BC model's `VLAConfig`; its ``num_action_queries``
            and action-head fields are not used).
        num_value_queries: Value query tokens; their outputs are concatenated for the head.
        head_hidden: Hidden width of the value head MLP.
        context: One of `CONTEXTS` (module docstring).
        recent_lag: Frames k back of the recent frame (contexts with "recent").
        relative: The body reads s_t - s_start instead of s_t (start contexts; module docstring).
    """

    def __init__(
        self, config: VLAConfig, num_value_queries: int = 1, head_hidden: int = 256, context: str = "none",
        recent_lag: int = DEFAULT_RECENT_LAG, relative: bool = False,
    ) -> None:
        super().__init__()
        if num_value_queries < 1 or head_hidden < 1:
            raise ValueError(f"num_value_queries and head_hidden must be >= 1, got {num_value_queries}, {head_hidden}")
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
        if context != "none" and config.obs_mode != "state":
            raise ValueError(f"context {context!r} is implemented for the state variant only, got obs_mode {config.obs_mode!r}")
        if recent_lag < 1:
            raise ValueError(f"recent_lag must be >= 1 frame, got {recent_lag}")
        if relative and context not in ("start", "start+recent"):
            raise ValueError(f"relative (the body reads s_t - s_start) needs a start context, got context {context!r}")
        self.config = config
        self.num_value_queries = int(num_value_queries)
        self.head_hidden = int(head_hidden)
        self.context = context
        self.recent_lag = int(recent_lag)
        self.relative = bool(relative)
        self.body = VLABody(config, self.num_value_queries)
        if self.uses_start and not self.relative:
            d = config.d_model
            self.context_robot_proj = nn.Linear(CONTEXT_TOKEN_SIZES[0], d)
            self.context_articulation_proj = nn.Linear(CONTEXT_TOKEN_SIZES[1], d)
            self.context_block_proj = nn.Linear(CONTEXT_TOKEN_SIZES[2], d)
            self.context_token_type = nn.Parameter(torch.zeros(len(CONTEXT_TOKEN_SIZES), d))
            nn.init.normal_(self.context_token_type, std=0.02)
            # Spread of s_t - s_start in the training data (`set_context_normalization`).
            self.register_buffer("context_std", torch.ones(sum(CONTEXT_TOKEN_SIZES)))
        if self.uses_recent:
            d = config.d_model
            self.recent_robot_proj = nn.Linear(CONTEXT_TOKEN_SIZES[0], d)
            self.recent_articulation_proj = nn.Linear(CONTEXT_TOKEN_SIZES[1], d)
            self.recent_block_proj = nn.Linear(CONTEXT_TOKEN_SIZES[2], d)
            self.recent_token_type = nn.Parameter(torch.zeros(len(CONTEXT_TOKEN_SIZES), d))
            nn.init.normal_(self.recent_token_type, std=0.02)
            # Spread of s_t - s_{t-k} in the training data (`set_context_normalization`).
            self.register_buffer("recent_std", torch.ones(sum(CONTEXT_TOKEN_SIZES)))
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

    def preprocess(self, obs: Mapping[str, Any], instructions: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Env observations + instructions -> model inputs, exactly as the VLA prepares them
        (`VLA.preprocess`), plus the start frame (``start_robot_obs``, ``start_scene_obs``) for a
        model of the start context and the recent frame (``recent_robot_obs``, ``recent_scene_obs``)
        for one of the recent context.

        Raises:
            ValueError: A missing key or a bad shape (the message names it).
        """
        batch = VLA.preprocess(self, obs, instructions)
        prefixes = [(START_PREFIX, "the instruction's start frame")] if self.uses_start else []
        if self.uses_recent:
            prefixes.append((RECENT_PREFIX, f"the frame {self.recent_lag} steps back (its first frame early on)"))
        for prefix, what in prefixes:
            missing = [prefix + k for k in CONTEXT_KEYS if prefix + k not in obs]
            if missing:
                raise ValueError(
                    f"this value model is conditioned on {what} (context {self.context!r}): pass {missing} with the observations"
                )
            for k in CONTEXT_KEYS:
                value = torch.as_tensor(np.asarray(obs[prefix + k]), dtype=torch.float32)
                if value.shape != batch[k].shape:
                    raise ValueError(f"{prefix + k} must have the shape of {k}, {tuple(batch[k].shape)}; got {tuple(value.shape)}")
                batch[prefix + k] = value.to(batch[k].device)
        return batch

    @property
    def uses_start(self) -> bool:
        """Whether the model reads the instruction's start frame (``start_*`` keys)."""
        return self.context in ("start", "start+recent")

    @property
    def uses_recent(self) -> bool:
        """Whether the model reads the frame `recent_lag` steps back (``recent_*`` keys)."""
        return self.context in ("recent", "start+recent")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw values (B,) of a `preprocess` batch."""
        parts = []
        if self.relative:
            # The body reads s_t - s_start in place of s_t: no absolute position reaches the model.
            delta = self._difference(batch, START_PREFIX)
            batch = {**batch, "robot_obs": delta[:, :15], "scene_obs": delta[:, 15:]}
        elif self.uses_start:
            parts.append(self._difference_tokens(batch, START_PREFIX, "context"))
        if self.uses_recent:
            parts.append(self._difference_tokens(batch, RECENT_PREFIX, "recent"))
        extra = torch.cat(parts, dim=1) if parts else None
        return self.value_head(self.body(batch, extra).flatten(1)).squeeze(-1)

    @staticmethod
    def _difference(batch: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
        """(B, 39) `context_difference` of the current frame and the frame under ``prefix``."""
        return context_difference(batch["robot_obs"], batch["scene_obs"], batch[prefix + "robot_obs"], batch[prefix + "scene_obs"])

    def _difference_tokens(self, batch: Mapping[str, torch.Tensor], prefix: str, kind: str) -> torch.Tensor:
        """(B, 5, d_model) tokens of the current frame minus the frame under ``prefix``: s_t - s_start
        (``kind`` "context") or s_t - s_{t-k}, the recent motion (``kind`` "recent"), each through its
        own normalisation, projections and token type."""
        delta = self._difference(batch, prefix) / getattr(self, f"{kind}_std")
        robot, articulation, *blocks = torch.split(delta, CONTEXT_TOKEN_SIZES, dim=-1)
        tokens = [getattr(self, f"{kind}_robot_proj")(robot).unsqueeze(1),
                  getattr(self, f"{kind}_articulation_proj")(articulation).unsqueeze(1),
                  getattr(self, f"{kind}_block_proj")(torch.stack(blocks, dim=1))]
        return torch.cat(tokens, dim=1) + getattr(self, f"{kind}_token_type")

    @torch.no_grad()
    def set_context_normalization(self, differences: np.ndarray, frame: str = "start") -> None:
        """Set the scale of each difference feature from `context_difference` values (N, 39) of
        training frames against their start frames (``frame="start"``) or their frames
        `recent_lag` steps back (``frame="recent"``), as std floored at 1e-3."""
        if frame not in ("start", "recent"):
            raise ValueError(f"frame must be 'start' or 'recent', got {frame!r}")
        if not (self.uses_start and not self.relative if frame == "start" else self.uses_recent):
            raise ValueError(f"set_context_normalization(frame={frame!r}) is for a context {frame!r} model (or 'start+recent'), "
                             f"this one's context is {self.context!r}")
        std = self.context_std if frame == "start" else self.recent_std
        diffs = torch.as_tensor(np.asarray(differences), dtype=torch.float32)
        if diffs.ndim != 2 or diffs.shape[1] != std.numel():
            raise ValueError(f"differences must be (N, {std.numel()}), got {tuple(diffs.shape)}")
        std.copy_(diffs.std(0).clamp_min(1e-3).to(std.device))

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
    def from_vla(
        cls, vla: VLA, num_value_queries: int = 1, head_hidden: int = 256, context: str = "none", recent_lag: int = DEFAULT_RECENT_LAG,
        relative: bool = False,
    ) -> ValueModel:
        """A value model whose body starts from a BC model's body (RFTF section 3.2).

        Every body tensor (encoders, instruction projection, backbone, state normalisation) is
        copied; the value query tokens replace the action query tokens and start fresh, as does
        the value head.
        """
        if relative:
            raise ValueError("a relative model's body reads s_t - s_start, not the observations a BC body was trained on")
        model = cls(vla.config, num_value_queries, head_hidden, context, recent_lag)
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
            "value": {"num_value_queries": self.num_value_queries, "head_hidden": self.head_hidden, "context": self.context,
                      "recent_lag": self.recent_lag, "relative": self.relative},
            "observation": {
                "obs_mode": self.config.obs_mode,
                "keys": list(self.config.obs_keys),
                "static_size": self.config.static_size,
                "gripper_size": self.config.gripper_size,
            },
        }


def context_difference(
    robot_obs: torch.Tensor, scene_obs: torch.Tensor, start_robot_obs: torch.Tensor, start_scene_obs: torch.Tensor
) -> torch.Tensor:
    """s_t - s_start as (B, 39) features: robot (15), articulations (6), three blocks (6 each).

    Positions, joints and articulations are subtracted; Euler angles (the tcp's and the blocks')
    become the difference wrapped to (-pi, pi], so a block turned across +-pi reads as a small turn.
    """
    diff = torch.cat([robot_obs.float() - start_robot_obs.float(), scene_obs.float() - start_scene_obs.float()], dim=-1)
    angles = [_ROBOT_ANGLES.start + i for i in range(3)] + [15 + i for i in _BLOCK_ANGLE_OFFSETS]
    wrapped = torch.atan2(torch.sin(diff[:, angles]), torch.cos(diff[:, angles]))
    diff = diff.clone()
    diff[:, angles] = wrapped
    return diff


def with_start(obs: Mapping[str, Any], start: Mapping[str, Any]) -> dict[str, Any]:
    """``obs`` plus the start frame's `CONTEXT_KEYS` under `START_PREFIX` (both batched alike)."""
    out = dict(obs)
    for k in CONTEXT_KEYS:
        if k in start:
            out[START_PREFIX + k] = start[k]
    return out


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
        # Checkpoints written before the context option have no "context": one frame.
        # Checkpoints written before the recent context have no "recent_lag" (they do not read it).
        model = ValueModel(vla_config, int(value["num_value_queries"]), int(value["head_hidden"]), str(value.get("context", "none")),
                           int(value.get("recent_lag", DEFAULT_RECENT_LAG)), bool(value.get("relative", False)))
    except (TypeError, KeyError, ValueError) as err:
        raise ValueError(f"{where}: invalid value model config: {err!r}") from err
    check_state_dict(model, tensors, f"value checkpoint {str(directory)!r}")
    model.load_state_dict(tensors)
    model.checkpoint_metadata = config.get("metadata", {})
    return model.to(device).eval()
