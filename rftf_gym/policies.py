"""The policy interface shared by the scripted experts, a random policy and trained VLAs.

A policy maps one observation and one language instruction to one 7-d action, as CALVIN's
``CalvinBaseModel`` does (``calvin_agent/models/calvin_base_model.py``: ``reset()`` then
``step(obs, goal)`` per control step). Chained evaluation calls ``reset()`` before every
instruction and ``seed(s)`` (when the policy has it) once per chain, so that a chain's result
depends only on its index, not on which worker ran it or what ran before.

Policies are named by a *spec* string, resolved by `load_policy`:

- ``"random"``: uniform actions in [-1, 1]^6 and a random gripper sign (`RandomPolicy`);
- ``"expert"``: the scripted experts of `rftf_gym.experts` (need ``robot_obs``/``scene_obs``);
- a checkpoint directory: ``config.json`` names a ``policy_type`` registered with
  `register_policy`, whose loader reads the safetensors weights next to it.

Example:
    >>> policy = load_policy("random", seed=0)
    >>> policy.reset()
    >>> policy.act({}, "open the drawer").shape
    (7,)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from rftf_gym.conventions import ACTION_DIM
BUILTIN_POLICIES = ("random", "expert")
CONFIG_FILE = "config.json"
# The config.json key naming the registered loader of a checkpoint directory.
POLICY_TYPE_KEY = "policy_type"


@runtime_checkable
class Policy(Protocol):
    """One observation and instruction in, one action out."""

    def reset(self) -> None:
        """Forget everything about the previous instruction (called before each one)."""

    def act(self, obs: Mapping[str, Any], instruction: str) -> np.ndarray:
        """The action for this step: float array of shape (7,), CALVIN's relative action."""


@runtime_checkable
class SeedablePolicy(Policy, Protocol):
    """A policy with randomness of its own; evaluation seeds it once per chain."""

    def seed(self, seed: int) -> None:
        """Restart the policy's random stream from ``seed``."""


@runtime_checkable
class BatchPolicy(Protocol):
    """The batched variant: B environments at once (for vector envs and GPU models).

    ``obs`` holds arrays stacked on a leading batch axis, ``instructions`` one sentence per env.
    """

    def reset_batch(self, indices: list[int]) -> None:
        """Reset the per-env memory of the listed environments."""

    def act_batch(self, obs: Mapping[str, Any], instructions: list[str]) -> np.ndarray:
        """Actions of shape (B, 7)."""


class SequentialBatchPolicy:
    """`BatchPolicy` over B independent single policies (one per env), for policies without a
    batched forward pass.

    Args:
        policies: one `Policy` per environment.
    """

    def __init__(self, policies: list[Policy]) -> None:
        if not policies:
            raise ValueError("SequentialBatchPolicy needs at least one policy")
        self.policies = list(policies)

    def reset_batch(self, indices: list[int]) -> None:
        for i in indices:
            self.policies[i].reset()

    def act_batch(self, obs: Mapping[str, Any], instructions: list[str]) -> np.ndarray:
        if len(instructions) != len(self.policies):
            raise ValueError(f"expected {len(self.policies)} instructions, got {len(instructions)}")
        return np.stack(
            [
                check_action(policy.act({k: v[i] for k, v in obs.items()}, instructions[i]))
                for i, policy in enumerate(self.policies)
            ]
        )


def check_action(action: Any) -> np.ndarray:
    """Return a policy's action as a finite float64 array of shape (7,).

    Raises:
        ValueError: wrong shape or non-finite values, with what the policy returned.
    """
    act = np.asarray(action, dtype=np.float64)
    if act.shape != (ACTION_DIM,):
        raise ValueError(f"a policy must return an action of shape ({ACTION_DIM},), got shape {act.shape}")
    if not np.all(np.isfinite(act)):
        raise ValueError(f"a policy returned a non-finite action: {act}")
    return act


def seed_policy(policy: Policy, seed: int) -> None:
    """Seed a policy if it has randomness of its own (a `SeedablePolicy`); else do nothing."""
    seed_fn = getattr(policy, "seed", None)
    if callable(seed_fn):
        seed_fn(int(seed))


class RandomPolicy:
    """Uniform random relative actions: 6 arm dimensions in [-1, 1], gripper -1 or +1.

    The floor of the chained evaluation (Avg. Len. about 0, BENCHMARKS.md).

    Args:
        seed: seed of the policy's own numpy Generator.
    """

    required_obs: tuple[str, ...] = ()

    def __init__(self, seed: int = 0) -> None:
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to forget: every action is independent."""

    def act(self, obs: Mapping[str, Any], instruction: str) -> np.ndarray:
        action = self.rng.uniform(-1.0, 1.0, ACTION_DIM)
        action[6] = 1.0 if action[6] >= 0.0 else -1.0
        return action


class ExpertAdapter:
    """The scripted experts (`rftf_gym.experts.ExpertPolicy`) as a seedable `Policy`.

    ``seed(s)`` builds a fresh expert with its own seed, so a chain's actions do not depend on the
    chains run before it.

    Args:
        scene: the CALVIN scene the experts plan in.
        seed: seed of the first expert.
    """

    required_obs: tuple[str, ...] = ("robot_obs", "scene_obs")

    def __init__(self, scene: str = "D", seed: int = 0) -> None:
        # Imported here: the experts pull in the simulator's kinematics, which "random" and
        # checkpoint policies do not need.
        from rftf_gym.experts import ExpertPolicy

        self._cls = ExpertPolicy
        self.scene = scene
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self.expert = self._cls(scene=self.scene, seed=int(seed))

    def reset(self) -> None:
        self.expert.reset()

    def act(self, obs: Mapping[str, Any], instruction: str) -> np.ndarray:
        missing = [key for key in self.required_obs if key not in obs]
        if missing:
            raise ValueError(
                f"the expert policy plans from the simulator state but the observation lacks {missing}; "
                "use obs_mode 'state' or 'rgb+state'"
            )
        return self.expert.act(obs, instruction)


# ---------------------------------------------------------------------- checkpoint registry
PolicyLoader = Callable[..., Policy]
_REGISTRY: dict[str, PolicyLoader] = {}
# Modules that register their checkpoint types on import; imported (when present) the first time
# a checkpoint is loaded, so model code plugs in without touching this file.
PLUGIN_MODULES = ("rftf_gym.models",)


def _import_plugins() -> None:
    import importlib

    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # the plug-in exists but one of its own imports is missing
                raise


def register_policy(type_name: str, loader: PolicyLoader, *, overwrite: bool = False) -> None:
    """Make checkpoints whose ``config.json`` says ``"policy_type": type_name`` loadable.

    Args:
        type_name: the value of ``policy_type`` in the checkpoint's ``config.json``.
        loader: ``loader(path, config, **kwargs) -> Policy``: ``path`` is the checkpoint
            directory, ``config`` the parsed ``config.json``, ``kwargs`` what `load_policy` got
            (``scene``, ``seed``, ``device``, ...). It reads the safetensors weights itself.
        overwrite: replace an existing registration instead of raising.

    Raises:
        ValueError: the name is empty, a built-in spec, or already registered.
    """
    if not isinstance(type_name, str) or not type_name:
        raise ValueError(f"policy type must be a non-empty string, got {type_name!r}")
    if type_name in BUILTIN_POLICIES:
        raise ValueError(f"{type_name!r} is a built-in policy spec and cannot be a checkpoint type")
    if type_name in _REGISTRY and not overwrite:
        raise ValueError(f"policy type {type_name!r} is already registered; pass overwrite=True to replace it")
    if not callable(loader):
        raise ValueError(f"loader for {type_name!r} must be callable, got {loader!r}")
    _REGISTRY[type_name] = loader


def registered_policy_types() -> tuple[str, ...]:
    """The checkpoint ``policy_type`` values that `load_policy` can load, sorted."""
    return tuple(sorted(_REGISTRY))


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint directory's ``config.json``.

    Returns:
        The parsed config; it has a string ``policy_type``.

    Raises:
        FileNotFoundError: the directory or its config.json does not exist.
        ValueError: the path is not a directory, config.json is not a JSON object, or it has no
            ``policy_type``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"policy checkpoint {str(path)!r} does not exist; a policy is 'random', 'expert' or a "
            f"checkpoint directory holding {CONFIG_FILE} and safetensors weights"
        )
    if not path.is_dir():
        raise ValueError(f"policy checkpoint {str(path)!r} is not a directory (expected {CONFIG_FILE} + safetensors)")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"policy checkpoint {str(path)!r} has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object, got {type(config).__name__}")
    policy_type = config.get(POLICY_TYPE_KEY)
    if not isinstance(policy_type, str) or not policy_type:
        raise ValueError(f"{config_path} has no {POLICY_TYPE_KEY!r} string naming the policy's type")
    return config


def check_policy_spec(spec: str) -> PolicyLoader | None:
    """Check a policy spec without loading any weights (scripts call it before starting workers).

    Returns:
        None for a built-in spec, else the loader registered for the checkpoint's type.

    Raises:
        FileNotFoundError, ValueError: as `load_policy`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"policy spec must be 'random', 'expert' or a checkpoint directory, got {spec!r}")
    if spec in BUILTIN_POLICIES:
        return None
    config = read_checkpoint_config(spec)
    policy_type = config[POLICY_TYPE_KEY]
    if policy_type not in _REGISTRY:
        _import_plugins()
    if policy_type not in _REGISTRY:
        known = ", ".join(registered_policy_types()) or "none registered yet"
        raise ValueError(
            f"checkpoint {spec!r} has {POLICY_TYPE_KEY}={policy_type!r}, which no loader is registered for "
            f"(registered: {known}); call rftf_gym.policies.register_policy({policy_type!r}, loader) first"
        )
    return _REGISTRY[policy_type]


def load_policy(spec: str, *, scene: str = "D", seed: int = 0, **kwargs: Any) -> Policy:
    """Build a policy from a spec: ``"random"``, ``"expert"`` or a checkpoint directory.

    Args:
        spec: the policy spec (see the module docstring).
        scene: the scene the policy acts in (the experts plan with its layout).
        seed: seed of the policy's own randomness.
        **kwargs: passed to a checkpoint loader (for example ``device="cpu"``).

    Returns:
        A `Policy`.

    Raises:
        FileNotFoundError: a checkpoint directory or its config.json is missing.
        ValueError: an empty spec, a corrupt config, or a ``policy_type`` nobody registered (the
            message lists the registered ones).
    """
    loader = check_policy_spec(spec)
    if spec == "random":
        return RandomPolicy(seed=seed)
    if spec == "expert":
        return ExpertAdapter(scene=scene, seed=seed)
    return loader(Path(spec), read_checkpoint_config(spec), scene=scene, seed=seed, **kwargs)


def required_obs(policy: Policy) -> tuple[str, ...]:
    """Observation keys a policy needs (its ``required_obs`` attribute; none when absent)."""
    return tuple(getattr(policy, "required_obs", ()))
