"""Plumbing for `evaluate.py`: chain metrics with bootstrap intervals, and the results files.

The rollout rules themselves live in ``evaluate.py``. This module holds what does not depend on
a simulator:

- `chain_success_rates` / `task_counts` / `compute_metrics`: CALVIN's numbers (``count_success``
  and ``print_and_save`` in ``calvin_agent/evaluation/utils.py``): L1..L5 = share of chains with
  at least i successes, Avg. Len. = mean successes per chain, and per task the successes over
  the attempts (the chain's successful prefix plus the instruction it failed), with 95 % percentile
  bootstrap intervals that resample whole chains (tasks inside a chain are not independent).
- `ResultsLog`: the per-chain JSON-lines file that makes an evaluation resumable. Line 1 is a
  header ``{"kind": "header", "format": 1, "config": {...}}``; every further line is one
  finished chain ``{"kind": "chain", "index": i, "num_success": k, ...}``, appended, flushed and
  fsynced as one complete line. A last line cut by a kill is ignored and cut off on reopening.
  Reopening with a different configuration raises `ConfigMismatchError` naming the fields.
- `bootstrap_mean` / `paired_bootstrap`: means over training seeds and chains, and the paired
  difference of two policies on the same chains, with bootstrap intervals over chains and seeds.
- `format_table`, `format_markdown`, `chains_digest`, `policy_fingerprint`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rftf_gym.conventions import CHAIN_LEN
from rftf_gym.files import atomic_write_text

RESULTS_FORMAT = 1
# Configuration keys that describe *where* and *how fast* a run happens, not what it measures:
# they may change between a run and its resumption.
NON_RESULT_KEYS = frozenset({"output_dir", "num_workers", "video_chains", "track", "world_size", "versions"})
OPTIONAL_RESULT_KEYS = frozenset({"code_sha256"})
"""Result-defining keys that results files written before them lack: compared when both have them."""
POLICY_KEYS = frozenset({"policy", "policy_fingerprint", "text_encoder"})
"""What may differ between two evaluations compared chain by chain (`pairing_mismatches`): the
policy, which includes the instruction encoder that ``evaluate.py --text-encoder`` gave it."""


# ---------------------------------------------------------------------------- metrics
def chain_success_rates(num_success: Sequence[int], max_len: int = CHAIN_LEN) -> np.ndarray:
    """L1..L_max_len: the share of chains with at least i successful instructions in a row.

    Same as the official ``count_success``.
    """
    lengths = np.asarray(num_success, dtype=np.int64)
    if lengths.size == 0:
        raise ValueError("no chain results to summarise")
    return np.array([(lengths >= i).mean() for i in range(1, max_len + 1)])


def task_counts(chains: Sequence[Sequence[str]], num_success: Sequence[int]) -> dict[str, dict[str, int]]:
    """Per task: successes and attempts, counted as the official ``print_and_save`` does.

    A chain that reached k successes attempted its first k tasks successfully and, when k is
    below its length, failed task k; later tasks were never attempted.

    Returns:
        task -> {"success": int, "attempts": int}, tasks sorted by name.
    """
    counts: dict[str, dict[str, int]] = {}
    for chain, k in zip(chains, num_success, strict=True):
        for j, task in enumerate(chain[: k + 1]):
            entry = counts.setdefault(task, {"success": 0, "attempts": 0})
            entry["attempts"] += 1
            entry["success"] += int(j < k)
    return dict(sorted(counts.items()))


def _interval(samples: np.ndarray, confidence: float) -> list[float] | None:
    """Percentile interval over the first axis, ignoring resamples where the value is undefined."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return [float(low), float(high)]


def compute_metrics(
    chains: Sequence[Sequence[str]],
    num_success: Sequence[int],
    num_bootstrap: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """L1..L5, Avg. Len. and per-task success, each with a bootstrap interval.

    Args:
        chains: the task names of every evaluated chain, in chain-index order.
        num_success: successes in a row reached on each chain (0..len(chain)).
        num_bootstrap: number of resamples of the chains (with replacement).
        seed: seed of the resampling; the same inputs and seed give the same intervals.
        confidence: interval coverage, 0.95 for 95 %.

    Returns:
        ``{"num_chains", "avg_len": {"value", "ci"}, "chain_sr": {"1".."5": {"value", "ci"}},
        "tasks": {task: {"success", "attempts", "rate", "ci"}}, "bootstrap": {...},
        "official": {"avg_seq_len", "chain_sr", "task_info"}}``; ``official`` has the layout of
        CALVIN's ``print_and_save`` results so existing tooling can read it.

    Raises:
        ValueError: empty input, mismatched lengths, a success count outside 0..len(chain), or
            bad bootstrap settings.
    """
    if len(chains) != len(num_success):
        raise ValueError(f"{len(chains)} chains but {len(num_success)} results")
    if num_bootstrap < 1:
        raise ValueError(f"num_bootstrap must be >= 1, got {num_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    lengths = np.asarray(num_success, dtype=np.int64)
    for i, (chain, k) in enumerate(zip(chains, lengths)):
        if not 0 <= k <= len(chain):
            raise ValueError(f"chain {i} has {len(chain)} tasks but reports {k} successes")
    n = lengths.size
    chain_sr = chain_success_rates(lengths)
    counts = task_counts(chains, lengths.tolist())
    task_names = list(counts)

    # Per-chain indicator matrices, so a resample is one matrix product with its chain weights.
    reached = np.stack([lengths >= i for i in range(1, CHAIN_LEN + 1)], axis=1).astype(np.float64)
    attempts = np.zeros((n, len(task_names)))
    successes = np.zeros((n, len(task_names)))
    column = {task: j for j, task in enumerate(task_names)}
    for c, (chain, k) in enumerate(zip(chains, lengths)):
        for j, task in enumerate(chain[: k + 1]):
            attempts[c, column[task]] += 1
            successes[c, column[task]] += float(j < k)

    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=num_bootstrap).astype(np.float64)
    boot_avg = weights @ lengths.astype(np.float64) / n
    boot_sr = weights @ reached / n
    with np.errstate(invalid="ignore", divide="ignore"):
        boot_task = (weights @ successes) / (weights @ attempts)

    tasks_out = {}
    for j, task in enumerate(task_names):
        entry = counts[task]
        tasks_out[task] = {
            "success": entry["success"],
            "attempts": entry["attempts"],
            "rate": entry["success"] / entry["attempts"],
            "ci": _interval(boot_task[:, j], confidence),
        }
    return {
        "num_chains": int(n),
        "avg_len": {"value": float(lengths.mean()), "ci": _interval(boot_avg, confidence)},
        "chain_sr": {
            str(i + 1): {"value": float(chain_sr[i]), "ci": _interval(boot_sr[:, i], confidence)}
            for i in range(CHAIN_LEN)
        },
        "tasks": tasks_out,
        "bootstrap": {"samples": int(num_bootstrap), "seed": int(seed), "confidence": confidence, "unit": "chain"},
        "official": {
            "avg_seq_len": float(lengths.mean()),
            "chain_sr": {str(i + 1): float(chain_sr[i]) for i in range(CHAIN_LEN)},
            "task_info": {t: {"success": c["success"], "total": c["attempts"]} for t, c in counts.items()},
        },
    }


def _ci_text(ci: list[float] | None, scale: float, digits: int) -> str:
    return "n/a" if ci is None else f"[{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def format_table(metrics: Mapping[str, Any]) -> str:
    """The metrics as a plain-text table for the terminal."""
    boot = metrics["bootstrap"]
    lines = [
        f"Chains: {metrics['num_chains']}  ({boot['confidence']:.0%} bootstrap intervals, "
        f"{boot['samples']} resamples of chains, seed {boot['seed']})",
        f"{'metric':<12}{'value':>9}  {'interval':<18}",
    ]
    for i, entry in metrics["chain_sr"].items():
        lines.append(f"{'L' + i:<12}{entry['value'] * 100:>8.1f}%  {_ci_text(entry['ci'], 100, 1):<18}")
    avg = metrics["avg_len"]
    lines.append(f"{'Avg. Len.':<12}{avg['value']:>9.3f}  {_ci_text(avg['ci'], 1, 3):<18}")
    lines.append("")
    lines.append(f"{'task':<26}{'success':>8}{'attempts':>9}{'rate':>9}  interval")
    for task, entry in metrics["tasks"].items():
        lines.append(
            f"{task:<26}{entry['success']:>8}{entry['attempts']:>9}{entry['rate'] * 100:>8.1f}%  "
            f"{_ci_text(entry['ci'], 100, 1)}"
        )
    return "\n".join(lines)


def format_markdown(metrics: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The metrics and the configuration as a Markdown report."""
    boot = metrics["bootstrap"]
    lines = [
        "# CALVIN chained evaluation",
        "",
        f"Policy `{config.get('policy')}`, backend `{config.get('backend')}`, scene {config.get('scene')}, "
        f"obs mode `{config.get('obs_mode')}`, {metrics['num_chains']} chains "
        f"({config.get('chain_source')}). Intervals: {boot['confidence']:.0%} percentile bootstrap over "
        f"chains, {boot['samples']} resamples, seed {boot['seed']}.",
        "",
        "| " + " | ".join([f"L{i}" for i in metrics["chain_sr"]] + ["Avg. Len."]) + " |",
        "|" + "---|" * (len(metrics["chain_sr"]) + 1),
        "| "
        + " | ".join(
            [f"{e['value'] * 100:.1f}% {_ci_text(e['ci'], 100, 1)}" for e in metrics["chain_sr"].values()]
            + [f"{metrics['avg_len']['value']:.3f} {_ci_text(metrics['avg_len']['ci'], 1, 3)}"]
        )
        + " |",
        "",
        "| task | success | attempts | rate | 95% interval |",
        "|---|---|---|---|---|",
    ]
    for task, e in metrics["tasks"].items():
        lines.append(
            f"| {task} | {e['success']} | {e['attempts']} | {e['rate'] * 100:.1f}% | {_ci_text(e['ci'], 100, 1)} |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- fingerprints
def to_jsonable(value: Any) -> Any:
    """Numpy scalars/arrays and tuples -> plain JSON types (for chain states and configs)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def chains_digest(chains: Iterable[tuple[Mapping[str, Any], Sequence[str]]]) -> str:
    """SHA-256 of the (initial state, tasks) list: two runs measure the same chains iff equal."""
    payload = json.dumps([[to_jsonable(dict(s)), list(c)] for s, c in chains], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def policy_fingerprint(spec: str) -> str:
    """Identity of a policy spec: the spec itself for built-ins, else a SHA-256 of the checkpoint
    directory's files (config.json and weights), so a retrained checkpoint under the same path
    is not mistaken for the old one on resume."""
    path = Path(spec)
    if not path.is_dir():
        return spec
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------------------- files


class ConfigMismatchError(ValueError):
    """A results file was written by an evaluation with a different configuration."""


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the rftf_gym package's Python sources (relative paths and contents).

    A chain's result depends on the code as well as on the policy and the seed (an edit to the
    simulator changes chain results; evaluate.py's docstring), and the package's version string
    does not change with each edit; this digest does.
    """
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def _differing_keys(first: Mapping[str, Any], second: Mapping[str, Any], ignore: frozenset[str]) -> list[str]:
    keys = sorted((set(first) | set(second)) - ignore)
    return [
        key for key in keys
        if not (key in OPTIONAL_RESULT_KEYS and (key not in first or key not in second))
        and to_jsonable(first.get(key)) != to_jsonable(second.get(key))
    ]


def config_mismatches(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """``"key: file has X, this run has Y"`` for every result-defining key that differs."""
    return [f"{key}: file has {found.get(key)!r}, this run has {expected.get(key)!r}"
            for key in _differing_keys(expected, found, NON_RESULT_KEYS)]


def pairing_mismatches(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """Why two evaluations' records cannot be compared chain by chain (paired): each
    result-defining key of their headers but the policy that differs (chains, seed, scene,
    backend, episode length, sentences, and the code when both record it), as
    ``"key: X vs Y"``. Empty when they pair."""
    return [f"{key}: {first.get(key)!r} vs {second.get(key)!r}"
            for key in _differing_keys(first, second, NON_RESULT_KEYS | POLICY_KEYS)]


def read_results(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """Read a results file.

    Returns:
        (header config, chain records, byte length of the complete part). A last line without
        its newline (an append cut by a kill) is not counted.

    Raises:
        ValueError: the file has no valid header, or a complete line that is not valid JSON.
    """
    path = Path(path)
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1  # everything after the last newline is an unfinished append
    lines = data[:good].decode().splitlines()
    if not lines:
        raise ValueError(f"results file {path} has no header line; delete it or use another output dir")
    try:
        header = json.loads(lines[0])
        if header.get("kind") != "header" or header.get("format") != RESULTS_FORMAT:
            raise ValueError("not a header")
    except (json.JSONDecodeError, ValueError, AttributeError) as err:
        raise ValueError(f"results file {path} does not start with a format-{RESULTS_FORMAT} header") from err
    records = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"results file {path} line {number} is not valid JSON: {err}") from err
        if record.get("kind") == "chain":
            records.append(record)
    return header["config"], records, good


def _has_complete_line(path: Path) -> bool:
    if not path.exists():
        return False
    with open(path, "rb") as handle:
        return b"\n" in handle.read(1 << 16)


class ResultsLog:
    """An append-only per-chain results file with a configuration header (see module docstring).

    Args:
        path: the JSON-lines file; created with a header if missing.
        config: this run's configuration; an existing file must have been written with the same
            result-defining values.

    Raises:
        ConfigMismatchError: the file's header differs; the message names every differing field.
    """

    def __init__(self, path: str | Path, config: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.config = to_jsonable(dict(config))
        self.records: list[dict[str, Any]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _has_complete_line(self.path):  # else it is new, or a kill cut its header: start over
            found, self.records, good = read_results(self.path)
            check_config(self.path, self.config, found)
            if good < self.path.stat().st_size:
                os.truncate(self.path, good)  # drop the cut-off last line before appending
            self._handle = open(self.path, "a")
        else:
            self._handle = open(self.path, "w")
            self._write_line({"kind": "header", "format": RESULTS_FORMAT, "config": self.config})

    def _write_line(self, obj: Mapping[str, Any]) -> None:
        try:
            self._handle.write(json.dumps(obj, sort_keys=True) + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as err:  # a full disk: name the file (a cut-off line is dropped on resume)
            raise OSError(err.errno, err.strerror, str(self.path)) from err

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one finished chain; it is on disk when this returns."""
        record = {"kind": "chain", **to_jsonable(dict(record))}
        self._write_line(record)
        self.records.append(record)

    def close(self) -> None:
        self._handle.close()


def check_config(path: Path, expected: Mapping[str, Any], found: Mapping[str, Any]) -> None:
    """Raise `ConfigMismatchError` if a results file's header differs from this run's config."""
    mismatches = config_mismatches(expected, found)
    if mismatches:
        raise ConfigMismatchError(
            f"results file {path} was written by an evaluation with a different configuration "
            f"({'; '.join(mismatches)}); refusing to mix results. Use another --output-dir or delete the file."
        )


def write_results(path: str | Path, config: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> None:
    """Atomically (re)write a complete results file: header, then records sorted by index."""
    header = {"kind": "header", "format": RESULTS_FORMAT, "config": to_jsonable(dict(config))}
    lines = [json.dumps(header, sort_keys=True)]
    for record in sorted(records, key=lambda r: r["index"]):
        lines.append(json.dumps({"kind": "chain", **to_jsonable(dict(record))}, sort_keys=True))
    atomic_write_text(path, "\n".join(lines) + "\n")


def merge_records(record_lists: Iterable[Iterable[Mapping[str, Any]]]) -> dict[int, dict[str, Any]]:
    """Union of chain records by index (several part files may hold the same finished chain)."""
    merged: dict[int, dict[str, Any]] = {}
    for records in record_lists:
        for record in records:
            merged.setdefault(int(record["index"]), dict(record))
    return merged


# ---------------------------------------------------------------------------- paired comparisons
def bootstrap_mean(
    values: np.ndarray | Sequence[Sequence[float]],
    num_bootstrap: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Mean over training seeds and chains with a two-way percentile bootstrap interval.

    ``values[s, c]`` is a per-chain number (successes in a row, or a 0/1 "reached L_i") of the
    policy trained with seed ``s`` on chain ``c``; every seed is evaluated on the same chains.
    A resample draws the chains with replacement (the same draw for every seed, since the chains
    are shared) and, when there are several seeds, the seeds with replacement, so the interval
    covers both chain-to-chain and seed-to-seed spread.

    Args:
        values: shape (num_chains,) for one seed, or (num_seeds, num_chains).
        num_bootstrap: number of resamples.
        seed: seed of the resampling.
        confidence: interval coverage, 0.95 for 95 %.

    Returns:
        ``{"value", "ci", "num_seeds", "num_chains", "samples"}``; ``value`` is the plain mean.

    Raises:
        ValueError: empty input, more than two dimensions, non-finite values or bad settings.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"values must have shape (chains,) or (seeds, chains) and not be empty, got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("values must be finite")
    if num_bootstrap < 1:
        raise ValueError(f"num_bootstrap must be >= 1, got {num_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    num_seeds, num_chains = v.shape
    rng = np.random.default_rng(seed)
    chain_w = rng.multinomial(num_chains, np.full(num_chains, 1.0 / num_chains), size=num_bootstrap).astype(np.float64)
    if num_seeds > 1:
        seed_w = rng.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=num_bootstrap).astype(np.float64)
    else:
        seed_w = np.ones((num_bootstrap, 1))
    # Resample b: sum_s sum_c seed_w[b, s] * chain_w[b, c] * v[s, c] / (S * C).
    samples = np.einsum("bs,sc,bc->b", seed_w, v, chain_w) / (num_seeds * num_chains)
    return {
        "value": float(v.mean()),
        "ci": _interval(samples, confidence),
        "num_seeds": int(num_seeds),
        "num_chains": int(num_chains),
        "samples": int(num_bootstrap),
    }


def paired_bootstrap(
    after: np.ndarray | Sequence[Sequence[float]],
    before: np.ndarray | Sequence[Sequence[float]],
    num_bootstrap: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The paired difference ``after - before`` of two policies evaluated on the same chains.

    Each chain's difference is formed first (a fine-tuned policy minus its own starting policy
    of the same training seed, on the same chain with the same env seed), then `bootstrap_mean`
    resamples those differences. Chains that are easy or hard for both policies cancel, so the
    interval is much narrower than the difference of two independent intervals.

    Args:
        after: per-chain numbers of the new policy, (num_chains,) or (num_seeds, num_chains).
        before: the same for the reference policy, in the same chain (and seed) order.
        num_bootstrap, seed, confidence: as in `bootstrap_mean`.

    Returns:
        `bootstrap_mean` of the differences, plus ``"share_above_zero"``: the share of chains
        (over all seeds) where ``after`` is higher, and ``"share_below_zero"``.

    Raises:
        ValueError: the shapes differ, or as `bootstrap_mean`.
    """
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same chains: after has shape {a.shape}, before {b.shape}")
    diff = a - b
    out = bootstrap_mean(diff, num_bootstrap=num_bootstrap, seed=seed, confidence=confidence)
    out["share_above_zero"] = float((diff > 0).mean())
    out["share_below_zero"] = float((diff < 0).mean())
    return out
