"""Chained evaluation: metrics against hand-computed answers, the results file, and tiny
end-to-end runs of ``evaluate.py`` (CleanRL tests/test_mujoco.py style), including kill-and-resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rftf_gym import evaluation, sequences

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------- metrics
# Four hand-made chains and their successes in a row.
CHAINS = [
    ("open_drawer", "turn_on_led", "push_into_drawer", "stack_block", "move_slider_left"),
    ("open_drawer", "turn_on_led", "close_drawer", "stack_block", "move_slider_left"),
    ("turn_on_led", "open_drawer", "close_drawer", "stack_block", "move_slider_left"),
    ("close_drawer", "turn_on_led", "open_drawer", "lift_red_block_table", "move_slider_left"),
]
NUM_SUCCESS = [0, 2, 5, 3]


def test_chain_success_rates_match_count_success():
    # L_i = share of chains with >= i successes: 3/4, 3/4, 2/4, 1/4, 1/4.
    np.testing.assert_allclose(evaluation.chain_success_rates(NUM_SUCCESS), [0.75, 0.75, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(evaluation.chain_success_rates([5, 5]), [1, 1, 1, 1, 1])
    np.testing.assert_allclose(evaluation.chain_success_rates([0]), [0, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        evaluation.chain_success_rates([])


def test_task_counts_follow_print_and_save():
    counts = evaluation.task_counts(CHAINS, NUM_SUCCESS)
    # open_drawer: chain0 fail, chain1 ok, chain2 ok, chain3 ok -> 3/4
    assert counts["open_drawer"] == {"success": 3, "attempts": 4}
    # turn_on_led: chains 1, 2, 3 succeed; chain 0 never reached it
    assert counts["turn_on_led"] == {"success": 3, "attempts": 3}
    # close_drawer: chain1 fails it (3rd), chain2 ok, chain3 ok (1st)
    assert counts["close_drawer"] == {"success": 2, "attempts": 3}
    assert counts["stack_block"] == {"success": 1, "attempts": 1}
    assert counts["lift_red_block_table"] == {"success": 0, "attempts": 1}
    assert counts["move_slider_left"] == {"success": 1, "attempts": 1}
    assert "push_into_drawer" not in counts


def test_compute_metrics_values_and_official_layout():
    metrics = evaluation.compute_metrics(CHAINS, NUM_SUCCESS, num_bootstrap=500, seed=0)
    assert metrics["num_chains"] == 4
    assert metrics["avg_len"]["value"] == pytest.approx(2.5)
    assert [metrics["chain_sr"][str(i)]["value"] for i in range(1, 6)] == pytest.approx([0.75, 0.75, 0.5, 0.25, 0.25])
    assert metrics["tasks"]["close_drawer"]["rate"] == pytest.approx(2 / 3)
    assert metrics["official"]["avg_seq_len"] == pytest.approx(2.5)
    assert metrics["official"]["task_info"]["open_drawer"] == {"success": 3, "total": 4}
    json.dumps(metrics)  # plain JSON


def test_bootstrap_intervals_contain_estimate_and_are_seeded():
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 6, 300).tolist()
    chains = [CHAINS[i % 4] for i in range(300)]
    a = evaluation.compute_metrics(chains, lengths, num_bootstrap=1000, seed=7)
    b = evaluation.compute_metrics(chains, lengths, num_bootstrap=1000, seed=7)
    c = evaluation.compute_metrics(chains, lengths, num_bootstrap=1000, seed=8)
    assert a == b
    assert a["avg_len"]["ci"] != c["avg_len"]["ci"]
    entries = [a["avg_len"], *a["chain_sr"].values()]
    entries += [{"value": t["rate"], "ci": t["ci"]} for t in a["tasks"].values()]
    for entry in entries:
        low, high = entry["ci"]
        assert low <= entry["value"] <= high
    # A 95% interval of a mean of 300 values in 0..5 is about +-2 standard errors wide.
    low, high = a["avg_len"]["ci"]
    se = np.std(lengths) / np.sqrt(300)
    assert 3 * se < high - low < 5 * se


def test_bootstrap_degenerate_and_bad_inputs():
    metrics = evaluation.compute_metrics([CHAINS[0]] * 3, [5, 5, 5], num_bootstrap=100)
    assert metrics["avg_len"]["ci"] == [5.0, 5.0]
    with pytest.raises(ValueError, match="reports 6 successes"):
        evaluation.compute_metrics([CHAINS[0]], [6])
    with pytest.raises(ValueError, match="2 chains but 1 results"):
        evaluation.compute_metrics(CHAINS[:2], [1])


def test_format_table_and_markdown():
    metrics = evaluation.compute_metrics(CHAINS, NUM_SUCCESS, num_bootstrap=200)
    table = evaluation.format_table(metrics)
    assert "Avg. Len." in table and "L5" in table and "close_drawer" in table
    markdown = evaluation.format_markdown(metrics, {"policy": "random", "scene": "D"})
    assert "| L1 | L2 | L3 | L4 | L5 | Avg. Len. |" in markdown


# ---------------------------------------------------------------------------- results file
CONFIG = {"policy": "random", "scene": "D", "num_chains": 4, "output_dir": "a", "num_workers": 1}


def test_results_log_appends_and_ignores_cut_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    log = evaluation.ResultsLog(path, CONFIG)
    log.append({"index": 0, "num_success": 1, "chain": ["open_drawer"]})
    log.append({"index": 2, "num_success": 0, "chain": ["open_drawer"]})
    log.close()
    with open(path, "a") as handle:
        handle.write('{"kind": "chain", "index": 1, "num_su')  # a kill during an append
    config, records, _ = evaluation.read_results(path)
    assert config == CONFIG and [r["index"] for r in records] == [0, 2]
    # Reopening (where to write and how many workers may change) cuts the partial line off.
    log = evaluation.ResultsLog(path, {**CONFIG, "output_dir": "b", "num_workers": 2})
    assert [r["index"] for r in log.records] == [0, 2]
    log.append({"index": 1, "num_success": 3, "chain": ["open_drawer"] * 3})
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)


def test_results_log_refuses_other_configuration(tmp_path):
    path = tmp_path / "results.jsonl"
    evaluation.ResultsLog(path, CONFIG).close()
    expected = r"num_chains: file has 4, this run has 5.*scene: file has 'D'"
    with pytest.raises(evaluation.ConfigMismatchError, match=expected):
        evaluation.ResultsLog(path, {**CONFIG, "scene": "A", "num_chains": 5})


def test_results_log_refuses_results_of_other_code(tmp_path):
    """A chain's result depends on the code (a simulator edit changes it), so a results file
    written by other rftf_gym code is not resumed; one from before the digest was recorded is."""
    digest = evaluation.code_digest()
    assert digest.startswith("sha256:") and len(digest) == 71 and digest == evaluation.code_digest()
    path = tmp_path / "results.jsonl"
    evaluation.ResultsLog(path, {**CONFIG, "code_sha256": "sha256:" + "0" * 64}).close()
    with pytest.raises(evaluation.ConfigMismatchError, match="code_sha256: file has 'sha256:000"):
        evaluation.ResultsLog(path, {**CONFIG, "code_sha256": digest})
    older = tmp_path / "older.jsonl"
    evaluation.ResultsLog(older, CONFIG).close()
    evaluation.ResultsLog(older, {**CONFIG, "code_sha256": digest}).close()
    assert evaluation.pairing_mismatches({**CONFIG, "policy": "a"}, {**CONFIG, "policy": "b"}) == []
    assert evaluation.pairing_mismatches(CONFIG, {**CONFIG, "text_encoder": "snap-hashed-ngram-d384-c34"}) == []
    assert evaluation.config_mismatches(CONFIG, {**CONFIG, "text_encoder": "snap-hashed-ngram-d384-c34"}) != []
    assert evaluation.pairing_mismatches({**CONFIG, "code_sha256": "x"}, {**CONFIG, "code_sha256": "y", "seed": 1}) == [
        "code_sha256: 'x' vs 'y'", f"seed: {CONFIG.get('seed')!r} vs 1"]


def test_write_results_is_sorted_and_readable(tmp_path):
    path = tmp_path / "results.jsonl"
    evaluation.write_results(path, CONFIG, [{"index": 3, "num_success": 0}, {"index": 1, "num_success": 2}])
    config, records, size = evaluation.read_results(path)
    assert [r["index"] for r in records] == [1, 3] and size == path.stat().st_size
    assert not list(tmp_path.glob(".*tmp"))


def test_chains_digest_and_policy_fingerprint(tmp_path):
    state = {"led": np.int64(1), "slider": "left"}
    digest = evaluation.chains_digest([(state, ("open_drawer",))])
    assert digest == evaluation.chains_digest([({"led": 1, "slider": "left"}, ["open_drawer"])])
    assert digest != evaluation.chains_digest([(state, ("close_drawer",))])
    assert evaluation.policy_fingerprint("random") == "random"
    (tmp_path / "config.json").write_text("{}")
    first = evaluation.policy_fingerprint(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert first.startswith("sha256:") and evaluation.policy_fingerprint(str(tmp_path)) != first


# ---------------------------------------------------------------------------- evaluate.py
def run_evaluate(*args: str, cwd: Path, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run evaluate.py in ``cwd``, so that nothing it writes can land in the repository."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"evaluate.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def base_args(out: Path, *extra: str) -> list[str]:
    """4 official chains with the scripted experts: they succeed on some instructions and fail on
    others, so resumed and uninterrupted runs are compared on more than zeros."""
    return ["--policy", "expert", "--num-chains", "4", "--obs-mode", "state", "--output-dir", str(out),
            "--bootstrap-samples", "200", *extra]  # fmt: skip


def chain_records(out: Path) -> list[dict]:
    """The per-chain results without the timing fields, sorted by chain index."""
    _, records, _ = evaluation.read_results(out / "results.jsonl")
    return sorted(({k: v for k, v in r.items() if k != "wall_s"} for r in records), key=lambda r: r["index"])


def final_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """One uninterrupted 4-chain run of the experts, in state mode."""
    out = tmp_path_factory.mktemp("eval") / "full"
    result = run_evaluate(*base_args(out), cwd=out.parent)
    assert "Avg. Len." in result.stdout
    assert sum(r["num_success"] for r in chain_records(out)) > 0
    return out


def test_evaluate_random_policy_writes_results(tmp_path):
    out = tmp_path / "random"
    args = ["--policy", "random", "--num-chains", "2", "--obs-mode", "state", "--output-dir", str(out)]
    result = run_evaluate(*args, "--bootstrap-samples", "100", cwd=tmp_path)
    assert "Avg. Len." in result.stdout and "L5" in result.stdout
    metrics = final_metrics(out)
    assert metrics["num_chains"] == 2
    assert metrics["config"]["policy"] == "random" and metrics["config"]["obs_mode"] == "state"
    assert 0.0 <= metrics["avg_len"]["value"] <= 5.0
    records = chain_records(out)
    assert [r["index"] for r in records] == [0, 1]
    # TensorBoard events go with the run's other outputs, not into the working directory.
    assert list((out / "runs").glob("evaluate__random__embedded-D__state__2__0/events.out.tfevents.*"))
    assert not (tmp_path / "runs").exists()
    for r in records:
        assert len(r["steps"]) == min(r["num_success"] + 1, len(r["chain"]))
        assert all(1 <= s <= 360 for s in r["steps"])
        # A failed instruction used the whole budget (or hit a physics error).
        if r["num_success"] < len(r["chain"]):
            assert r["steps"][-1] == 360
    assert (out / "metrics.md").read_text().startswith("# CALVIN chained evaluation")
    header = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert header["kind"] == "header"
    for key in ("policy", "backend", "scene", "obs_mode", "num_chains", "chains_sha256", "seed"):
        assert key in header["config"]


def test_resume_after_stop_and_cut_line_equals_uninterrupted(uninterrupted, tmp_path):
    out = tmp_path / "resumed"
    first = run_evaluate(*base_args(out, "--max-chains-this-run", "2"), cwd=tmp_path)
    assert "2/4 chains finished" in first.stdout
    assert len(chain_records(out)) == 2 and not (out / "metrics.json").exists()
    with open(out / "results.jsonl", "a") as handle:
        handle.write('{"kind": "chain", "index": 3, "num_succ')  # killed in the middle of an append
    # The resumed part runs in two worker processes: results must not depend on who runs a chain.
    run_evaluate(*base_args(out, "--num-workers", "2"), cwd=tmp_path)
    assert chain_records(out) == chain_records(uninterrupted)
    resumed, full = final_metrics(out), final_metrics(uninterrupted)
    assert resumed == full


def test_killed_run_resumes_to_identical_results(uninterrupted, tmp_path, kill_when_ready):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), *base_args(out)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    path = out / "results.jsonl"
    kill_when_ready(proc, lambda: path.exists() and path.read_text().count('"kind": "chain"') >= 2, timeout=90)
    assert not (out / "metrics.json").exists()
    run_evaluate(*base_args(out), cwd=tmp_path)
    assert chain_records(out) == chain_records(uninterrupted)
    assert final_metrics(out) == final_metrics(uninterrupted)


def usage_error(result: subprocess.CompletedProcess) -> str:
    """A user's mistake ends evaluate.py with exit status 2 and its message alone on the last line."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("evaluate.py: error: "), line
    return line


def test_resume_with_other_configuration_is_refused(uninterrupted, tmp_path):
    result = run_evaluate(*base_args(uninterrupted, "--scene", "A", "--seed", "1"), cwd=tmp_path, check=False)
    line = usage_error(result)
    assert "scene: file has 'D', this run has 'A'" in line and "seed: file has 0" in line


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--policy", "no/such/checkpoint"], "does not exist"),
        (["--scene", "E"], "invalid choice 'E' for argument '--scene'"),
        (["--backend", "mujoco"], "invalid choice 'mujoco' for argument '--backend'"),
        (["--policy", "expert", "--obs-mode", "rgb"], "--obs-mode state"),
        (["--num-chains", "0"], "--num-chains must be >= 1, got 0"),
        (["--text-encoder", "snap-hashed-ngram-d384-c34"], "--text-encoder applies to VLA checkpoints"),
        (["--policy", str(ROOT / "pretrained/state/bc"), "--text-encoder", "minilm"], "unknown text encoder 'minilm'"),
        (["--policy", str(ROOT / "pretrained/state/bc"), "--text-encoder", "hashed-ngram-d64-c34"], "has width 64"),
    ],
)
def test_bad_arguments_fail_clearly(tmp_path, extra, message):
    result = run_evaluate(*base_args(tmp_path / "out"), *extra, cwd=tmp_path, check=False)
    if result.returncode == 2 and "invalid choice" in result.stderr:
        # A closed choice (a Literal in Args) refused by tyro's parser, which lists the choices.
        assert "Traceback" not in result.stderr and message in " ".join(result.stderr.split())
    else:
        assert message in usage_error(result)
    assert not (tmp_path / "out").exists()


def test_a_corrupt_checkpoint_or_an_output_dir_that_is_a_file_fail_in_one_line(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{not json")
    line = usage_error(run_evaluate(*base_args(tmp_path / "out"), "--policy", str(checkpoint), cwd=tmp_path,
                                    check=False))
    assert str(checkpoint) in line
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    line = usage_error(run_evaluate(*base_args(a_file), "--num-chains", "1", cwd=tmp_path, check=False))
    assert line == (f"evaluate.py: error: --output-dir {a_file}: {a_file} is a file, not a directory; "
                    "remove or rename it, or give another --output-dir")


def test_unknown_task_in_chain_file(tmp_path):
    chain_file = tmp_path / "chains.json"
    state = {"led": 0, "lightbulb": 0, "slider": "right", "drawer": "closed",
             "red_block": "table", "blue_block": "slider_right", "pink_block": "slider_left", "grasped": 0}  # fmt: skip
    chain_file.write_text(json.dumps([
        {"initial_state": state, "chain": ["open_drawer"]},
        {"initial_state": state, "chain": ["open_drawer", "fly_to_the_moon"]},
    ]))  # fmt: skip
    result = run_evaluate(*base_args(tmp_path / "out"), "--chain-file", str(chain_file), cwd=tmp_path, check=False)
    line = usage_error(result)
    assert "chain 1" in line and "unknown task 'fly_to_the_moon'" in line


def test_chain_result_does_not_depend_on_what_ran_before():
    """Workers reuse one env for many chains: a chain must end in the same state, to the last bit,
    whether it runs first in a fresh env or after other chains."""
    sys.path.insert(0, str(ROOT))
    import evaluate
    from rftf_gym import policies, sequences

    chains = sequences.get_sequences(4)[:2]
    args = evaluate.Args(obs_mode="state")

    def run(env, index):
        initial_state, chain = chains[index]
        result = evaluate.evaluate_sequence(
            env, policies.RandomPolicy(seed=123), initial_state, chain, evaluate.chain_seed(0, index), None
        )
        obs = env.unwrapped.sim.get_obs()
        return result, np.concatenate([obs["robot_obs"], obs["scene_obs"]])

    env = evaluate.make_env(args)
    in_order = [run(env, 0), run(env, 1)]
    env.close()
    env = evaluate.make_env(args)
    reversed_order = [run(env, 1), run(env, 0)][::-1]
    env.close()
    for (result_a, state_a), (result_b, state_b) in zip(in_order, reversed_order):
        assert result_a == result_b
        np.testing.assert_array_equal(state_a, state_b)


@pytest.mark.slow
def test_torchrun_shards_and_resumes_to_identical_results(uninterrupted, tmp_path):
    """Two gloo ranks, each stopped after one chain (part files), then a full torchrun resume."""
    out = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "evaluate.py"), *base_args(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(
        [*command, "--max-chains-this-run", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.rank0.jsonl", "results.rank1.jsonl"]
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert [p.name for p in out.glob("results*.jsonl")] == ["results.jsonl"]  # gathered by rank 0
    assert chain_records(out) == chain_records(uninterrupted)
    assert final_metrics(out) == final_metrics(uninterrupted)


def test_save_video_writes_captioned_gif(tmp_path):
    sys.path.insert(0, str(ROOT))
    import evaluate
    from PIL import Image

    frame = np.full((32, 40, 3), 90, dtype=np.uint8)
    segments = [("1/5 open the drawer", [frame, frame], True), ("2/5 turn on the led", [frame], False)]
    path = tmp_path / "videos" / "chain_0000.gif"
    evaluate.save_video(path, segments)
    with Image.open(path) as gif:
        assert gif.n_frames == 3
        assert gif.size[0] == 40 and gif.size[1] > 32  # the caption bar under the frame
        gif.seek(2)
        caption = np.asarray(gif.convert("RGB"))[32:]
        assert (caption[..., 0] > 200).any() and (caption[..., 1] < 100).any()  # red: a failure


def test_checkpoint_of_unknown_type_fails_before_writing(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"policy_type": "not_a_model"}))
    result = run_evaluate(*base_args(tmp_path / "out"), "--policy", str(checkpoint), cwd=tmp_path, check=False)
    assert "policy_type='not_a_model'" in usage_error(result)
    assert not (tmp_path / "out").exists()


def test_results_log_starts_over_when_the_header_was_cut(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"kind": "hea')
    evaluation.ResultsLog(path, CONFIG).close()
    assert evaluation.read_results(path)[0] == CONFIG


def test_chains_whose_reset_state_the_scene_cannot_hold_are_refused_up_front(tmp_path):
    # The official reset states use scene D's shelf spots; scene B's shelf is 0.18 m to the right.
    result = run_evaluate(*base_args(tmp_path / "out", "--scene", "B", "--num-chains", "3"), cwd=tmp_path, check=False)
    line = usage_error(result)
    assert "initial state cannot be set up in scene B: impossible reset state: block_" in line
    assert "cm inside table base_link" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # generating the 1000 official chains takes ~10 s on an idle core
@pytest.mark.parametrize("scene", ["A", "D"])
def test_every_official_reset_state_is_accepted_in_scenes_a_and_d(scene):
    sys.path.insert(0, str(ROOT))
    import evaluate

    args = evaluate.Args(policy="expert", obs_mode="state", scene=scene)
    evaluate.check_reset_states(args, list(sequences.get_sequences(1000)))  # raises on the first refusal


def test_text_encoder_is_recorded_and_a_resume_must_keep_it(tmp_path):
    out = tmp_path / "out"
    bc = str(ROOT / "pretrained/state/bc")
    args = ["--policy", bc, "--num-chains", "1", "--obs-mode", "state", "--output-dir", str(out), "--bootstrap-samples", "50"]
    run_evaluate(*args, "--text-encoder", "snap-hashed-ngram-d384-c34", cwd=tmp_path)
    assert final_metrics(out)["config"]["text_encoder"] == "snap-hashed-ngram-d384-c34"
    line = usage_error(run_evaluate(*args, cwd=tmp_path, check=False))
    assert "text_encoder" in line
