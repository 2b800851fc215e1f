"""A run made by the code before the package restructure still resumes, to the same numbers.

`testdata/legacy_run/model_dir` was written by commit 87e4c3c (flat `pause_lm/` modules) and
stopped by a SIGTERM at step 6 of 12; `expected.json` holds the losses that code logged when it
resumed the same folder to step 12 (`testdata/legacy_run/make_legacy_run.py` made both). Users
resume such folders with today's commands, and rerun their saved `config.gin`, whose imports name
the old module paths (`import pause_lm.trainer as pause_lm5`).
"""

import json
import pathlib
import shutil
import sys
import warnings

import gin
import numpy as np
import pytest

import pause_lm

from pause_lm.runtime import gin_utils
from pause_lm.training import trainer

LEGACY = pathlib.Path(__file__).parent / 'testdata' / 'legacy_run'
EXPECTED = json.loads((LEGACY / 'expected.json').read_text())
# Same machine kind, same XLA: the numbers agree to float32 rounding (in practice bit for bit).
RTOL = 1e-6


@pytest.fixture
def legacy_model_dir(tmp_path, in_repo_root):
  del in_repo_root
  model_dir = tmp_path / 'legacy_run'
  shutil.copytree(LEGACY / 'model_dir', model_dir)
  return model_dir


def _resumed_losses(result) -> dict[int, float]:
  return {int(step): float(metrics['loss']) for step, metrics in result.history}


def _check_resumed(result):
  expected = {int(k): v for k, v in EXPECTED['losses_after_resume'].items()}
  assert result.step == EXPECTED['total_steps']
  losses = _resumed_losses(result)
  assert sorted(losses) == sorted(expected), 'the run did not resume at the saved step'
  np.testing.assert_allclose(
    [losses[s] for s in sorted(expected)], [expected[s] for s in sorted(expected)], rtol=RTOL
  )


def test_a_run_saved_before_the_restructure_resumes_to_the_same_losses(legacy_model_dir):
  gin.clear_config()
  gin_utils.parse_gin(
    EXPECTED['gin_files'], [*EXPECTED['bindings'], f"MODEL_DIR = '{legacy_model_dir}'"]
  )
  _check_resumed(trainer.train())


def test_its_saved_config_gin_still_parses_and_trains_with_deprecation_warnings(
  legacy_model_dir, monkeypatch
):
  config = (legacy_model_dir / 'config.gin').read_text()
  assert 'import pause_lm.trainer' in config  # The old module paths, as that code wrote them.
  for old in ('pause_lm.trainer', 'pause_lm.optimizer', 'pause_lm.sharding'):
    # Imported afresh, so they warn here even if an earlier test imported them.
    monkeypatch.delitem(sys.modules, old, raising=False)
    monkeypatch.delattr(pause_lm, old.rpartition('.')[2], raising=False)
  gin.clear_config()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    gin_utils.parse_gin(
      [str(legacy_model_dir / 'config.gin')], [f"MODEL_DIR = '{legacy_model_dir}'"]
    )
  moved = {
    str(w.message).split(' has moved')[0] for w in caught if w.category is DeprecationWarning
  }
  assert {'pause_lm.trainer', 'pause_lm.optimizer', 'pause_lm.sharding'} <= moved
  _check_resumed(trainer.train())
