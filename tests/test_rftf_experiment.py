"""bench/rftf_experiment.py: presets, resumable stages with manifests, and the paired report rows."""

import json
import sys

import pytest
from conftest import load_bench_module

from rftf_gym.evaluation import write_results


@pytest.fixture(scope="module")
def exp():
    return load_bench_module("rftf_experiment")


def test_presets_fill_unset_options_and_check_them(exp):
    args = exp.apply_preset(exp.Args(preset="full", run_dir="x"))
    assert args.seeds == (1, 2, 3) and args.eval_chains == 1000 and args.bc is None
    args = exp.apply_preset(exp.Args(preset="full", seeds=(7,), eval_chains=5))
    assert args.seeds == (7,) and args.eval_chains == 5
    with pytest.raises(ValueError, match="--settings"):
        exp.apply_preset(exp.Args(settings=("AB",)))
    with pytest.raises(ValueError, match="single --seeds"):
        exp.apply_preset(exp.Args(bc="some/checkpoint"))
    with pytest.raises(ValueError, match="--ppo-episodes must be at least"):
        exp.apply_preset(exp.Args(ppo_episodes=4, ppo_episodes_per_iteration=8))


def test_a_finished_stage_is_skipped_and_other_settings_are_refused(exp, tmp_path, capsys):
    out = tmp_path / "out.txt"
    cmd = [sys.executable, "-c", f"open({str(out)!r}, 'a').write('x')"]
    runner = exp.Runner(tmp_path, total=3, jobs=1)
    stage = exp.Stage("write", "test", cmd, {"command": cmd[1:]}, out.is_file)
    manifest = runner.run(stage)
    assert manifest["status"] == "complete" and out.read_text() == "x"
    assert json.loads((tmp_path / "manifests" / "write.json").read_text())["command"] == cmd
    runner.run(stage)  # complete: not run again
    assert out.read_text() == "x"
    assert "skipped" in capsys.readouterr().out
    other = exp.Stage("write", "test", cmd, {"command": ["-c", "pass"]}, out.is_file)
    with pytest.raises(ValueError, match="other settings"):
        runner.run(other)


def test_a_failing_stage_names_its_log_and_leaves_no_manifest(exp, tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    runner = exp.Runner(tmp_path, total=1, jobs=1)
    with pytest.raises(exp.StageError, match="(?s)exit status 3.*fail.log.*boom"):
        runner.run(exp.Stage("fail", "test", cmd, {}, lambda: False))
    assert not (tmp_path / "manifests" / "fail.json").exists()
    assert len(json.loads((tmp_path / "manifests" / ".fail.partial.json").read_text())["attempts"]) == 1


def test_chain_results_and_paired_row(exp, tmp_path):
    before = [0, 1, 2, 1]
    after = [1, 2, 3, 2]
    for name, values in (("bc", before), ("ft", after)):
        records = [{"index": i, "num_success": k, "chain": ["a"] * 5} for i, k in enumerate(values)]
        write_results(tmp_path / name / "results.jsonl", {"policy": name}, records)
    b = exp.chain_results(tmp_path / "bc", 4)
    a = exp.chain_results(tmp_path / "ft", 4)
    assert b.tolist() == before
    row, stats = exp.paired_row("ft - bc", a[None], b[None], 500)
    assert stats["avg_len"]["value"] == 1.0 and stats["avg_len"]["ci"] == [1.0, 1.0]
    assert "(above 0)" in row
    # L1 goes from 3/4 to 4/4 of the chains: only chain 0 differs, by 1, so the mean is 0.25.
    assert stats["L1"]["value"] == 0.25
    with pytest.raises(ValueError, match="have no result"):
        exp.chain_results(tmp_path / "bc", 5)


def test_only_paired_evaluations_are_compared(exp, tmp_path):
    """Evaluations made by other code (a resumed run's earlier sitting) are not compared chain by chain."""
    common = {"chains_sha256": "c", "seed": 0, "scene": "D"}
    records = [{"index": 0, "num_success": 1, "chain": ["a"] * 5}]
    for name, extra in (("bc", {"code_sha256": "sha256:1"}), ("ft", {"code_sha256": "sha256:1"}),
                        ("old", {}), ("stale", {"code_sha256": "sha256:2"})):
        write_results(tmp_path / name / "results.jsonl", {"policy": name, **common, **extra}, records)
    exp.check_paired({n: tmp_path / n for n in ("bc", "ft", "old")})  # no digest in "old": not compared
    with pytest.raises(exp.StageError, match=r"stale.*code_sha256: 'sha256:1' vs 'sha256:2'.*delete"):
        exp.check_paired({n: tmp_path / n for n in ("bc", "ft", "stale")})


def test_ppo_runs_take_ppo_rftf_learning_rate_unless_one_is_given(exp, tmp_path):
    def ppo_commands(**options):
        args = exp.apply_preset(exp.Args(preset="quick", run_dir=str(tmp_path), **options))
        groups = dict(exp.build_stages(args, tmp_path))
        return [stage.command for stage in groups["PPO fine-tuning"]]

    # Unset: ppo_rftf.py picks the rate that fits its head parametrisation (3e-2 for the smooth change).
    assert all("--learning-rate" not in command for command in ppo_commands())
    for command in ppo_commands(ppo_lr=1e-4):
        assert command[command.index("--learning-rate") + 1] == "0.0001"


def test_training_sentence_chains_add_evaluations_and_a_paired_table(exp, tmp_path):
    args = exp.apply_preset(exp.Args(preset="quick", run_dir=str(tmp_path), settings=("D",), reward_modes=("dense",),
                                     train_sentence_chains=3))
    stages = dict(exp.build_stages(args, tmp_path))["chained evaluation"]
    assert [s.name for s in stages] == ["eval_bc_s1", "eval_rftf_D_s1", "eval_train_bc_s1", "eval_train_rftf_D_s1"]
    held_out, train = stages[0].command.resolve(), stages[2].command.resolve()
    assert held_out[held_out.index("--instruction-split") + 1] == "eval" and "instruction_split" not in stages[0].config
    assert train[train.index("--instruction-split") + 1] == "train" and train[train.index("--num-chains") + 1] == "3"
    assert train[train.index("--output-dir") + 1] == str(tmp_path / "eval_train" / "bc_s1")
    (tmp_path / "eval_train" / "bc_s1").mkdir(parents=True)
    (tmp_path / "eval_train" / "bc_s1" / "metrics.json").write_text(json.dumps({"num_chains": 3}))
    assert stages[2].done() and not stages[0].done()  # finished when its own N chains are
    with pytest.raises(ValueError, match="--train-sentence-chains must be >= 0"):
        exp.apply_preset(exp.Args(preset="quick", train_sentence_chains=-1))

    for key, values in (("bc", [0, 1, 0]), ("rftf_D", [1, 2, 1])):
        records = [{"index": i, "num_success": k, "chain": ["a"] * 5} for i, k in enumerate(values)]
        write_results(tmp_path / "eval_train" / f"{key}_s1" / "results.jsonl", {"policy": key}, records)
    out = {}
    lines = exp.train_sentence_tables(args, tmp_path, {"bc": "BC", "rftf_D": "RFTF"}, [("rftf_D", "bc")], out)
    assert any(line.startswith("| RFTF − BC |") and "**+1.000** [+1.000, +1.000] (above 0)" in line for line in lines)
    assert out["train_sentences"]["tables"]["bc"]["avg_len"]["value"] == pytest.approx(1 / 3)


def test_text_encoder_reaches_every_ppo_run_and_evaluation(exp, tmp_path):
    def commands(**options):
        args = exp.apply_preset(exp.Args(preset="quick", run_dir=str(tmp_path), settings=("D",), **options))
        groups = dict(exp.build_stages(args, tmp_path))
        evals = [stage.command.resolve() for stage in groups["chained evaluation"] if stage.name == "eval_bc_s1"]
        return [stage.command for stage in groups["PPO fine-tuning"]] + evals

    snap = "snap-hashed-ngram-d384-c34"
    assert all("--text-encoder" not in command for command in commands())
    found = commands(text_encoder=snap)
    assert len(found) == 3 and all(command[command.index("--text-encoder") + 1] == snap for command in found)
