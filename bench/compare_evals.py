"""Paper-format tables and paired differences from finished evaluate.py runs.

Each policy is one or more evaluate.py output folders, one per training seed; the reference
(``--base``) is one folder or one per seed. Every folder must hold the same chains with the same
evaluation seed, scene, sentences and code (`rftf_gym.evaluation.pairing_mismatches`), so each
difference is formed chain by chain and then bootstrapped over chains and seeds
(`rftf_gym.evaluation.paired_bootstrap`). A single reference is compared with every seed of a
policy (a BC start shared by the fine-tuning seeds).

Usage::

    python bench/compare_evals.py --base BC=results/bc \\
        --policies RFTF=results/rftf_s3,results/rftf_s4,results/rftf_s5 sparse=results/sparse_s3,...

Prints a markdown table of L1..L5 and Avg. Len. with 95 % intervals (the per-seed Avg. Len. in
the policy column), then each policy minus the reference and each policy minus each other one
with the same number of seeds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from rftf_experiment import (PAIRED_HEADER, TABLE_HEADER, StageError, chain_results, check_paired, paired_row,
                             table_row)

from rftf_gym.evaluation import read_results


@dataclass
class Args:
    base: str
    """the reference, NAME=DIR or NAME=DIR1,DIR2,... (one per seed of the policies)"""
    policies: tuple[str, ...] = ()
    """the policies, each NAME=DIR1,DIR2,... (one evaluate.py output folder per training seed)"""
    bootstrap_samples: int = 2000
    """bootstrap resamples of the chains (and seeds) for every interval"""


def parse(spec: str) -> tuple[str, list[Path]]:
    """``NAME=DIR1,DIR2`` -> (NAME, [DIR1, DIR2]).

    Raises:
        ValueError: no ``=``, an empty name or folder, or a folder without results.jsonl.
    """
    name, sep, folders = spec.partition("=")
    dirs = [Path(d) for d in folders.split(",") if d]
    if not sep or not name or not dirs:
        raise ValueError(f"expected NAME=DIR[,DIR...], got {spec!r}")
    for d in dirs:
        if not sorted(d.glob("results*.jsonl")):
            raise ValueError(f"{d}: no results*.jsonl (not an evaluate.py output folder)")
    return name, dirs


def num_chains(directory: Path) -> int:
    return int(read_results(sorted(directory.glob("results*.jsonl"))[0])[0]["num_chains"])


def compare(args: Args) -> list[str]:
    """The markdown lines of both tables."""
    base_name, base_dirs = parse(args.base)
    specs = [parse(p) for p in args.policies]
    every = {f"{name} ({d})": d for name, dirs in [(base_name, base_dirs), *specs] for d in dirs}
    for name, dirs in specs:
        if len(base_dirs) not in (1, len(dirs)):
            raise ValueError(f"{base_name} has {len(base_dirs)} folders and {name} {len(dirs)}: give one, or one per seed")
    check_paired(every)
    chains = num_chains(base_dirs[0])
    base = np.stack([chain_results(d, chains) for d in base_dirs])
    results = {name: np.stack([chain_results(d, chains) for d in dirs]) for name, dirs in specs}
    lines = list(TABLE_HEADER)
    for name, lengths in [(base_name, base), *results.items()]:
        per_seed = " / ".join(f"{x:.3f}" for x in lengths.mean(axis=1))
        lines.append(table_row(f"{name} ({per_seed})" if len(lengths) > 1 else name, lengths, args.bootstrap_samples)[0])
    lines += ["", f"{chains} chains per evaluation.", ""] + PAIRED_HEADER
    for name, lengths in results.items():
        reference = np.repeat(base, len(lengths), axis=0) if len(base) == 1 else base
        lines.append(paired_row(f"{name} − {base_name}", lengths, reference, args.bootstrap_samples)[0])
    names = list(results)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if results[first].shape == results[second].shape:
                lines.append(paired_row(f"{first} − {second}", results[first], results[second], args.bootstrap_samples)[0])
    return lines


if __name__ == "__main__":
    try:
        print("\n".join(compare(tyro.cli(Args))))
    except (ValueError, FileNotFoundError, StageError) as err:  # unpaired folders: StageError names them
        print(f"compare_evals.py: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
