"""Core training settings checked by name before any work, each error with its fix.

Without this, `TRAIN_STEPS='abc'` or `BATCH_SIZE=0` fail deep inside TF or
optax with messages that never name the setting. `trainer.train` runs
`check_train_settings` first (and so before the run lock or any file in MODEL_DIR).
"""

import numbers

import gin

from pause_lm.pipeline import datasets as data_lib
from pause_lm.runtime import gin_utils
from pause_lm.data import preprocessors
from pause_lm.runtime import sharding
from pause_lm.training.settings import TrainSettings

# The trainer argument each macro of the run files feeds, for messages.
_FLAG_NAMES = {
  'train_steps': 'TRAIN_STEPS',
  'batch_size': 'BATCH_SIZE',
  'sequence_length': 'SEQUENCE_LENGTH',
  'num_microbatches': 'train.num_microbatches',
  'log_every_steps': 'train.log_every_steps',
  'eval_every_steps': 'EVAL_EVERY_STEPS',
}


# Raised here and by configurables' own checks, which gin runs before `train` starts.
SettingValueError = gin_utils.SettingValueError


def _positive_int(name: str, value) -> int:
  flag = _FLAG_NAMES.get(name, name)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise SettingValueError(
      f'{flag}={value!r} ({name}) must be an integer; set it with '
      f'--gin.{flag}=<int>, e.g. --gin.{flag}=100 (no quotes).'
    )
  if value <= 0:
    raise SettingValueError(
      f'{flag}={value} ({name}) must be > 0; set --gin.{flag} to a positive integer.'
    )
  return int(value)


def _resolve(value):
  """Follows gin macro references (`learning_rate = %LEARNING_RATE`)."""
  while isinstance(value, gin.config.ConfigurableReference):
    value = gin.query_parameter('%' + value.scoped_selector[: -len('/gin.macro')])
  return value


def configured_learning_rate():
  """The bound peak learning rate, or None when it is not bound."""
  try:
    return _resolve(gin.query_parameter('learning_rate_schedule.learning_rate'))
  except ValueError:
    return None


def task_num_pauses(task_name: str) -> int:
  """The most pauses a task (or any task of a mixture) adds to a prefix (0 if none).

  A random-M variant (`max_pauses`) can draw its largest M for any example.
  """
  task = data_lib.get_task(task_name)
  most = 0
  for member in getattr(task, 'tasks', None) or [task]:
    for step in member.preprocessors:
      if getattr(step, 'func', None) is preprocessors.append_pauses:
        most = max(most, step.keywords['variant'].largest)
  return most


def check_task_composition(task: str) -> None:
  """Fails when a run file composes TASK from BASE_TASK and NUM_PAUSES but TASK was set.

  gin/pauseft.gin builds TASK with `finetune_task` from BASE_TASK, NUM_PAUSES and
  PAUSE_PLACEMENT. A TASK given on the command line replaces that composition, so those
  settings would be silently ignored.
  """
  try:
    composed = gin.query_parameter('%TASK')
  except ValueError:
    return  # No TASK macro: the task was given directly.
  try:
    gin.query_parameter('%BASE_TASK')
  except ValueError:
    return  # No BASE_TASK: this run file takes TASK by name.
  is_composed = (
    isinstance(composed, gin.config.ConfigurableReference)
    and composed.configurable.name == 'finetune_task'
  )
  if not is_composed:
    raise SettingValueError(
      f'TASK={task!r} was set, but this run file (gin/pauseft.gin) composes TASK from '
      'BASE_TASK and NUM_PAUSES, which a TASK setting would silently ignore. '
      'Set --gin.BASE_TASK="\'squad\'" --gin.NUM_PAUSES=10 instead, or train a task '
      'variant by name with gin/stdft.gin and --gin.TASK="\'squad_pause10\'".'
    )


def check_train_settings(settings: TrainSettings) -> None:
  """Raises SettingValueError naming the first unusable core setting."""
  for name in (
    'train_steps',
    'batch_size',
    'sequence_length',
    'num_microbatches',
    'log_every_steps',
  ):
    _positive_int(name, getattr(settings, name))
  task, sequence_length = settings.task, settings.sequence_length
  eval_every_steps = settings.eval_every_steps
  learning_rate = configured_learning_rate()
  if learning_rate is not None and (
    isinstance(learning_rate, bool)
    or not isinstance(learning_rate, numbers.Real)
    or not learning_rate > 0
  ):
    raise SettingValueError(
      f'LEARNING_RATE={learning_rate!r} (learning_rate_schedule.'
      'learning_rate) must be a number > 0; set e.g. '
      '--gin.LEARNING_RATE=1e-4.'
    )
  sharding.check_batch_size(settings.batch_size, settings.mesh, settings.num_microbatches)
  if eval_every_steps is not None:
    _positive_int('eval_every_steps', eval_every_steps)
    if settings.make_evaluator is None:
      raise SettingValueError(
        f'EVAL_EVERY_STEPS={eval_every_steps} needs an evaluation to run: bind '
        '`train.make_evaluator = @periodic_evaluator` (gin/stdft.gin does), or set '
        '--gin.EVAL_EVERY_STEPS=None.'
      )
  check_task_composition(task)
  info = data_lib.task_info(task)
  num_pauses = task_num_pauses(task)
  if info.prefix_lm and num_pauses:
    lengths = data_lib.task_feature_lengths(info, sequence_length)
    if lengths['inputs'] <= num_pauses:
      raise SettingValueError(
        f'SEQUENCE_LENGTH={sequence_length} gives {task!r} a prefix of '
        f'{lengths["inputs"]} tokens (answers take {lengths["targets"]}), '
        f'no room for its {num_pauses} pauses plus a question. Raise '
        f'--gin.SEQUENCE_LENGTH above {lengths["targets"] + num_pauses} '
        '(well above: every token the pauses leave is the question).'
      )
