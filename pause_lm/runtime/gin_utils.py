"""Command-line gin handling shared by every pause-lm entry point.

Entry points accept `--gin_file` (repeatable, later files win), `--gin_bindings`
(repeatable, applied after all files), `--gin_search_paths`, and the T5X
shorthand `--gin.NAME=value`, which is rewritten into a binding before absl
parses the command line. Settings a run cannot do without are declared in the
gin files as `NAME = %gin.REQUIRED`; gin itself happily passes that sentinel on
when it reaches a function through a macro, so `parse_gin` checks for unset
ones up front and fails with the flag that fixes it. It is strict the other way
too: a macro that no binding reads (`--gin.TRAIN_STEP=10` for `TRAIN_STEPS`)
is an error, as gin's own unknown-name errors are, each with the nearest names.
Gin's other parse errors (a missing file, a syntax error) name the file or binding
and the fix; every command reports these as usage errors (`parse_settings`).
`run` is every command's entry point: the library's own errors print as their
message, without a traceback (`console.report_errors`).
"""

from collections.abc import Callable, Iterator, Sequence
import difflib
import inspect
import os
import pathlib
import re
import tokenize

from absl import app
from absl import flags
from etils import epath
import gin

from pause_lm.runtime import console

_SHORTHAND_PREFIX = '--gin.'
_REQUIRED_SELECTOR = 'gin.REQUIRED/gin.constant'

# The checkout this module runs from: gin files live in its `gin/` folder and
# `include` each other by paths relative to it (e.g. 'gin/models/tiny.gin').
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]  # pause_lm/runtime/gin_utils.py


class SettingValueError(ValueError):
  """A setting has a value the run cannot use (the message names it and the fix)."""


class SettingError(ValueError):
  """A gin file or binding that cannot be used as given: a usage error of every command."""


class MissingSettingError(SettingError):
  """A `%gin.REQUIRED` setting was never given a value."""


class UnknownSettingError(MissingSettingError):
  """A setting names no macro or configurable this run reads (usually a typo).

  A subclass of MissingSettingError, which callers caught before SettingError
  existed, so that they catch this one too.
  """


class UnreadableSettingError(SettingError):
  """A gin file cannot be found, or a gin file or binding cannot be parsed."""


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """Turns `--gin.NAME=value` into `--gin_bindings=NAME = value`.

  absl refuses flags it does not know, and a flag per gin macro cannot be
  declared in advance, so the shorthand is rewritten before absl sees it.

  Args:
    argv: The full command line, program name first.

  Returns:
    The command line with every shorthand rewritten.

  Raises:
    app.UsageError: A shorthand flag has no `=value`.
  """
  rewritten = []
  for arg in argv:
    if not arg.startswith(_SHORTHAND_PREFIX):
      rewritten.append(arg)
      continue
    name, sep, value = arg[len(_SHORTHAND_PREFIX) :].partition('=')
    if not sep or not name:
      raise app.UsageError(
        f'Cannot read {arg!r}: write gin shorthand flags as '
        f'--gin.NAME=value, for example --gin.TRAIN_STEPS=1000.'
      )
    rewritten.append(f'--gin_bindings={name} = {value}')
  return rewritten


def define_flags() -> None:
  """Declares --gin_file, --gin_bindings and --gin_search_paths, once.

  Called by `run`, not at import: importing the library must not add flags to a
  user's own program, whose flags may have the same names.
  """
  if 'gin_file' in flags.FLAGS:
    return
  flags.DEFINE_multi_string('gin_file', [], 'Gin config files to parse, in order; later ones win.')
  flags.DEFINE_multi_string(
    'gin_bindings',
    [],
    'Individual gin bindings, applied after all --gin_file files. '
    '`--gin.NAME=value` is shorthand for `--gin_bindings="NAME = value"`.',
  )
  flags.DEFINE_list(
    'gin_search_paths',
    ['.'],
    'Comma-separated folders searched for --gin_file files and for gin '
    '`include` statements. The repository root is always searched last.',
  )


def parse_flags_with_gin(argv: Sequence[str]) -> list[str]:
  """absl flags parser that understands the `--gin.NAME=value` shorthand."""
  return flags.FLAGS(rewrite_gin_args(argv))


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`app.run` with the gin flags and their shorthand; use as an entry point's run.

  The library's own errors end the command as their message and exit status 1,
  without a traceback unless --verbosity=1 or higher (`console.report_errors`).
  """
  define_flags()
  app.run(console.report_errors(main), flags_parser=parse_flags_with_gin)


def reject_positional_args(argv: Sequence[str]) -> None:
  """Every pause-lm command takes its settings from gin only; stray words are a typo."""
  if len(argv) > 1:
    raise app.UsageError(
      f'Unexpected arguments: {argv[1:]}; settings go in gin files, '
      '--gin_bindings or --gin.NAME=value.'
    )


def parse_settings(parse: Callable[[], object] | None = None):
  """Parses the command line's gin (or runs `parse`); a setting error is a usage error."""
  try:
    if parse is None:
      return parse_gin(flags.FLAGS.gin_file, flags.FLAGS.gin_bindings, flags.FLAGS.gin_search_paths)
    return parse()
  except SettingError as e:
    raise app.UsageError(str(e)) from None


def parse_gin(
  gin_files: Sequence[str],
  gin_bindings: Sequence[str] = (),
  gin_search_paths: Sequence[str] = ('.',),
) -> None:
  """Parses gin files and bindings, then fails fast on unset required settings.

  Args:
    gin_files: Files to parse in order; later files override earlier ones.
    gin_bindings: Bindings applied after all files.
    gin_search_paths: Folders in which files and `include`s are looked up.

  Raises:
    MissingSettingError: A `%gin.REQUIRED` macro or parameter has no value.
    UnknownSettingError: A name no configurable or macro has (a typo).
    UnreadableSettingError: A file is not found, or a file or binding does not parse.
    ValueError: No gin file was given.
  """
  if not gin_files:
    raise ValueError(
      'No gin config given: pass at least one --gin_file, for example '
      '--gin_file=gin/quickstart.gin.'
    )
  for path in [*gin_search_paths, os.fspath(REPO_ROOT)]:
    gin.add_config_file_search_path(path)
  try:
    gin.parse_config_files_and_bindings(gin_files, gin_bindings, finalize_config=False)
  except ValueError as e:
    suggestion = _suggest_for_gin_error(str(e))
    if suggestion is None:
      raise UnreadableSettingError(f'{e}\nFix that setting, or remove it.') from None
    raise UnknownSettingError(f'{e}\n{suggestion}') from None
  except (SyntaxError, tokenize.TokenError) as e:
    raise UnreadableSettingError(_describe_syntax_error(e)) from None
  except OSError as e:
    raise UnreadableSettingError(
      f'{e}\nCheck the --gin_file path: it is read relative to the current folder or to a '
      '--gin_search_paths folder.'
    ) from None
  check_required_settings()
  check_unused_macros(_macro_names(gin_bindings))


def _describe_syntax_error(error: SyntaxError | tokenize.TokenError) -> str:
  """Gin's parse error with the setting it is in (gin's own message names only a line)."""
  if isinstance(error, tokenize.TokenError):  # Unbalanced brackets: no line to show.
    problem = f'(an unclosed bracket or quote?): {error.args[0]}.'
  else:
    where = f'{error.filename}, line {error.lineno}' if error.filename else '--gin_bindings'
    # Gin's last line is the specific one ("Failed to parse token 'runs'").
    reason = error.msg.strip().splitlines()[-1].strip().rstrip('.')
    problem = f'({where}: {(error.text or "").strip()}): {reason}.'
  return (
    f'Cannot parse a gin setting {problem}\nWrite settings as NAME = value with strings '
    """quoted, e.g. --gin.MODEL_DIR="'runs/x'" (gin reads the value as Python)."""
  )


def _macro_names(bindings: Sequence[str]) -> set[str]:
  """Macros a list of bindings sets (`NAME = value`; not `configurable.param = value`)."""
  names = (binding.partition('=')[0].strip() for binding in bindings)
  return {name for name in names if name and '.' not in name and '/' not in name}


def _macro_references(value) -> Iterator[str]:
  """Names of the macros a bound value reads, however deeply it nests them."""
  if isinstance(value, gin.config.ConfigurableReference):
    selector = value.scoped_selector
    if selector.endswith('/gin.macro'):
      yield selector[: -len('/gin.macro')]
  elif isinstance(value, dict):
    for item in value.values():
      yield from _macro_references(item)
  elif isinstance(value, (list, tuple, set)):
    for item in value:
      yield from _macro_references(item)


def check_unused_macros(candidates: set[str]) -> None:
  """Raises `UnknownSettingError` for the `candidates` macros that no binding reads.

  A macro set on the command line that nothing reads is a typo (`TRAIN_STEP = 10`
  for `TRAIN_STEPS`): it would be accepted and ignored, and the run would use the
  default. Macros a gin file defines are not checked: a model file's default
  (`NUM_EMBEDDINGS = None`) is legitimately unread once a binding sets the
  parameter it feeds directly.
  """
  defined, referenced = set(), set()
  # gin has no public way to list bindings; the parsed config is read only.
  for (scope, selector), params in gin.config._CONFIG.items():  # pylint: disable=protected-access
    if selector == 'gin.macro':
      defined.add(scope)
    for value in params.values():
      referenced.update(_macro_references(value))
  unused = sorted((defined - referenced) & candidates)
  if not unused:
    return
  lines = ['These gin macros are set but nothing reads them (a typo?):']
  for name in unused:
    close = difflib.get_close_matches(name, sorted(referenced), n=3, cutoff=0.6)
    hint = (
      f' Did you mean {", ".join(close)}?'
      if close
      else (' Known macros: ' + ', '.join(sorted(referenced)) + '.')
    )
    lines.append(f'  {name}:{hint}')
  lines.append('Fix the name, or remove the setting.')
  raise UnknownSettingError('\n'.join(lines))


def _suggest_for_gin_error(message: str) -> str | None:
  """The nearest known names for gin's unknown-configurable or -parameter errors."""
  # gin has no public listing of configurables; the registry is read only.
  registry = gin.config._REGISTRY  # pylint: disable=protected-access
  unknown = re.match(r"No configurable matching '([^']+)'", message)
  if unknown:
    names = set()
    for selector, _ in registry.items():
      names.update({selector, selector.rsplit('.', 1)[-1]})
    close = difflib.get_close_matches(unknown.group(1), sorted(names), n=3, cutoff=0.6)
    return (
      f'Did you mean {", ".join(close)}?'
      if close
      else 'Check the name, and that a gin file imports its module.'
    )
  unknown = re.match(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", message)
  if unknown:
    configurable = registry.get_match(unknown.group(1))
    if configurable is None:
      return None
    params = list(inspect.signature(configurable.wrapped).parameters)
    close = difflib.get_close_matches(unknown.group(2), params, n=3, cutoff=0.6)
    return f'Did you mean {", ".join(close)}?' if close else f'Its parameters: {", ".join(params)}.'
  return None


def check_required_settings() -> None:
  """Raises `MissingSettingError` naming every unset `%gin.REQUIRED` value."""
  missing_macros, missing_params = [], []
  # gin has no public way to list bindings; the parsed config is read only.
  for (scope, selector), params in gin.config._CONFIG.items():  # pylint: disable=protected-access
    for name, value in params.items():
      if not _is_required_sentinel(value):
        continue
      if selector == 'gin.macro':
        missing_macros.append(scope)
      else:
        missing_params.append(f'{scope}/{selector}.{name}' if scope else f'{selector}.{name}')
  if not missing_macros and not missing_params:
    return
  lines = ['Required gin settings are not set:']
  for macro in sorted(missing_macros):
    lines.append(f'  {macro}: set it with --gin.{macro}=... (or `{macro} = ...` in a --gin_file).')
  for param in sorted(missing_params):
    lines.append(f'  {param}: set it with --gin_bindings="{param} = ...".')
  raise MissingSettingError('\n'.join(lines))


def _is_required_sentinel(value) -> bool:
  return (
    isinstance(value, gin.config.ConfigurableReference)
    and value.scoped_selector == _REQUIRED_SELECTOR
  )


def write_operative_config(model_dir: str | os.PathLike[str]) -> None:
  """Writes the settings this run actually used to `model_dir/config.gin`.

  Written by process 0 only (all processes parse the same flags); call it
  after every configurable has been called, or their values will be missing.

  Args:
    model_dir: The run's output folder (local or a cloud path).
  """
  # Imported here, not at the top: the experiment runner (pause_lm.grid) parses gin without JAX.
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_index() != 0:
    return
  model_dir = epath.Path(model_dir)
  model_dir.mkdir(parents=True, exist_ok=True)
  (model_dir / 'config.gin').write_text(gin.operative_config_str())


def parse_optional_settings() -> bool:
  """Parses --gin_file / --gin.* for a command that also runs without gin (`show`).

  With files this is `parse_settings`; bindings alone (e.g. a local tokenizer,
  `--gin.c4_vocabulary.spm_path=...`) bind configurables already imported.

  Returns:
    Whether any gin setting was given.
  """
  gin_files, gin_bindings = flags.FLAGS.gin_file, flags.FLAGS.gin_bindings
  if gin_files:
    parse_settings()
  elif gin_bindings:

    def parse_bindings():
      gin.parse_config_files_and_bindings([], gin_bindings, finalize_config=False)
      check_required_settings()

    parse_settings(parse_bindings)
  return bool(gin_files or gin_bindings)
