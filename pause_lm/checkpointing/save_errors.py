"""Reporting a failed checkpoint write once, with its cause and the step to resume from.

A background save fails in Orbax's thread; the run hears of it at its next check. After that,
Orbax raises the same error again from every later call (wait, close), and those echoes must
not bury the first report, which names the cause and the fix (docs/reliability.md, "Failures
surface at once").
"""

from collections.abc import Callable, Iterable

from absl import logging
from etils import epath

from pause_lm.checkpointing import errors
from pause_lm.checkpointing import step_folder


class SaveErrorReporter:
  """Turns a write error into CheckpointSaveError, then mutes its repeats."""

  def __init__(self, directory: epath.Path):
    self._directory = directory
    self.failed = False

  def error(
    self, error: Exception, saved_steps: Iterable[int], step: int | None = None
  ) -> errors.CheckpointSaveError:
    """The error to raise for `error`, noticed at `step` (None: while checking in between).

    Args:
      error: What Orbax raised.
      saved_steps: The steps Orbax lists; the newest one whose state is complete (not `step`,
        the one that failed) is where a rerun resumes.
      step: The step being saved when the error was noticed, if any.
    """
    self.failed = True
    good = [
      s
      for s in saved_steps
      if s != step and (self._directory / str(s) / step_folder.STATE).exists()
    ]
    return errors.CheckpointSaveError(
      f'Writing a checkpoint to {self._directory} failed'
      f'{"" if step is None else f" (noticed at step {step})"}: '
      f'{type(error).__name__}: {error}\n'
      f'Training stopped. The newest complete checkpoint is step '
      f'{max(good) if good else None}. Fix the cause (e.g. free disk '
      'space, check write permission), then rerun the same command to '
      'resume from it.'
    )

  def quiet_after_failure(self, action: Callable[[], None]) -> None:
    """Runs `action`; once a save failure was reported, its echoes are logged, not raised."""
    if not self.failed:
      action()
      return
    try:
      action()
    except Exception as e:  # pylint: disable=broad-except
      logging.debug('Ignored after a failed save: %r', e)
