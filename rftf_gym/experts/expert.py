"""The concrete scripted expert (the skill mixins over `ExpertBase`, with its task dispatch), its
factory, the policy interface over it and the instruction-to-task lookup."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rftf_gym.experts.blocks import BlockSkills
from rftf_gym.experts.cabinet import CabinetSkills
from rftf_gym.experts.control import ExpertBase, Script
from rftf_gym.experts.shelf import ShelfSkills
from rftf_gym.language import EVAL_INSTRUCTIONS, TRAIN_INSTRUCTIONS
from rftf_gym.sim.layout import LAYOUTS
from rftf_gym.tasks import TASK_NAMES


def task_for_instruction(instruction: str) -> str:
    """The task an instruction sentence names (train paraphrases and eval sentences).

    Args:
        instruction: a sentence of `rftf_gym.language`.

    Returns:
        The task name.

    Raises:
        ValueError: the sentence is not one of the project's instructions.
    """
    task = _INSTRUCTION_TO_TASK.get(instruction.strip().lower())
    if task is None:
        raise ValueError(f"unknown instruction {instruction!r}: not a sentence of rftf_gym.language")
    return task


def _instruction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for task in TASK_NAMES:
        for sentence in (*TRAIN_INSTRUCTIONS[task], EVAL_INSTRUCTIONS[task]):
            table[sentence] = task
    return table


_INSTRUCTION_TO_TASK = _instruction_table()


class Expert(BlockSkills, ShelfSkills, CabinetSkills, ExpertBase):
    """A scripted expert for one task in one scene.

    Call `reset` before each instruction and `act` once per control step. The expert plans from
    the first observation it sees after `reset`, so it works from any state where the task's
    symbolic condition holds (and releases a block it should not hold first).

    Args:
        task: one of `rftf_gym.tasks.TASK_NAMES`.
        scene: ``"A"``, ``"B"``, ``"C"`` or ``"D"``.
        rng: randomness for diversity (speed, offsets, noise); None: a fresh seeded one (0).
        noise: std of Gaussian noise added to the translation actions in free space (action
            units); 0 gives clean demonstrations.
        speed: max translation action magnitude in (0, 1]; None draws one in [0.7, 1.0].
        offsets: scale of random approach offsets (grasp point along the block, approach
            heights, push lanes), 0 disables them.

    Raises:
        ValueError: unknown task or scene, or options out of range.
    """

    def _script(self) -> Script:
        yield from self._settle()
        task = self.task
        if task.startswith("rotate_"):
            _, color, _, direction = task.split("_")
            yield from self._rotate(color, 1.0 if direction == "left" else -1.0)
        elif task.startswith("push_") and task != "push_into_drawer":
            _, color, _, direction = task.split("_")
            yield from self._push(color, 1.0 if direction == "right" else -1.0)
        elif task.startswith("move_slider_"):
            yield from self._slider(1.0 if task.endswith("left") else -1.0)
        elif task in ("open_drawer", "close_drawer"):
            yield from self._drawer(task == "open_drawer")
        elif task.startswith("lift_"):
            _, color, _, place = task.split("_")
            yield from self._lift(color, place)
        elif task == "place_in_slider":
            yield from self._place_in_slider()
        elif task == "place_in_drawer":
            yield from self._place_in_drawer()
        elif task == "stack_block":
            yield from self._stack()
        elif task == "unstack_block":
            yield from self._unstack()
        elif task.endswith("_lightbulb"):
            yield from self._switch(task.startswith("turn_on"))
        elif task.endswith("_led"):
            yield from self._button()
        elif task == "push_into_drawer":
            yield from self._push_into_drawer()
        return True


def make_expert(task: str, scene: str, rng: np.random.Generator | None = None, noise: float = 0.0,
                speed: float | None = None, offsets: float = 1.0) -> Expert:
    """Build the scripted expert of one task.

    Args:
        task: one of `rftf_gym.tasks.TASK_NAMES`.
        scene: ``"A"``, ``"B"``, ``"C"`` or ``"D"``.
        rng: randomness for speed, offsets and noise.
        noise: std of Gaussian action noise in free-space moves (action units).
        speed: max translation action in (0, 1]; None draws one per instruction.
        offsets: scale of random approach offsets (0 disables).

    Returns:
        An `Expert`; call ``act(obs)`` every step.
    """
    return Expert(task, scene, rng=rng, noise=noise, speed=speed, offsets=offsets)


class ExpertPolicy:
    """The experts behind the policy interface of `rftf_gym.policies` (``reset`` / ``act``).

    The instruction picks the task (train paraphrases and eval sentences are both understood);
    the observation must hold ``robot_obs`` and ``scene_obs``.

    Args:
        scene: the scene the experts plan in.
        seed: seed of the experts' randomness.
        noise: action noise std, see `Expert`.
    """

    def __init__(self, scene: str = "D", seed: int = 0, noise: float = 0.0) -> None:
        if scene not in LAYOUTS:
            raise ValueError(f"scene must be one of {tuple(LAYOUTS)}, got {scene!r}")
        self.scene = scene
        self.noise = float(noise)
        self.seed(seed)

    def seed(self, seed: int) -> None:
        """Restart the experts' random stream."""
        self.rng = np.random.default_rng(seed)
        self._expert: Expert | None = None

    def reset(self) -> None:
        """Start a new instruction: the next `act` builds the expert of its task."""
        self._expert = None

    def act(self, obs: Mapping[str, Any], instruction: str) -> np.ndarray:
        """The expert's action for this observation and instruction."""
        task = task_for_instruction(instruction)
        if self._expert is None or self._expert.task != task:
            self._expert = make_expert(task, self.scene, self.rng, noise=self.noise)
        return self._expert.act(obs)
