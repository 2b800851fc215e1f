"""lm-eval is an optional dependency: imported here, on first use, with the install command."""

import importlib
import os

INSTALL = "pip install -e '.[harness]'"


class LmEvalMissingError(ImportError):
  """lm-eval is not installed."""


def require():
  """The `lm_eval` module; offline `datasets` unless the user set HF_DATASETS_OFFLINE."""
  # Without it, `datasets` makes a network call for every local JSONL dataset.
  os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
  try:
    return importlib.import_module('lm_eval')
  except ImportError as e:
    raise LmEvalMissingError(
      f'The lm-evaluation-harness backend needs lm-eval, which is not installed ({e}). '
      f'Install it with: {INSTALL}  (lm-eval==0.4.13, without torch).'
    ) from e
