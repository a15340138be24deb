"""Time one behaviour-cloning step of the base VLA for candidate sizes, image resolutions,
precisions and thread counts (the measurements behind train_bc.py's defaults). Writes the
``vla_train_step`` section of BENCHMARKS.md.

Example:
    python bench/vla_train_step.py
"""

from __future__ import annotations

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
from rftf_gym.models import VLA, VLAConfig, num_parameters  # noqa: E402

CANDIDATES = [  # (obs_mode, static, gripper, d_model, batch)
    ("state", 64, 48, 64, 128),
    ("state", 64, 48, 128, 128),
    ("rgb", 48, 32, 128, 64),
    ("rgb", 64, 48, 64, 64),
    ("rgb", 64, 48, 128, 64),
    ("rgb", 96, 64, 128, 64),
]


@dataclass
class Args:
    repeats: int = 5
    """timed steps per configuration (the median is reported, after one warm-up step)"""
    threads: tuple[int, ...] = (1, 2)
    """torch thread counts to compare"""
    write_markdown: bool = True
    """rewrite the vla_train_step section of BENCHMARKS.md"""


def step_seconds(mode: str, static: int, gripper: int, d: int, batch: int, bf16: bool, repeats: int) -> tuple[float, int]:
    torch.manual_seed(0)
    model = VLA(VLAConfig(obs_mode=mode, d_model=d, static_size=static, gripper_size=gripper))
    inputs = {"robot_obs": torch.randn(batch, 15), "lang_emb": torch.randn(batch, 384)}
    if mode == "state":
        inputs["scene_obs"] = torch.randn(batch, 24)
    else:
        inputs["rgb_static"] = torch.randint(0, 256, (batch, 3, static, static), dtype=torch.uint8)
        inputs["rgb_gripper"] = torch.randint(0, 256, (batch, 3, gripper, gripper), dtype=torch.uint8)
    bins = torch.randint(0, model.config.num_bins, (batch, 7))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(inputs)
        loss = -torch.log_softmax(logits.float(), -1).gather(-1, bins[..., None]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    return float(np.median(times)), num_parameters(model)


if __name__ == "__main__":
    args = tyro.cli(Args)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for mode, static, gripper, d, batch in CANDIDATES:
            if threads != 1 and (mode, d) != ("state", 128):
                continue  # the thread comparison needs one model only
            for bf16 in (False, True):
                seconds, params = step_seconds(mode, static, gripper, d, batch, bf16, args.repeats)
                rows.append((mode, static, gripper, d, batch, threads, bf16, seconds, params))
                print(rows[-1], flush=True)
    load = os.getloadavg()
    lines = [
        "## Base VLA: one BC training step (`bench/vla_train_step.py`)",
        "",
        f"Median of {args.repeats} steps (forward, backward, AdamW) on random inputs; load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on the 2 shared cores at the end of the run.",
        "",
        "| variant | images fed (static / gripper) | d_model | params | batch | threads | precision | s / step | frames / s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, static, gripper, d, batch, threads, bf16, seconds, params in rows:
        images = f"{static} / {gripper}" if mode == "rgb" else "-"
        lines.append(f"| {mode} | {images} | {d} | {params / 1e6:.2f} M | {batch} | {threads} | "
                     f"{'bf16 autocast' if bf16 else 'fp32'} | {seconds:.3f} | {batch / seconds:.0f} |")
    text = "\n".join(lines)
    print(text)
    if args.write_markdown:
        write_section("vla_train_step", text)
