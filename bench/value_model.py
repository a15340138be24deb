"""Value model: inference latency and throughput at batch 16, and the quality of trained runs.

Inference: `ValueModel.predict` on 16 env observations at the env's official image sizes and 16
sentences (preprocessing, instruction encoding and one forward pass), median over repeats, for
the state and image variants of the default architecture (the weights do not change the time).
Quality: the held-out scene-D scores of the kept epoch of ``train_value.py`` runs, read from
their ``report.json``, beside the clock baseline V = t / 360.

Results are printed and written to BENCHMARKS.md between ``<!-- value_model -->`` markers.

Usage: ``python bench/value_model.py [--runs runs/value_state runs/value_rgb] [--repeats 50]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rftf_gym.models import VLAConfig
from rftf_gym.value_model import ValueModel

from markdown_section import write_section

BATCH = 16


def observations(obs_mode: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random observations with the env's keys, shapes and dtypes."""
    rng = np.random.default_rng(seed)
    obs = {"robot_obs": rng.normal(size=(batch, 15)).astype(np.float32)}
    if obs_mode == "rgb":
        obs["rgb_static"] = rng.integers(0, 256, (batch, 200, 200, 3), dtype=np.uint8)
        obs["rgb_gripper"] = rng.integers(0, 256, (batch, 84, 84, 3), dtype=np.uint8)
    else:
        obs["scene_obs"] = rng.normal(size=(batch, 24)).astype(np.float32)
    return obs


def time_predict(obs_mode: str, repeats: int, device: str) -> dict[str, float]:
    """Median ms of predict and of the forward pass alone at batch 16."""
    torch.manual_seed(0)
    model = ValueModel(VLAConfig(obs_mode=obs_mode)).to(device).eval()
    obs = observations(obs_mode, BATCH)
    sentences = ["open the drawer", "push the sliding door to the left"] * (BATCH // 2)
    batch = model.preprocess(obs, sentences)
    for _ in range(3):
        model.predict(obs, sentences)
    full, forward = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(obs, sentences)
        full.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            model(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        forward.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(full)
    return {"predict_ms": ms, "forward_ms": 1000 * statistics.median(forward), "frames_per_s": BATCH / ms * 1000}


def run_row(run_dir: Path) -> list[str]:
    """One table row of a training run's kept epoch."""
    report = json.loads((run_dir / "report.json").read_text())
    args = report["args"]
    kept = next(h for h in report["history"] if h["epoch"] == report["kept_epoch"])
    m, c = kept["model"], kept["clock"]

    def f(group: dict, key: str) -> str:
        value = group.get(key) if group else None
        return "-" if value is None else f"{value:.3f}"

    def pair(key: str, sub: str) -> str:
        return f"{f(m.get(key, {}), sub)} ({f(c.get(key, {}), sub)})"

    sf, sfc = m.get("success_vs_failure", {}), c.get("success_vs_failure", {})
    return [
        f"`{run_dir.name}`", args["obs_mode"] if not args.get("bc_checkpoint") else f"BC {Path(args['bc_checkpoint']).name}",
        args["loss"], str(report["kept_epoch"]),
        pair("demos", "pairwise_accuracy"), pair("demos", "voc"), pair("reversed", "voc"),
        pair("wrong_instruction", "voc"), pair("rollouts_success", "voc"), pair("rollouts_failure", "voc"),
        f"{f(sf, 'same_time_accuracy')} ({f(sfc, 'same_time_accuracy')})",
        f"{f(sf, 'final_value_auc')} ({f(sfc, 'final_value_auc')})",
        f"{report['train_seconds'] / 60:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=[], help="train_value.py run directories to report")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--note", default="", help="a sentence on the machine load or how the runs were made")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lines = [
        "## Value model (`bench/value_model.py`, `train_value.py`)",
        "",
        f"Inference: `ValueModel.predict` at batch {BATCH} (preprocessing, instruction encoding, one forward pass),"
        f" median of {args.repeats}; {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads,"
        f" Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "| variant | predict (ms) | forward only (ms) | frames/s |",
        "|---|---|---|---|",
    ]
    for obs_mode in ("state", "rgb"):
        t = time_predict(obs_mode, args.repeats, args.device)
        lines.append(f"| {obs_mode} | {t['predict_ms']:.1f} | {t['forward_ms']:.1f} | {t['frames_per_s']:.0f} |")
    if args.runs:
        lines += [
            "",
            "Held-out scene D scores of the kept epoch; the clock baseline V = t / 360 in brackets."
            " Targets: pairwise accuracy >= 0.95 and VOC >= 0.9 on demonstrations, VOC <= 0.2 on reversed"
            " and wrong-instruction demonstrations, failed rollouts clearly below successes.",
            "",
            "| run | init | loss | epoch | demo pair acc | demo VOC | reversed VOC | wrong-instr. VOC |"
            " success-rollout VOC | failed-rollout VOC | same-time acc | final-value AUC | train min |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(run_row(Path(r))) + " |" for r in args.runs]
    if args.note:
        lines += ["", args.note]
    body = "\n".join(lines)
    print(body)
    write_section("value_model", body)


if __name__ == "__main__":
    main()
