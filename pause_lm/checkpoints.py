r"""Checks every checkpoint step of a run against its recorded checksums.

  python -m pause_lm.checkpoints verify MODEL_DIR

Prints one line per step (intact, damaged and why, or written without
checksums by an older version) and the newest intact step; exits 1 if any
step is damaged. It reads each step fully, on this machine's CPU or
accelerator, with the same checks a resumed run makes (docs/reliability.md).
Nothing is moved or changed.
"""

from collections.abc import Sequence
import sys

from absl import app
from etils import epath

from pause_lm.checkpointing import checkpointer as checkpointing
from pause_lm.checkpointing import integrity
from pause_lm.checkpointing import step_folder
from pause_lm.runtime import console

INTACT, DAMAGED, UNVERIFIED = 'intact', 'DAMAGED', 'no checksums'


def checkpoints_folder(path: epath.PathLike) -> epath.Path:
  path = checkpointing.absolute_path(path)
  return path / 'checkpoints' if (path / 'checkpoints').exists() else path


def verify_step(step_dir: epath.Path) -> tuple[str, str]:
  """(INTACT, DAMAGED or UNVERIFIED, details) for one step folder."""
  if not (step_dir / step_folder.CHECKSUMS).exists():
    return UNVERIFIED, 'written without checksums; cannot be verified'
  try:
    recorded = step_folder.read_checksums(step_dir)
    actual = integrity.inspect_state(step_folder.restore_numpy_state(step_dir)).checksums
  except Exception as e:  # pylint: disable=broad-except
    first_line = (str(e).strip().splitlines() or [''])[0]
    return DAMAGED, f'cannot be read: {type(e).__name__}: {first_line[:300]}'
  mismatched = integrity.mismatches(recorded, actual)
  if mismatched:
    return DAMAGED, (
      f'{len(mismatched)} array(s) differ from their recorded '
      f'checksums: {", ".join(mismatched[:5])}'
    )
  return INTACT, f'{len(actual)} arrays match their checksums'


def verify(model_dir: epath.PathLike) -> tuple[list[str], bool, int | None]:
  """(report lines, whether every step is readable, newest intact step)."""
  folder = checkpoints_folder(model_dir)
  steps = checkpointing.step_numbers(folder)[::-1]
  if not steps:
    return [f'{folder}: no checkpoint steps.'], True, None
  lines, ok, newest = [], True, None
  for step in steps:
    status, details = verify_step(folder / str(step))
    lines.append(f'step {step}: {status}: {details}')
    ok = ok and status != DAMAGED
    if newest is None and status != DAMAGED:
      newest = step
  lines.append(f'Newest usable step: {newest}.' if newest is not None else 'No usable step.')
  return lines, ok, newest


def main(argv: Sequence[str]) -> None:
  if len(argv) != 3 or argv[1] != 'verify':
    raise app.UsageError('Usage: python -m pause_lm.checkpoints verify MODEL_DIR')
  lines, ok, _ = verify(argv[2])
  print('\n'.join(lines))
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  app.run(console.report_errors(main))
