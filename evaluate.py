"""CALVIN chained evaluation: long-horizon language control (Mees et al., https://arxiv.org/abs/2112.03227).

A policy gets chains of 5 language instructions (the official 1000 chains by default). Per chain
the scene is reset once to the chain's initial state; per instruction the policy is reset and has
360 control steps, succeeding as soon as the task oracle sees the instruction's task done since
the instruction's start; the chain stops at its first failure. Reported: L1..L5 (chains with at
least i successes in a row), Avg. Len. and per-task success, with 95 % bootstrap intervals.
Rules and numbers: ``calvin_models/calvin_agent/evaluation/evaluate_policy.py`` (EP_LEN 360,
NUM_SEQUENCES 1000, ``evaluate_sequence``, ``rollout``) and ``utils.py`` (``count_success``).

Every finished chain is appended to ``<output-dir>/results.jsonl``; re-running the same command
resumes and never re-runs a finished chain.

Reproducibility: a chain's record depends only on the code, the policy, the chain and
``(seed, chain index)``, not on ``--num-workers``, ``--batch-size``, ``torchrun`` ranks (chains
sharded by index, gloo backend), resumption, or which chains ran before it in the same env.
Each chain's env is reset with the chain's seed and initial state; a sampling VLA draws from a
generator seeded with the chain's seed, the same amount per step whatever the batch; and a
batched forward pass, whose float rounding depends on the batch size (logits move by up to
~1e-5), decides a row's bins only where that rounding cannot flip them: rows with a near-tie
are recomputed alone (`rftf_gym.models.VLAPolicy`). Measured with the state BC checkpoint on 20
official chains: per-chain records identical for batch sizes 1, 4, 5, 7, 16 and 20, one or two
workers, and twice in a row; 0.7 % of batched rows (sampled; 19 % greedy) were recomputed. What
does change a chain's result is the code: the same checkpoint, chains and seed gave Avg. Len.
0.12 with the simulator before its robot and table were matched to calvin_env and 0.14 after,
15 of 100 chains differing. So the results header records the digest of the rftf_gym sources
(``code_sha256``): a results file of other code is not resumed, and
``bench/rftf_experiment.py`` refuses to pair evaluations made by different code.

Examples:
    python evaluate.py --policy expert --obs-mode state --num-workers 2
    python evaluate.py --policy random --num-chains 100 --video-chains 2
    torchrun --nproc_per_node 2 evaluate.py --policy expert --obs-mode state --num-chains 8
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import tyro
from tqdm import tqdm

import rftf_gym  # noqa: F401  (registers RFTF-CALVIN-v0)
from rftf_gym import chain_eval, cli, evaluation, policies, sequences, tasks
from rftf_gym.backends import Backend
from rftf_gym.chain_eval import ChainEvalConfig, chain_seed, run_chains
from rftf_gym.conventions import CHAIN_LEN, EP_LEN, NUM_SEQUENCES, Scene
from rftf_gym.env import ObsMode
from rftf_gym.files import atomic_write, atomic_write_text

PROG = "evaluate.py"


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (first part of the run name)"""
    policy: str = "random"
    """the policy: "random", "expert" or a checkpoint directory (config.json + safetensors)"""
    num_chains: int = NUM_SEQUENCES
    """number of chains; the official generator's ``get_sequences(num_chains)``, or with
    --chain-file the first num_chains chains of the file (all of them if it has fewer)"""
    chain_file: str | None = None
    """optional JSON file of custom chains: a list of {"initial_state": {...}, "chain": [task, ...]}"""
    backend: Backend = "embedded"
    """the simulator: "embedded" (pybullet re-creation) or "calvin" (official calvin_env)"""
    scene: Scene = "D"
    """the CALVIN scene, A-D (the official evaluation uses D)"""
    obs_mode: ObsMode = "rgb+state"
    """what the policy sees: "rgb", "state" or "rgb+state" ("state" is enough for experts and is fast)"""
    num_workers: int = 1
    """parallel worker processes on this machine (per torchrun rank); with --batch-size > 1 they
    hold the envs and the policy runs once in the main process"""
    batch_size: int = 1
    """chains run in lockstep, with one batched policy call per step (for neural policies, e.g.
    16-64); 1 runs each chain on its own, whole chains per worker"""
    instruction_split: Literal["eval", "train"] = "eval"
    """"eval": the fixed evaluation sentence per task (official); "train": training paraphrases
    (to measure the language gap)"""
    seed: int = 0
    """seed of the evaluation: chain i's env and policy are seeded from (seed, i)"""
    output_dir: str | None = None
    """where results.jsonl, metrics.json, metrics.md, videos/ and the TensorBoard events (runs/<run_name>)
    go (default results/<run_name>)"""
    video_chains: int = 0
    """write an animated GIF of each of the first K chains, with the instruction on the frames"""
    bootstrap_samples: int = 2000
    """resamples of the chains for the 95% bootstrap intervals"""
    max_chains_this_run: int | None = None
    """stop after this many newly finished chains (per rank); re-run the command to go on"""
    device: str = "cpu"
    """torch device for checkpoint policies"""
    text_encoder: str | None = None
    """give a checkpoint policy this instruction encoder in place of its own, for example
    "snap-hashed-ngram-d384-c34" (`rftf_gym.text_encoder`; the weights are unchanged)"""
    track: bool = False
    """if toggled, log the final metrics to Weights and Biases"""
    wandb_project_name: str = "rftf-gym"
    """the wandb project name"""
    wandb_entity: str | None = None
    """the entity (team) of the wandb project"""


def load_chains(args: Args) -> tuple[list[tuple[dict, tuple[str, ...]]], str]:
    """The chains to evaluate and a description of where they come from.

    Raises:
        ValueError: a chain file that is not a list of chains, or a chain with an unknown task,
            a bad length or an initial state that cannot be turned into a reset state; the
            message names the chain index and the file.
    """
    if args.chain_file is None:
        return list(sequences.get_sequences(args.num_chains)), f"official get_sequences({args.num_chains})"
    path = Path(args.chain_file)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"chain file {str(path)!r} does not exist") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"chain file {path} is not valid JSON: {err}") from err
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"chain file {path} must hold a non-empty JSON list of chains")
    chains = []
    for i, item in enumerate(raw[: args.num_chains]):
        where = f"chain file {path}, chain {i}"
        if not (isinstance(item, dict) and isinstance(item.get("initial_state"), dict)):
            raise ValueError(f'{where}: expected {{"initial_state": {{...}}, "chain": [task, ...]}}')
        if not isinstance(item.get("chain"), list):
            raise ValueError(f'{where}: expected {{"initial_state": {{...}}, "chain": [task, ...]}}')
        chain = tuple(item["chain"])
        if not 1 <= len(chain) <= CHAIN_LEN:
            raise ValueError(f"{where}: a chain has 1 to {CHAIN_LEN} tasks, got {len(chain)}")
        for task in chain:
            try:
                tasks.validate_task(task)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from err
        try:
            sequences.get_env_state_for_initial_condition(item["initial_state"])
        except Exception as err:  # noqa: BLE001  (any failure means the state is not a valid one)
            raise ValueError(f"{where}: bad initial_state: {err}") from err
        chains.append((item["initial_state"], chain))
    return chains, f"chain file {path.name}"


def chain_config(args: Args) -> ChainEvalConfig:
    """The chain runner's settings from the command line."""
    return ChainEvalConfig(backend=args.backend, scene=args.scene, obs_mode=args.obs_mode,
                           instruction_split=args.instruction_split, batch_size=args.batch_size,
                           num_workers=args.num_workers, seed=args.seed, device=args.device,
                           text_encoder=args.text_encoder)


def make_env(args: Args, render: bool = False) -> gym.Env:
    """The env of one chain, as the chain runner makes it (`rftf_gym.chain_eval.make_env`)."""
    return chain_eval.make_env(chain_config(args), render=render)


def check_reset_states(args: Args, chains: list[tuple[dict, tuple[str, ...]]]) -> None:
    """Refuse chains whose reset state the scene cannot hold, before any chain runs.

    The official reset states put shelf blocks at scene D's shelf spots and the open door at 0.28
    (calvin_agent/evaluation/utils.py, get_env_state_for_initial_condition): in scenes B and C,
    whose shelf sits 0.18 m further right and whose door travels 0.304 / 0.24, some of them put a
    block inside the cabinet or the door past its end (`rftf_gym.state_check`).

    Raises:
        ValueError: naming the first such chain and what is wrong with its state.
    """
    env = gym.make("RFTF-CALVIN-v0", backend=args.backend, scene=args.scene, obs_mode="state")
    seen: set[str] = set()
    try:
        for i, (initial_state, chain) in enumerate(chains):
            key = json.dumps(initial_state, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            robot_obs, scene_obs = sequences.get_env_state_for_initial_condition(initial_state)
            try:
                env.reset(options={"robot_obs": robot_obs, "scene_obs": scene_obs, "task": chain[0]})
            except ValueError as err:
                raise ValueError(f"chain {i}'s initial state cannot be set up in scene {args.scene}: {err}") from err
    finally:
        env.close()


# ALGO LOGIC: the official rollout rules (evaluate_policy.py: evaluate_sequence, rollout)
def rollout(
    env: gym.Env, policy: policies.Policy, obs: dict, instruction: str, frames: list | None
) -> tuple[bool, int]:
    """One instruction: reset the policy, act up to EP_LEN steps, succeed at the first step
    where the oracle sees the task done since the instruction's start (env info ``success``)."""
    policy.reset()
    for step in range(1, EP_LEN + 1):
        action = policies.check_action(policy.act(obs, instruction))
        obs, _, terminated, truncated, info = env.step(action)
        if frames is not None:
            frames.append(env.render())
        if info["success"]:
            return True, step
        if truncated or terminated:  # 360 steps, or a physics blow-up
            return False, step
    return False, EP_LEN


def evaluate_sequence(
    env: gym.Env, policy: policies.Policy, initial_state: dict, chain: tuple[str, ...], seed: int, video: list | None
) -> tuple[int, list[int]]:
    """One chain: reset once to its initial state, then its instructions until the first failure.

    Returns:
        (successes in a row, steps used by each attempted instruction).
    """
    robot_obs, scene_obs = sequences.get_env_state_for_initial_condition(initial_state)
    policies.seed_policy(policy, seed)
    steps = []
    for j, subtask in enumerate(chain):
        if j == 0:
            options = {"robot_obs": robot_obs, "scene_obs": scene_obs, "task": subtask}
            obs, info = env.reset(seed=seed, options=options)
        else:  # go on from where the last instruction left the scene; new start state
            obs, info = env.reset(options={"task": subtask, "continue": True})
        frames = [env.render()] if video is not None else None
        success, used = rollout(env, policy, obs, info["instruction"], frames)
        steps.append(used)
        if video is not None:
            video.append((f"{j + 1}/{len(chain)} {info['instruction']}", frames, success))
        if not success:
            return j, steps
    return len(chain), steps


def save_video(path: Path, segments: list[tuple[str, list[np.ndarray], bool]]) -> None:
    """An animated GIF (Pillow, a TensorBoard dependency) with a caption bar under each frame:
    the instruction, then its outcome (green success, red failure) on its last frame."""
    from PIL import Image, ImageDraw

    images = []
    for caption, frames, success in segments:
        for t, frame in enumerate(frames):
            height, width = frame.shape[:2]
            lines = textwrap.wrap(caption, width=max(10, width // 6))
            canvas = Image.new("RGB", (width, height + 12 * len(lines) + 6), (0, 0, 0))
            canvas.paste(Image.fromarray(frame), (0, 0))
            draw = ImageDraw.Draw(canvas)
            color = (255, 255, 255) if t < len(frames) - 1 else ((0, 220, 0) if success else (255, 60, 60))
            for k, line in enumerate(lines):
                draw.text((3, height + 3 + 12 * k), line, fill=color)
            images.append(canvas)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [33] * (len(images) - 1) + [1000]  # 30 Hz control, hold the last frame
    atomic_write(path, lambda f: images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                                                duration=durations, loop=0))


# Worker processes: each builds its env(s) and policy once, then runs chains by index.
_worker: dict[str, Any] = {}


def init_worker(args: Args, chains: list, video_dir: str) -> None:
    _worker.update(args=args, chains=chains, video_dir=Path(video_dir), env=None, video_env=None)
    _worker["policy"] = chain_eval.load_config_policy(args.policy, chain_config(args))


def run_chain(index: int) -> dict[str, Any]:
    args, (initial_state, chain) = _worker["args"], _worker["chains"][index]
    record_video = index < args.video_chains
    key = "video_env" if record_video else "env"
    if _worker[key] is None:
        _worker[key] = make_env(args, render=record_video)
    seed = chain_seed(args.seed, index)
    video: list | None = [] if record_video else None
    start = time.perf_counter()
    num_success, steps = evaluate_sequence(_worker[key], _worker["policy"], initial_state, chain, seed, video)
    if video is not None:
        save_video(_worker["video_dir"] / f"chain_{index:04d}.gif", video)
    return {
        "index": index,
        "seed": seed,
        "initial_state": initial_state,
        "chain": list(chain),
        "num_success": num_success,
        "steps": steps,
        "wall_s": round(time.perf_counter() - start, 3),
    }


def close_worker() -> None:
    for key in ("env", "video_env"):
        if _worker.get(key) is not None:
            _worker[key].close()


def check_args(args: Args) -> None:
    """Reject bad arguments before any process or simulator starts, naming the argument."""
    for name in ("num_chains", "num_workers", "bootstrap_samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.video_chains < 0 or (args.max_chains_this_run is not None and args.max_chains_this_run < 0):
        raise ValueError("--video-chains and --max-chains-this-run must be >= 0")
    if args.policy == "expert" and "state" not in args.obs_mode:
        raise ValueError("the expert policy plans from robot_obs/scene_obs: use --obs-mode state or rgb+state")
    loader = policies.check_policy_spec(args.policy)  # missing, corrupt or unknown checkpoint: fail now
    if args.text_encoder is not None:
        from rftf_gym.models import VLA_POLICY_TYPE, load_vla  # torch: only for this check

        if loader is None or policies.read_checkpoint_config(args.policy).get(policies.POLICY_TYPE_KEY) != VLA_POLICY_TYPE:
            raise ValueError(f"--text-encoder applies to VLA checkpoints (policy_type {VLA_POLICY_TYPE!r}), not to {args.policy!r}")
        load_vla(args.policy, text_encoder=args.text_encoder)  # an unknown encoder or one of another width: fail now


if __name__ == "__main__":
    args = tyro.cli(Args)
    cli.report_disk_errors(PROG)
    with cli.usage_errors(PROG):  # a mistake in the arguments or inputs: one line, exit status 2
        check_args(args)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")  # CPU collectives; the same code on GPU nodes

    with cli.usage_errors(PROG):
        chains, chain_source = load_chains(args)
        check_reset_states(args, chains)
    policy_tag = args.policy if args.policy in policies.BUILTIN_POLICIES else Path(args.policy).name
    run_name = (
        f"{args.exp_name}__{policy_tag}__{args.backend}-{args.scene}__{args.obs_mode}__{len(chains)}__{args.seed}"
    )
    with cli.usage_errors(PROG):
        output_dir = cli.check_output_dir(args.output_dir or Path("results") / run_name, "--output-dir")
    config = {  # what chain_eval.evaluate_chains ties its results files to, plus the versions
        **chain_eval.results_config(args.policy, chains, chain_source, chain_config(args)),
        "versions": {"rftf_gym": rftf_gym.__version__, "python": sys.version.split()[0]},
    }

    # Resume: every results file in the output dir (a plain run's, or torchrun ranks' parts).
    part_name = f"results.rank{rank}.jsonl" if world_size > 1 else "results.jsonl"
    previous = []
    with cli.usage_errors(PROG):  # results of another configuration, or a corrupt results file
        for path in sorted(output_dir.glob("results*.jsonl")):
            if path.name != part_name:
                found, records, _ = evaluation.read_results(path)
                evaluation.check_config(path, config, found)
                previous.append(records)
    if world_size > 1:
        dist.barrier()  # every rank has read the others' files before any rank creates its own
    with cli.usage_errors(PROG):
        log = evaluation.ResultsLog(output_dir / part_name, config)
    done = evaluation.merge_records([log.records] + previous)
    todo = [i for i in range(len(chains)) if i not in done and i % world_size == rank]
    if args.max_chains_this_run is not None:
        todo = todo[: args.max_chains_this_run]

    # Run the chains: in this process, or in a pool of workers that each build env and policy once.
    video_dir = str(output_dir / "videos")
    lengths = [r["num_success"] for r in done.values()]
    start_time, counts = time.time(), {"env_steps": 0}
    progress = tqdm(total=len(todo), desc="chains", disable=rank != 0)
    pool = None

    def record_done(record: dict[str, Any]) -> None:
        log.append(record)
        done[record["index"]] = record
        lengths.append(record["num_success"])
        counts["env_steps"] += sum(record["steps"])
        progress.set_postfix(avg_len=f"{np.mean(lengths):.3f}", finished=f"{len(done)}/{len(chains)}")
        progress.update(1)

    if args.batch_size > 1 and todo:
        # Chains in lockstep: one policy call per step, envs in args.num_workers processes;
        # chains with a video run first on their own (rendering needs the per-chain env).
        video_todo = [i for i in todo if i < args.video_chains]
        if video_todo:
            init_worker(args, chains, video_dir)
            for index in video_todo:
                record_done(run_chain(index))
        run_chains(
            args.policy,
            chains,
            [i for i in todo if i >= args.video_chains],
            chain_config(args),
            on_record=record_done,
        )
        results = iter(())
    elif not todo:
        results = iter(())
    elif args.num_workers == 1 or len(todo) == 1:
        init_worker(args, chains, video_dir)
        results = map(run_chain, todo)
    else:
        pool = multiprocessing.get_context("spawn").Pool(args.num_workers, init_worker, (args, chains, video_dir))
        results = pool.imap_unordered(run_chain, todo)
    for record in results:
        record_done(record)
    progress.close()
    log.close()
    close_worker()
    if pool is not None:
        pool.close()
        pool.join()
    sps = counts["env_steps"] / max(time.time() - start_time, 1e-9)

    # Gather: rank 0 collects every rank's records and writes the one result.
    if world_size > 1:
        gathered: list | None = [None] * world_size if rank == 0 else None
        dist.gather_object(list(done.values()), gathered, dst=0)
        if rank == 0:
            done = evaluation.merge_records(gathered)
        dist.destroy_process_group()
    if rank != 0:
        sys.exit(0)
    if len(done) < len(chains):
        print(f"{len(done)}/{len(chains)} chains finished; re-run the same command to resume.")
        sys.exit(0)
    evaluation.write_results(output_dir / "results.jsonl", config, done.values())
    for path in output_dir.glob("results.rank*.jsonl"):
        path.unlink()

    ordered = [done[i] for i in range(len(chains))]
    metrics = evaluation.compute_metrics(
        [r["chain"] for r in ordered], [r["num_success"] for r in ordered], args.bootstrap_samples, seed=args.seed
    )
    metrics["config"] = config
    print(evaluation.format_table(metrics))
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(output_dir / "metrics.md", evaluation.format_markdown(metrics, config))
    print(f"results in {output_dir}")

    from torch.utils.tensorboard import SummaryWriter

    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            save_code=True,
        )
    # With the run's other outputs: evaluations into different --output-dir never share a folder.
    writer = SummaryWriter(str(output_dir / "runs" / run_name))
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in asdict(args).items()])),
    )
    step = metrics["num_chains"]
    writer.add_scalar("eval/avg_len", metrics["avg_len"]["value"], step)
    for i, entry in metrics["chain_sr"].items():
        writer.add_scalar(f"eval/chain_sr_{i}", entry["value"], step)
    for task, entry in metrics["tasks"].items():
        writer.add_scalar(f"eval/task_sr/{task}", entry["rate"], step)
    writer.add_scalar("charts/SPS", sps, step)
    writer.close()
