r"""Makes `tests/testdata/legacy_run/model_dir`: a small run by the code before the package
restructure (commit 87e4c3c), stopped mid-schedule, and `expected.json`, the losses that code
logged when it resumed the same folder to the end.

Run once, by hand, from the repository root at that commit:

  python tests/testdata/legacy_run/make_legacy_run.py

`tests/test_legacy_run.py` resumes a copy of model_dir with today's code and checks that the
numbers are the same and that its saved config.gin still parses and trains.
"""

import json
import pathlib
import shutil
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
MODEL_DIR = HERE / 'model_dir'
TOTAL_STEPS = 12
STOP_STEP = 6  # A SIGTERM after this step: the run saves and exits mid-schedule.
GIN_FILES = ['gin/quickstart.gin', 'gin/experiments/tiny_test_model.gin']
BINDINGS = [
  'ModelConfig.max_len = 64',
  'SEQUENCE_LENGTH = 32',
  'BATCH_SIZE = 8',
  'WARMUP_STEPS = 2',
  f'TRAIN_STEPS = {TOTAL_STEPS}',
  'train.log_every_steps = 1',
  'CheckpointConfig.save_every_steps = 100',
]


def _train(model_dir, stop_step=None):
  import gin  # pylint: disable=g-import-not-at-top
  from pause_lm import checkpointing  # pylint: disable=g-import-not-at-top
  from pause_lm import gin_utils  # pylint: disable=g-import-not-at-top
  from pause_lm import trainer  # pylint: disable=g-import-not-at-top

  if stop_step is not None:
    reached = checkpointing.PreemptionWatcher.reached
    checkpointing.PreemptionWatcher.reached = lambda self, step: (
      step == stop_step or reached(self, step)
    )
  gin.clear_config()
  gin_utils.parse_gin(GIN_FILES, [*BINDINGS, f"MODEL_DIR = '{model_dir}'"])
  result = trainer.train()
  if stop_step is not None:
    checkpointing.PreemptionWatcher.reached = reached
  return {int(step): float(metrics['loss']) for step, metrics in result.history}


def main():
  shutil.rmtree(MODEL_DIR, ignore_errors=True)
  first = _train(MODEL_DIR, stop_step=STOP_STEP)
  with tempfile.TemporaryDirectory() as scratch:
    resumed_dir = pathlib.Path(scratch) / 'resumed'
    shutil.copytree(MODEL_DIR, resumed_dir)
    resumed = _train(resumed_dir)
  # The folder's own path, as config.gin and Orbax's commit markers record it, becomes the
  # one the README uses: nothing committed names this machine's paths.
  for path in MODEL_DIR.rglob('*'):
    if path.name in ('config.gin', 'commit_success.txt'):
      path.write_text(path.read_text().replace(str(MODEL_DIR), 'runs/legacy_run'))
  expected = {
    'stop_step': STOP_STEP,
    'total_steps': TOTAL_STEPS,
    'gin_files': GIN_FILES,
    'bindings': BINDINGS,
    'losses_before_stop': first,
    'losses_after_resume': resumed,
  }
  (HERE / 'expected.json').write_text(json.dumps(expected, indent=2) + '\n')
  print(json.dumps(expected, indent=2))


if __name__ == '__main__':
  main()
