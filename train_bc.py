"""Behaviour cloning of the base VLA on CALVIN-format demonstrations (the policy RFTF starts from).

RFTF (arXiv 2505.19767) fine-tunes a pretrained VLA whose continuous actions are discretised into
1000 bins per dimension (section 4.1.4). This script trains such a VLA from scratch: cross-entropy
of the 1000-bin action head on the binned relative actions of every frame of the
language-annotated windows of the training split (CALVIN's A, B, C), validation loss and
per-dimension bin accuracy on the validation split (scene D), then a short CALVIN chained
evaluation in scene D through `rftf_gym.chain_eval`.

Resumable: every ``--checkpoint-every`` steps the model, the optimizer and the step go into one
``<output-dir>/resume.safetensors`` (atomic); re-running the same command continues from it
(the architecture must match; the message names the fields that differ). The policy checkpoint
(``config.json`` + ``model.safetensors``, loadable by ``evaluate.py --policy <output-dir>``) is
written at the same time. Batches are drawn from a generator seeded with (seed, step), so a
resumed run sees the batches an uninterrupted run would.

Examples:
    python train_bc.py --data demos --obs-mode state --output-dir bc/state
    python train_bc.py --data demos --obs-mode rgb --output-dir bc/rgb --bf16
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rftf_gym import cli
from rftf_gym.data import CalvinDataset
from rftf_gym.files import atomic_write_bytes
from rftf_gym.language import TRAIN_INSTRUCTIONS
from rftf_gym.models import (
    ACTION_DIM,
    GRIPPER_DIM,
    PRECOMPUTED_TEXT,
    VLA,
    VLAConfig,
    actions_to_bins,
    config_differences,
    num_parameters,
    resize_images,
    save_checkpoint,
)
from rftf_gym.text_encoder import HashedNgramEncoder


PROG = "train_bc.py"


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (first part of the run name)"""
    seed: int = 1
    """seed of the initialisation and of the batch draws"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    device: str = "cpu"
    """torch device"""
    torch_threads: int = 1
    """torch CPU threads (measured here with the 2 cores oversubscribed by other jobs: one thread 0.43 s per
    step, two threads 8 s, as OpenMP threads wait on each other when they do not get a core each)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "rftf-gym"
    """the wandb project name"""
    wandb_entity: str | None = None
    """the entity (team) of the wandb project"""

    # Data
    data: tuple[str, ...] = ("demos",)
    """dataset roots (CALVIN format); the training split of each is used"""
    val_data: str | None = None
    """dataset root whose validation split (scene D) is used; default: the first --data root"""
    max_train_windows: int | None = None
    """use only the first N language windows of the training data (to measure the effect of the demonstration count)"""
    paraphrase_prob: float = 0.5
    """probability of replacing a window's sentence by another training paraphrase of its task (language augmentation; never an evaluation sentence)"""
    drop_still_frames: bool = False
    """train only on frames whose arm action is not all zero (the experts pause, e.g. while the
    gripper closes; a one-frame policy that learns the pauses can stall in them for good)"""
    lang_folder: str = "lang_annotations"
    """language folder of each split to read (real CALVIN data also has lang_paraphrase-MiniLM-L3-v2, lang_clip_resnet50, ...; collect_demos.py also writes lang_<encoder name>)"""
    use_dataset_embeddings: bool = False
    """condition on the dataset's precomputed language.emb (real CALVIN splits) instead of the built-in text encoder"""

    # Model (rftf_gym.models.VLAConfig)
    obs_mode: Literal["state", "rgb"] = "state"
    """"state" (robot_obs + scene_obs) or "rgb" (static + gripper cameras + robot_obs)"""
    static_size: int = 64
    """side of the static camera image fed to the model (resized from the dataset's)"""
    gripper_size: int = 48
    """side of the gripper camera image fed to the model"""
    d_model: int = 128
    """backbone width"""
    n_layers: int = 2
    """transformer layers"""
    n_heads: int = 4
    """attention heads"""
    head_hidden: int = 256
    """hidden width of the action head"""
    dropout: float = 0.1
    """dropout in the backbone"""

    # Optimisation
    total_steps: int = 6000
    """gradient steps"""
    batch_size: int = 256
    """frames per step"""
    learning_rate: float = 1e-3
    """peak learning rate (AdamW)"""
    min_lr: float = 1e-5
    """learning rate at the end of the cosine decay"""
    warmup_steps: int = 200
    """linear warm-up steps"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    label_sigma: float = 8.0
    """std (in bins) of the Gaussian soft target around the demonstrated bin of each arm dimension (0: one-hot cross-entropy); the gripper is always one-hot"""
    image_shift: int = 4
    """random shift augmentation of the images, in pixels of the model's image size"""
    bf16: bool = False
    """bfloat16 autocast for forward and backward"""

    # Checkpoints and evaluation
    output_dir: str | None = None
    """checkpoint directory (default checkpoints/<run_name>)"""
    checkpoint_every: int = 500
    """steps between resume checkpoints (and policy exports)"""
    val_every: int = 500
    """steps between validation passes"""
    val_frames: int = 4096
    """validation frames per pass (an evenly spaced subset of the validation windows)"""
    decoding: Literal["greedy", "sample"] = "sample"
    """how the checkpoint acts in evaluate.py: "sample" draws each step's bins (per-chain seeded);
    "greedy" takes the most probable bin per dimension, which stalls this one-frame policy on the
    experts' pauses (measured on the default state BC, single tasks in scene A: 6/12 sampled, 0/12 greedy)"""
    eval_chains: int = 20
    """official chains evaluated in scene D at the end (0: skip)"""
    eval_batch_size: int = 20
    """chains run in lockstep by the final evaluation"""
    eval_workers: int = 2
    """env worker processes of the final evaluation"""
    stop_after_steps: int | None = None
    """stop (after saving) once this many steps are done in this run; re-run to continue"""


# ---------------------------------------------------------------------------------- data
class FrameTable:
    """Every frame of the language windows of some splits, in memory.

    ``obs`` holds the model's inputs (images already resized to the model's sizes), ``actions``
    the relative actions, ``window`` the window index of each frame, and ``sentences`` /
    ``tasks`` / ``emb`` one entry per window.
    """

    def __init__(self, obs: dict[str, np.ndarray], actions: np.ndarray, window: np.ndarray,
                 sentences: list[str], tasks: list[str], emb: np.ndarray | None) -> None:
        self.obs, self.actions, self.window = obs, actions, window
        self.sentences, self.tasks, self.emb = sentences, tasks, emb

    def __len__(self) -> int:
        return len(self.actions)


def load_frames(splits: list[CalvinDataset], config: VLAConfig, max_windows: int | None, desc: str) -> FrameTable:
    """Read the language windows' frames (each frame once per window that holds it)."""
    keys = [k for k in config.obs_keys]
    obs: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    actions, window, sentences, tasks, embs = [], [], [], [], []
    windows = [(d, i) for d in splits for i in range(len(d.annotations))][:max_windows]
    for w, (dataset, i) in enumerate(tqdm(windows, desc=desc)):
        a = dataset.annotations[i]
        frames = dataset.load_frames(range(a.start, a.end + 1), [*keys, "rel_actions"])
        for k in keys:
            if k.startswith("rgb_"):
                size = config.static_size if k == "rgb_static" else config.gripper_size
                frames[k] = resize_images(frames[k], k, size, torch.device("cpu")).numpy()
            obs[k].append(frames[k])
        actions.append(frames["rel_actions"].astype(np.float32))
        window.append(np.full(len(frames["rel_actions"]), w, dtype=np.int64))
        sentences.append(a.ann)
        tasks.append(a.task)
        if dataset.language_emb is not None:
            embs.append(np.asarray(dataset.language_emb[i], dtype=np.float32).reshape(-1))
    if not windows:
        raise ValueError(f"{desc}: no language-annotated windows in {[str(d.path) for d in splits]}")
    return FrameTable(
        {k: np.concatenate(v) for k, v in obs.items()},
        np.concatenate(actions),
        np.concatenate(window),
        sentences,
        tasks,
        np.stack(embs) if len(embs) == len(windows) else None,
    )


def shift_images(images: torch.Tensor, shift: int, rng: np.random.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (replicate padding, then a random crop)."""
    if shift <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images.float(), (shift,) * 4, mode="replicate")
    dx, dy = rng.integers(0, 2 * shift + 1, size=(2, b))
    rows = torch.arange(h)[None, :] + torch.as_tensor(dy)[:, None]
    cols = torch.arange(w)[None, :] + torch.as_tensor(dx)[:, None]
    out = padded[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).to(images.dtype)


# ---------------------------------------------------------------------------------- helpers
def get_lr(step: int, args: Args) -> float:
    """Linear warm-up, then cosine decay to ``min_lr`` (as nanoGPT's get_lr)."""
    if step < args.warmup_steps:
        return args.learning_rate * (step + 1) / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, args.total_steps - args.warmup_steps))
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (args.learning_rate - args.min_lr)


def soft_targets(bins: torch.Tensor, num_bins: int, sigma: float) -> torch.Tensor:
    """(B, 7, num_bins) targets: a discretised Gaussian of std ``sigma`` bins around each arm
    dimension's bin (one-hot when sigma is 0), one-hot for the gripper."""
    one_hot = F.one_hot(bins, num_bins).float()
    if sigma <= 0:
        return one_hot
    grid = torch.arange(num_bins, dtype=torch.float32)
    gauss = torch.exp(-0.5 * ((grid - bins[:, :GRIPPER_DIM, None].float()) / sigma) ** 2)
    one_hot[:, :GRIPPER_DIM] = gauss / gauss.sum(-1, keepdim=True)
    return one_hot


def make_batch(table: FrameTable, idx: np.ndarray, lang: np.ndarray, model: VLA, args: Args,
               rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
    device = model.device
    batch = {}
    for k, v in table.obs.items():
        t = torch.from_numpy(v[idx])
        if k.startswith("rgb_") and rng is not None:
            t = shift_images(t, args.image_shift, rng)
        batch[k] = t.to(device) if k.startswith("rgb_") else t.float().to(device)
    batch["lang_emb"] = torch.from_numpy(lang).to(device)
    return batch


def bc_loss(model: VLA, batch: dict[str, torch.Tensor], bins: torch.Tensor, sigma: float, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(batch)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    targets = soft_targets(bins, model.config.num_bins, sigma).to(log_probs.device)
    loss = -(targets * log_probs).sum(-1).mean()  # cross-entropy, averaged over frames and dims
    return loss, logits


@torch.no_grad()
def estimate_val(model: VLA, table: FrameTable, lang: np.ndarray, args: Args) -> dict[str, float]:
    """Validation loss (one-hot cross-entropy, in nats per dimension) and per-dimension bin
    accuracy (exact bin; within 10 bins) on an evenly spaced subset of validation frames."""
    model.eval()
    idx = np.linspace(0, len(table) - 1, min(args.val_frames, len(table))).round().astype(np.int64)
    totals = {"loss": 0.0, "exact": torch.zeros(ACTION_DIM), "near": torch.zeros(ACTION_DIM)}
    for chunk in np.array_split(idx, max(1, len(idx) // 512)):
        batch = make_batch(table, chunk, lang[table.window[chunk]], model, args, None)
        bins = actions_to_bins(table.actions[chunk], model.config.num_bins).to(model.device)
        loss, logits = bc_loss(model, batch, bins, 0.0, args.bf16)
        pred = logits.argmax(-1)
        totals["loss"] += loss.item() * len(chunk)
        totals["exact"] += (pred == bins).float().sum(0).cpu()
        near = (pred - bins).abs() <= 10
        near[:, GRIPPER_DIM] = pred[:, GRIPPER_DIM].ge(model.config.num_bins // 2) == bins[:, GRIPPER_DIM].ge(model.config.num_bins // 2)
        totals["near"] += near.float().sum(0).cpu()
    model.train()
    out = {"loss": totals["loss"] / len(idx)}
    for d in range(ACTION_DIM):
        out[f"bin_acc_{d}"] = float(totals["exact"][d] / len(idx))
        out[f"near_acc_{d}"] = float(totals["near"][d] / len(idx))
    return out


def save_resume(path: Path, model: VLA, optimizer: torch.optim.Optimizer, step: int, extra: dict) -> None:
    """Model, optimizer moments and step in one safetensors file, moved into place atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors["rng.torch"] = torch.get_rng_state()  # dropout masks continue as without the interruption
    state = optimizer.state_dict()
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"step": str(step), "vla_config": json.dumps(model.config.to_dict()),
            "param_groups": json.dumps(state["param_groups"]), "extra": json.dumps(extra)}
    atomic_write_bytes(path, save_safetensors(tensors, metadata=meta))


def load_resume(path: Path, model: VLA, optimizer: torch.optim.Optimizer) -> tuple[int, dict]:
    """Restore what `save_resume` wrote; returns (step, extra).

    Raises:
        ValueError: an unreadable file, or an architecture that differs from this run's (names
            the fields).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        tensors = load_safetensors(path.read_bytes())
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: unreadable resume checkpoint ({err}); delete it to start over") from err
    saved = VLAConfig.from_dict(json.loads(meta["vla_config"]))
    diffs = config_differences(model.config, saved)
    if diffs:
        raise ValueError(f"{path} was trained with another architecture (this run vs checkpoint): {diffs}; "
                         "use the checkpoint's settings or another --output-dir")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {"state": {}, "param_groups": json.loads(meta["param_groups"])}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            state["state"].setdefault(int(pid), {})[key] = v
    optimizer.load_state_dict(state)
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return int(meta["step"]), json.loads(meta["extra"])


def check_args(args: Args) -> None:
    """Reject bad arguments before any data is read, naming the argument."""
    for name in ("total_steps", "batch_size", "checkpoint_every", "val_every", "val_frames"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.data:
        raise ValueError("--data needs at least one dataset root")
    if not 0.0 <= args.paraphrase_prob <= 1.0:
        raise ValueError(f"--paraphrase-prob must be in [0, 1], got {args.paraphrase_prob}")
    if args.eval_chains < 0 or args.label_sigma < 0 or args.image_shift < 0:
        raise ValueError("--eval-chains, --label-sigma and --image-shift must be >= 0")


if __name__ == "__main__":
    args = tyro.cli(Args)
    with cli.usage_errors(PROG):  # a mistake in the arguments: one line, exit status 2
        check_args(args)
    run_name = f"{args.exp_name}__{args.obs_mode}__{args.seed}__{int(time.time())}"
    output_dir = Path(args.output_dir or Path("checkpoints") / f"{args.exp_name}__{args.obs_mode}__{args.seed}")
    output_dir.mkdir(parents=True, exist_ok=True)
    resume_path = output_dir / "resume.safetensors"
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_name, save_code=True)
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{k}|{v}|" for k, v in vars(args).items()])))

    # seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads)
    device = torch.device(args.device)

    # data
    with cli.usage_errors(PROG):  # missing or malformed datasets
        train_splits = [CalvinDataset(root, "training", lang_folder=args.lang_folder) for root in args.data]
        val_split = CalvinDataset(args.val_data or args.data[0], "validation", lang_folder=args.lang_folder)
    encoder = HashedNgramEncoder()
    config = VLAConfig(obs_mode=args.obs_mode, static_size=args.static_size, gripper_size=args.gripper_size,
                       d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                       head_hidden=args.head_hidden, dropout=args.dropout, text_encoder=encoder.name,
                       text_dim=encoder.dim)
    train = load_frames(train_splits, config, args.max_train_windows, "train windows")
    sample_pool = np.arange(len(train))
    if args.drop_still_frames:
        sample_pool = np.flatnonzero(np.abs(train.actions[:, :GRIPPER_DIM]).max(1) > 0)
        print(f"--drop-still-frames: training on {len(sample_pool)} of {len(train)} frames")
    val = load_frames([val_split], config, None, "validation windows")
    if args.use_dataset_embeddings:
        if train.emb is None or val.emb is None:
            raise ValueError("--use-dataset-embeddings: the datasets have no language.emb")
        config.text_encoder, config.text_dim = PRECOMPUTED_TEXT, train.emb.shape[1]
        train_lang, val_lang, paraphrases = train.emb, val.emb, None
    else:
        train_lang, val_lang = encoder.encode(train.sentences), encoder.encode(val.sentences)
        # per task: embeddings of its training paraphrases (language augmentation)
        paraphrases = {t: encoder.encode(list(TRAIN_INSTRUCTIONS[t])) for t in set(train.tasks) if t in TRAIN_INSTRUCTIONS}
    print(f"train: {len(train)} frames in {len(train.sentences)} windows; validation: {len(val)} frames in {len(val.sentences)} windows")

    # model and optimizer
    model = VLA(config).to(device)
    model.body.set_state_normalization(train.obs["robot_obs"], train.obs.get("scene_obs"))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate)
    start_step, best = 0, {"val_loss": float("inf"), "step": -1, "train_seconds": 0.0}
    if resume_path.exists():
        with cli.usage_errors(PROG):  # a resume file of another architecture
            start_step, best = load_resume(resume_path, model, optimizer)
        print(f"resumed from {resume_path} at step {start_step}")
    print(f"VLA ({config.obs_mode}): {num_parameters(model):,} parameters, head {num_parameters(model.action_head):,}")
    train_bins = actions_to_bins(train.actions, config.num_bins)
    metadata = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "args": asdict(args),
        "data": {"train": [str(d.path) for d in train_splits], "train_frames": len(train), "train_windows": len(train.sentences),
                 "validation": str(val_split.path), "validation_frames": len(val)},
    }

    def save_all(step: int, val_metrics: dict | None) -> None:
        # cumulative optimisation time over all (resumed) runs, without data loading
        best["train_seconds"] = round(seconds_before + time.time() - t0, 1)
        save_resume(resume_path, model, optimizer, step, best)
        save_checkpoint(output_dir, model, {**metadata, "step": step, "best": best, "validation": val_metrics},
                        decoding=args.decoding)

    # training loop
    model.train()
    step, stop_at = start_step, args.total_steps
    if args.stop_after_steps is not None:
        stop_at = min(stop_at, start_step + args.stop_after_steps)
    val_metrics = None
    progress = tqdm(total=args.total_steps, initial=start_step, desc="steps")
    window_tasks = np.asarray(train.tasks)
    t0, steps_timed = time.time(), 0
    seconds_before = float(best.get("train_seconds", 0.0))
    while step < stop_at:
        rng = np.random.default_rng([args.seed, step])  # batch of step s is the same after a resume
        idx = sample_pool[rng.integers(0, len(sample_pool), args.batch_size)]
        lang = train_lang[train.window[idx]].copy()
        if paraphrases is not None and args.paraphrase_prob > 0:
            swap = np.flatnonzero(rng.random(len(idx)) < args.paraphrase_prob)
            for j in swap:
                options = paraphrases.get(window_tasks[train.window[idx[j]]])
                if options is not None:
                    lang[j] = options[rng.integers(len(options))]
        batch = make_batch(train, idx, lang, model, args, rng)
        bins = train_bins[idx].to(device)
        lr = get_lr(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # ALGO LOGIC: cross-entropy of the binned relative actions (RFTF 4.1.4 bins)
        loss, logits = bc_loss(model, batch, bins, args.label_sigma, args.bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        step += 1
        steps_timed += 1
        progress.update(1)

        if step % 50 == 0 or step == stop_at:
            sps = steps_timed * args.batch_size / (time.time() - t0)
            writer.add_scalar("losses/bc_loss", loss.item(), step)
            writer.add_scalar("losses/grad_norm", grad_norm.item(), step)
            writer.add_scalar("charts/learning_rate", lr, step)
            writer.add_scalar("charts/SPS", sps, step)
            progress.set_postfix(loss=f"{loss.item():.3f}", fps=f"{sps:.0f}")
        if step % args.val_every == 0 or step == args.total_steps:
            val_metrics = estimate_val(model, val, val_lang, args)
            for k, v in val_metrics.items():
                writer.add_scalar(f"val/{k}", v, step)
            if val_metrics["loss"] < best["val_loss"]:
                best.update(val_loss=val_metrics["loss"], step=step)
            tqdm.write(f"step {step}: val loss {val_metrics['loss']:.4f}, bin acc "
                       + " ".join(f"{val_metrics[f'bin_acc_{d}']:.2f}" for d in range(ACTION_DIM))
                       + ", within 10 bins " + " ".join(f"{val_metrics[f'near_acc_{d}']:.2f}" for d in range(ACTION_DIM)))
        if step % args.checkpoint_every == 0 or step == stop_at:
            save_all(step, val_metrics)
    progress.close()
    train_seconds = time.time() - t0
    writer.add_scalar("charts/train_seconds", train_seconds, step)
    print(f"{step - start_step} steps in {train_seconds:.0f} s; checkpoint in {output_dir}")

    if step >= args.total_steps and args.eval_chains > 0 and config.text_encoder != PRECOMPUTED_TEXT:
        from rftf_gym.chain_eval import ChainEvalConfig, evaluate_chains
        from rftf_gym.evaluation import compute_metrics, format_table
        from rftf_gym.sequences import get_sequences

        chains = list(get_sequences(args.eval_chains))
        # next to the checkpoint, not in it: evaluation resumes only while the checkpoint's files are unchanged
        eval_dir = output_dir.with_name(output_dir.name + "_eval")
        records = evaluate_chains(
            str(output_dir), chains,
            ChainEvalConfig(scene="D", obs_mode="rgb+state" if args.obs_mode == "rgb" else "state",
                            batch_size=args.eval_batch_size, num_workers=args.eval_workers, device=args.device),
            results_path=eval_dir / "results.jsonl",
        )
        metrics = compute_metrics([r["chain"] for r in records], [r["num_success"] for r in records], 1000, seed=args.seed)
        print(format_table(metrics))
        (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        writer.add_scalar("eval/avg_len", metrics["avg_len"]["value"], step)
        for i, entry in metrics["chain_sr"].items():
            writer.add_scalar(f"eval/chain_sr_{i}", entry["value"], step)
    writer.close()
