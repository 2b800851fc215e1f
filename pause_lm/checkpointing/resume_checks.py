"""The checks that make a resumed or warm-started run fail loudly instead of training wrong.

Each compares what a checkpoint step holds with what this run expects: the data settings (a
different task, batch or sequence length would continue from a position in other data), the
parameter names and shapes (a wrong model file), and the recorded checksums (damaged bytes).
"""

from typing import Any

from etils import epath
import jax

from pause_lm.checkpointing import errors
from pause_lm.checkpointing import integrity


def check_run_settings(
  directory: epath.PathLike, saved: dict[str, Any], run_info: dict[str, Any]
) -> None:
  """Raises ValueError naming every setting in `run_info` that differs from `saved`."""
  changed = {k: (saved.get(k), v) for k, v in run_info.items() if saved.get(k) != v}
  if changed:
    details = ', '.join(
      f'{k}: checkpoint {old!r}, now {new!r}' for k, (old, new) in sorted(changed.items())
    )
    raise ValueError(
      f'{directory} holds a run with different data settings '
      f'({details}). Resuming would continue from a data position that '
      'belongs to other data. Restore the original settings, or use a '
      'new MODEL_DIR (with INIT_CHECKPOINT to start from these weights).'
    )


def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Every array's shape by its key path (`['layers_0']['mlp']...`), for arrays and metadata."""
  return {
    jax.tree_util.keystr(p): tuple(m.shape)
    for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]
    if hasattr(m, 'shape')
  }


def differences(saved: dict[str, tuple[int, ...]], wanted: dict[str, tuple[int, ...]]) -> list[str]:
  """Every parameter missing from, extra in, or shaped differently in `saved`."""
  lines = []
  for name in sorted(set(saved) | set(wanted)):
    if name not in saved:
      lines.append(f'params{name}: missing from the checkpoint, model {wanted[name]}')
    elif name not in wanted:
      lines.append(f'params{name}: in the checkpoint {saved[name]}, not in the model')
    elif saved[name] != wanted[name]:
      lines.append(f'params{name}: checkpoint {saved[name]}, model {wanted[name]}')
  return lines


def check_shapes(saved_tree: Any, abstract_tree: Any, where: str) -> None:
  """Names every parameter missing from, extra in or shaped differently in the checkpoint (a
  resume needs exactly the model's parameters).

  Raises:
    CheckpointMismatchError: They differ; the checkpoint itself is intact.
  """
  problems = differences(shapes(saved_tree), shapes(abstract_tree))
  if problems:
    raise errors.CheckpointMismatchError(
      f'The checkpoint at {where} does not fit this model ({len(problems)} difference(s)):\n  '
      + '\n  '.join(problems[:10])
      + ('\n  ...' if len(problems) > 10 else '')
      + '\nThe checkpoint is intact (nothing was moved): use the model gin file (and '
      'NUM_EMBEDDINGS) it was trained with, or a new MODEL_DIR with INIT_CHECKPOINT and '
      '--gin.WarmStartConfig.allow_partial=True to start from its weights deliberately.'
    )


def check_checksums(step: int, where: epath.PathLike, recorded: dict[str, int], state: Any) -> None:
  """Raises DamagedCheckpointError if the restored `state` differs from its checksums."""
  compare_checksums(step, where, recorded, integrity.inspect_state(state).checksums)


def compare_checksums(
  step: int | str, where: epath.PathLike, recorded: dict[str, int], actual: dict[str, int]
) -> None:
  """Raises DamagedCheckpointError naming the arrays whose checksums differ from `recorded`."""
  mismatched = integrity.mismatches(recorded, actual)
  if mismatched:
    raise errors.DamagedCheckpointError(
      f'Checkpoint step {step} ({where}) is damaged: {len(mismatched)} '
      f'array(s) differ from their recorded checksums: '
      f'{", ".join(mismatched[:5])}{" ..." if len(mismatched) > 5 else ""}.'
    )
