"""Benchmark of the base VLA: policy latency, batched chained evaluation time (env vs policy
share) and Avg. Len. in scene D on evaluation sentences and on training paraphrases (the
language gap), for each BC checkpoint given. Writes the ``vla`` section of BENCHMARKS.md.

Chains run through `rftf_gym.chain_eval` exactly as ``evaluate.py --batch-size`` runs them; the
1000-chain time is the measured time per chain times 1000 (the env time of a chain grows with
its length, so it holds for a policy of similar Avg. Len.).

Example:
    python bench/vla.py --checkpoints /work/data/bc/state /work/data/bc/rgb --num-chains 100
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.markdown_section import write_section  # noqa: E402
from rftf_gym.chain_eval import ChainEvalConfig, evaluate_chains, make_env, run_chains  # noqa: E402
from rftf_gym.evaluation import compute_metrics  # noqa: E402
from rftf_gym.models import load_vla, load_vla_policy  # noqa: E402
from rftf_gym.sequences import get_sequences  # noqa: E402


@dataclass
class Args:
    checkpoints: tuple[str, ...] = ("bc/state", "bc/rgb")
    """BC checkpoint directories (train_bc.py output)"""
    num_chains: int = 100
    """official chains evaluated per checkpoint and instruction split"""
    splits: tuple[str, ...] = ("eval", "train")
    """instruction splits: "eval" (official sentences) and "train" (training paraphrases)"""
    greedy_row: bool = True
    """also evaluate the eval split with greedy (most probable bin) actions"""
    batch_size: int = 25
    """chains in lockstep"""
    num_workers: int = 2
    """env worker processes"""
    latency_calls: int = 50
    """policy calls timed per batch size"""
    train_minutes: tuple[float, ...] = ()
    """BC optimisation minutes per checkpoint, for checkpoints whose metadata predates
    ``best.train_seconds`` (from train_bc.py's "N steps in S s" line)"""
    results_dir: str | None = None
    """keep each row's per-chain results here (results_<variant>_<row>.jsonl); a re-run resumes them
    and times only the chains it runs"""
    output_json: str | None = None
    """also write the raw numbers here"""
    markdown_from: tuple[str, ...] = ()
    """build the section from JSON files of earlier runs (--output-json) instead of measuring"""
    write_markdown: bool = True
    """rewrite the vla section of BENCHMARKS.md"""


def latency_ms(model, obs_mode: str, batch: int, calls: int) -> float:
    """Median wall time of one ``act`` call on real env observations, in ms."""
    env = make_env(ChainEvalConfig(obs_mode="rgb+state" if obs_mode == "rgb" else "state"))
    obs, info = env.reset(seed=0)
    env.close()
    stacked = {k: np.stack([obs[k]] * batch) for k in model.config.obs_keys}
    sentences = [info["instruction"]] * batch
    model.act(stacked, sentences)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        model.act(stacked, sentences)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def bench_checkpoint(path: str, args: Args) -> dict:
    torch.set_num_threads(1)
    model = load_vla(path)
    meta = getattr(model, "checkpoint_metadata", {})
    obs_mode = model.config.obs_mode
    out = {
        "checkpoint": path,
        "obs_mode": obs_mode,
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_steps": meta.get("step"),
        "train_seconds": (meta.get("best") or {}).get("train_seconds"),
        "train_frames": (meta.get("data") or {}).get("train_frames"),
        "val_loss": (meta.get("validation") or {}).get("loss"),
        "latency_ms": {str(b): latency_ms(model, obs_mode, b, args.latency_calls) for b in (1, 16)},
        "splits": {},
    }
    chains = list(get_sequences(args.num_chains))
    runs = [(split, split, path) for split in args.splits]
    if args.greedy_row:
        runs.append(("eval (greedy)", "eval", load_vla_policy(path, greedy=True)))
    for name, split, policy in runs:
        timing: dict = {}
        start = time.perf_counter()
        config = ChainEvalConfig(obs_mode="rgb+state" if obs_mode == "rgb" else "state", instruction_split=split,
                                 batch_size=args.batch_size, num_workers=args.num_workers)
        if args.results_dir and isinstance(policy, str):
            results = Path(args.results_dir) / f"results_{obs_mode}_{name}.jsonl"
            ordered = evaluate_chains(policy, chains, config, results_path=results, timing=timing)
            timed_chains = max(1, sum(1 for r in ordered if r.get("kind") != "chain"))
        else:
            records = run_chains(policy, chains, range(len(chains)), config, timing=timing)
            ordered = [records[i] for i in range(len(chains))]
            timed_chains = len(chains)
        wall = time.perf_counter() - start
        metrics = compute_metrics([r["chain"] for r in ordered], [r["num_success"] for r in ordered], 2000, seed=0)
        out["splits"][name] = {
            "avg_len": metrics["avg_len"],
            "chain_sr": metrics["chain_sr"],
            "tasks": {t: v["rate"] for t, v in metrics["tasks"].items()},
            "wall_s": wall,
            "s_per_1000_chains": wall / timed_chains * 1000,
            "policy_share": timing["policy_s"] / wall,
            "env_share": timing["env_s"] / wall,
            "env_steps": timing["env_steps"],
            "policy_calls": timing["policy_calls"],
        }
    out["load_avg"] = list(os.getloadavg())
    return out


def markdown(results: list[dict], args: Args) -> str:
    load = ", ".join(f"{r['obs_mode']} {r['load_avg'][1]:.1f}" for r in results)
    lines = [
        "## Base VLA (`bench/vla.py`)",
        "",
        f"`python bench/vla.py --checkpoints {' '.join(args.checkpoints)} --num-chains {args.num_chains} "
        f"--batch-size {args.batch_size} --num-workers {args.num_workers}`; scene D, embedded backend, "
        f"{args.num_chains} official chains per row, torch 1 thread, sampled actions (per-chain seeded); "
        f"5-minute load average at the end of each run: {load} on 2 cores (shared with the team's jobs, so "
        "times are upper bounds). 1000-chain time = measured time per chain x 1000.",
        "",
        "| variant | params | BC steps | BC time | val loss | latency b=1 | latency b=16 | split | Avg. Len. [95%] | L1 | 1000-chain time | policy / env share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for split, s in r["splits"].items():
            ci = s["avg_len"]["ci"] or [float("nan")] * 2
            lines.append(
                f"| {r['obs_mode']} | {r['parameters'] / 1e6:.2f} M | {r['train_steps']} | "
                f"{(r['train_seconds'] or 0) / 60:.1f} min | {r['val_loss'] or float('nan'):.3f} | "
                f"{r['latency_ms']['1']:.1f} ms | {r['latency_ms']['16']:.1f} ms | {split} | "
                f"{s['avg_len']['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {100 * s['chain_sr']['1']['value']:.1f}% | "
                f"{s['s_per_1000_chains'] / 60:.0f} min | {100 * s['policy_share']:.0f}% / {100 * s['env_share']:.0f}% |"
            )
    lines += [
        "",
        "Reading the table: `eval` uses CALVIN's fixed evaluation sentences, `train` the training paraphrases of",
        "the same tasks; their gap is the language gap of the hashed n-gram encoder. `eval (greedy)` takes the",
        "most probable bin per dimension instead of sampling: the one-frame BC policy then stalls in the",
        "experts' pauses (many demonstrated x/y/z actions are exactly 0), which is why",
        "train_bc.py's checkpoints default to sampled actions. Defaults chosen from `vla_train_step`: one",
        "torch thread (two threads are several times slower while the cores are oversubscribed), bf16",
        "autocast, d_model 128, images fed at 64 / 48 (96 / 64 doubles the step time).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.markdown_from:
        merged: dict[str, dict] = {}  # runs of the same checkpoint contribute their rows
        for p in args.markdown_from:
            for r in json.loads(Path(p).read_text()):
                if r["checkpoint"] in merged:
                    merged[r["checkpoint"]]["splits"].update(r["splits"])
                else:
                    merged[r["checkpoint"]] = r
        results = list(merged.values())
        args.checkpoints = tuple(merged)
    else:
        results = [bench_checkpoint(path, args) for path in args.checkpoints]
    for result, minutes in zip(results, args.train_minutes):
        if result["train_seconds"] is None:
            result["train_seconds"] = 60 * minutes
    text = markdown(results, args)
    print(text)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(results, indent=2, default=float) + "\n")
    if args.write_markdown:
        write_section("vla", text)
