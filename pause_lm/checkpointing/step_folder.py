"""One checkpoint step folder: finding it, and reading or writing its items outside a run.

A step folder (`MODEL_DIR/checkpoints/STEP`) holds one subfolder per item: `state` (step,
params, optimizer state), `data` (the input position), `run` (the data settings) and
`checksums`. What inspects, converts or evaluates a checkpoint (`pause_lm.checkpoints verify`,
`pause_lm.hf.convert`, `pause_lm.evaluation`) reads and writes items here, so Orbax stays
inside this package and every reader agrees with the writer on the layout.
"""

import os
from typing import Any

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from pause_lm.checkpointing import errors
from pause_lm.checkpointing import integrity
from pause_lm.runtime import run_dir

STATE, DATA, RUN, CHECKSUMS = 'state', 'data', 'run', 'checksums'


def absolute_path(path: epath.PathLike) -> epath.Path:
  """Orbax refuses relative paths; users write `--gin.MODEL_DIR="'runs/x'"`. URLs pass as is."""
  text = os.fspath(path)
  return epath.Path(text if '://' in text else os.path.abspath(text))


def candidate_steps(path: epath.PathLike) -> list[epath.Path]:
  """The step folders that `path` may mean, newest first.

  A step folder (`MODEL_DIR/checkpoints/1000`) means itself alone; a checkpoints folder or a
  MODEL_DIR means each of its complete steps, newest first (a reader falls back through them
  while they are damaged: pause_lm.checkpointing.verified_read).

  Raises:
    FileNotFoundError: `path` holds no checkpoint step.
  """
  path = absolute_path(path)
  if (path / STATE).exists():
    return [path]
  if (path / run_dir.CHECKPOINTS_DIR).exists():
    path = path / run_dir.CHECKPOINTS_DIR
  steps = [step for step in run_dir.step_numbers(path) if (path / str(step) / STATE).exists()]
  if not steps:
    raise FileNotFoundError(
      f'INIT_CHECKPOINT={str(path)!r} holds no checkpoint: give a '
      'MODEL_DIR, its checkpoints/ folder, or one step folder in it.'
    )
  return [path / str(step) for step in reversed(steps)]


def resolve_checkpoint(path: epath.PathLike) -> epath.Path:
  """The step folder that `path` means: itself if a step, else the latest complete step of a
  checkpoints folder or MODEL_DIR (unverified: readers use `verified_read`)."""
  return candidate_steps(path)[0]


def state_metadata(step_dir: epath.Path) -> Any:
  """The saved state's tree of array metadata (shape, dtype), read without loading arrays.

  Raises:
    DamagedCheckpointError: The metadata cannot be read.
  """
  try:
    return ocp.PyTreeCheckpointer().metadata(step_dir / STATE).item_metadata.tree
  except Exception as e:  # pylint: disable=broad-except
    raise errors.unreadable(step_dir, e) from e


def param_metadata(step_dir: epath.Path) -> Any:
  """The metadata of the saved parameters alone ({} if the state holds none)."""
  return state_metadata(step_dir).get('params', {})


def restore_numpy_state(step_dir: epath.Path) -> Any:
  """The whole saved state as host NumPy arrays: readable on any machine, whatever the mesh
  that wrote it, which is what checking a step on its own needs."""
  checkpointer = ocp.PyTreeCheckpointer()
  path = step_dir / STATE
  tree = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def _read_json(path: epath.Path) -> Any:
  """An item written as JSON; one that cannot be read makes its step damaged."""
  try:
    return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.unreadable(path.parent, e) from e


def read_checksums(step_dir: epath.Path) -> dict[str, int]:
  """The checksums recorded with the step (see pause_lm.checkpointing.integrity)."""
  return _read_json(step_dir / CHECKSUMS)


def read_run_info(step_dir: epath.Path) -> dict[str, Any]:
  """The data settings the step's run trained with ({} if it has none: an older version, or a
  converted checkpoint)."""
  if not (step_dir / RUN).exists():
    return {}
  return dict(_read_json(step_dir / RUN))


def save_params(step_dir: epath.Path, params: Any) -> None:
  """Writes `params` as the step's state (parameters only, as INIT_CHECKPOINT reads them) with
  their checksums, so its readers verify it as they verify a run's steps, and returns once it
  is complete."""
  state = {'params': params}
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(step_dir / STATE, state)
  checkpointer.wait_until_finished()
  checksums = integrity.inspect_state(state).checksums
  ocp.Checkpointer(ocp.JsonCheckpointHandler()).save(
    step_dir / CHECKSUMS, args=ocp.args.JsonSave(checksums)
  )
