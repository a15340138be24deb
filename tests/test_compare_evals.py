"""bench/compare_evals.py: paper-format tables and paired differences of finished evaluations."""

import subprocess
import sys

import pytest
from conftest import BENCH, load_bench_module

from rftf_gym.evaluation import write_results

CONFIG = {"policy": "p", "num_chains": 4, "seed": 0, "scene": "D", "chains_sha256": "sha256:c", "code_sha256": "sha256:x"}


def evaluation(folder, successes, **config):
    records = [{"index": i, "num_success": k, "chain": ["open_drawer"] * 5} for i, k in enumerate(successes)]
    write_results(folder / "results.jsonl", {**CONFIG, **config}, records)
    return folder


@pytest.fixture(scope="module")
def compare_evals():
    return load_bench_module("compare_evals")


def test_tables_pair_each_seed_with_the_shared_reference(compare_evals, tmp_path):
    base = evaluation(tmp_path / "bc", [0, 1, 0, 2])
    seeds = [evaluation(tmp_path / f"ft{s}", values, policy=f"ft{s}") for s, values in ((3, [1, 1, 0, 2]), (4, [0, 2, 1, 2]))]
    other = [evaluation(tmp_path / f"sp{s}", [0, 1, 0, 2], policy=f"sp{s}", text_encoder="snap") for s in (3, 4)]
    lines = compare_evals.compare(compare_evals.Args(base=f"BC={base}", policies=(
        "FT=" + ",".join(map(str, seeds)), "SP=" + ",".join(map(str, other)))))
    text = "\n".join(lines)
    assert "| BC |" in text and "| FT (1.000 / 1.250) |" in text
    # FT - BC per chain: seed 3 (+1, 0, 0, 0), seed 4 (0, +1, +1, 0): mean 3/8
    row = next(line for line in lines if line.startswith("| FT − BC |"))
    assert "**+0.375**" in row
    assert any(line.startswith("| FT − SP |") and "**+0.375**" in line for line in lines)


def test_unpaired_or_malformed_inputs_fail_in_one_line(compare_evals, tmp_path):
    base = evaluation(tmp_path / "bc", [0, 1, 0, 2])
    other = evaluation(tmp_path / "seed1", [0, 1, 0, 2], policy="q", seed=1)
    run = subprocess.run([sys.executable, str(BENCH / "compare_evals.py"), "--base", f"BC={base}",
                          "--policies", f"Q={other}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "cannot be compared chain by chain" in run.stderr and "seed" in run.stderr
    with pytest.raises(ValueError, match="NAME=DIR"):
        compare_evals.parse(str(base))
    with pytest.raises(ValueError, match="no results"):
        compare_evals.parse(f"X={tmp_path}")


def test_a_reference_per_seed_pairs_seed_by_seed(compare_evals, tmp_path):
    bases = [evaluation(tmp_path / f"bc{s}", values, policy=f"bc{s}") for s, values in ((3, [0, 1, 0, 2]), (4, [1, 1, 1, 1]))]
    tuned = [evaluation(tmp_path / f"ft{s}", [1, 1, 1, 2], policy=f"ft{s}") for s in (3, 4)]
    lines = compare_evals.compare(compare_evals.Args(base="BC=" + ",".join(map(str, bases)),
                                                     policies=("FT=" + ",".join(map(str, tuned)),)))
    # seed 3: +1, 0, +1, 0; seed 4: 0, 0, 0, +1 -> 3/8
    assert any(line.startswith("| FT − BC |") and "**+0.375**" in line for line in lines)
    with pytest.raises(ValueError, match="one per seed"):
        compare_evals.compare(compare_evals.Args(base="BC=" + ",".join(map(str, bases)),
                                                 policies=(f"FT={tuned[0]}",)))
