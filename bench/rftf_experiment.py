"""The RFTF experiment end to end, with fixed seeds, in one resumable run directory.

Shu, Lin and Wang, "RFTF: Reinforcement Fine-tuning for VLA models with Temporal Feedback"
(https://arxiv.org/abs/2505.19767). The paper fine-tunes a VLA with value-model rewards in two
settings, generalisation (fine-tune on scenes A, B, C; evaluate on D) and adaptation (fine-tune on
D), and compares with the same PPO on sparse success rewards (Tables 1-3, section 4). This script
runs that comparison on the embedded CALVIN play table:

    demonstrations (collect_demos.py) -> behaviour cloning (train_bc.py) -> value model
    (train_value.py) -> RFTF PPO, dense rewards, settings ABC and D (ppo_rftf.py) -> the same PPO
    with sparse rewards -> CALVIN chained evaluation in scene D of every policy (evaluate.py)
    -> GIFs with the instruction and the value curve -> plots -> RESULTS.md

Every stage is a subprocess call of the project's own script with a fixed seed; its console
output goes to ``logs/<stage>.log`` and, when it completes, ``manifests/<stage>.json`` records
the command, the settings, wall and CPU time and the machine load. A stage whose manifest is
complete is skipped; an interrupted stage is re-run with the same command, which resumes it (the
scripts checkpoint), so a long run can be carried over several sittings. A manifest written with
other settings is refused, naming what differs.

All policies are evaluated on the same official chains with the same env seeds, so each
fine-tuned policy is compared with its own behaviour-cloned start as a *paired* difference per
chain, with a bootstrap interval over chains and, with several training seeds, over seeds
(`rftf_gym.evaluation.paired_bootstrap`).

    python bench/rftf_experiment.py --preset quick                   # the README quickstart
    python bench/rftf_experiment.py --preset full --run-dir rftf_full  # 3 seeds, 1000 chains
    python bench/rftf_experiment.py --preset full --obs-mode rgb --seeds 1 --run-dir rftf_rgb
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import tyro

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rftf_gym.conventions import CHAIN_LEN  # noqa: E402
from rftf_gym.evaluation import bootstrap_mean, paired_bootstrap, pairing_mismatches, read_results  # noqa: E402
from rftf_gym.files import atomic_write_text  # noqa: E402

SETTING_NAMES = {"ABC": "generalisation (train A,B,C; test D)", "D": "adaptation (train D; test D)"}


@dataclass
class Args:
    run_dir: str = "rftf_run"
    """the run directory: every output of every stage goes under it (re-run to resume)"""
    preset: Literal["quick", "full"] = "full"
    """defaults of every option left unset: "quick" (the README quickstart: shipped BC and value
    checkpoints, one seed, 32 PPO episodes per run, 100 chains) or "full" (3 seeds, the paper's
    ~1000 PPO episodes, the official 1000 chains)"""
    obs_mode: Literal["state", "rgb"] | None = None
    """the VLA variant: "state" (robot_obs + scene_obs) or "rgb" (both cameras + robot_obs)"""
    seeds: tuple[int, ...] | None = None
    """training seeds; each seed is one independent replicate of BC -> value -> PPO"""

    # Stage 1: demonstrations
    demos: str | None = None
    """an existing demonstration dataset (CALVIN format) to use instead of collecting one"""
    demo_train_episodes: int | None = None
    """play episodes collected in scenes A, B, C (collect_demos.py --train-episodes)"""
    demo_val_episodes: int | None = None
    """play episodes collected in scene D (validation split)"""
    demo_seed: int = 1
    """seed of the demonstration collection"""

    # Stage 2: behaviour cloning
    bc: str | None = None
    """an existing BC checkpoint to start from instead of training (one seed only)"""
    bc_steps: int | None = None
    """gradient steps of train_bc.py"""
    bc_batch_size: int = 128
    """frames per BC step"""
    bc_extra: str = ""
    """extra train_bc.py arguments, as one string"""

    # Stage 3: value model
    value: str | None = None
    """an existing value model checkpoint instead of training one (one seed only)"""
    value_epochs: int | None = None
    """train_value.py --num-epochs"""
    value_keep_epoch: int | None = None
    """the epoch whose model is used (train_value.py --keep-epoch)"""
    value_lr: float = 3e-4
    """train_value.py --learning-rate"""
    value_extra: str = ""
    """extra train_value.py arguments, as one string"""

    # Stage 4: PPO (RFTF and the sparse-reward ablation)
    settings: tuple[str, ...] = ("ABC", "D")
    """fine-tuning scenes: "ABC" (generalisation) and/or "D" (adaptation)"""
    reward_modes: tuple[str, ...] = ("dense", "sparse")
    """"dense" is RFTF (value-model rewards), "sparse" the success-only ablation"""
    ppo_episodes: int | None = None
    """instruction episodes of each PPO run (ppo_rftf.py --total-episodes)"""
    ppo_episodes_per_iteration: int = 16
    """episodes per PPO update"""
    ppo_num_envs: int = 4
    """parallel environments of each PPO run"""
    ppo_lr: float | None = None
    """learning rate of the action head (unset: ppo_rftf.py's default for its --head-basis-width)"""
    ppo_max_episode_steps: int = 360
    """steps before a training episode is truncated (CALVIN's 360)"""
    ppo_extra: str = ""
    """extra ppo_rftf.py arguments, as one string (for ablations: --eta-success, --target-kl, ...)"""
    text_encoder: str | None = None
    """the policies' instruction encoder in place of the BC checkpoint's, in fine-tuning, evaluation
    and videos (ppo_rftf.py / evaluate.py --text-encoder), for example "snap-hashed-ngram-d384-c34"
    (rftf_gym.text_encoder.SnapEncoder; RESULTS.md, "A sentence encoder for the held-out sentences")"""

    # Stage 5: evaluation
    eval_chains: int | None = None
    """official chains evaluated in scene D per policy (the official protocol: 1000)"""
    train_sentence_chains: int | None = None
    """also evaluate every policy on this many official chains with the training paraphrases
    (evaluate.py --instruction-split train) and report them in a second table; 0: not. With the
    embedded VLA's hashed-n-gram instruction encoder, a fine-tune can gain under the sentences it
    trained on and lose under the evaluation's held-out ones (RESULTS.md)"""
    eval_workers: int = 2
    """evaluate.py --num-workers"""
    eval_batch_size: int = 16
    """chains run in lockstep by evaluate.py, one policy forward pass per step for all of them"""
    eval_seed: int = 0
    """seed of the evaluation (chain i's env seed); the same for every policy, so they are paired"""
    video_chains: int | None = None
    """chains recorded as GIFs (instruction and value curve drawn) for the BC and RFTF policies"""
    bootstrap_samples: int = 2000
    """resamples of the bootstrap intervals"""

    # Running
    jobs: int | None = None
    """independent stages (PPO runs, evaluations) run at once; 2 uses both cores of a 2-core machine"""
    results_md: str | None = None
    """also copy RESULTS.md to this path, with its plots in docs/results/ beside it (the repository's RESULTS.md)"""
    notes: str | None = None
    """a Markdown file whose text is added to RESULTS.md under "Reading the results\""""
    dry_run: bool = False
    """print the stages and their commands without running anything"""


PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(obs_mode="state", seeds=(1,), demo_train_episodes=3, demo_val_episodes=1, bc_steps=1500,
                  value_epochs=4, value_keep_epoch=4, ppo_episodes=32, eval_chains=100, train_sentence_chains=0,
                  video_chains=1, jobs=2,
                  bc="pretrained/state/bc", value="pretrained/state/value"),
    "full": dict(obs_mode="state", seeds=(1, 2, 3), demo_train_episodes=60, demo_val_episodes=20, bc_steps=3000,
                 value_epochs=8, value_keep_epoch=8, ppo_episodes=1024, eval_chains=1000, train_sentence_chains=500,
                 video_chains=2, jobs=1),
}


def apply_preset(args: Args) -> Args:
    """Fill every option left unset (None) from the preset; a shipped checkpoint of the quick
    preset is used only when it exists."""
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            if key in ("bc", "value"):
                value = str(REPO / value) if (REPO / value / "config.json").is_file() else None
            setattr(args, key, value)
    if not args.seeds:
        raise ValueError("--seeds needs at least one seed")
    if (args.bc or args.value) and len(args.seeds) > 1:
        raise ValueError("--bc / --value give one checkpoint: use them with a single --seeds value")
    bad = [s for s in args.settings if s not in SETTING_NAMES]
    if bad:
        raise ValueError(f"--settings must be among {list(SETTING_NAMES)}, got {bad}")
    bad = [m for m in args.reward_modes if m not in ("dense", "sparse")]
    if bad:
        raise ValueError(f"--reward-modes must be among dense, sparse; got {bad}")
    for name in ("eval_chains", "ppo_episodes", "bc_steps", "value_epochs", "jobs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.train_sentence_chains < 0:
        raise ValueError(f"--train-sentence-chains must be >= 0, got {args.train_sentence_chains}")
    if args.ppo_episodes < args.ppo_episodes_per_iteration:
        raise ValueError("--ppo-episodes must be at least --ppo-episodes-per-iteration")
    return args


# ---------------------------------------------------------------------------- machine facts
def hardware() -> dict[str, Any]:
    """What the run ran on (CPU model, cores, memory, GPU, versions)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------------- stages
@dataclass
class Stage:
    """One step of the pipeline: a command (or a Python function) and how to tell it is done."""

    name: str
    group: str
    command: list[str] | None
    config: dict[str, Any]
    done: Callable[[], bool]
    function: Callable[[Path], None] | None = None
    outputs: dict[str, str] = field(default_factory=dict)


class StageError(RuntimeError):
    """A stage failed; the message names the stage and its log file."""


class Runner:
    """Runs stages, skipping complete ones, with a progress display and per-stage manifests."""

    def __init__(self, run_dir: Path, total: int, jobs: int) -> None:
        self.run_dir = run_dir
        self.total = total
        self.jobs = jobs
        self.count = 0
        self.lock = threading.Lock()
        self.live: dict[str, str] = {}  # stage -> its latest progress line (parallel mode)
        self.procs: set[subprocess.Popen] = set()  # running stage processes, ended with the runner
        self.stopping = threading.Event()
        (run_dir / "manifests").mkdir(parents=True, exist_ok=True)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def manifest_path(self, stage: Stage) -> Path:
        return self.run_dir / "manifests" / f"{stage.name}.json"

    def check_manifest(self, stage: Stage) -> dict[str, Any] | None:
        """The complete manifest of a stage, or None; a manifest of other settings is refused."""
        path = self.manifest_path(stage)
        if not path.is_file():
            return None
        manifest = json.loads(path.read_text())
        differ = [f"{k}: manifest has {manifest['config'].get(k)!r}, this run has {v!r}"
                  for k, v in stage.config.items() if manifest["config"].get(k) != v]
        differ += [f"{k}: manifest has {v!r}, this run has nothing" for k, v in manifest["config"].items()
                   if k not in stage.config]
        if differ:
            raise ValueError(
                f"stage {stage.name} in {self.run_dir} was run with other settings ({'; '.join(differ)}); "
                f"use another --run-dir, or delete {path} and that stage's outputs to redo it"
            )
        return manifest if manifest.get("status") == "complete" else None

    def say(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)

    def run(self, stage: Stage) -> dict[str, Any]:
        with self.lock:
            self.count += 1
            number = self.count
        head = f"[{number}/{self.total}] {stage.name}"
        manifest = self.check_manifest(stage)
        if manifest is not None and stage.done():
            self.say(f"{head}: done before ({manifest['wall_s'] / 60:.1f} min), skipped")
            return manifest
        log_path = self.run_dir / "logs" / f"{stage.name}.log"
        partial_path = self.run_dir / "manifests" / f".{stage.name}.partial.json"
        earlier = json.loads(partial_path.read_text()) if partial_path.is_file() else {"attempts": []}
        resumed = " (resuming)" if earlier["attempts"] else ""
        self.say(f"{head}{resumed}: {shlex.join(stage.command) if stage.command else stage.group} -> logs/{log_path.name}")
        attempt = {"started": utc_now(), "load_avg_start": load_average()}
        start, cpu0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        ok = False
        try:
            if stage.command is not None:
                self._run_command(stage, log_path)
            else:
                assert stage.function is not None
                stage.function(log_path)
            ok = stage.done()
            if not ok:
                raise StageError(f"stage {stage.name} ended but its outputs are incomplete; see {log_path}")
        finally:
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            attempt.update(finished=utc_now(), wall_s=round(time.time() - start, 1), load_avg_end=load_average(),
                           child_cpu_s=round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
                           completed=ok)
            earlier["attempts"].append(attempt)
            atomic_write_text(partial_path, json.dumps(earlier, indent=2) + "\n")
        attempts = earlier["attempts"]
        manifest = {
            "stage": stage.name, "group": stage.group, "status": "complete", "config": stage.config,
            "command": stage.command, "outputs": stage.outputs,
            "wall_s": round(sum(a["wall_s"] for a in attempts), 1),
            "child_cpu_s": round(sum(a["child_cpu_s"] for a in attempts), 1),
            "attempts": attempts, "hardware": hardware(),
        }
        atomic_write_text(self.manifest_path(stage), json.dumps(manifest, indent=2) + "\n")
        partial_path.unlink(missing_ok=True)
        self.say(f"{head}: finished in {manifest['wall_s'] / 60:.1f} min (load {attempt['load_avg_end'][:1]})")
        return manifest

    def _run_command(self, stage: Stage, log_path: Path) -> None:
        """Run the command in the run directory; the log keeps each progress bar's last state
        per line (not every redraw); the terminal shows the bars live (or, with several jobs,
        one status line per running stage every 30 s)."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                   PYTHONUNBUFFERED="1")
        # One intra-op thread per process unless the caller says otherwise: the stages run
        # several processes at once, and OpenMP threads without a core each wait on each other
        # (measured here by the BC run: 0.43 s per step with one thread, 8 s with two).
        env.setdefault("OMP_NUM_THREADS", "1")
        with open(log_path, "a") as log:
            log.write(f"\n# {utc_now()}  {shlex.join(stage.command)}\n")
            log.flush()
            proc = subprocess.Popen(stage.command, cwd=self.run_dir, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, bufsize=0)
            with self.lock:
                self.procs.add(proc)
            assert proc.stdout is not None
            pending = b""
            while True:
                chunk = proc.stdout.read(4096)
                if not chunk:
                    break
                if self.jobs == 1:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    log.write(line.split(b"\r")[-1].decode(errors="replace") + "\n")
                if self.jobs > 1:
                    last = (lines[-1] if lines and not pending.strip() else pending).split(b"\r")
                    text = next((s for s in reversed(last) if s.strip()), b"").decode(errors="replace").strip()
                    if text:
                        with self.lock:
                            self.live[stage.name] = text[-110:]
            if pending:
                log.write(pending.split(b"\r")[-1].decode(errors="replace") + "\n")
            code = proc.wait()
            with self.lock:
                self.live.pop(stage.name, None)
                self.procs.discard(proc)
        if code != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
            raise StageError(f"stage {stage.name} failed (exit status {code}); last lines of {log_path}:\n{tail}")

    def run_group(self, stages: list[Stage]) -> None:
        if self.jobs == 1 or len(stages) == 1:
            for stage in stages:
                self.run(stage)
            return
        stop = threading.Event()

        started = time.time()

        def monitor() -> None:
            while not stop.wait(30):
                with self.lock:
                    lines = [f"    {name}: {text}" for name, text in self.live.items()]
                if lines:
                    print(f"  [{(time.time() - started) / 60:.1f} min]\n" + "\n".join(lines), flush=True)

        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        try:
            with ThreadPoolExecutor(self.jobs) as pool:
                futures = [pool.submit(self._run_unless_stopping, s) for s in stages]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    self.stop()  # one stage failed: start no other, end the running ones
                    raise
        finally:
            stop.set()

    def _run_unless_stopping(self, stage: Stage) -> dict[str, Any] | None:
        return None if self.stopping.is_set() else self.run(stage)

    def stop(self) -> None:
        """End every running stage process (they resume when the command is run again)."""
        self.stopping.set()
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


# ---------------------------------------------------------------------------- the pipeline
def script(name: str) -> str:
    path = REPO / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the pipeline needs the project's {name}")
    return str(path)


def bc_done(directory: Path, steps: int | None) -> bool:
    config = directory / "config.json"
    if not (config.is_file() and (directory / "model.safetensors").is_file()):
        return False
    if steps is None:
        return True
    return int(json.loads(config.read_text()).get("metadata", {}).get("step", -1)) >= steps


def ppo_final(run: Path) -> Path | None:
    """The last checkpoint of a finished PPO run, or None."""
    latest = run / "latest.json"
    if not latest.is_file():
        return None
    directory = run / json.loads(latest.read_text())["checkpoint"]
    return directory if (directory / "trainer.json").is_file() else None


def ppo_done(run: Path, episodes: int, per_iteration: int) -> bool:
    final = ppo_final(run)
    if final is None:
        return False
    state = json.loads((final / "trainer.json").read_text())["state"]
    return state["iteration"] >= episodes // per_iteration


def eval_done(directory: Path, chains: int) -> bool:
    metrics = directory / "metrics.json"
    return metrics.is_file() and json.loads(metrics.read_text())["num_chains"] == chains


def policy_names(args: Args) -> list[tuple[str, str, str]]:
    """(policy key, setting, reward mode) of every fine-tuned policy; the BC start is ("bc", "", "")."""
    return [("bc", "", "")] + [(f"{'rftf' if m == 'dense' else 'sparse'}_{s}", s, m)
                               for s in args.settings for m in args.reward_modes]


def build_stages(args: Args, run_dir: Path) -> list[tuple[str, list[Stage]]]:
    """The pipeline as groups of stages; stages of one group are independent of each other."""
    py = sys.executable
    groups: list[tuple[str, list[Stage]]] = []
    demos = Path(args.demos).resolve() if args.demos else run_dir / "demos"
    if args.demos is None and (args.bc is None or args.value is None):
        cmd = [py, script("collect_demos.py"), "--output", str(demos), "--train-episodes", str(args.demo_train_episodes),
               "--val-episodes", str(args.demo_val_episodes), "--seed", str(args.demo_seed)]
        groups.append(("demonstrations", [Stage(
            "demos", "demonstrations", cmd, {"command": cmd[1:]},
            lambda: (demos / "collection_summary.json").is_file(), outputs={"dataset": str(demos)})]))

    bc_dirs, value_dirs = {}, {}
    bc_stages, value_stages = [], []
    for seed in args.seeds:
        if args.bc is not None:
            bc_dirs[seed] = Path(args.bc).resolve()
        else:
            out = run_dir / "checkpoints" / f"bc_s{seed}"
            bc_dirs[seed] = out
            cmd = [py, script("train_bc.py"), "--data", str(demos), "--obs-mode", args.obs_mode, "--seed", str(seed),
                   "--output-dir", str(out), "--total-steps", str(args.bc_steps), "--batch-size", str(args.bc_batch_size),
                   "--eval-chains", "0", *shlex.split(args.bc_extra)]
            bc_stages.append(Stage(f"bc_s{seed}", "behaviour cloning", cmd, {"command": cmd[1:]},
                                   lambda out=out: bc_done(out, args.bc_steps), outputs={"checkpoint": str(out)}))
        if args.value is not None:
            value_dirs[seed] = Path(args.value).resolve()
        else:
            run = run_dir / "value" / f"value_s{seed}"
            value_dirs[seed] = run / "value_model"
            cmd = [py, script("train_value.py"), "--data-root", str(demos), "--bc-checkpoint", str(bc_dirs[seed]),
                   "--runs-dir", str(run_dir / "value"), "--run-name", f"value_s{seed}", "--seed", str(seed),
                   "--num-epochs", str(args.value_epochs), "--keep-epoch", str(args.value_keep_epoch),
                   "--learning-rate", str(args.value_lr), "--torch-threads", "1", *shlex.split(args.value_extra)]
            value_stages.append(Stage(f"value_s{seed}", "value model", cmd, {"command": cmd[1:]},
                                      lambda run=run: (run / "report.json").is_file() and (run / "value_model" / "config.json").is_file()
                                      and json.loads((run / "report.json").read_text()).get("history", [{}])[-1].get("epoch") == args.value_epochs,
                                      outputs={"value_model": str(run / "value_model"), "report": str(run / "report.json")}))
    if bc_stages:
        groups.append(("behaviour cloning", bc_stages))
    if value_stages:
        groups.append(("value model", value_stages))

    ppo_stages, eval_stages = [], []
    policies: dict[tuple[str, int], Path | Callable[[], Path | None]] = {}
    eval_obs = "state" if args.obs_mode == "state" else "rgb+state"
    for seed in args.seeds:
        policies[("bc", seed)] = bc_dirs[seed]
        for key, setting, mode in policy_names(args)[1:]:
            name = f"{key}_s{seed}"
            run = run_dir / "checkpoints" / name
            cmd = [py, script("ppo_rftf.py"), "--policy", str(bc_dirs[seed]), "--reward-mode", mode, "--scenes", setting,
                   "--seed", str(seed), "--total-episodes", str(args.ppo_episodes),
                   "--episodes-per-iteration", str(args.ppo_episodes_per_iteration), "--num-envs", str(args.ppo_num_envs),
                   "--max-episode-steps", str(args.ppo_max_episode_steps),
                   *(["--learning-rate", str(args.ppo_lr)] if args.ppo_lr is not None else []),
                   "--checkpoint-dir", str(run_dir / "checkpoints"), "--run-name", name, *encoder_args(args),
                   *shlex.split(args.ppo_extra)]
            if mode == "dense":
                cmd[4:4] = ["--value-model", str(value_dirs[seed])]
            ppo_stages.append(Stage(name, "PPO", cmd, {"command": cmd[1:]},
                                    lambda run=run: ppo_done(run, args.ppo_episodes, args.ppo_episodes_per_iteration),
                                    outputs={"run": str(run)}))
            policies[(key, seed)] = lambda run=run: ppo_final(run)
    # The official protocol (held-out sentences), then optionally the training paraphrases.
    splits = [("eval", "eval", "", args.eval_chains)]
    if args.train_sentence_chains:
        splits.append(("train", "eval_train", "train_", args.train_sentence_chains))
    for split, folder, prefix, chains in splits:
        for (key, seed), where in policies.items():
            out = run_dir / folder / f"{key}_s{seed}"
            policy = where if isinstance(where, Path) else None

            def command(where=where, out=out, split=split, chains=chains) -> list[str]:
                path = where if isinstance(where, Path) else where()
                if path is None:
                    raise StageError(f"no finished checkpoint to evaluate for {out.name}")
                return [py, script("evaluate.py"), "--policy", str(path), "--num-chains", str(chains),
                        "--scene", "D", "--obs-mode", eval_obs, "--instruction-split", split,
                        "--num-workers", str(args.eval_workers), "--batch-size", str(args.eval_batch_size),
                        "--seed", str(args.eval_seed), "--bootstrap-samples", str(args.bootstrap_samples),
                        "--output-dir", str(out), *encoder_args(args)]

            stage = Stage(f"eval_{prefix}{key}_s{seed}", "evaluation", None,
                          {"policy": str(policy) if policy else f"checkpoints/{key}_s{seed} (last)", "chains": chains,
                           "scene": "D", "obs_mode": eval_obs, "seed": args.eval_seed,
                           **({"instruction_split": split} if split == "train" else {})},
                          lambda out=out, chains=chains: eval_done(out, chains), outputs={"results": str(out)})
            stage.command = LazyCommand(command)  # type: ignore[assignment]
            eval_stages.append(stage)
    groups.append(("PPO fine-tuning", ppo_stages))
    groups.append(("chained evaluation", eval_stages))
    groups.append(("videos", [Stage("videos", "videos", None,
                                    {"chains": args.video_chains, "seed": args.eval_seed},
                                    lambda: (run_dir / "videos" / "done.json").is_file(),
                                    function=lambda log: make_videos(args, run_dir, bc_dirs, value_dirs, log))]))
    return groups


def encoder_args(args: Args) -> list[str]:
    """``--text-encoder NAME`` for ppo_rftf.py and evaluate.py when the run sets one."""
    return [] if args.text_encoder is None else ["--text-encoder", args.text_encoder]


class LazyCommand(list):
    """A command known only when its stage starts (the checkpoint of a finished PPO run)."""

    def __init__(self, build: Callable[[], list[str]]) -> None:
        super().__init__()
        self.build = build

    def resolve(self) -> list[str]:
        self[:] = self.build()
        return self


# ---------------------------------------------------------------------------- videos
def make_videos(args: Args, run_dir: Path, bc_dirs: dict, value_dirs: dict, log_path: Path) -> None:
    """GIFs of the first chains in scene D for the BC policy and each RFTF policy of the first
    seed: the static camera, the instruction, and the value model's curve of the instruction so
    far (min-max normalised within the instruction, as RFTF normalises an episode's values)."""
    import gymnasium as gym
    from PIL import Image, ImageDraw

    from evaluate import chain_seed
    from rftf_gym import policies, sequences
    from rftf_gym.value_model import load_value_model

    seed = args.seeds[0]
    value_model = load_value_model(value_dirs[seed]).eval()
    chains = sequences.get_sequences(max(args.video_chains, 1))[: args.video_chains]
    which = [("bc", bc_dirs[seed])] + [(f"rftf_{s}", ppo_final(run_dir / "checkpoints" / f"rftf_{s}_s{seed}"))
                                       for s in args.settings if "dense" in args.reward_modes]
    out_dir = run_dir / "videos"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = gym.make("RFTF-CALVIN-v0", scene="D", obs_mode="rgb+state", instruction_split="eval", render_mode="rgb_array")
    with open(log_path, "a") as log:
        for key, path in which:
            if path is None:
                continue
            encoder = {} if args.text_encoder is None else {"text_encoder": args.text_encoder}
            policy = policies.load_policy(str(path), scene="D", seed=args.eval_seed, **encoder)
            for index, (initial_state, chain) in enumerate(chains):
                robot_obs, scene_obs = sequences.get_env_state_for_initial_condition(initial_state)
                cseed = chain_seed(args.eval_seed, index)
                policies.seed_policy(policy, cseed)
                frames: list[Image.Image] = []
                for j, task in enumerate(chain):
                    if j == 0:
                        obs, info = env.reset(seed=cseed, options={"robot_obs": robot_obs, "scene_obs": scene_obs, "task": task})
                    else:
                        obs, info = env.reset(options={"task": task, "continue": True})
                    instruction = info["instruction"]
                    policy.reset()
                    images, values, success = [env.render()], [float(value_model.predict(_batch(obs), [instruction])[0])], False
                    for _ in range(360):
                        obs, _, terminated, truncated, info = env.step(policies.check_action(policy.act(obs, instruction)))
                        images.append(env.render())
                        values.append(float(value_model.predict(_batch(obs), [instruction])[0]))
                        if info["success"] or terminated or truncated:
                            success = bool(info["success"])
                            break
                    frames += _draw_segment(images[::2] + [images[-1]], values[::2] + [values[-1]],
                                            f"{j + 1}/{len(chain)} {instruction}", success, Image, ImageDraw)
                    log.write(f"{key} chain {index} instruction {j + 1} {task}: {'success' if success else 'failure'} "
                              f"after {len(images) - 1} steps\n")
                    if not success:
                        break
                target = out_dir / f"{key}_chain_{index:04d}.gif"
                tmp = target.with_suffix(".tmp.gif")
                frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=[66] * (len(frames) - 1) + [1500], loop=0)
                os.replace(tmp, target)
    env.close()
    atomic_write_text(out_dir / "done.json", json.dumps({"finished": utc_now()}) + "\n")


def _batch(obs: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[None] for k, v in obs.items() if k != "instruction"}


def _draw_segment(images, values, caption, success, Image, ImageDraw) -> list:
    """Frames of one instruction: camera, value curve panel, caption."""
    v = np.asarray(values, dtype=np.float64)
    span = v.max() - v.min()
    norm = (v - v.min()) / span if span > 1e-9 else np.zeros_like(v)
    out = []
    for t, frame in enumerate(images):
        h, w = frame.shape[:2]
        lines = textwrap.wrap(caption, width=max(10, w // 6))
        panel = 50
        canvas = Image.new("RGB", (w, h + panel + 12 * len(lines) + 6), (0, 0, 0))
        canvas.paste(Image.fromarray(frame), (0, 0))
        draw = ImageDraw.Draw(canvas)
        top, bottom = h + 4, h + panel - 4
        draw.text((3, top), "value", fill=(150, 150, 150))
        n = len(norm)
        points = [(3 + (w - 6) * i / max(n - 1, 1), bottom - (bottom - top) * norm[i]) for i in range(t + 1)]
        if len(points) > 1:
            draw.line(points, fill=(80, 170, 255), width=2)
        color = (255, 255, 255) if t < len(images) - 1 else ((0, 220, 0) if success else (255, 60, 60))
        for k, line in enumerate(lines):
            draw.text((3, h + panel + 3 + 12 * k), line, fill=color)
        out.append(canvas)
    return out


# ---------------------------------------------------------------------------- results
def chain_results(directory: Path, chains: int) -> np.ndarray:
    """Successes in a row per chain, in chain order, from an evaluation's results files."""
    records = {}
    for path in sorted(directory.glob("results*.jsonl")):
        _, found, _ = read_results(path)
        for r in found:
            records.setdefault(int(r["index"]), int(r["num_success"]))
    missing = [i for i in range(chains) if i not in records]
    if missing:
        raise ValueError(f"{directory}: chains {missing[:5]}... have no result")
    return np.array([records[i] for i in range(chains)])


def check_paired(evaluations: dict[str, Path]) -> None:
    """Refuse to compare evaluations chain by chain unless their headers agree on everything but
    the policy: the same chains, seed, scene, settings and (when recorded) code. A resumed run
    can hold evaluations of different sittings; one made before an edit to the simulator is not
    paired with one made after.

    Raises:
        StageError: naming the two evaluations, what differs and what to delete.
    """
    headers = {name: read_results(sorted(directory.glob("results*.jsonl"))[0])[0]
               for name, directory in evaluations.items()}
    first = next(iter(headers))
    for name, header in headers.items():
        mismatches = pairing_mismatches(headers[first], header)
        if mismatches:
            raise StageError(
                f"evaluations {evaluations[first]} and {evaluations[name]} cannot be compared chain by chain "
                f"({'; '.join(mismatches)}); delete the older one's directory and re-run to evaluate it again"
            )


TABLE_HEADER = ["| policy | " + " | ".join(f"L{i} (%)" for i in range(1, CHAIN_LEN + 1)) + " | Avg. Len. |",
                "|---" * (CHAIN_LEN + 2) + "|"]
"""The header of a paper-format table (`table_row`'s rows)."""
PAIRED_HEADER = ["| comparison | " + " | ".join(f"ΔL{i} (pp)" for i in range(1, CHAIN_LEN + 1))
                 + " | ΔAvg. Len. | better / worse chains |", "|---" * (CHAIN_LEN + 3) + "|"]
"""The header of a paired-difference table (`paired_row`'s rows)."""


def load_evaluations(folder: Path, keys: list[str], seeds: tuple[int, ...], chains: int) -> dict[str, np.ndarray]:
    """Per policy key, the successes in a row of ``folder/<key>_s<seed>`` as (seeds, chains); every
    evaluation must pair with every other (`check_paired`)."""
    results = {key: np.stack([chain_results(folder / f"{key}_s{s}", chains) for s in seeds]) for key in keys}
    check_paired({f"{key}_s{s}": folder / f"{key}_s{s}" for key in keys for s in seeds})
    return results


def table_row(label: str, lengths: np.ndarray, samples: int) -> tuple[str, dict[str, Any]]:
    """A paper-format row (L1..L5 in %, Avg. Len.) with 95 % intervals over chains and seeds."""
    cells, stats = [], {}
    for i in range(1, CHAIN_LEN + 1):
        s = bootstrap_mean((lengths >= i).astype(float), num_bootstrap=samples)
        stats[f"L{i}"] = s
        cells.append(f"{s['value'] * 100:.1f} [{s['ci'][0] * 100:.1f}, {s['ci'][1] * 100:.1f}]")
    s = bootstrap_mean(lengths, num_bootstrap=samples)
    stats["avg_len"] = s
    cells.append(f"**{s['value']:.3f}** [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]")
    return f"| {label} | " + " | ".join(cells) + " |", stats


def paired_row(label: str, after: np.ndarray, before: np.ndarray, samples: int) -> tuple[str, dict[str, Any]]:
    stats = {"avg_len": paired_bootstrap(after, before, num_bootstrap=samples)}
    cells = []
    for i in range(1, CHAIN_LEN + 1):
        s = paired_bootstrap((after >= i).astype(float), (before >= i).astype(float), num_bootstrap=samples)
        stats[f"L{i}"] = s
        cells.append(f"{s['value'] * 100:+.1f} [{s['ci'][0] * 100:+.1f}, {s['ci'][1] * 100:+.1f}]")
    a = stats["avg_len"]
    verdict = "above 0" if a["ci"][0] > 0 else ("below 0" if a["ci"][1] < 0 else "includes 0")
    cells.append(f"**{a['value']:+.3f}** [{a['ci'][0]:+.3f}, {a['ci'][1]:+.3f}] ({verdict})")
    cells.append(f"{a['share_above_zero'] * 100:.0f}% / {a['share_below_zero'] * 100:.0f}%")
    return f"| {label} | " + " | ".join(cells) + " |", stats


def curve_plots(run_dir: Path, args: Args) -> list[str]:
    """PNG plots of the training curves from the TensorBoard event files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def scalars(directory: Path, tag: str) -> tuple[list[int], list[float]]:
        steps, values = [], []
        for folder in sorted({e.parent for e in directory.rglob("events.out.tfevents.*")}):
            acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
            acc.Reload()
            if tag in acc.Tags().get("scalars", []):
                for e in acc.Scalars(tag):
                    steps.append(e.step)
                    values.append(e.value)
        order = np.argsort(steps, kind="stable")
        return [steps[i] for i in order], [values[i] for i in order]

    plots_dir = run_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    made = []
    tags = [("rftf/train_success", "training success rate"), ("rftf/kl_ref", "KL to the BC policy"),
            ("losses/pg_loss", "policy loss"), ("rftf/reward_shaped_per_episode", "shaped reward per episode")]
    fig, axes = plt.subplots(1, len(tags), figsize=(4.2 * len(tags), 3.2))
    for key, setting, mode in policy_names(args)[1:]:
        for seed in args.seeds:
            run = run_dir / "runs" / f"{key}_s{seed}"
            if not run.is_dir():
                continue
            for ax, (tag, title) in zip(axes, tags):
                x, y = scalars(run, tag)
                if x:
                    ax.plot(x, y, label=f"{key} s{seed}", lw=1.2)
                ax.set_title(title, fontsize=9)
                ax.set_xlabel("env steps", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(plots_dir / "ppo_curves.png", dpi=110)
    plt.close(fig)
    made.append("plots/ppo_curves.png")

    bc_runs = sorted((run_dir / "runs").glob("train_bc__*"))
    if bc_runs:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for tag in ("losses/bc_loss", "val/loss"):
            steps, values = [], []
            for run in bc_runs:
                x, y = scalars(run, tag)
                steps += x
                values += y
            if steps:
                order = np.argsort(steps, kind="stable")
                ax.plot(np.array(steps)[order], np.array(values)[order], label=tag, lw=1.2)
        ax.set_xlabel("step")
        ax.set_title("behaviour cloning", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots_dir / "bc_curves.png", dpi=110)
        plt.close(fig)
        made.append("plots/bc_curves.png")
    for seed in args.seeds:
        for name in ("curves.png", "value_curves.png"):
            src = run_dir / "value" / f"value_s{seed}" / name
            if src.is_file():
                shutil.copyfile(src, plots_dir / f"value_s{seed}_{name}")
                made.append(f"plots/value_s{seed}_{name}")
    return made


def value_diagnostics(run_dir: Path, args: Args) -> list[str]:
    """The kept epoch's diagnostics of each value model next to the clock baseline V = t/T."""
    lines = []
    for seed in args.seeds:
        report_path = run_dir / "value" / f"value_s{seed}" / "report.json"
        if not report_path.is_file():
            source = Path(args.value) / "config.json" if args.value else None
            lines.append(f"Value model of seed {seed}: {'the shipped checkpoint ' + str(args.value) if source else 'no report'}"
                         " (its training report is in the checkpoint's config.json metadata).")
            lines.append("")
            continue
        report = json.loads(report_path.read_text())
        kept = next((h for h in report["history"] if h["epoch"] == report["kept_epoch"]), report["history"][-1])
        lines += [f"Seed {seed}, epoch {kept['epoch']} kept, held-out scene D; higher is better except on "
                  "reversed clips, where a progress model must score low:", "",
                  "| set | metric | value model | clock V = t/T |", "|---|---|---|---|"]
        for set_name, entry in kept["model"].items():
            clock = kept.get("clock", {}).get(set_name)
            if isinstance(entry, dict):
                for metric, value in entry.items():
                    if isinstance(value, float):
                        c = clock.get(metric) if isinstance(clock, dict) else None
                        lines.append(f"| {set_name} | {metric} | {value:.3f} | {'' if c is None else f'{c:.3f}'} |")
            elif isinstance(entry, float):
                lines.append(f"| {set_name} | | {entry:.3f} | {'' if clock is None else f'{clock:.3f}'} |")
        lines.append("")
    return lines


def train_sentence_tables(args: Args, run_dir: Path, label: dict[str, str], comparisons: list[tuple[str, str]],
                          out: dict[str, Any]) -> list[str]:
    """The report's section on the chains evaluated with the training paraphrases (its tables go
    to ``out["train_sentences"]``)."""
    samples, chains = args.bootstrap_samples, args.train_sentence_chains
    results = load_evaluations(run_dir / "eval_train", list(label), args.seeds, chains)
    tables: dict[str, Any] = {"chains": chains, "tables": {}, "paired": {}}
    lines = ["", "## The same policies under the training sentences", "",
             f"{chains} chains per policy (the official generator's `get_sequences({chains})`, evaluation seed "
             f"{args.eval_seed}), each instruction given as one of its task's training paraphrases "
             "(`evaluate.py --instruction-split train`) instead of the held-out evaluation sentence; fine-tuning "
             "only ever saw these sentences. Unless N equals --eval-chains these are other chains than the tables "
             "above, so the gap to them is not paired.", "", *TABLE_HEADER]
    for key, lengths in results.items():
        row, tables["tables"][key] = table_row(label[key], lengths, samples)
        lines.append(row)
    lines += ["", *PAIRED_HEADER]
    for a, b in comparisons:
        row, tables["paired"][f"{a}-{b}"] = paired_row(f"{label[a]} − {label[b]}", results[a], results[b], samples)
        lines.append(row)
    out["train_sentences"] = tables
    return lines


def write_report(args: Args, run_dir: Path, stages: list[Stage]) -> str:
    samples = args.bootstrap_samples
    results = load_evaluations(run_dir / "eval", [key for key, _, _ in policy_names(args)], args.seeds, args.eval_chains)
    label = {"bc": "BC (start)"}
    for key, setting, mode in policy_names(args)[1:]:
        label[key] = f"{'RFTF' if mode == 'dense' else 'PPO sparse'}, {SETTING_NAMES[setting]}"
    seeds = ", ".join(map(str, args.seeds))
    out: dict[str, Any] = {"args": asdict(args), "tables": {}, "paired": {}}
    lines = [
        "# RFTF on the embedded CALVIN play table: results",
        "",
        f"Written by `python bench/rftf_experiment.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}` "
        f"on {utc_now()}. Variant `{args.obs_mode}`, training seeds {seeds}, {args.eval_chains} official chains "
        f"in scene D per policy (evaluation seed {args.eval_seed}, the same chains and env seeds for every policy), "
        f"{args.ppo_episodes} PPO episodes per fine-tuning run. Intervals: 95 % percentile bootstrap, "
        f"{samples} resamples of the chains" + (" and of the training seeds" if len(args.seeds) > 1 else "") + ".",
        "",
        "## Chained evaluation in scene D (paper Tables 1-3 format)",
        "",
        *TABLE_HEADER,
    ]
    for key in results:
        row, stats = table_row(label[key], results[key], samples)
        lines.append(row)
        out["tables"][key] = stats
    lines += ["", "## Paired differences on the same chains",
              "",
              "Each fine-tuned policy minus its own BC start (same training seed), chain by chain; then RFTF minus "
              "sparse-reward PPO in the same setting. Avg. Len. difference with its interval, L*i* differences in "
              "percentage points, and the share of chains where the first policy got further / less far.",
              "", *PAIRED_HEADER]
    comparisons = [(key, "bc") for key in results if key != "bc"]
    comparisons += [(f"rftf_{s}", f"sparse_{s}") for s in args.settings
                    if f"rftf_{s}" in results and f"sparse_{s}" in results]
    for a, b in comparisons:
        row, stats = paired_row(f"{label[a]} − {label[b]}", results[a], results[b], samples)
        lines.append(row)
        out["paired"][f"{a}-{b}"] = stats
    if len(args.seeds) > 1:
        lines += ["", "### Per seed (Avg. Len.)", "", "| policy | " + " | ".join(f"seed {s}" for s in args.seeds) + " |",
                  "|---" * (len(args.seeds) + 1) + "|"]
        for key, r in results.items():
            lines.append(f"| {label[key]} | " + " | ".join(f"{x:.3f}" for x in r.mean(axis=1)) + " |")

    if args.train_sentence_chains:
        lines += train_sentence_tables(args, run_dir, label, comparisons, out)

    lines += ["", "## Value model diagnostics", ""] + value_diagnostics(run_dir, args)
    plots = curve_plots(run_dir, args)
    lines += ["## Curves", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    videos = sorted((run_dir / "videos").glob("*.gif"))
    if videos:
        lines += ["Videos (static camera, instruction, value curve of the instruction so far): "
                  + ", ".join(f"[{v.name}](videos/{v.name})" for v in videos), ""]

    lines += ["## Hardware and wall time per stage", ""]
    hw = hardware()
    lines += [f"{hw['cpu']}, {hw['cores']} cores, {hw['memory_gb']} GB, GPU: {hw['gpu'] or 'none'}; Python {hw['python']}, "
              f"torch {hw['torch']}. Load average is the 1-minute load at the start and end of a stage (above the core "
              "count means other jobs shared the CPU).", "",
              "| stage | wall (min) | child CPU (min) | load start → end | attempts |", "|---|---|---|---|---|"]
    total = 0.0
    for stage in stages:
        path = run_dir / "manifests" / f"{stage.name}.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        total += m["wall_s"]
        a0, a1 = m["attempts"][0], m["attempts"][-1]
        lines.append(f"| {stage.name} | {m['wall_s'] / 60:.1f} | {m['child_cpu_s'] / 60:.1f} | "
                     f"{(a0['load_avg_start'] or ['?'])[0]} → {(a1['load_avg_end'] or ['?'])[0]} | {len(m['attempts'])} |")
    lines += [f"| total | {total / 60:.1f} | | | |", ""]
    if args.bc or args.value:
        lines += [f"BC checkpoint: `{args.bc or 'trained here'}`; value model: `{args.value or 'trained here'}` "
                  "(a shipped checkpoint's config.json records the command that made it).", ""]
    if args.notes:
        lines += ["## Reading the results", "", Path(args.notes).read_text().strip(), ""]
    lines += ["## Running the paper's VLAs on the official calvin_env", "", CALVIN_NOTE, ""]
    text = "\n".join(lines)
    atomic_write_text(run_dir / "RESULTS.md", text)
    atomic_write_text(run_dir / "results.json", json.dumps(out, indent=2, default=str) + "\n")
    if args.results_md:
        # A copy for the repository: the plots go to docs/results/ beside it; videos stay in the run.
        target = Path(args.results_md).resolve()
        assets = target.parent / "docs" / "results"
        assets.mkdir(parents=True, exist_ok=True)
        for png in (run_dir / "plots").glob("*.png"):
            shutil.copyfile(png, assets / png.name)
        atomic_write_text(target, text.replace("](plots/", "](docs/results/").replace("](videos/", f"]({run_dir}/videos/"))
    return text


CALVIN_NOTE = """\
Every script here takes `--backend calvin` (evaluate.py) or runs its envs through the same
`RFTF-CALVIN-v0` interface, so the official simulator replaces the embedded one without code
changes once `calvin_env` is installed (docs/calvin_backend.md: its install steps and the quirks
the adapter corrects). What the paper's own VLAs (GR-MG, Seer; paper section 4.1.2) would need:

1. **The policy.** A checkpoint loader registered with `rftf_gym.policies` (as `rftf_vla` is) whose
   `act(obs, instruction)` returns CALVIN's 7-d relative action; for RFTF, the frozen model's
   features and an action head with a log-probability (`rftf_gym.models.VLA.features` /
   `distribution`). A continuous-action head needs its own `log_prob`/KL, or the 1000-bin
   discretisation of paper 4.1.4 on top of the pretrained head.
2. **The data.** Their value models train on the real CALVIN ABC→D split (about 24 k annotated
   windows; `rftf_gym.data.CalvinDataset` reads it), not on these scripted demonstrations.
3. **The compute.** The official simulator renders at 17.5 steps/s per core with both cameras
   (BENCHMARKS.md), against 160 here. Chains of a strong policy (Avg. Len. ~4.3) use about
   5 x 60-100 steps each, so the official 1000-chain evaluation is ~300-500 k steps, roughly
   5-8 core-hours of rendering plus one GPU forward of a 0.1-1 B-parameter VLA per step; RFTF's
   ~1000 fine-tuning episodes add about the same again per setting. This is a multi-GPU job
   (`torchrun` with rank-sharded rollouts and chains), not a 2-core one.
"""


def main(args: Args) -> None:
    args = apply_preset(args)
    run_dir = Path(args.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "experiment.json"
    atomic_write_text(config_path, json.dumps({"args": asdict(args), "updated": utc_now(), "hardware": hardware()},
                                              indent=2) + "\n")
    groups = build_stages(args, run_dir)
    stages = [s for _, group in groups for s in group]
    if args.dry_run:
        for title, group in groups:
            print(f"== {title}")
            for s in group:
                if isinstance(s.command, LazyCommand):
                    text = shlex.join(s.command.build()) if ppo_final_ok(s) else "evaluate.py on the run's last checkpoint"
                else:
                    text = shlex.join(s.command) if s.command else "(in this process)"
                print(f"  {s.name}: {text}")
        return
    runner = Runner(run_dir, len(stages), args.jobs)
    start = time.time()
    print(f"RFTF experiment ({args.preset}) in {run_dir}: {len(stages)} stages; "
          f"load average {load_average()} on {os.cpu_count()} cores", flush=True)
    # SIGTERM (a killed job) ends the stage processes too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for title, group in groups:
            print(f"== {title} ==", flush=True)
            for stage in group:
                if isinstance(stage.command, LazyCommand):
                    if runner.check_manifest(stage) is None or not stage.done():
                        stage.command.resolve()
            runner.run_group(group)
    except BaseException:
        runner.stop()
        raise
    print("== report ==", flush=True)
    text = write_report(args, run_dir, stages)
    summary = text.split("## Value model diagnostics")[0]
    print(summary.split("## Chained evaluation in scene D (paper Tables 1-3 format)")[1])
    print(f"Everything is in {run_dir} (RESULTS.md, plots/, videos/, checkpoints/, eval/; "
          f"TensorBoard: tensorboard --logdir {run_dir}). This sitting: {(time.time() - start) / 60:.1f} min.")


def ppo_final_ok(stage: Stage) -> bool:
    try:
        stage.command.build()  # type: ignore[union-attr]
        return True
    except StageError:
        return False


if __name__ == "__main__":
    main(tyro.cli(Args))
