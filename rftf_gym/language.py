"""The project's instruction sentences for the 34 CALVIN tasks.

CALVIN trains on several paraphrases per task and evaluates on one fixed sentence per task that
training never shows (mees/calvin ``calvin_models/conf/annotations/new_playtable.yaml`` and
``new_playtable_validation.yaml``). This module holds the project's own wording for both splits:

- `TRAIN_INSTRUCTIONS`: task -> several paraphrases (a random one per episode);
- `EVAL_INSTRUCTIONS`: task -> the one evaluation sentence, distinct from every train paraphrase.

Every sentence is lower case and uses only `INSTRUCTION_CHARSET`, at most
`MAX_INSTRUCTION_LENGTH` characters, so the env can declare a ``gymnasium.spaces.Text`` space.

Directions follow the oracle (`rftf_gym.tasks`): "right" is +x and "clockwise" is a negative
yaw as seen from above; the sliding door moves "left" when its joint grows.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from rftf_gym.conventions import COLORS
from rftf_gym.tasks import TASK_NAMES, validate_task

SPLITS = ("train", "eval")
INSTRUCTION_CHARSET = "abcdefghijklmnopqrstuvwxyz0123456789 ,.'-"
MAX_INSTRUCTION_LENGTH = 96

# Per-colour templates: (train paraphrases, eval sentence); "{c}" is the block colour.
_BLOCK_TEMPLATES: dict[str, tuple[tuple[str, ...], str]] = {
    "rotate_{c}_block_right": (
        (
            "turn the {c} block clockwise",
            "rotate the {c} block right",
            "twist the {c} block to the right",
            "give the {c} block a clockwise turn",
            "spin the {c} block a quarter turn clockwise",
            "rotate the {c} cube rightwards",
        ),
        "grip the {c} block and turn it clockwise",
    ),
    "rotate_{c}_block_left": (
        (
            "turn the {c} block counterclockwise",
            "rotate the {c} block left",
            "twist the {c} block to the left",
            "give the {c} block a counterclockwise turn",
            "spin the {c} block a quarter turn counterclockwise",
            "rotate the {c} cube leftwards",
        ),
        "grip the {c} block and turn it counterclockwise",
    ),
    "push_{c}_block_right": (
        (
            "push the {c} block right",
            "slide the {c} block rightwards",
            "nudge the {c} block over to the right",
            "shove the {c} block toward the right side",
            "move the {c} block right by pushing it",
            "push the {c} cube along the surface to the right",
        ),
        "give the {c} block a push so it slides right",
    ),
    "push_{c}_block_left": (
        (
            "push the {c} block left",
            "slide the {c} block leftwards",
            "nudge the {c} block over to the left",
            "shove the {c} block toward the left side",
            "move the {c} block left by pushing it",
            "push the {c} cube along the surface to the left",
        ),
        "give the {c} block a push so it slides left",
    ),
    "lift_{c}_block_table": (
        (
            "pick the {c} block up off the table",
            "lift the {c} block off the table",
            "grab the {c} block on the table and raise it",
            "take the {c} block from the tabletop",
            "grasp the {c} block lying on the table and lift it",
            "raise the {c} block up from the table",
        ),
        "grasp the {c} block on the table and hold it up",
    ),
    "lift_{c}_block_slider": (
        (
            "pick the {c} block up off the shelf",
            "lift the {c} block out of the sliding cabinet",
            "take the {c} block off the shelf behind the sliding door",
            "grab the {c} block in the cupboard and raise it",
            "raise the {c} block from the slider shelf",
            "get the {c} block out of the sliding cabinet",
        ),
        "grasp the {c} block in the sliding cabinet and hold it up",
    ),
    "lift_{c}_block_drawer": (
        (
            "pick the {c} block up out of the drawer",
            "lift the {c} block out of the drawer",
            "take the {c} block that sits in the drawer",
            "grab the {c} block inside the drawer and raise it",
            "raise the {c} block from the drawer",
            "get the {c} block out of the drawer",
        ),
        "grasp the {c} block in the drawer and hold it up",
    ),
}

# Tasks without a colour: (train paraphrases, eval sentence).
_PLAIN: dict[str, tuple[tuple[str, ...], str]] = {
    "move_slider_left": (
        (
            "bring the sliding door over to the left",
            "slide the door left",
            "push the sliding door leftwards",
            "shift the cabinet door over to the left",
            "pull the sliding panel to the left side",
            "move the slider left",
        ),
        "slide the cabinet door to the left",
    ),
    "move_slider_right": (
        (
            "bring the sliding door over to the right",
            "slide the door right",
            "push the sliding door rightwards",
            "shift the cabinet door over to the right",
            "pull the sliding panel to the right side",
            "move the slider right",
        ),
        "slide the cabinet door to the right",
    ),
    "open_drawer": (
        (
            "open up the drawer",
            "pull the drawer open",
            "pull out the drawer",
            "slide the drawer out",
            "grab the handle and open the drawer",
            "get the drawer open",
        ),
        "pull the drawer out to open it",
    ),
    "close_drawer": (
        (
            "close up the drawer",
            "push the drawer shut",
            "push the drawer in",
            "slide the drawer closed",
            "shut the drawer",
            "get the drawer closed",
        ),
        "push the drawer back in to close it",
    ),
    "place_in_slider": (
        (
            "put the block on the shelf",
            "place the block you hold in the sliding cabinet",
            "set the grasped block down in the cupboard",
            "drop the block onto the shelf behind the sliding door",
            "store the block in the sliding cabinet",
            "lay the block on the slider shelf",
        ),
        "put the held block down inside the sliding cabinet",
    ),
    "place_in_drawer": (
        (
            "put the block into the drawer",
            "place the block you hold into the drawer",
            "set the grasped block down in the drawer",
            "drop the block into the drawer",
            "stow the block in the drawer",
            "lay the block inside the drawer",
        ),
        "put the held block down inside the drawer",
    ),
    "stack_block": (
        (
            "stack up the blocks",
            "put one block on top of another",
            "place a block on top of a second block",
            "build a tower of two blocks",
            "set a block onto the other block",
            "pile one block on another",
        ),
        "stack one block on top of another block",
    ),
    "unstack_block": (
        (
            "undo the block stack",
            "take the top block off the stack",
            "remove the block from the top of the other",
            "pull the stacked block down",
            "separate the stacked blocks",
            "lift the upper block off the tower",
        ),
        "take the block off the stack and set it aside",
    ),
    "turn_on_lightbulb": (
        (
            "turn on the lightbulb",
            "switch the lightbulb on",
            "flip the switch to turn the bulb on",
            "make the yellow lamp light up",
            "light the bulb",
            "use the switch to light the lamp",
        ),
        "move the switch so the lightbulb turns on",
    ),
    "turn_off_lightbulb": (
        (
            "turn off the lightbulb",
            "switch the lightbulb off",
            "flip the switch to turn the bulb off",
            "make the yellow lamp go dark",
            "put out the bulb",
            "use the switch to put the lamp out",
        ),
        "move the switch so the lightbulb turns off",
    ),
    "turn_on_led": (
        (
            "turn the led on",
            "press the button to switch the led on",
            "light up the green led",
            "make the led glow",
            "push the button so the led lights",
            "switch on the green light",
        ),
        "toggle the led on with the button",
    ),
    "turn_off_led": (
        (
            "turn the led off",
            "press the button to switch the led off",
            "make the green led go dark",
            "stop the led from glowing",
            "push the button so the led goes out",
            "switch off the green light",
        ),
        "toggle the led off with the button",
    ),
    "push_into_drawer": (
        (
            "push one of the blocks into the drawer",
            "slide the block off the table into the drawer",
            "shove the block into the open drawer",
            "sweep the block from the table into the drawer",
            "push a block over the edge into the drawer",
            "nudge the block on the table into the drawer",
        ),
        "push the block on the table so it falls into the drawer",
    ),
}


def _build() -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    table = dict(_PLAIN)
    for pattern, (train, evaluation) in _BLOCK_TEMPLATES.items():
        for color in COLORS:
            table[pattern.format(c=color)] = (
                tuple(s.format(c=color) for s in train),
                evaluation.format(c=color),
            )
    # Official task order (rftf_gym.tasks.TASK_NAMES) for stable iteration.
    train = {task: table[task][0] for task in TASK_NAMES}
    evaluation = {task: table[task][1] for task in TASK_NAMES}
    return train, evaluation


_TRAIN, _EVAL = _build()
TRAIN_INSTRUCTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(_TRAIN)
EVAL_INSTRUCTIONS: Mapping[str, str] = MappingProxyType(_EVAL)


def validate_split(split: str) -> str:
    """Check an instruction split name.

    Args:
        split: ``"train"`` or ``"eval"``.

    Returns:
        The split, unchanged.

    Raises:
        ValueError: any other value.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def instruction_for(
    task: str, split: str = "train", rng: np.random.Generator | None = None
) -> str:
    """The instruction sentence for a task.

    Args:
        task: one of `rftf_gym.tasks.TASK_NAMES`.
        split: ``"train"`` draws one of the task's paraphrases from ``rng``; ``"eval"`` gives
            the task's fixed evaluation sentence (``rng`` is not used).
        rng: the generator for the train draw; None uses a fresh unseeded one.

    Returns:
        A lower-case sentence over `INSTRUCTION_CHARSET`.

    Raises:
        ValueError: unknown task or split.
    """
    validate_task(task)
    validate_split(split)
    if split == "eval":
        return EVAL_INSTRUCTIONS[task]
    paraphrases = TRAIN_INSTRUCTIONS[task]
    rng = np.random.default_rng() if rng is None else rng
    return paraphrases[int(rng.integers(len(paraphrases)))]


NOISE_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def insert_noise_words(sentence: str, count: int, rng: np.random.Generator) -> str:
    """``sentence`` with ``count`` pseudo-words of 3-7 random letters inserted at random places.

    The sentence's own words stay, in their order, so the task it names does not change. Under a
    hashing text encoder (`rftf_gym.text_encoder.HashedNgramEncoder`) a word no training sentence
    holds moves the embedding in a random direction, and every new sentence, the evaluation's
    held-out ones among them, brings such words and word pairs. Fine-tuning under noisy sentences
    fits the policy's change on a cloud of features around each paraphrase instead of on the
    paraphrases' exact points (``ppo_rftf.py --instruction-noise``; RESULTS.md measures it).

    Args:
        sentence: words separated by single spaces.
        count: how many pseudo-words to insert (0 returns ``sentence`` unchanged).
        rng: the generator of the words and their places.

    Returns:
        The sentence with the inserted words, single-spaced.

    Raises:
        ValueError: ``count`` < 0.
    """
    if count < 0:
        raise ValueError(f"the number of noise words must be >= 0, got {count}")
    words = sentence.split()
    for _ in range(count):
        length = int(rng.integers(3, 8))
        word = "".join(NOISE_LETTERS[i] for i in rng.integers(len(NOISE_LETTERS), size=length))
        words.insert(int(rng.integers(len(words) + 1)), word)
    return " ".join(words)
