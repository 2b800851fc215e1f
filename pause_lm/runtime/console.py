"""What a pause-lm command prints: a quiet start, our own log lines, one progress line.

Every command (train, evaluate, show, summary, experiments) shows by default:
- its own INFO lines and every library's warnings and errors, except warnings that never
  apply to a pause-lm run (`_NOT_APPLICABLE`);
- while training, one line per log interval (`ProgressReporter`): step/total, loss, token
  accuracy, tokens/s, MFU, elapsed time and an ETA from a moving average of the step rate; a
  tqdm-style bar rewritten in place when stderr is a terminal;
- one summary line at the end of a training run (`run_summary`);
- its own errors as their message, without a traceback, and exit status 1 (`report_errors`).

Libraries' INFO lines (Orbax, TensorFlow, seqio, JAX, clu's metric lines) are dropped unless
asked for: `--verbosity=0` shows everything, `--logger_levels=orbax:INFO,clu:INFO` only those
libraries (`clu:INFO` prints every metric of every log interval). Most libraries log through
absl's one `absl` logger, so `--logger_levels` names are matched against the module a record
comes from (`orbax.checkpoint._src...`), not only against the logger's name.

TensorFlow prints its C++ start-up lines (oneDNN, CUDA stubs) before any flag is parsed, once
per shared library, whatever TF_CPP_MIN_LOG_LEVEL says; `quiet_tensorflow_import` hides them.
Importing this module sets TF_CPP_MIN_LOG_LEVEL=3 unless the environment sets it; set it to 0
to see TensorFlow's C++ logs, start-up lines included.
"""

from collections.abc import Callable, Sequence
import functools
import linecache
import logging as py_logging
import os
import sys
import sysconfig
import time
import traceback
from typing import Mapping, TextIO

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# Library warnings that never apply to a pause-lm run: (module prefix, start of the message).
_NOT_APPLICABLE = (
  # The trainer saves the input iterator's position (tf.data's shuffle buffer included) in
  # every checkpoint, so a restart never replays data: the risk this warns of is not ours.
  ('seqio', 'Using an uncached FunctionDataset for training'),
  # The evaluator pads every batch to fixed widths on purpose: one compiled program, results
  # independent of which rows share a batch (pause_lm/evaluation/evaluator.py).
  ('seqio', 'Given sequence lengths are longer than necessary'),
  # An optional file of the checkpoint's folder; Orbax reads the checkpoint without it.
  ('orbax', 'Metadata file does not exist'),
)
_THIRD_PARTY_ROOTS = tuple(
  os.path.join(os.path.abspath(p), '')
  for p in {sysconfig.get_paths()['stdlib'], sysconfig.get_paths()['platstdlib']}
)
_THIRD_PARTY_FOLDERS = (f'{os.sep}site-packages{os.sep}', f'{os.sep}dist-packages{os.sep}')

# Whether a progress bar is drawn on the terminal without its newline yet: the next log line
# must start on a line of its own.
_live_line: dict[str, TextIO | None] = {'stream': None}


def quiet_tensorflow_import() -> None:
  """Imports TensorFlow with its C++ start-up lines hidden (unless TF_CPP_MIN_LOG_LEVEL=0).

  Call it before the first module that imports TensorFlow. The lines are written to file
  descriptor 2 by TensorFlow's shared libraries as they load, so only redirecting the
  descriptor hides them; a failed import still raises (and prints) after it is restored.
  """
  if 'tensorflow' in sys.modules:
    return
  if os.environ.get('TF_CPP_MIN_LOG_LEVEL') == '0':
    import tensorflow  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import,redefined-outer-name

    return
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    import tensorflow  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


@functools.lru_cache(maxsize=None)
def _module_of(pathname: str) -> tuple[str, bool]:
  """(dotted module name, whether it is a library's) of a source file."""
  path = os.path.abspath(pathname)
  root = max(
    (
      os.path.join(os.path.abspath(p or '.'), '')
      for p in sys.path
      if path.startswith(os.path.join(os.path.abspath(p or '.'), ''))
    ),
    key=len,
    default='',
  )
  module = os.path.splitext(path[len(root) :] if root else os.path.basename(path))[0]
  module = module.replace(os.sep, '.').removesuffix('.__init__')
  library = any(folder in path for folder in _THIRD_PARTY_FOLDERS) or path.startswith(
    _THIRD_PARTY_ROOTS
  )
  return module, library and not module.startswith('pause_lm')


def _level_name_to_number(level: str | int) -> int:
  return level if isinstance(level, int) else py_logging.getLevelName(level.upper())


class SourceFilter(py_logging.Filter):
  """Drops library INFO lines and warnings that do not apply; honours --logger_levels."""

  def __init__(self, show_library_info: bool, logger_levels: Mapping[str, str | int]):
    super().__init__()
    self.show_library_info = show_library_info
    self.logger_levels = {
      name: _level_name_to_number(level) for name, level in logger_levels.items()
    }

  def _configured_level(self, *names: str) -> int | None:
    best = None
    for key, level in self.logger_levels.items():
      for name in names:
        if name == key or name.startswith(key + '.'):
          if best is None or len(key) > len(best[0]):
            best = (key, level)
    return None if best is None else best[1]

  def filter(self, record: py_logging.LogRecord) -> bool:
    module, library = _module_of(record.pathname)
    level = self._configured_level(module, record.name)
    if level is not None:
      keep = record.levelno >= level
    elif any(
      module.startswith(prefix) and str(record.msg).startswith(message)
      for prefix, message in _NOT_APPLICABLE
    ):
      keep = False
    else:
      keep = not library or record.levelno >= py_logging.WARNING or self.show_library_info
    if keep:
      end_live_line()
    return keep


def setup_logging() -> None:
  """Sets the log levels from --verbosity and --logger_levels; call it first in `main`.

  Without --verbosity, pause-lm's INFO lines are shown and libraries' are not; an explicit
  --verbosity is absl's (0 shows every INFO line, -1 only warnings, ours included).
  """
  verbosity = flags.FLAGS['verbosity']
  if not verbosity.present:
    logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  for old in [f for f in handler.filters if isinstance(f, SourceFilter)]:
    handler.removeFilter(old)
  handler.addFilter(
    SourceFilter(
      show_library_info=verbosity.present and verbosity.value >= 0,
      logger_levels=flags.FLAGS.logger_levels or {},
    )
  )


def end_live_line() -> None:
  """Ends a progress bar drawn in place, so that what is written next has its own line."""
  stream = _live_line['stream']
  if stream is not None:
    _live_line['stream'] = None
    stream.write('\n')
    stream.flush()


def format_duration(seconds: float) -> str:
  """H:MM:SS, or M:SS under an hour."""
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else f'{minutes}:{seconds:02d}'


class ProgressReporter:
  """One progress line per log interval, in the manner of T5X's and MaxText's step lines.

  The ETA divides the steps left by an exponential moving average of the measured step rate
  (the trainer measures it after the step's results are on the host, compilation excluded),
  so it follows the current speed instead of the average since start-up.
  """

  def __init__(
    self,
    total_steps: int,
    *,
    enabled: bool = True,
    smoothing: float = 0.3,
    stream: TextIO | None = None,
    live: bool | None = None,
  ):
    """Starts the clock.

    Args:
      total_steps: The step the run ends at.
      enabled: False prints nothing (processes other than 0).
      smoothing: Weight of the newest rate in the moving average (1: the last one only).
      stream: Where a live bar is drawn (default stderr).
      live: Draw a bar in place instead of logging lines; default: whether `stream` is a
        terminal.
    """
    self.total_steps = total_steps
    self.enabled = enabled
    self.smoothing = smoothing
    self.stream = stream or sys.stderr
    self.live = self.stream.isatty() if live is None else live
    self.start = time.perf_counter()
    self.steps_per_sec: float | None = None

  def eta_seconds(self, step: int) -> float | None:
    if not self.steps_per_sec:
      return None
    return (self.total_steps - step) / self.steps_per_sec

  def update_rate(self, steps_per_sec: float) -> None:
    if self.steps_per_sec is None:
      self.steps_per_sec = steps_per_sec
    else:
      self.steps_per_sec += self.smoothing * (steps_per_sec - self.steps_per_sec)

  def line(self, step: int, metrics: Mapping[str, float], elapsed: float) -> str:
    """The plain progress line (what is logged when stderr is not a terminal)."""
    width = len(str(self.total_steps))
    parts = [
      f'step {step:>{width}}/{self.total_steps} ({100.0 * step / max(self.total_steps, 1):3.0f}%)'
    ]
    parts += _metric_parts(metrics)
    eta = self.eta_seconds(step)
    parts.append(
      f'{format_duration(elapsed)} elapsed, ETA {format_duration(eta) if eta is not None else "?"}'
    )
    return ' | '.join(parts)

  def report(self, step: int, metrics: Mapping[str, float]) -> None:
    """Shows the progress at `step`; metrics are the interval's means (steps_per_sec too)."""
    if metrics.get('steps_per_sec'):
      self.update_rate(metrics['steps_per_sec'])
    if not self.enabled or logging.get_absl_logger().getEffectiveLevel() > py_logging.INFO:
      return
    elapsed = time.perf_counter() - self.start
    if not self.live:
      logging.info('%s', self.line(step, metrics, elapsed))
      return
    import tqdm  # pylint: disable=g-import-not-at-top

    bar = tqdm.tqdm.format_meter(
      step,
      self.total_steps,
      elapsed,
      ncols=_terminal_width(self.stream),
      prefix='train',
      unit='step',
      rate=self.steps_per_sec,
      postfix=', '.join(_metric_parts(metrics)),
    )
    self.stream.write(f'\r{bar}\x1b[K')
    self.stream.flush()
    _live_line['stream'] = self.stream

  def elapsed(self) -> float:
    return time.perf_counter() - self.start


def _metric_parts(metrics: Mapping[str, float]) -> list[str]:
  parts = []
  if 'loss' in metrics:
    parts.append(f'loss {metrics["loss"]:.4f}')
  if 'token_accuracy' in metrics:
    parts.append(f'token acc {metrics["token_accuracy"]:.1f}%')
  if 'tokens_per_sec' in metrics:
    parts.append(f'{metrics["tokens_per_sec"]:,.0f} tokens/s')
  if 'mfu' in metrics:
    parts.append(f'MFU {100.0 * metrics["mfu"]:.1f}%')
  return parts


def _terminal_width(stream: TextIO) -> int:
  try:
    return os.get_terminal_size(stream.fileno()).columns
  except (OSError, ValueError, AttributeError):
    return 100


def run_summary(
  *,
  step: int,
  total_steps: int,
  seconds: float,
  metrics: Mapping[str, float] | None,
  model_dir: str,
  checkpoint_step: int | None,
  stopped: bool = False,
) -> str:
  """The one line a training run ends with: how far, final loss, time, where things are."""
  what = (
    f'Stopped at step {step}/{total_steps} (SIGTERM)'
    if stopped
    else f'Trained to step {step}/{total_steps}'
  )
  loss = f', final loss {metrics["loss"]:.4f}' if metrics and 'loss' in metrics else ''
  checkpoint = (
    f'checkpoint {model_dir}/checkpoints/{checkpoint_step}'
    if checkpoint_step is not None
    else 'no checkpoint'
  )
  return (
    f'{what} in {format_duration(seconds)}{loss}; {checkpoint}, config '
    f'{model_dir}/config.gin, metrics: tensorboard --logdir {model_dir}'
  )


def log_run_summary(**kwargs) -> None:
  end_live_line()
  logging.info('%s', run_summary(**kwargs))


# --- A command's own errors -------------------------------------------------------------------
#
# The library stops a run with an exception whose message names the problem and its fix (a
# setting, a file, a checkpoint step). Such a stop is no crash: the user needs the message, not
# a stack of frames in which to look for it. A real bug is the opposite: its traceback is what
# a report needs. So an error is shown as its message alone only when the library raised it on
# purpose (`is_own_error`); anything else keeps Python's traceback.

# --verbosity at which an own error is printed with its traceback too (absl's 1 is DEBUG).
TRACEBACK_VERBOSITY = 1
# The package whose `raise` statements are the library's own (tasks/ imports as pause_lm.tasks).
_OWN_PACKAGE = 'pause_lm'
# Built-in errors that a deliberate `raise` in the library uses for a message with its fix.
# Not TypeError, AttributeError, NameError and the like: raised on purpose they would be a
# misuse of the library's API by code, not a setting a user can fix.
_MESSAGE_TYPES = (ValueError, OSError, RuntimeError, LookupError, ArithmeticError)
# Gin raises these for a setting it cannot use (an unknown macro, a bad reference).
_GIN_SETTING_TYPES = (ValueError, SyntaxError)
# What gin appends to an error raised inside a configurable, once per configurable it crossed.
_GIN_CALL_NOTE = "  In call to configurable '"


def _module_name(frame) -> str:
  """The dotted name of a frame's module (`pause_lm.train`, also when run as `-m`)."""
  spec = frame.f_globals.get('__spec__')
  return getattr(spec, 'name', None) or frame.f_globals.get('__name__', '')


def _in_package(module: str, package: str) -> bool:
  return module == package or module.startswith(package + '.')


def is_own_error(error: BaseException) -> bool:
  """Whether `error` is one the library raised on purpose, with a message naming the fix.

  True for an error of a class the library defines (`RunLockedError`, `UnsafeStateError`, ...,
  also gin's copy of one raised inside a configurable), for one of `_MESSAGE_TYPES` raised by a
  `raise` statement in the library's own code (`raise ValueError(f'BATCH_SIZE=...')`), and
  for gin's errors about a setting. An error raised inside another library (NumPy, Orbax,
  the standard library) is not, even when library code called it: nobody wrote its message
  for a pause-lm user, so its traceback is kept.
  """
  if not isinstance(error, Exception) or isinstance(error, app.UsageError):
    return False
  if any(_in_package(cls.__module__, _OWN_PACKAGE) for cls in type(error).__mro__):
    return True
  innermost = error.__traceback__
  if innermost is None:
    return False
  while innermost.tb_next is not None:
    innermost = innermost.tb_next
  module = _module_name(innermost.tb_frame)
  if _in_package(module, 'gin'):
    return isinstance(error, _GIN_SETTING_TYPES)
  # The line the error was raised at (the first line of a `raise` spanning several).
  line = linecache.getline(innermost.tb_frame.f_code.co_filename, innermost.tb_lineno)
  return (
    isinstance(error, _MESSAGE_TYPES)
    and _in_package(module, _OWN_PACKAGE)
    and line.lstrip().startswith('raise ')
  )


def error_message(error: BaseException) -> str:
  """`Name: message` of an error, without the notes gin adds for each configurable it crossed."""
  if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
    text = error.args[0]  # str(KeyError) is the repr of its key: quotes around the message.
  else:
    text = str(error)
  lines = text.rstrip().splitlines()
  while lines and lines[-1].startswith(_GIN_CALL_NOTE):
    lines.pop()
  message = '\n'.join(lines).strip()
  return f'{type(error).__name__}: {message}'


def report_errors(main: Callable[[Sequence[str]], None]) -> Callable[[Sequence[str]], None]:
  """Wraps a command's `main`: the library's own errors end the command as their message.

  An own error (`is_own_error`) is logged as one message, as the last lines of the output,
  and the process exits with status 1; `--verbosity=1` (or higher) prints its traceback
  before it. Any other error (a bug) propagates with its traceback, as do absl's usage
  errors (absl prints them with the command's usage). Every command's entry point uses it:
  `gin_utils.run(main)` for the commands with gin flags, `app.run(report_errors(main))` for
  the others.
  """

  @functools.wraps(main)
  def guarded(argv: Sequence[str]) -> None:
    # Read before `main`: a command may set the verbosity itself (`logging.set_verbosity`).
    verbosity = flags.FLAGS['verbosity']
    show_traceback = verbosity.present and verbosity.value >= TRACEBACK_VERBOSITY
    try:
      main(argv)
    except Exception as error:  # pylint: disable=broad-except
      if not is_own_error(error):
        raise
      end_live_line()
      if show_traceback:
        traceback.print_exception(error, file=sys.stderr)
        sys.stderr.flush()
      logging.error('%s', error_message(error))
      sys.exit(1)

  return guarded
