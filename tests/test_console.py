"""What the commands print: a quiet console, one progress line per interval, one scale per metric.

The end-to-end tests run the real commands in subprocesses (the console is what a user sees)
on the quickstart shrunk to a model that trains in milliseconds per step.
"""

import importlib
import io
import logging
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint  # noqa: F401  (imported for _record's module lookup)
import pytest
import seqio  # noqa: F401  (imported for _record's module lookup)

from pause_lm.runtime import console
from pause_lm.training import train_state

from conftest import REPO, read_scalars, run_python

# The console may show, per log interval and per checkpoint save, at most this many lines.
LINES_PER_INTERVAL = 1
LINES_PER_SAVE = 0
# Lines a run prints once: the model line and the end-of-run summary.
LINES_PER_RUN = 2
PROGRESS = re.compile(
  r'step +(\d+)/(\d+) \( *\d+%\) \| loss [\d.]+ \| token acc [\d.]+% \| '
  r'[\d,]+ tokens/s \| .*elapsed, ETA '
)


def _env_without_tf_log_level():
  """The command's own default of TF_CPP_MIN_LOG_LEVEL is under test."""
  return {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}


def _run(module, *args, pythonpath=None):
  return run_python('-m', module, *args, env=_env_without_tf_log_level(), pythonpath=pythonpath)


def _event_tags(model_dir) -> set[str]:
  return set(read_scalars(model_dir))


def test_quickstart_console_has_one_progress_line_per_interval(tmp_path, small_run_flags):
  steps, log_every, save_every = 6, 2, 3
  result = _run(
    'pause_lm.train',
    '--gin_file=gin/quickstart.gin',
    *small_run_flags,
    f"--gin.MODEL_DIR='{tmp_path}'",
    f'--gin.TRAIN_STEPS={steps}',
    f'--gin.train.log_every_steps={log_every}',
    f'--gin.CheckpointConfig.save_every_steps={save_every}',
  )
  lines = (result.stdout + result.stderr).splitlines()
  text = '\n'.join(lines)
  intervals, saves = steps // log_every, steps // save_every
  assert len(lines) <= (LINES_PER_RUN + LINES_PER_INTERVAL * intervals + LINES_PER_SAVE * saves), (
    text
  )
  progress = [tuple(map(int, m.groups())) for m in map(PROGRESS.search, lines) if m]
  assert progress == [(2, 6), (4, 6), (6, 6)], text
  assert re.search(
    rf'Trained to step 6/6 in .*, final loss [\d.]+; checkpoint '
    rf'{tmp_path}/checkpoints/6, config {tmp_path}/config.gin',
    text,
  ), text
  # No Orbax INFO, TensorFlow banner or warning that does not apply to this run.
  for noise in (
    'orbax',
    'checkpoint_manager',
    'oneDNN',
    'InitializeLog',
    'cuda',
    'uncached FunctionDataset',
    'steps_per_sec=',
    'Setting work unit notes',
  ):
    assert noise not in text, noise
  # One scale per name: the training accuracy is `token_accuracy` (a percentage, like every
  # evaluation accuracy); z_loss only with a non-zero coefficient. The README lists them all.
  tags = _event_tags(tmp_path)
  assert tags == {
    'loss',
    'token_accuracy',
    'weighted_tokens',
    'pause_share',
    'grad_norm',
    'learning_rate',
    'steps_per_sec',
    'tokens_per_sec',
  }
  readme = (REPO / 'README.md').read_text()
  for tag in tags | {'z_loss', 'mfu', 'eval/{metric}'}:
    assert f'`{tag}`' in readme, tag


def test_show_loads_a_custom_task_module_from_a_gin_file(tmp_path):
  text = (REPO / 'docs' / 'custom_tasks.md').read_text()
  (tmp_path / 'my_tasks.py').write_text(re.search(r'```python\n(.*?)```', text, re.S)[1])
  (tmp_path / 'my_tasks.gin').write_text(re.search(r'```gin\n(.*?)```', text, re.S)[1])
  result = _run(
    'pause_lm.show',
    f'--gin_file={tmp_path / "my_tasks.gin"}',
    '--task=my_sum_pause10',
    '--n=1',
    '--sequence_length=64',
    pythonpath=tmp_path,
  )
  assert result.stdout.startswith('--- example 0:'), result.stdout
  assert '10 <pause> in inputs' in result.stdout


class _Embedding(nn.Module):
  """Logits straight from an embedding of the input token: the smallest trainable model."""

  config: Any

  @nn.compact
  def __call__(self, tokens, *unused_features, deterministic=True):
    del unused_features, deterministic
    return nn.Embed(8, 8)(tokens)


@pytest.mark.parametrize('z_loss', [0.0, 1e-4])
def test_token_accuracy_is_a_percentage_and_z_loss_logged_only_when_used(z_loss):
  model = _Embedding(config=type('Config', (), {'dropout_rate': 0.0}))
  tokens = jnp.array([[1, 2, 3, 4]])
  params = model.init(jax.random.key(0), tokens)['params']
  predicted = jnp.argmax(model.apply({'params': params}, tokens), axis=-1)
  step = train_state.make_train_step(
    model,
    optax.sgd(0.0),
    optax.constant_schedule(0.0),
    (),
    pause_id=7,
    dropout_seed=0,
    z_loss=z_loss,
  )
  state = {
    'step': jnp.zeros((), jnp.int32),
    'params': params,
    'opt_state': optax.sgd(0.0).init(params),
  }
  # The first two targets are what the model predicts, the last two are not.
  targets = predicted.at[0, 2:].set((predicted[0, 2:] + 1) % 7)
  batch = {
    'decoder_input_tokens': tokens,
    'decoder_target_tokens': targets,
    'decoder_loss_weights': jnp.ones_like(tokens),
  }
  _, metrics = step(state, batch)
  assert float(metrics['token_accuracy']) == pytest.approx(50.0)
  assert 'accuracy' not in metrics
  assert ('z_loss' in metrics) == bool(z_loss)


def _record(module, level, message='message'):
  """A log record as if logged from `module`'s source file (imported here: alone, this file
  must not depend on another test having imported it)."""
  path = importlib.import_module(module).__file__
  return logging.LogRecord('absl', level, path, 1, message, (), None)


def test_library_info_is_dropped_and_ours_kept():
  quiet = console.SourceFilter(show_library_info=False, logger_levels={})
  assert not quiet.filter(_record('orbax.checkpoint', logging.INFO))
  assert not quiet.filter(_record('seqio', logging.INFO))
  assert quiet.filter(_record('orbax.checkpoint', logging.WARNING))
  assert quiet.filter(_record('pause_lm.training.trainer', logging.INFO))
  assert quiet.filter(_record(__name__, logging.INFO))  # a user's own module
  verbose = console.SourceFilter(show_library_info=True, logger_levels={})
  assert verbose.filter(_record('orbax.checkpoint', logging.INFO))


def test_logger_levels_match_the_module_a_record_comes_from():
  # Orbax logs through absl's one 'absl' logger: a level for 'orbax' must still apply.
  chatty = console.SourceFilter(show_library_info=False, logger_levels={'orbax': 'INFO'})
  assert chatty.filter(_record('orbax.checkpoint', logging.INFO))
  assert not chatty.filter(_record('seqio', logging.INFO))
  silent = console.SourceFilter(
    show_library_info=True, logger_levels={'orbax': 'ERROR', 'pause_lm': 'WARNING'}
  )
  assert not silent.filter(_record('orbax.checkpoint', logging.WARNING))
  assert not silent.filter(_record('pause_lm.training.trainer', logging.INFO))
  assert silent.filter(_record('seqio', logging.INFO))


def test_warnings_that_do_not_apply_are_dropped():
  quiet = console.SourceFilter(show_library_info=True, logger_levels={})
  assert not quiet.filter(
    _record('seqio', logging.WARNING, 'Using an uncached FunctionDataset for training is not ...')
  )
  assert not quiet.filter(
    _record('orbax.checkpoint', logging.WARNING, 'Metadata file does not exist: %s')
  )
  assert quiet.filter(_record('seqio', logging.WARNING, 'Some other warning'))


def test_eta_follows_a_moving_average_of_the_step_rate():
  reporter = console.ProgressReporter(100, smoothing=0.5, live=False)
  reporter.update_rate(1.0)
  assert reporter.eta_seconds(10) == pytest.approx(90.0)
  reporter.update_rate(3.0)  # The average moves halfway: 2 steps/s.
  assert reporter.eta_seconds(20) == pytest.approx(40.0)
  line = reporter.line(
    20, {'loss': 2.5, 'token_accuracy': 41.25, 'tokens_per_sec': 12345.0, 'mfu': 0.4}, elapsed=75.0
  )
  assert line == (
    'step  20/100 ( 20%) | loss 2.5000 | token acc 41.2% | 12,345 tokens/s | '
    'MFU 40.0% | 1:15 elapsed, ETA 0:40'
  )


def test_terminal_bar_is_redrawn_in_place_and_ended_before_a_log_line():
  stream = io.StringIO()
  reporter = console.ProgressReporter(10, live=True, stream=stream)
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.INFO)
  try:
    reporter.report(5, {'loss': 1.0, 'steps_per_sec': 2.0})
    reporter.report(10, {'loss': 0.5, 'steps_per_sec': 2.0})
  finally:
    logger.setLevel(level)
  assert stream.getvalue().count('\r') == 2 and '\n' not in stream.getvalue()
  assert '10/10' in stream.getvalue() and 'loss 0.5000' in stream.getvalue()
  # A log line that passes the filter starts on a line of its own.
  console.SourceFilter(show_library_info=False, logger_levels={}).filter(
    _record('pause_lm.training.trainer', logging.INFO)
  )
  assert stream.getvalue().endswith('\n')


def test_quiet_tensorflow_import_hides_file_descriptor_2_and_restores_it(tmp_path):
  # A stand-in `tensorflow` that prints a banner to file descriptor 2 as it loads.
  (tmp_path / 'tensorflow.py').write_text('import os\nos.write(2, b"banner\\n")\n')
  script = (
    'import os, sys\n'
    f'sys.path.insert(0, {str(tmp_path)!r})\n'
    'from pause_lm.runtime import console\n'
    'console.quiet_tensorflow_import()\n'
    'assert "tensorflow" in sys.modules\n'
    'os.write(2, b"after\\n")\n'
  )
  env = _env_without_tf_log_level()
  result = run_python('-c', script, env=env, timeout=60)
  assert result.stderr == 'after\n'
  # TF_CPP_MIN_LOG_LEVEL=0 asks for TensorFlow's C++ logs: nothing is hidden.
  result = run_python(
    '-c', script, env={**env, 'TF_CPP_MIN_LOG_LEVEL': '0'}, timeout=60, check=False
  )
  assert result.stderr == 'banner\nafter\n'
