"""Moving damaged checkpoint steps aside, never deleting them.

A step that cannot be read or fails its checksums is moved to MODEL_DIR/damaged_checkpoints/
once an older intact step was found, so the run resumes from that one and the damaged files
stay for inspection (docs/reliability.md, "Checkpoint integrity").
"""

from collections.abc import Sequence

from absl import logging
from etils import epath
import jax

# Damaged steps are moved here (next to checkpoints/), never deleted.
DAMAGED_FOLDER = 'damaged_checkpoints'


class Quarantine:
  """Moves steps out of a checkpoints folder into DAMAGED_FOLDER next to it."""

  def __init__(self, directory: epath.Path):
    self._directory = directory
    self.folder = directory.parent / DAMAGED_FOLDER

  def move(self, steps: Sequence[int]) -> None:
    """Moves every step in `steps` (process 0 moves, all processes wait for it)."""
    for step in steps:
      if jax.process_index() == 0:
        self._move_one(step)
      _sync(f'pause_lm_move_aside_{step}')

  def _move_one(self, step: int) -> None:
    """Renames the step into the folder; a step damaged before keeps its copy (STEP-1, ...)."""
    source = self._directory / str(step)
    self.folder.mkdir(parents=True, exist_ok=True)
    target = self.folder / str(step)
    suffix = 1
    while target.exists():
      target, suffix = self.folder / f'{step}-{suffix}', suffix + 1
    source.rename(target)
    logging.warning('Moved damaged checkpoint %s to %s.', source, target)


def _sync(name: str) -> None:
  """Waits until every process got here: none may list a step that another has moved."""
  if jax.process_count() > 1:
    # pylint: disable-next=g-import-not-at-top
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
