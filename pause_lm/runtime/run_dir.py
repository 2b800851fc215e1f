"""The layout of a MODEL_DIR that readers without JAX need: where the checkpoints are, which
steps are saved; and the check that an output folder can be written, before any work.

The checkpointer writes this layout (pause_lm.checkpointing), and the experiment runner reads
it to tell finished runs from unfinished ones before JAX is imported (pause_lm.grid.runner);
one definition keeps the two from disagreeing. Only etils.epath here, so local folders and
cloud buckets read the same.
"""

import os
import uuid

from etils import epath

# MODEL_DIR/checkpoints/{step}/... (Orbax's step folders).
CHECKPOINTS_DIR = 'checkpoints'


def checkpoints_dir(model_dir: epath.PathLike) -> epath.Path:
  """The folder that holds a run's checkpoint steps."""
  return epath.Path(model_dir) / CHECKPOINTS_DIR


def step_numbers(folder: epath.PathLike) -> list[int]:
  """The steps saved in a checkpoints folder, ascending; [] if it does not exist.

  Orbax writes a step into a temporary folder whose name is not a number, so a step that is
  still being written, or was cut off, is never listed.
  """
  folder = epath.Path(folder)
  if not folder.exists():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def latest_step(model_dir: epath.PathLike) -> int | None:
  """The newest complete checkpoint step of a run, or None before its first save."""
  steps = step_numbers(checkpoints_dir(model_dir))
  return steps[-1] if steps else None


class FolderNotWritableError(ValueError):
  """A folder a run must write (MODEL_DIR, EVAL_OUTPUT_DIR) is a file or cannot be written."""


def _blocking_file(path: epath.Path) -> epath.Path | None:
  """The file at `path` or at the nearest existing folder above it, if that is a file."""
  for candidate in (path, *path.parents):
    if candidate.exists():
      return None if candidate.is_dir() else candidate
  return None


def ensure_writable_folder(path: epath.PathLike, setting: str) -> epath.Path:
  """Creates the folder `path` if needed and proves it writable, or says which setting to fix.

  Called before a run writes anything there (the run lock calls it for MODEL_DIR), so that a
  MODEL_DIR that is a file, sits under a file, or cannot be written stops with the setting's
  name and the fix instead of a storage library's traceback after minutes of set-up. Writing
  (and removing) a small probe file is the only test that holds everywhere: permission bits
  say nothing about root, immutable folders, read-only mounts or object-store permissions.

  Args:
    path: The folder (local or a cloud path).
    setting: The gin macro that sets it, for the message (e.g. 'MODEL_DIR').

  Returns:
    The folder, which now exists.

  Raises:
    FolderNotWritableError: It is a file, is under a file, or cannot be created or written.
  """
  path = epath.Path(path)
  blocking = _blocking_file(path)
  if blocking is not None:
    where = 'is a file' if blocking == path else f'is under {blocking}, which is a file'
    raise FolderNotWritableError(
      f'{setting}={os.fspath(path)} {where}, not a folder. Set --gin.{setting} to a folder '
      '(a new or an existing one), or move that file away.'
    )
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.write_check.{os.getpid()}.{uuid.uuid4().hex}'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise FolderNotWritableError(
      f'{setting}={os.fspath(path)} cannot be written ({type(e).__name__}: {e}). Give this '
      f'user write permission there (e.g. chmod u+w), or set --gin.{setting} to a writable '
      'folder.'
    ) from e
  return path
