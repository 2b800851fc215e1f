"""The layout of a MODEL_DIR that readers without JAX need: where the checkpoints are, which
steps are saved.

The checkpointer writes this layout (pause_lm.checkpointing), and the experiment runner reads
it to tell finished runs from unfinished ones before JAX is imported (pause_lm.grid.runner);
one definition keeps the two from disagreeing. Only etils.epath here, so local folders and
cloud buckets read the same.
"""

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
