"""Reading checkpoint steps the way a resume reads them: verified, newest intact first.

A resume compares every restored array with the checksums recorded when the step was saved
and falls back from a damaged newest step to the newest intact one. Evaluation, warm starts
(INIT_CHECKPOINT) and conversion read through the same two functions here, so a damaged step
is never evaluated, warm-started from or exported, and every reader reports damage in the same
words. A path that names a run (or its checkpoints/ folder) falls back; a path that names one
step is refused if that step is damaged. Only the run that owns a folder moves damaged steps
aside (`quarantine`); a reader never changes the folder it reads.
"""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from absl import logging
from etils import epath

from pause_lm.checkpointing import errors
from pause_lm.checkpointing import integrity
from pause_lm.checkpointing import resume_checks
from pause_lm.checkpointing import step_folder

T = TypeVar('T')

# The fix named when a reader (not the run itself) finds no intact step.
_READER_FIX = (
  'Restore the damaged step(s) from a copy, or give one step folder that is intact '
  '(`python -m pause_lm.checkpoints verify MODEL_DIR` checks every step).'
)


class StepDisappearedError(FileNotFoundError):
  """A step was deleted while it was read: usually its run's keep-latest-N rotation."""


def newest_intact(
  step_dirs: Sequence[epath.Path], read: Callable[[epath.Path], T], fix: str = _READER_FIX
) -> tuple[epath.Path, T, list[epath.Path]]:
  """`read` of the first of `step_dirs` (newest first) that is not damaged.

  Args:
    step_dirs: The candidate step folders, newest first.
    read: Reads one step; raises DamagedCheckpointError if it cannot be read or fails its
      checksums (any other error stops the search: it is not about damage).
    fix: What the user should do when no step is intact, for the message.

  Returns:
    (the step read, what `read` returned, the damaged newer steps that were skipped).

  Raises:
    DamagedCheckpointError: Every step is damaged (each one's reason is listed).
    StepDisappearedError: A step was deleted while it was read.
  """
  damaged = []
  for step_dir in step_dirs:
    try:
      return step_dir, read(step_dir), [d for d, _ in damaged]
    except errors.DamagedCheckpointError as e:
      if not step_dir.exists():
        raise StepDisappearedError(
          f'Checkpoint step {step_dir.name} ({step_dir}) was deleted while it was read, '
          "usually by its run's checkpoint rotation (CheckpointConfig.keep). Read a step the "
          'run keeps (its newest), or copy the step elsewhere first.'
        ) from e
      logging.error('%s', e)
      damaged.append((step_dir, str(e)))
  where = step_dirs[0].parent if step_dirs else '(no steps)'
  raise errors.DamagedCheckpointError(
    f'No intact checkpoint in {where}:\n  '
    + '\n  '.join(reason for _, reason in damaged)
    + '\n'
    + fix
  )


def read_newest_intact(
  path: epath.PathLike, read: Callable[[epath.Path], T]
) -> tuple[epath.Path, T]:
  """`read` of the step `path` names, verified: see the module docstring.

  Args:
    path: A step folder (only that step is read), a checkpoints/ folder or a MODEL_DIR (their
      newest intact step is).
    read: As for `newest_intact`.

  Returns:
    (the step folder read, what `read` returned).
  """
  step_dir, value, skipped = newest_intact(step_folder.candidate_steps(path), read)
  if skipped:
    logging.warning(
      'Skipped damaged checkpoint step(s) %s; read the newest intact step, %s, instead.',
      [int(d.name) for d in skipped],
      step_dir,
    )
  return step_dir, value


def verify(step_dir: epath.Path, tree: Any) -> None:
  """Compares restored arrays (`tree`, e.g. {'params': ...}) with the step's checksums.

  Only the arrays in `tree` are compared, so a reader of the parameters alone need not load
  the optimizer state. A step saved without checksums (by an older version, as resume says)
  is read with a warning.

  Raises:
    DamagedCheckpointError: An array differs from its recorded checksum, or has none.
  """
  if not (step_dir / step_folder.CHECKSUMS).exists():
    logging.warning(
      '%s has no recorded checksums (written by an older version); read without verifying it.',
      step_dir,
    )
    return
  recorded = step_folder.read_checksums(step_dir)
  actual = integrity.inspect_state(tree).checksums
  wanted = {name: recorded.get(name) for name in actual}
  resume_checks.compare_checksums(step_dir.name, step_dir, wanted, actual)
  logging.info('Checkpoint step %s verified against its checksums.', step_dir.name)
