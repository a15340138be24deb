"""Batched CALVIN chained evaluation: many chains in lockstep, one policy call per step.

The rules are the official ones (``calvin_models/calvin_agent/evaluation/evaluate_policy.py``:
``evaluate_sequence`` and ``rollout``): per chain, one reset to its initial state; per
instruction, the policy is reset and gets at most ``EP_LEN`` = 360 steps, succeeding as soon as
the oracle sees the task done since the instruction's start; the chain stops at its first failure.

What is batched: ``batch_size`` chains run at once, each in its own env *slot*; at every step the
observations of all running slots go through one `BatchPolicy.act_batch` call (one forward pass
of a neural policy), and the actions are stepped in ``num_workers`` worker processes that each
own some of the slots' envs (``num_workers=0`` keeps the envs in this process). When a chain
ends, its slot takes the next chain. A chain's result depends only on its index: its env is
reset with the chain's seed and its initial state, a single-step policy (`Policy`) gets a fresh
instance per slot seeded with the chain's seed, and a `BatchPolicy` must give each row the
action it would give that row alone (`rftf_gym.models.VLAPolicy` does, float rounding of the
batched forward pass included). So any batch size and worker count give the same chain records.

Example:
    >>> from rftf_gym.sequences import get_sequences
    >>> chains = list(get_sequences(4))
    >>> records = run_chains("random", chains, range(4), ChainEvalConfig(batch_size=4))  # doctest: +SKIP
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rftf_gym import evaluation, policies, sequences
from rftf_gym.conventions import EP_LEN

Chain = tuple[Mapping[str, Any], Sequence[str]]


@dataclass
class ChainEvalConfig:
    """How chains are run (everything but the policy and the chains)."""

    backend: str = "embedded"
    """simulator backend of the envs"""
    scene: str = "D"
    """CALVIN scene"""
    obs_mode: str = "rgb+state"
    """env observation mode ("state" is enough for state policies and much faster)"""
    instruction_split: str = "eval"
    """"eval": the fixed evaluation sentence per task (official); "train": a training paraphrase"""
    batch_size: int = 1
    """chains run in lockstep (rows of one policy call)"""
    num_workers: int = 0
    """env worker processes (0: envs in this process)"""
    seed: int = 0
    """evaluation seed: chain i's env and policy are seeded from (seed, i)"""
    device: str = "cpu"
    """torch device of a checkpoint policy"""
    text_encoder: str | None = None
    """instruction encoder to give a checkpoint policy in place of its own
    (`rftf_gym.text_encoder.make_text_encoder`; None keeps the checkpoint's)"""
    ep_len: int = EP_LEN
    """steps per instruction"""
    torch_threads: int | None = 1
    """torch CPU threads for the policy (None: leave torch's setting). One, because a small model
    gains nothing from a second thread and loses everything when the cores are busy: measured
    here with the 2 cores oversubscribed, the state VLA at batch 1 took 2 ms with one thread and
    274 ms with two"""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.instruction_split not in ("eval", "train"):
            raise ValueError(f"instruction_split must be 'eval' or 'train', got {self.instruction_split!r}")
        if self.ep_len < 1:
            raise ValueError(f"ep_len must be >= 1, got {self.ep_len}")


def chain_seed(seed: int, index: int) -> int:
    """The seed of chain ``index``: independent of which slot or worker runs it and when."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def make_env(config: ChainEvalConfig, render: bool = False) -> Any:
    import gymnasium as gym

    import rftf_gym  # noqa: F401  (registers RFTF-CALVIN-v0)

    return gym.make(
        "RFTF-CALVIN-v0",
        backend=config.backend,
        scene=config.scene,
        obs_mode=config.obs_mode,
        instruction_split=config.instruction_split,
        render_mode="rgb_array" if render else None,
    )


# ---------------------------------------------------------------------------------- env slots
class _EnvSlots:
    """The envs of some slots, created on first use; ``reset``/``step`` take and return lists."""

    def __init__(self, config: ChainEvalConfig, keys: tuple[str, ...] | None) -> None:
        self.config, self.keys, self.envs = config, keys, {}

    def _env(self, slot: int) -> Any:
        if slot not in self.envs:
            self.envs[slot] = make_env(self.config)
        return self.envs[slot]

    def _obs(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obs.items() if k != "instruction" and (self.keys is None or k in self.keys)}

    def reset(self, items: list[tuple[int, int | None, dict]]) -> list[tuple[dict, str]]:
        out = []
        for slot, seed, options in items:
            obs, info = self._env(slot).reset(seed=seed, options=options)
            out.append((self._obs(obs), info["instruction"]))
        return out

    def step(self, items: list[tuple[int, np.ndarray]]) -> list[tuple[dict, bool, bool]]:
        out = []
        for slot, action in items:
            obs, _, terminated, truncated, info = self._env(slot).step(action)
            out.append((self._obs(obs), bool(info["success"]), bool(terminated or truncated)))
        return out

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


def _worker_main(conn: Any, config: ChainEvalConfig, keys: tuple[str, ...] | None) -> None:
    slots = _EnvSlots(config, keys)
    try:
        while True:
            command, payload = conn.recv()
            if command == "close":
                break
            try:
                conn.send(("ok", getattr(slots, command)(payload)))
            except Exception as err:  # noqa: BLE001  (reported to the parent, which raises it)
                conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        slots.close()
        conn.close()


class EnvPool:
    """Env slots spread over worker processes (slot s lives in worker s % num_workers), or kept
    in this process when ``num_workers`` is 0. Each call sends every worker its share, then
    gathers, so the workers step their envs in parallel.

    Args:
        config: env settings and ``num_workers``.
        keys: observation keys to send back (None: all but the instruction).
    """

    def __init__(self, config: ChainEvalConfig, keys: tuple[str, ...] | None = None) -> None:
        self.config = config
        self.local = _EnvSlots(config, keys) if config.num_workers == 0 else None
        self.conns, self.procs = [], []
        ctx = multiprocessing.get_context("spawn")
        for _ in range(config.num_workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, config, keys), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def _call(self, command: str, items: list[tuple]) -> list:
        if self.local is not None:
            return getattr(self.local, command)(items)
        n = len(self.conns)
        shares: list[list[int]] = [[] for _ in range(n)]
        for i, item in enumerate(items):
            shares[item[0] % n].append(i)
        for w, share in enumerate(shares):
            if share:
                self.conns[w].send((command, [items[i] for i in share]))
        out: list = [None] * len(items)
        for w, share in enumerate(shares):
            if share:
                status, result = self.conns[w].recv()
                if status != "ok":
                    raise RuntimeError(f"env worker {w} failed during {command}: {result}")
                for i, r in zip(share, result):
                    out[i] = r
        return out

    def reset(self, items: list[tuple[int, int | None, dict]]) -> list[tuple[dict, str]]:
        """``(slot, seed, options)`` per env -> ``(obs, instruction)`` per env."""
        return self._call("reset", items)

    def step(self, items: list[tuple[int, np.ndarray]]) -> list[tuple[dict, bool, bool]]:
        """``(slot, action)`` per env -> ``(obs, success, done)`` per env."""
        return self._call("step", items)

    def close(self) -> None:
        if self.local is not None:
            self.local.close()
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs = [], []

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------- policies
class _PerChainPolicies:
    """A `BatchPolicy` over single-step policies: one fresh instance per slot, seeded with the
    slot's chain seed, so a chain's actions do not depend on its slot or on earlier chains."""

    def __init__(self, make: Callable[[], policies.Policy], batch_size: int) -> None:
        self.policies = [make() for _ in range(batch_size)]
        self.required_obs = policies.required_obs(self.policies[0])

    def seed_slot(self, slot: int, seed: int) -> None:
        policies.seed_policy(self.policies[slot], seed)

    def reset_slot(self, slot: int) -> None:
        self.policies[slot].reset()

    def act(self, slots: list[int], obs: list[dict], instructions: list[str]) -> np.ndarray:
        return np.stack([policies.check_action(self.policies[s].act(o, i)) for s, o, i in zip(slots, obs, instructions)])


class _BatchedPolicy:
    """A `BatchPolicy` (one forward pass for all running slots)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.required_obs = policies.required_obs(policy)

    def seed_slot(self, slot: int, seed: int) -> None:
        seed_slots = getattr(self.policy, "seed_slots", None)
        if callable(seed_slots):  # per-row random streams (a sampling VLA)
            seed_slots([slot], [seed])

    def reset_slot(self, slot: int) -> None:
        self.policy.reset_batch([slot])

    def act(self, slots: list[int], obs: list[dict], instructions: list[str]) -> np.ndarray:
        stacked = {k: np.stack([o[k] for o in obs]) for k in self.required_obs}
        if callable(getattr(self.policy, "seed_slots", None)):
            actions = self.policy.act_batch(stacked, list(instructions), slots=slots)
        else:
            actions = self.policy.act_batch(stacked, list(instructions))
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (len(slots), 7) or not np.all(np.isfinite(actions)):
            raise ValueError(f"act_batch must return finite actions of shape ({len(slots)}, 7), got {actions.shape}")
        return actions


def load_config_policy(policy: str, config: ChainEvalConfig) -> Any:
    """`rftf_gym.policies.load_policy` with the config's scene, seed, device and text encoder."""
    extra = {} if config.text_encoder is None else {"text_encoder": config.text_encoder}
    if extra and policy in policies.BUILTIN_POLICIES:
        raise ValueError(f"text_encoder applies to checkpoint policies, not to {policy!r}")
    return policies.load_policy(policy, scene=config.scene, seed=config.seed, device=config.device, **extra)


def as_slot_policy(policy: str | Any, config: ChainEvalConfig) -> _PerChainPolicies | _BatchedPolicy:
    """A policy spec (loaded per slot or once), a `BatchPolicy` object or a `Policy` object."""
    if isinstance(policy, str):
        first = load_config_policy(policy, config)
        if hasattr(first, "act_batch"):
            return _BatchedPolicy(first)
        made = [first]
        return _PerChainPolicies(lambda: made.pop() if made else load_config_policy(policy, config), config.batch_size)
    if config.text_encoder is not None:
        raise ValueError("text_encoder applies to a policy loaded from a checkpoint spec, not to a policy object")
    if hasattr(policy, "act_batch"):
        return _BatchedPolicy(policy)
    if config.batch_size != 1:
        raise ValueError("a single Policy object can run only one chain at a time; pass a spec string or a BatchPolicy")
    return _PerChainPolicies(lambda: policy, 1)


# ---------------------------------------------------------------------------------- the loop
@dataclass
class _Slot:
    index: int
    seed: int
    chain: tuple[str, ...]
    initial_state: Mapping[str, Any]
    start: float
    subtask: int = 0
    used: int = 0
    obs: dict | None = None
    instruction: str = ""
    steps: list[int] | None = None


# ALGO LOGIC: the official rules (evaluate_policy.py: evaluate_sequence, rollout), batched
def run_chains(
    policy: str | Any,
    chains: Sequence[Chain],
    indices: Iterable[int],
    config: ChainEvalConfig,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    timing: dict[str, float] | None = None,
) -> dict[int, dict[str, Any]]:
    """Run the chains ``indices`` of ``chains``, ``config.batch_size`` at a time in lockstep.

    Args:
        policy: a spec for `rftf_gym.policies.load_policy` ("random", "expert", a checkpoint
            directory), a `BatchPolicy` object, or a `Policy` object (then batch_size must be 1).
        chains: ``(initial_state, tasks)`` pairs, e.g. `rftf_gym.sequences.get_sequences`.
        indices: which chains to run.
        config: envs, batch size, workers, seed.
        on_record: called with each chain's record as soon as the chain ends (e.g. to append
            it to a results file).
        timing: if given, receives ``policy_s``, ``env_s`` (seconds spent in policy calls and in
            env resets and steps), ``env_steps`` and ``policy_calls``.

    Returns:
        index -> record ``{index, seed, initial_state, chain, num_success, steps, wall_s}``
        (``steps``: steps used by each attempted instruction), the records evaluate.py writes.
    """
    todo = list(indices)[::-1]
    if config.torch_threads is not None:
        import torch

        torch.set_num_threads(config.torch_threads)
    slot_policy = as_slot_policy(policy, config)
    keys = tuple(slot_policy.required_obs)
    records: dict[int, dict[str, Any]] = {}
    clock = {"policy_s": 0.0, "env_s": 0.0, "env_steps": 0, "policy_calls": 0}
    slots: dict[int, _Slot] = {}
    with EnvPool(config, keys) as pool:

        def start_subtask(pending: list[int]) -> None:
            items = []
            for s in pending:
                slot = slots[s]
                task = slot.chain[slot.subtask]
                if slot.subtask == 0:
                    robot_obs, scene_obs = sequences.get_env_state_for_initial_condition(slot.initial_state)
                    items.append((s, slot.seed, {"robot_obs": robot_obs, "scene_obs": scene_obs, "task": task}))
                else:  # go on from where the last instruction left the scene
                    items.append((s, None, {"task": task, "continue": True}))
            t = time.perf_counter()
            results = pool.reset(items)
            clock["env_s"] += time.perf_counter() - t
            for s, (obs, instruction) in zip(pending, results):
                slots[s].obs, slots[s].instruction, slots[s].used = obs, instruction, 0
                slot_policy.reset_slot(s)

        def fill(free: list[int]) -> None:
            started = []
            for s in free:
                if not todo:
                    break
                index = todo.pop()
                initial_state, chain = chains[index]
                seed = chain_seed(config.seed, index)
                slots[s] = _Slot(index, seed, tuple(chain), initial_state, time.perf_counter(), steps=[])
                slot_policy.seed_slot(s, seed)
                started.append(s)
            if started:
                start_subtask(started)

        def finish(s: int, num_success: int) -> None:
            slot = slots.pop(s)
            record = {
                "index": slot.index,
                "seed": slot.seed,
                "initial_state": slot.initial_state,
                "chain": list(slot.chain),
                "num_success": num_success,
                "steps": slot.steps,
                "wall_s": round(time.perf_counter() - slot.start, 3),
            }
            records[slot.index] = record
            if on_record is not None:
                on_record(record)

        fill(list(range(config.batch_size)))
        while slots:
            running = sorted(slots)
            t = time.perf_counter()
            actions = slot_policy.act(running, [slots[s].obs for s in running], [slots[s].instruction for s in running])
            clock["policy_s"] += time.perf_counter() - t
            clock["policy_calls"] += 1
            t = time.perf_counter()
            results = pool.step(list(zip(running, actions)))
            clock["env_s"] += time.perf_counter() - t
            clock["env_steps"] += len(running)
            next_subtask, freed = [], []
            for s, (obs, success, done) in zip(running, results):
                slot = slots[s]
                slot.obs = obs
                slot.used += 1
                if success or done or slot.used >= config.ep_len:
                    slot.steps.append(slot.used)
                    if success and slot.subtask + 1 < len(slot.chain):
                        slot.subtask += 1
                        next_subtask.append(s)
                    else:
                        finish(s, slot.subtask + 1 if success else slot.subtask)
                        freed.append(s)
            if next_subtask:
                start_subtask(next_subtask)
            fill(freed)
    if timing is not None:
        timing.update(clock)
    return records


def results_config(policy: str, chains: Sequence[Chain], chain_source: str, config: ChainEvalConfig) -> dict[str, Any]:
    """The configuration a results file is tied to (a resumed file must match it)."""
    return {
        "policy": policy,
        "policy_fingerprint": evaluation.policy_fingerprint(policy),
        "backend": config.backend,
        "scene": config.scene,
        "obs_mode": config.obs_mode,
        "num_chains": len(chains),
        "chain_source": chain_source,
        "chains_sha256": evaluation.chains_digest(chains),
        "seed": config.seed,
        "ep_len": config.ep_len,
        "instruction_split": config.instruction_split,
        "code_sha256": evaluation.code_digest(),
        **({} if config.text_encoder is None else {"text_encoder": config.text_encoder}),
    }


def evaluate_chains(
    policy: str,
    chains: Sequence[Chain],
    config: ChainEvalConfig,
    results_path: str | Path | None = None,
    chain_source: str = "",
    timing: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Run every chain (resuming from ``results_path`` when it exists) and return the records
    in chain order; for training scripts that evaluate in their loop.

    Raises:
        evaluation.ConfigMismatchError: ``results_path`` holds results of another configuration.
    """
    done: dict[int, dict[str, Any]] = {}
    log = None
    if results_path is not None:
        expected = results_config(policy, chains, chain_source or f"{len(chains)} chains", config)
        log = evaluation.ResultsLog(results_path, expected)
        done = {r["index"]: r for r in log.records}
    try:
        todo = [i for i in range(len(chains)) if i not in done]
        done.update(run_chains(policy, chains, todo, config, on_record=log.append if log else None, timing=timing))
    finally:
        if log is not None:
            log.close()
    return [done[i] for i in range(len(chains))]


__all__ = ["ChainEvalConfig", "EnvPool", "chain_seed", "evaluate_chains", "make_env",
           "results_config", "run_chains"]
