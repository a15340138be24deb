"""The base VLA: encoders -> transformer backbone -> features -> 1000-bin action head.

RFTF (arXiv 2505.19767, section 4.1.4) fine-tunes VLAs whose continuous actions it discretises
into 1000 bins per dimension to obtain the probability term of the PPO objective, and it trains
only the action head while the rest stays frozen (section 3.3). This module makes that split
explicit:

    obs, instruction --preprocess--> batch --VLABody--> query outputs --flatten--> features (B, F)
    features --action_head--> logits (B, 7, NUM_BINS) --> BinnedActionDistribution

The relative action is CALVIN's 7-d ``(dx, dy, dz, droll, dpitch, dyaw, gripper)`` in [-1, 1];
each dimension, the gripper included, is a categorical over `NUM_BINS` equal-width bins of
[-1, 1]. The gripper is binarised on the way out (CALVIN's env asserts exactly -1 / +1:
``calvin_env/envs/play_table_env.py``), so its upper half of the bins means "open".

Two observation variants share head and checkpoint format:

- ``rgb``: ``rgb_static`` and ``rgb_gripper`` (resized to the config's sizes) + ``robot_obs``;
- ``state``: ``robot_obs`` + ``scene_obs`` (no images), for fast experiments.

Checkpoints are a directory with ``model.safetensors`` and ``config.json`` (architecture, bins,
observation spec, image sizes, instruction encoder, weight digest and the caller's metadata such
as the data and command that produced them), written atomically and checked on load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rftf_gym.conventions import ACTION_DIM, ROBOT_OBS_DIM, SCENE_OBS_DIM
from rftf_gym.files import atomic_write
from rftf_gym.text_encoder import HashedNgramEncoder, TextEncoder, make_text_encoder

NUM_BINS = 1000
"""Bins per action dimension over [-1, 1] (RFTF section 4.1.4 discretises to 1000 bins)."""
GRIPPER_DIM = 6
OBS_MODES = ("rgb", "state")
PRECOMPUTED_TEXT = "precomputed"
"""``text_encoder`` value of a model that only takes precomputed embeddings (``lang_emb``)."""

VLA_POLICY_TYPE = "rftf_vla"
CHECKPOINT_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


# ---------------------------------------------------------------------------------- binning
def _check_bins_arg(num_bins: int) -> int:
    if int(num_bins) < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    return int(num_bins)


def actions_to_bins(actions: torch.Tensor | np.ndarray, num_bins: int = NUM_BINS) -> torch.LongTensor:
    """Bin continuous actions: [-1, 1] is cut into ``num_bins`` equal bins (values outside are
    clipped into the end bins).

    Args:
        actions: float tensor or array (..., 7).
        num_bins: bins per dimension.

    Returns:
        int64 tensor (..., 7) in [0, num_bins - 1].

    Raises:
        ValueError: last dimension is not 7, or a value is NaN / infinite.
    """
    num_bins = _check_bins_arg(num_bins)
    a = torch.as_tensor(actions, dtype=torch.float64)
    if a.ndim == 0 or a.shape[-1] != ACTION_DIM:
        raise ValueError(f"actions must have shape (..., {ACTION_DIM}), got {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise ValueError("actions contain NaN or infinite values")
    bins = torch.floor((a.clamp(-1.0, 1.0) + 1.0) * (num_bins / 2.0)).long()
    return bins.clamp_(0, num_bins - 1)


def bins_to_actions(bins: torch.Tensor | np.ndarray, num_bins: int = NUM_BINS) -> torch.Tensor:
    """Bin centres of binned actions; the gripper dimension (6) becomes exactly -1 (lower half of
    the bins, close) or +1 (upper half, open).

    Args:
        bins: integer tensor or array (..., 7) in [0, num_bins - 1].
        num_bins: bins per dimension.

    Returns:
        float32 tensor (..., 7).

    Raises:
        ValueError: wrong shape, a non-integer dtype or a bin out of range.
    """
    num_bins = _check_bins_arg(num_bins)
    b = torch.as_tensor(bins)
    if b.dtype.is_floating_point or b.dtype == torch.bool or b.dtype.is_complex:
        raise ValueError(f"bins must be integers, got dtype {b.dtype}")
    if b.ndim == 0 or b.shape[-1] != ACTION_DIM:
        raise ValueError(f"bins must have shape (..., {ACTION_DIM}), got {tuple(b.shape)}")
    if b.numel() and (b.min() < 0 or b.max() >= num_bins):
        raise ValueError(f"bins must lie in [0, {num_bins - 1}], got range [{int(b.min())}, {int(b.max())}]")
    actions = -1.0 + (b.to(torch.float32) + 0.5) * (2.0 / num_bins)
    actions[..., GRIPPER_DIM] = torch.where(b[..., GRIPPER_DIM] >= num_bins // 2, 1.0, -1.0)
    return actions


class BinnedActionDistribution:
    """Independent categoricals over the bins of the 7 action dimensions.

    Log-probabilities and entropies sum over dimensions (the action's probability is the product
    of its dimensions' probabilities), which is the probability term RFTF's PPO ratio uses.

    Args:
        logits: float tensor (B, 7, num_bins); computed in float32 whatever its dtype.
    """

    def __init__(self, logits: torch.Tensor) -> None:
        if logits.ndim != 3 or logits.shape[1] != ACTION_DIM:
            raise ValueError(f"logits must have shape (B, {ACTION_DIM}, num_bins), got {tuple(logits.shape)}")
        self.logits = logits.float()
        self.log_probs = torch.log_softmax(self.logits, dim=-1)

    @property
    def num_bins(self) -> int:
        return self.logits.shape[-1]

    @property
    def probs(self) -> torch.Tensor:
        return self.log_probs.exp()

    def _check_bins(self, bins: torch.Tensor) -> torch.Tensor:
        bins = torch.as_tensor(bins, device=self.logits.device)
        if bins.shape != self.logits.shape[:2]:
            raise ValueError(f"bins must have shape {tuple(self.logits.shape[:2])}, got {tuple(bins.shape)}")
        return bins.long()

    def log_prob(self, bins: torch.Tensor) -> torch.Tensor:
        """Sum over dimensions of log p(bin): (B,)."""
        bins = self._check_bins(bins)
        return self.log_probs.gather(-1, bins.unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> torch.Tensor:
        """Sum over dimensions of the categorical entropies: (B,)."""
        p = self.probs
        return -torch.where(p > 0, p * self.log_probs, torch.zeros_like(p)).sum((-1, -2))

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bins drawn from the distribution: int64 (B, 7)."""
        flat = self.probs.reshape(-1, self.num_bins)
        return torch.multinomial(flat, 1, generator=generator).reshape(self.logits.shape[:2])

    def mode(self) -> torch.Tensor:
        """Most probable bin per dimension: int64 (B, 7) (greedy actions for evaluation)."""
        return self.logits.argmax(-1)

    def kl(self, other: BinnedActionDistribution) -> torch.Tensor:
        """Exact KL(self || other), summed over dimensions: (B,)."""
        if other.logits.shape != self.logits.shape:
            raise ValueError(f"KL between distributions of shapes {tuple(self.logits.shape)} and {tuple(other.logits.shape)}")
        p = self.probs
        diff = self.log_probs - other.log_probs
        return torch.where(p > 0, p * diff, torch.zeros_like(p)).sum((-1, -2))


# ---------------------------------------------------------------------------------- config
@dataclass
class VLAConfig:
    """Architecture of a `VLA` (saved as ``vla_config`` in config.json)."""

    obs_mode: str = "state"
    """"rgb" (rgb_static, rgb_gripper, robot_obs) or "state" (robot_obs, scene_obs)."""
    static_size: int = 64
    """Side of the square static-camera image fed to the model (the env renders 200)."""
    gripper_size: int = 48
    """Side of the square gripper-camera image fed to the model (the env renders 84)."""
    static_grid: int = 4
    """The static image becomes static_grid^2 tokens."""
    gripper_grid: int = 2
    """The gripper image becomes gripper_grid^2 tokens."""
    d_model: int = 128
    """Width of the transformer backbone."""
    n_layers: int = 2
    """Transformer layers."""
    n_heads: int = 4
    """Attention heads."""
    mlp_ratio: int = 4
    """Feed-forward width / d_model."""
    dropout: float = 0.0
    """Dropout inside the backbone."""
    num_action_queries: int = 1
    """Learned query tokens whose outputs form the features (features = queries * d_model)."""
    head_hidden: int = 256
    """Hidden width of the action head MLP."""
    num_bins: int = NUM_BINS
    """Bins per action dimension."""
    text_encoder: str = field(default_factory=lambda: HashedNgramEncoder().name)
    """Instruction encoder name (`rftf_gym.text_encoder.make_text_encoder`), or "precomputed"."""
    text_dim: int = 384
    """Width of the instruction embedding."""

    def __post_init__(self) -> None:
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {self.obs_mode!r}")
        for name in ("static_size", "gripper_size", "static_grid", "gripper_grid", "d_model", "n_layers",
                     "n_heads", "mlp_ratio", "num_action_queries", "head_hidden", "text_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        _check_bins_arg(self.num_bins)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.static_size < 8 * self.static_grid or self.gripper_size < 8 * self.gripper_grid:
            raise ValueError("image sizes must be at least 8 x their token grid (three stride-2 convolutions)")

    @property
    def image_keys(self) -> tuple[str, ...]:
        return ("rgb_static", "rgb_gripper") if self.obs_mode == "rgb" else ()

    @property
    def obs_keys(self) -> tuple[str, ...]:
        """Observation keys the model reads."""
        return ("rgb_static", "rgb_gripper", "robot_obs") if self.obs_mode == "rgb" else ("robot_obs", "scene_obs")

    @property
    def feature_dim(self) -> int:
        return self.num_action_queries * self.d_model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLAConfig:
        """Build from a dict; unknown keys are an error naming them (missing ones take defaults
        only if the caller allows it: checkpoints always store every field)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a VLA config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VLA config fields {unknown} (known: {sorted(known)})")
        return cls(**dict(data))


def config_differences(expected: VLAConfig, found: VLAConfig) -> list[str]:
    """Human-readable ``field: expected vs found`` lines for every field that differs."""
    a, b = expected.to_dict(), found.to_dict()
    return [f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k]]


# ---------------------------------------------------------------------------------- body
def _state_features(robot_obs: torch.Tensor, scene_obs: torch.Tensor | None) -> list[torch.Tensor]:
    """Angles become (sin, cos) so that roll near +-pi (the neutral pose has roll 3.09) does not
    jump: robot (15) -> 18 features; scene (24) -> 6 articulation values + 3 blocks x 9."""
    def angles(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)

    robot = torch.cat([robot_obs[:, :3], angles(robot_obs[:, 3:6]), robot_obs[:, 6:]], dim=-1)
    out = [robot]
    if scene_obs is not None:
        out.append(scene_obs[:, :6])
        for i in range(3):  # red, blue, pink: pos (3) + euler (3) each
            block = scene_obs[:, 6 + 6 * i : 12 + 6 * i]
            out.append(torch.cat([block[:, :3], angles(block[:, 3:])], dim=-1))
    return out


ROBOT_FEATURES = 18
ARTICULATION_FEATURES = 6
BLOCK_FEATURES = 9


class ConvTokens(nn.Module):
    """Three stride-2 convolutions, then average pooling to a grid x grid map of tokens."""

    def __init__(self, d_model: int, grid: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 5, stride=2, padding=2), nn.GroupNorm(8, 32), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GroupNorm(8, 64), nn.GELU(),
            nn.Conv2d(64, d_model, 3, stride=2, padding=1), nn.GroupNorm(8, d_model), nn.GELU(),
            nn.AdaptiveAvgPool2d(grid),
        )
        self.pos = nn.Parameter(torch.zeros(grid * grid, d_model))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # uint8 (B, 3, H, W) -> roughly zero-mean, unit-range floats
        x = images.float() * (1.0 / 127.5) - 1.0
        return self.net(x).flatten(2).transpose(1, 2) + self.pos


class VLABody(nn.Module):
    """Encoders (cameras or state), instruction projection and a transformer backbone over their
    tokens plus ``num_queries`` learned query tokens.

    Args:
        config: the architecture.
        num_queries: query tokens whose outputs are returned (action queries for the VLA, value
            queries for the value model).
    """

    def __init__(self, config: VLAConfig, num_queries: int) -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {num_queries}")
        self.config = config
        self.num_queries = num_queries
        d = config.d_model
        self.lang_proj = nn.Linear(config.text_dim, d)
        self.robot_proj = nn.Linear(ROBOT_FEATURES, d)
        num_feat = ROBOT_FEATURES
        if config.obs_mode == "rgb":
            self.static_enc = ConvTokens(d, config.static_grid)
            self.gripper_enc = ConvTokens(d, config.gripper_grid)
            num_tokens = 2 + config.static_grid**2 + config.gripper_grid**2
        else:
            self.articulation_proj = nn.Linear(ARTICULATION_FEATURES, d)
            self.block_proj = nn.Linear(BLOCK_FEATURES, d)
            num_feat += ARTICULATION_FEATURES + 3 * BLOCK_FEATURES
            num_tokens = 2 + 1 + 3
        # Normalisation of the state features, set from training data (`set_state_normalization`)
        # and saved with the weights.
        self.register_buffer("state_mean", torch.zeros(num_feat))
        self.register_buffer("state_std", torch.ones(num_feat))
        self.token_type = nn.Parameter(torch.zeros(num_tokens, d))
        self.queries = nn.Parameter(torch.zeros(num_queries, d))
        nn.init.normal_(self.token_type, std=0.02)
        nn.init.normal_(self.queries, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d, config.n_heads, config.mlp_ratio * d, config.dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.backbone = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def _state(self, batch: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        scene = batch["scene_obs"].float() if self.config.obs_mode == "state" else None
        parts = _state_features(batch["robot_obs"].float(), scene)
        flat = (torch.cat(parts, dim=-1) - self.state_mean) / self.state_std
        return list(torch.split(flat, [p.shape[-1] for p in parts], dim=-1))

    @torch.no_grad()
    def set_state_normalization(self, robot_obs: np.ndarray, scene_obs: np.ndarray | None = None) -> None:
        """Set the state feature mean / std from training observations (N, 15) and (N, 24)."""
        robot = torch.as_tensor(np.asarray(robot_obs), dtype=torch.float32)
        scene = torch.as_tensor(np.asarray(scene_obs), dtype=torch.float32) if self.config.obs_mode == "state" else None
        feats = torch.cat(_state_features(robot, scene), dim=-1)
        self.state_mean.copy_(feats.mean(0))
        self.state_std.copy_(feats.std(0).clamp_min(1e-3))

    def forward(self, batch: Mapping[str, torch.Tensor], extra_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Query outputs (B, num_queries, d_model) from a `VLA.preprocess` batch.

        Args:
            batch: The model inputs.
            extra_tokens: Optional (B, k, d_model) tokens appended to the observation tokens
                before the queries (the value model's context tokens); None for the VLA.
        """
        state = self._state(batch)
        tokens = [self.lang_proj(batch["lang_emb"].float()).unsqueeze(1), self.robot_proj(state[0]).unsqueeze(1)]
        if self.config.obs_mode == "rgb":
            tokens += [self.static_enc(batch["rgb_static"]), self.gripper_enc(batch["rgb_gripper"])]
        else:
            tokens.append(self.articulation_proj(state[1]).unsqueeze(1))
            tokens.append(self.block_proj(torch.stack(state[2:], dim=1)))
        x = torch.cat(tokens, dim=1) + self.token_type
        if extra_tokens is not None:
            x = torch.cat([x, extra_tokens], dim=1)
        x = torch.cat([x, self.queries.expand(x.shape[0], -1, -1)], dim=1)
        x = self.norm(self.backbone(x))
        return x[:, -self.num_queries :]


# ---------------------------------------------------------------------------------- VLA
def resize_images(array: np.ndarray | torch.Tensor, key: str, size: int, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> uint8 (B, 3, size, size) on ``device`` (antialiased bilinear resize)."""
    images = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{key} must be uint8 images (B, H, W, 3), got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"{key} must be uint8 as the env returns it, got {images.dtype}")
    images = images.to(device).permute(0, 3, 1, 2)
    if images.shape[-2:] != (size, size):
        resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = resized.round_().clamp_(0, 255).to(torch.uint8)
    return images.contiguous()


class VLA(nn.Module):
    """The base VLA policy: frozen `VLABody` -> features -> trainable action head.

    Args:
        config: the architecture.

    Example:
        >>> vla = VLA(VLAConfig(obs_mode="state"))
        >>> obs = {"robot_obs": np.zeros((2, 15)), "scene_obs": np.zeros((2, 24))}
        >>> vla.act(obs, ["open the drawer", "lift the red block"]).shape
        (2, 7)
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        self.body = VLABody(config, config.num_action_queries)
        self.action_head = nn.Sequential(
            nn.LayerNorm(config.feature_dim),
            nn.Linear(config.feature_dim, config.head_hidden),
            nn.GELU(),
            nn.Linear(config.head_hidden, ACTION_DIM * config.num_bins),
        )
        self.text_encoder: TextEncoder | None = None
        if config.text_encoder != PRECOMPUTED_TEXT:
            self.text_encoder = make_text_encoder(config.text_encoder)
            if self.text_encoder.dim != config.text_dim:
                raise ValueError(
                    f"text encoder {config.text_encoder!r} has dim {self.text_encoder.dim}, config.text_dim is {config.text_dim}"
                )
        self.inference_dtype: torch.dtype | None = None
        """bfloat16 to run `act` under CPU/GPU autocast; None for float32."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(
        self, obs: Mapping[str, Any], instructions: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Env observations stacked on a batch axis + one sentence per row -> model inputs.

        Args:
            obs: numpy arrays (B, ...): the config's `obs_keys` (uint8 HWC images of any size are
                resized here), and optionally ``lang_emb`` (B, text_dim), a precomputed
                instruction embedding used instead of ``instructions``.
            instructions: one sentence per row (None when ``lang_emb`` is given).

        Returns:
            Tensors on the model's device: images uint8 (B, 3, size, size), vectors float32,
            ``lang_emb`` float32 (B, text_dim).

        Raises:
            ValueError: a missing key, inconsistent batch sizes, wrong shapes, or neither
                instructions nor ``lang_emb``.
        """
        cfg, device = self.config, self.device
        missing = [k for k in cfg.obs_keys if k not in obs]
        if missing:
            raise ValueError(f"the {cfg.obs_mode!r} VLA needs observation keys {list(cfg.obs_keys)}; missing {missing}")
        batch: dict[str, torch.Tensor] = {}
        for key in cfg.obs_keys:
            if key in ("rgb_static", "rgb_gripper"):
                size = cfg.static_size if key == "rgb_static" else cfg.gripper_size
                batch[key] = resize_images(obs[key], key, size, device)
            else:
                dim = ROBOT_OBS_DIM if key == "robot_obs" else SCENE_OBS_DIM
                value = torch.as_tensor(np.asarray(obs[key]), dtype=torch.float32)
                if value.ndim != 2 or value.shape[1] != dim:
                    raise ValueError(f"{key} must have shape (B, {dim}), got {tuple(value.shape)}")
                batch[key] = value.to(device)
        if "lang_emb" in obs:
            emb = torch.as_tensor(np.asarray(obs["lang_emb"]), dtype=torch.float32)
        elif instructions is not None:
            if self.text_encoder is None:
                raise ValueError("this VLA takes precomputed instruction embeddings: pass obs['lang_emb']")
            emb = torch.from_numpy(self.text_encoder.encode(list(instructions)))
        else:
            raise ValueError("pass one instruction per row or a precomputed obs['lang_emb']")
        emb = emb.reshape(emb.shape[0], -1)
        if emb.shape[1] != cfg.text_dim:
            raise ValueError(f"instruction embedding has width {emb.shape[1]}, the model expects {cfg.text_dim}")
        batch["lang_emb"] = emb.to(device)
        sizes = {k: v.shape[0] for k, v in batch.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"inconsistent batch sizes: {sizes}")
        return batch

    def features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, F) features from the frozen body; F = num_action_queries * d_model."""
        return self.body(batch).flatten(1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 7, num_bins) action logits from the head."""
        return self.action_head(features).view(features.shape[0], ACTION_DIM, self.config.num_bins)

    def distribution(self, features: torch.Tensor) -> BinnedActionDistribution:
        return BinnedActionDistribution(self.logits(features))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, 7, num_bins) from a preprocessed batch."""
        return self.logits(self.features(batch))

    @torch.no_grad()
    def act(
        self,
        obs: Mapping[str, Any],
        instructions: Sequence[str] | None,
        greedy: bool = True,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Env actions (B, 7) float32: bin centres of the most probable (``greedy``) or sampled
        bins; gripper exactly +-1."""
        batch = self.preprocess(obs, instructions)
        device_type = self.device.type
        with torch.autocast(device_type, dtype=self.inference_dtype or torch.float32, enabled=self.inference_dtype is not None):
            dist = self.distribution(self.features(batch))
        bins = dist.mode() if greedy else dist.sample(generator)
        return bins_to_actions(bins.cpu(), self.config.num_bins).numpy()


# ---------------------------------------------------------------------------------- checkpoints
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_safetensors_checkpoint(directory: str | Path, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Path:
    """Write ``model.safetensors`` then ``config.json`` atomically (each to a temporary file
    moved into place); config.json records the weights' sha256 and tensor shapes, so a weights
    file that does not belong to it is detected on load.

    Args:
        directory: created if missing.
        tensors: name -> tensor (moved to CPU, made contiguous).
        config: JSON-serialisable; must hold a ``policy_type`` string.

    Returns:
        The directory.
    """
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not isinstance(config.get("policy_type"), str):
        raise ValueError("checkpoint config needs a 'policy_type' string")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    blob = save(cpu)
    weights = directory / WEIGHTS_FILE
    atomic_write(weights, lambda f: f.write(blob), sync=True)
    full = dict(config)
    full["format"] = CHECKPOINT_FORMAT
    full["weights"] = {
        "file": WEIGHTS_FILE,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "tensors": {k: list(v.shape) for k, v in cpu.items()},
    }
    text = json.dumps(full, indent=2, sort_keys=True) + "\n"
    atomic_write(directory / CONFIG_FILE, lambda f: f.write(text.encode()), sync=True)
    return directory


def load_safetensors_checkpoint(directory: str | Path, policy_type: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check a checkpoint written by `save_safetensors_checkpoint`.

    Args:
        directory: the checkpoint directory.
        policy_type: the ``policy_type`` config.json must name.

    Returns:
        (config, tensors on CPU).

    Raises:
        FileNotFoundError: the directory, config.json or the weights file is missing.
        ValueError: invalid JSON, another policy type or format, a weights file whose size or
            sha256 differs from config.json (truncated, partial or from another checkpoint), or
            unreadable safetensors; each message names what differs.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r} has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON (truncated?): {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object")
    if config.get("policy_type") != policy_type:
        raise ValueError(f"{config_path}: policy_type is {config.get('policy_type')!r}, expected {policy_type!r}")
    if config.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{config_path}: checkpoint format {config.get('format')!r}, this code reads format {CHECKPOINT_FORMAT}")
    info = config.get("weights")
    if not isinstance(info, dict) or not {"file", "sha256", "bytes", "tensors"} <= set(info):
        raise ValueError(f"{config_path}: 'weights' must record file, sha256, bytes and tensors")
    weights = directory / str(info["file"])
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {str(directory)!r}: weights file {info['file']!r} is missing")
    blob = weights.read_bytes()
    if len(blob) != info["bytes"]:
        raise ValueError(
            f"{weights}: {len(blob)} bytes but config.json records {info['bytes']} (truncated or from another checkpoint)"
        )
    if hashlib.sha256(blob).hexdigest() != info["sha256"]:
        raise ValueError(f"{weights}: sha256 differs from the one config.json records (corrupt or from another checkpoint)")
    try:
        tensors = load(blob)
    except SafetensorError as err:
        raise ValueError(f"{weights}: not a readable safetensors file: {err}") from err
    recorded = {k: list(v) for k, v in info["tensors"].items()}
    found = {k: list(v.shape) for k, v in tensors.items()}
    if recorded != found:
        raise ValueError(f"{weights}: tensors differ from config.json: {_dict_diff(recorded, found)}")
    return config, tensors


_MAX_LISTED = 8


def _dict_diff(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    shapes = [f"{k} {expected[k]} vs {found[k]}" for k in sorted(set(expected) & set(found)) if expected[k] != found[k]]
    parts = []
    for label, items in (("missing", missing), ("unexpected", extra), ("shape (expected vs found)", shapes)):
        if items:
            more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
            parts.append(f"{label} {items[:_MAX_LISTED]}{more}")
    return "; ".join(parts) or "none"


def check_state_dict(module: nn.Module, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise a ValueError naming missing, unexpected and mis-shaped tensors."""
    expected = {k: list(v.shape) for k, v in module.state_dict().items()}
    found = {k: list(v.shape) for k, v in tensors.items()}
    if expected != found:
        raise ValueError(f"{what} does not fit the architecture in its config: {_dict_diff(expected, found)}")


DECODINGS = ("greedy", "sample")


def save_checkpoint(
    directory: str | Path, model: VLA, metadata: Mapping[str, Any] | None = None, decoding: str = "greedy"
) -> Path:
    """Save a VLA as ``model.safetensors`` + ``config.json`` (atomic, see
    `save_safetensors_checkpoint`).

    Args:
        directory: the checkpoint directory (created if missing).
        model: the VLA.
        metadata: JSON-serialisable facts stored under ``metadata`` (the data, command, step,
            validation scores that produced the weights).
        decoding: how ``evaluate.py`` acts with it: "greedy" (most probable bins) or "sample"
            (a draw per step from a per-chain seeded generator).
    """
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
    config = {
        "policy_type": VLA_POLICY_TYPE,
        "vla_config": model.config.to_dict(),
        "action": {"dim": ACTION_DIM, "num_bins": model.config.num_bins, "range": [-1.0, 1.0], "gripper_dim": GRIPPER_DIM},
        "observation": {"obs_mode": model.config.obs_mode, "keys": list(model.config.obs_keys),
                        "static_size": model.config.static_size, "gripper_size": model.config.gripper_size},
        "metadata": dict(metadata or {}),
        "decoding": decoding,
    }
    return save_safetensors_checkpoint(directory, model.state_dict(), config)


def load_vla(directory: str | Path, device: str | torch.device = "cpu", text_encoder: str | None = None) -> VLA:
    """Load a VLA saved by `save_checkpoint`, checking every part.

    Args:
        directory: the checkpoint directory.
        device: where the model goes.
        text_encoder: an instruction encoder name (`rftf_gym.text_encoder.make_text_encoder`) to
            use in place of the checkpoint's, of the same width; None keeps the checkpoint's. The
            model's config then records the new one, so a checkpoint saved from it keeps it.

    Raises:
        FileNotFoundError, ValueError: see `load_safetensors_checkpoint`; also an invalid
            ``vla_config``, weights that do not fit it (names the tensors), or a ``text_encoder``
            that is unknown, of another width, or given to a model of precomputed embeddings.
    """
    config, tensors = load_safetensors_checkpoint(directory, VLA_POLICY_TYPE)
    try:
        vla_config = VLAConfig.from_dict(config.get("vla_config"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{Path(directory) / CONFIG_FILE}: invalid vla_config: {err}") from err
    if text_encoder is not None:
        if vla_config.text_encoder == PRECOMPUTED_TEXT:
            raise ValueError(f"{directory}: the model takes precomputed instruction embeddings; it has no text encoder to replace")
        width = make_text_encoder(text_encoder).dim
        if width != vla_config.text_dim:
            raise ValueError(f"text encoder {text_encoder!r} has width {width}; the model {directory} expects {vla_config.text_dim}")
        vla_config = replace(vla_config, text_encoder=text_encoder)
    model = VLA(vla_config)
    check_state_dict(model, tensors, f"checkpoint {str(directory)!r}")
    model.load_state_dict(tensors)
    model.checkpoint_metadata = config.get("metadata", {})
    return model.to(device).eval()


def freeze_body(model: VLA) -> None:
    """Freeze everything but the action head (RFTF section 3.3 trains the head alone)."""
    for p in model.body.parameters():
        p.requires_grad_(False)
    model.body.eval()


def smooth_bin_basis(num_bins: int, width: float) -> torch.Tensor:
    """(num_bins, K) Gaussian bumps over the bin centres of [-1, 1], spaced ``width`` apart,
    of standard deviation ``width``, each column of unit norm.

    A logit change in their span moves probability between neighbouring bins together: the
    change of a continuous action's distribution, not of 1000 unrelated outcomes.

    Raises:
        ValueError: a width outside (0, 2].
    """
    num_bins = _check_bins_arg(num_bins)
    if not 0.0 < width <= 2.0:
        raise ValueError(f"basis width must be in (0, 2] (the bins span [-1, 1]), got {width}")
    centres = -1.0 + (torch.arange(num_bins, dtype=torch.float64) + 0.5) * (2.0 / num_bins)
    mu = torch.arange(-1.0, 1.0 + 1e-9, width, dtype=torch.float64)
    basis = torch.exp(-0.5 * ((centres[:, None] - mu[None]) / width) ** 2)
    return (basis / basis.norm(dim=0, keepdim=True)).float()


class SmoothHeadDelta(nn.Module):
    """An action head whose last layer may change only smoothly across bins.

    ``logits = head(x) + basis @ (U h + c)`` per action dimension, with ``h`` the input of the
    head's last linear layer, ``basis`` the (num_bins, K) `smooth_bin_basis` and ``U`` (7K, H),
    ``c`` (7K,) the only trainable parameters, both starting at zero (so the module starts as the
    head it wraps). It is the last layer ``W + B U`` (B block-diagonal, one basis per dimension)
    with the change restricted to K smooth directions per dimension instead of 1000 free bins.
    `folded` returns a plain head with the change written into the last layer, for checkpoints.

    Args:
        head: an `VLA.action_head` (a Sequential ending in its 7 * num_bins linear layer); kept
            frozen.
        num_bins: bins per dimension.
        width: the bumps' spacing and standard deviation, in action units.
    """

    def __init__(self, head: nn.Sequential, num_bins: int, width: float) -> None:
        super().__init__()
        last = head[-1]
        if not isinstance(last, nn.Linear) or last.out_features != ACTION_DIM * num_bins:
            raise ValueError(f"the head must end in a Linear layer with {ACTION_DIM * num_bins} outputs")
        self.head = head.requires_grad_(False)
        self.register_buffer("basis", smooth_bin_basis(num_bins, width).to(last.weight.device))
        k = self.basis.shape[1]
        like = {"device": last.weight.device, "dtype": last.weight.dtype}
        self.weight = nn.Parameter(torch.zeros(ACTION_DIM * k, last.in_features, **like))
        self.bias = nn.Parameter(torch.zeros(ACTION_DIM * k, **like))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.with_change(*self.frozen_outputs(features))

    def frozen_outputs(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The wrapped head's last hidden layer (B, H) and logits (B, 7 * num_bins); they do not
        depend on the trained parameters, so a trainer can compute them once per batch."""
        hidden = self.head[:-1](features)
        return hidden, self.head[-1](hidden)

    def with_change(self, hidden: torch.Tensor, head_logits: torch.Tensor) -> torch.Tensor:
        """``head_logits`` plus the smooth change at ``hidden``: (B, 7 * num_bins)."""
        coefficients = F.linear(hidden, self.weight, self.bias).view(hidden.shape[0], ACTION_DIM, -1)
        delta = coefficients @ self.basis.T.to(coefficients.dtype)  # (B, 7, num_bins)
        return head_logits + delta.flatten(1).to(head_logits.dtype)

    @torch.no_grad()
    def folded(self) -> nn.Sequential:
        """A copy of the wrapped head with ``B U`` and ``B c`` added to its last layer."""
        import copy

        head = copy.deepcopy(self.head)
        k = self.basis.shape[1]
        delta_w = torch.einsum("ik,dkh->dih", self.basis, self.weight.view(ACTION_DIM, k, -1))
        delta_b = torch.einsum("ik,dk->di", self.basis, self.bias.view(ACTION_DIM, k))
        head[-1].weight += delta_w.reshape_as(head[-1].weight)
        head[-1].bias += delta_b.reshape_as(head[-1].bias)
        return head


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------- policy
TIE_TOLERANCE = 1e-3
"""Decision margin (logit units) below which a batched row's bins are recomputed from a forward
pass of that row alone. The float rounding of a batched forward pass depends on the batch size:
the state BC VLA's logits moved by up to 9.5e-6 between batch 1 and batches of 2-64 (fp32 on this
machine's CPU; 0 with bf16 autocast), so a decision whose margin exceeds twice that cannot flip,
and 1e-3 leaves a 50x margin. The cost, measured over 20 official chains of that model at batch
16: 0.7 % of the rows were recomputed when sampling, 19 % when greedy (its flat distributions
put near-ties at the top often); none of the recomputed bins differed."""

AUDIT_EVERY = 64
"""Every this many batched calls, one row is recomputed alone to check that the batch-size
rounding stays well under `TIE_TOLERANCE` (it raises otherwise)."""


class VLAPolicy:
    """A `VLA` as a `rftf_gym.policies.Policy` and `BatchPolicy` (what ``evaluate.py --policy
    <checkpoint dir>`` runs). The model is memoryless, so resets do nothing.

    A chain's actions do not depend on the batch it shares a forward pass with:

    - with sampling, every row draws its noise from its own generator (``seed`` seeds the
      single-row one, `seed_slots` one per slot of batched evaluation), a fixed amount per step;
      the bin is ``argmax(p / q)`` with ``q ~ Exp(1)`` per bin, the exponential race that
      ``torch.multinomial`` runs for one sample, so the draws are the same as multinomial's;
    - the float rounding of a batched forward pass depends on the batch size (a row's logits
      move by ~1e-5), which flips a decision only when its margin (the log ratio of the race's
      top two, or the top-two logit gap when greedy) is that small. Rows with a margin under
      ``tie_tolerance`` are recomputed from a forward pass of the row alone, the computation a
      batch of one does; every other decision is the same as that one's. So a row's bins equal
      those of `act` on that row, whatever the batch, as long as the rounding stays under half
      the tolerance, which every ``audit_every``-th batched call checks.

    Args:
        model: the VLA (put in eval mode).
        greedy: most probable bins instead of sampling.
        seed: seed of the sampling generator (used only when not greedy).
        tie_tolerance: decision margin under which a batched row is recomputed alone.
        audit_every: check the batch rounding every this many batched calls (0: never).
    """

    def __init__(self, model: VLA, greedy: bool = True, seed: int = 0, tie_tolerance: float = TIE_TOLERANCE,
                 audit_every: int = AUDIT_EVERY) -> None:
        if not tie_tolerance > 0:
            raise ValueError(f"tie_tolerance must be > 0, got {tie_tolerance}")
        if audit_every < 0:
            raise ValueError(f"audit_every must be >= 0, got {audit_every}")
        self.model = model.eval()
        self.greedy = greedy
        self.tie_tolerance = float(tie_tolerance)
        self.audit_every = int(audit_every)
        self.required_obs: tuple[str, ...] = model.config.obs_keys
        self.slot_generators: dict[int, torch.Generator] = {}
        self.stats = {"batched_calls": 0, "rows": 0, "rows_recomputed": 0, "rows_changed": 0, "max_batch_logit_error": 0.0}
        """Counters of batched calls: rows, rows recomputed alone, rows whose bins the
        recomputation changed (where the batched forward pass alone would have acted
        differently), the largest audited rounding."""
        self.seed(seed)

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.model.device).manual_seed(int(seed))

    def seed(self, seed: int) -> None:
        self.generator = self._generator(seed)

    def seed_slots(self, slots: Sequence[int], seeds: Sequence[int]) -> None:
        """Restart the sampling stream of each batch slot from its seed."""
        for slot, seed in zip(slots, seeds):
            self.slot_generators[int(slot)] = self._generator(seed)

    def reset(self) -> None:
        """Nothing to forget: the model sees one frame."""

    def reset_batch(self, indices: list[int]) -> None:
        """Nothing to forget: the model sees one frame."""

    def act(self, obs: Mapping[str, Any], instruction: str) -> np.ndarray:
        batch = {k: np.asarray(obs[k])[None] for k in self.required_obs}
        return self._act(batch, [instruction], None if self.greedy else [self.generator])[0]

    def act_batch(self, obs: Mapping[str, Any], instructions: list[str], slots: Sequence[int] | None = None) -> np.ndarray:
        """Actions (B, 7); ``slots`` names each row's slot (for its sampling generator)."""
        if self.greedy:
            return self._act(obs, instructions, None)
        if slots is None:
            raise ValueError("a sampling VLAPolicy needs the slot of each row (act_batch(..., slots=...)) or act()")
        missing = [s for s in slots if int(s) not in self.slot_generators]
        if missing:
            raise ValueError(f"slots {missing} were never seeded; call seed_slots first")
        return self._act(obs, instructions, [self.slot_generators[int(s)] for s in slots])

    def _logits(self, obs: Mapping[str, Any], instructions: list[str]) -> torch.Tensor:
        model = self.model
        batch = model.preprocess(obs, instructions)
        with torch.autocast(model.device.type, dtype=model.inference_dtype or torch.float32,
                            enabled=model.inference_dtype is not None):
            return model.logits(model.features(batch)).float()

    def _decide(self, logits: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Bins (B, 7) and each decision's margin (B, 7): the top-two logit gap (greedy), or the
        log ratio of the top two of ``p / q`` (the exponential race of a sample)."""
        if noise is None:
            top = logits.topk(2, dim=-1).values
            return logits.argmax(-1), top[..., 0] - top[..., 1]
        # p as BinnedActionDistribution.probs computes it, so the draws equal torch.multinomial's
        ratio = torch.log_softmax(logits, dim=-1).exp() / noise
        top = ratio.topk(2, dim=-1).values
        return ratio.argmax(-1), top[..., 0].log() - top[..., 1].log()

    def _audit(self, obs: Mapping[str, Any], instructions: list[str], logits: torch.Tensor) -> None:
        row = self.stats["batched_calls"] % logits.shape[0]
        alone = self._logits(_row(obs, row), [instructions[row]])
        error = float((alone[0] - logits[row]).abs().max())
        self.stats["max_batch_logit_error"] = max(self.stats["max_batch_logit_error"], error)
        if 4 * error > self.tie_tolerance:
            raise RuntimeError(
                f"a batched forward pass moved a row's logits by {error:.2e} from the row's own forward pass, over a "
                f"quarter of tie_tolerance {self.tie_tolerance:g}: batched and unbatched evaluation could act "
                "differently. Pass a larger tie_tolerance to load_vla_policy, run in float32 or disable TF32."
            )

    @torch.no_grad()
    def _act(self, obs: Mapping[str, Any], instructions: list[str], generators: list[torch.Generator] | None) -> np.ndarray:
        logits = self._logits(obs, instructions)
        noise = None
        if generators is not None:  # a fixed amount per row and step, drawn before any recomputation
            noise = torch.stack([torch.empty(logits.shape[1:], device=logits.device).exponential_(1, generator=g)
                                 for g in generators])
        bins, margin = self._decide(logits, noise)
        if logits.shape[0] > 1:
            self.stats["batched_calls"] += 1
            self.stats["rows"] += logits.shape[0]
            if self.audit_every and self.stats["batched_calls"] % self.audit_every == 1 % self.audit_every:
                self._audit(obs, instructions, logits)
            for i in (margin < self.tie_tolerance).any(-1).nonzero().flatten().tolist():
                alone = self._logits(_row(obs, i), [instructions[i]])
                row_bins = self._decide(alone, None if noise is None else noise[i : i + 1])[0][0]
                self.stats["rows_recomputed"] += 1
                self.stats["rows_changed"] += int(not torch.equal(row_bins, bins[i]))
                bins[i] = row_bins
        return bins_to_actions(bins.cpu(), self.model.config.num_bins).numpy().astype(np.float64)


def _row(obs: Mapping[str, Any], i: int) -> dict[str, np.ndarray]:
    """Row ``i`` of stacked observations, as a batch of one."""
    return {k: np.asarray(v)[i : i + 1] for k, v in obs.items()}


def load_vla_policy(
    path: str | Path,
    config: Mapping[str, Any] | None = None,
    *,
    scene: str = "D",
    seed: int = 0,
    device: str = "cpu",
    greedy: bool | None = None,
    bf16: bool = False,
    tie_tolerance: float = TIE_TOLERANCE,
    text_encoder: str | None = None,
    **_: Any,
) -> VLAPolicy:
    """The policy loader registered for ``policy_type`` "rftf_vla" (``scene`` is unused: the
    model acts from its observations alone). ``greedy`` None takes the checkpoint's
    ``decoding`` ("greedy" or "sample"; greedy when absent); ``tie_tolerance``: see `VLAPolicy`;
    ``text_encoder``: see `load_vla`."""
    model = load_vla(path, device=device, text_encoder=text_encoder)
    if bf16:
        model.inference_dtype = torch.bfloat16
    if greedy is None:
        decoding = (config or {}).get("decoding", "greedy")
        if decoding not in DECODINGS:
            raise ValueError(f"{Path(path) / CONFIG_FILE}: decoding must be one of {DECODINGS}, got {decoding!r}")
        greedy = decoding == "greedy"
    return VLAPolicy(model, greedy=greedy, seed=seed, tie_tolerance=tie_tolerance)


def _register() -> None:
    from rftf_gym.policies import register_policy, registered_policy_types

    if VLA_POLICY_TYPE not in registered_policy_types():
        register_policy(VLA_POLICY_TYPE, load_vla_policy)


_register()

__all__ = [
    "ACTION_DIM", "GRIPPER_DIM", "NUM_BINS", "OBS_MODES", "VLA", "VLAConfig", "VLABody",
    "BinnedActionDistribution", "actions_to_bins", "bins_to_actions", "save_checkpoint", "load_vla",
    "save_safetensors_checkpoint", "load_safetensors_checkpoint", "check_state_dict", "config_differences",
    "freeze_body", "num_parameters", "VLAPolicy", "load_vla_policy", "TIE_TOLERANCE",
]
