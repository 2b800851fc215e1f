"""The errors a checkpoint raises, one class per cause, so `python -m pause_lm.train` can end
each with its own fix as the last lines instead of a traceback (pause_lm/train.py)."""

from etils import epath


class UnsafeStateError(FloatingPointError):
  """The state to save is not finite or its parameters exploded."""


class DamagedCheckpointError(RuntimeError):
  """A saved step cannot be read or does not match its recorded checksums."""


class CheckpointMismatchError(ValueError):
  """An intact checkpoint whose parameters do not fit the model (a wrong model file)."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint (usually a background save) could not be written."""


def unreadable(where: epath.Path, error: Exception) -> DamagedCheckpointError:
  """The error for a step Orbax cannot read: its first line names the cause, the rest of
  Orbax's message (often a long tensorstore spec) would bury it."""
  first_line = str(error).strip().splitlines()[0] if str(error).strip() else ''
  return DamagedCheckpointError(
    f'Checkpoint step {where.name} ({where}) cannot be read (damaged or '
    f'truncated): {type(error).__name__}: {first_line[:300]}'
  )
