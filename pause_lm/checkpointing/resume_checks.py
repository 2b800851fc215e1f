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


def check_shapes(saved_tree: Any, abstract_tree: Any, where: str, prefix: str = '') -> None:
  """Names every parameter whose saved shape differs from the model's (a resume needs them all;
  extra saved ones are left to Orbax)."""
  saved = shapes(saved_tree)
  wanted = shapes(abstract_tree)
  problems = [
    f'{prefix}{k}: checkpoint {saved.get(k)}, model {v}'
    for k, v in sorted(wanted.items())
    if saved.get(k) != v
  ]
  if problems:
    raise ValueError(
      f'The checkpoint at {where} does not fit this model:\n  '
      + '\n  '.join(problems[:10])
      + ('\n  ...' if len(problems) > 10 else '')
      + '\nUse the model gin file (and NUM_EMBEDDINGS) it was trained with.'
    )


def check_checksums(step: int, where: epath.PathLike, recorded: dict[str, int], state: Any) -> None:
  """Raises DamagedCheckpointError if the restored `state` differs from its checksums."""
  mismatched = integrity.mismatches(recorded, integrity.inspect_state(state).checksums)
  if mismatched:
    raise errors.DamagedCheckpointError(
      f'Checkpoint step {step} ({where}) is damaged: {len(mismatched)} '
      f'array(s) differ from their recorded checksums: '
      f'{", ".join(mismatched[:5])}{" ..." if len(mismatched) > 5 else ""}.'
    )
