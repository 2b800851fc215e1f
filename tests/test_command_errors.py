"""What a command prints when it stops: the library's own errors as their message alone (exit
status 1, the traceback only with --verbosity=1), bugs with their traceback, gin's setting
errors as usage errors, and a MODEL_DIR that cannot be written named before any work.

The classification (`console.is_own_error`) is checked on errors raised for real by library
code, gin and the standard library; the commands themselves run in subprocesses only where the
process is what is tested (its output and exit status).
"""

import contextlib
import logging
import os
import re
import shutil
import subprocess

from absl import app
from absl import flags
import gin
import pytest

from pause_lm.runtime import console
from pause_lm.runtime import gin_utils
from pause_lm.runtime import run_dir
from pause_lm.training import trainer

from conftest import run_python


def _raised(function, *args):
  """The exception `function(*args)` raises (its traceback is where it was raised)."""
  with pytest.raises(Exception) as info:
    function(*args)
  return info.value


def _library_value_error():
  # A plain ValueError from a `raise` statement in the trainer (no error class of its own).
  trainer.check_batch({}, local_batch_size=1, sequence_length=1)


def _standard_library_error(tmp_path):
  # The library calls the standard library on a file where it expects a folder: an
  # OSError nobody wrote for a user, i.e. a bug to report with its traceback.
  not_a_folder = tmp_path / 'file'
  not_a_folder.write_text('x')
  run_dir.step_numbers(not_a_folder)


def test_the_library_s_own_errors_are_told_apart_from_bugs(tmp_path, configure):
  own = _raised(_library_value_error)
  assert console.is_own_error(own)
  assert console.error_message(own).startswith('ValueError: The input pipeline gives []')

  # An error class the library defines counts wherever it is raised from.
  assert console.is_own_error(gin_utils.SettingValueError('TRAIN_STEPS=0 must be > 0'))

  # Gin re-raises a configurable's error as a copy with notes: still ours, notes dropped.
  configure(tmp_path, 'TRAIN_STEPS = 2', 'WARMUP_STEPS = 20')
  schedule = gin.get_configurable('learning_rate_schedule')
  through_gin = _raised(schedule)
  assert "In call to configurable 'learning_rate_schedule'" in str(through_gin)
  assert console.is_own_error(through_gin)
  message = console.error_message(through_gin)
  assert message.startswith('ValueError: The cosine schedule needs total_steps (2)')
  assert 'In call to configurable' not in message

  # Raised inside the standard library, or by a mistake in code: bugs, traceback kept.
  assert not console.is_own_error(_raised(_standard_library_error, tmp_path))
  assert not console.is_own_error(_raised(lambda: {}['missing']))
  assert not console.is_own_error(_raised(lambda: None.shape))  # pylint: disable=no-member
  # absl prints its usage errors itself, with the command's usage.
  assert not console.is_own_error(_raised(gin_utils.reject_positional_args, ['prog', 'stray']))


def test_report_errors_ends_with_the_message_alone_and_status_1(capfd, caplog):
  guarded = console.report_errors(lambda argv: _library_value_error())
  with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
    guarded(['prog'])
  assert stop.value.code == 1
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR][-1].startswith(
    'ValueError: The input pipeline gives []'
  )
  assert 'Traceback' not in capfd.readouterr().err


def test_verbosity_1_prints_the_traceback_before_the_message(capfd, caplog, monkeypatch):
  # As if the command line had --verbosity=1.
  monkeypatch.setattr(flags.FLAGS['verbosity'], 'present', 1)
  monkeypatch.setattr(flags.FLAGS['verbosity'], 'value', 1)
  guarded = console.report_errors(lambda argv: _library_value_error())
  with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
    guarded(['prog'])
  err = capfd.readouterr().err
  assert 'Traceback (most recent call last)' in err and 'check_batch' in err
  assert caplog.records[-1].getMessage().startswith('ValueError: The input pipeline gives []')


def test_a_bug_keeps_its_traceback(tmp_path):
  guarded = console.report_errors(lambda argv: _standard_library_error(tmp_path))
  with pytest.raises(NotADirectoryError):  # Not turned into SystemExit(1): Python prints it.
    guarded(['prog'])


def test_gin_files_and_bindings_that_cannot_be_read_are_usage_errors(in_repo_root):
  del in_repo_root
  cases = [  # (gin file, bindings, what the message says)
    ('gin/no_such_file.gin', [], r'(?s)Unable to open file: gin/no_such_file.gin.*search_paths'),
    ('gin/quickstart.gin', ['TRAIN_STEPS = 1 0'], r'\(--gin_bindings: TRAIN_STEPS = 1 0\)'),
    ('gin/quickstart.gin', ['MODEL_DIR = runs/x'], r"(?s)parse token 'runs'.*strings quoted"),
    ('gin/quickstart.gin', ['TRAIN_STEPS = (1'], r'unclosed bracket'),
  ]
  for gin_file, bindings, expected in cases:

    def parse(files=(gin_file,), bindings=tuple(bindings)):
      gin.clear_config()
      gin_utils.parse_gin(files, bindings)

    with pytest.raises(gin_utils.UnreadableSettingError, match=expected):
      parse()
    # Every command reports it as absl reports a usage error: its usage, then the message.
    with pytest.raises(app.UsageError, match=expected):
      gin_utils.parse_settings(parse)


def test_a_model_dir_that_is_a_file_or_under_one_stops_before_any_work(tmp_path, configure):
  a_file = tmp_path / 'run'
  a_file.write_text('notes')
  for model_dir, where in ((a_file, 'is a file'), (a_file / 'sub', f'is under {a_file}')):
    configure(model_dir, 'TRAIN_STEPS = 2', 'WARMUP_STEPS = 1')
    expected = re.escape(f'MODEL_DIR={model_dir} {where}') + r'.*--gin\.MODEL_DIR'
    with pytest.raises(run_dir.FolderNotWritableError, match=expected):
      trainer.train()
  assert a_file.read_text() == 'notes'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['run']


@contextlib.contextmanager
def _read_only(folder):
  """Makes `folder` unwritable for this process: chmod, or as root (whom chmod does not stop)
  the immutable attribute; skips the test where neither works."""
  folder.chmod(0o555)
  immutable = False
  try:
    if os.access(folder, os.W_OK):  # Root: permission bits are not checked.
      chattr = shutil.which('chattr')
      immutable = (
        chattr is not None
        and subprocess.run([chattr, '+i', str(folder)], capture_output=True).returncode == 0
      )
      if not immutable:
        pytest.skip('cannot make a folder unwritable here (root without chattr +i)')
    yield
  finally:
    if immutable:
      subprocess.run([shutil.which('chattr'), '-i', str(folder)], check=True)
    folder.chmod(0o755)


def test_a_read_only_model_dir_stops_before_any_work(tmp_path, configure):
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  configure(model_dir, 'TRAIN_STEPS = 2', 'WARMUP_STEPS = 1')
  with _read_only(model_dir):
    with pytest.raises(
      run_dir.FolderNotWritableError,
      match=re.escape(f'MODEL_DIR={model_dir} cannot be written (PermissionError') + '.*chmod u',
    ):
      trainer.train()
    # A folder that does not exist yet, below the read-only one, cannot be created either.
    configure(model_dir / 'new', 'TRAIN_STEPS = 2', 'WARMUP_STEPS = 1')
    expected = re.escape(f'MODEL_DIR={model_dir}/new cannot be written')
    with pytest.raises(run_dir.FolderNotWritableError, match=expected):
      trainer.train()
  assert list(model_dir.iterdir()) == []


@pytest.mark.parametrize('verbosity', [None, 1])
def test_the_train_command_names_a_bad_model_dir_in_its_last_line(
  tmp_path, train_command, verbosity
):
  a_file = tmp_path / 'run'
  a_file.write_text('notes')
  command = train_command(a_file, 'TRAIN_STEPS = 2', 'WARMUP_STEPS = 1')
  if verbosity is not None:
    command.append(f'--verbosity={verbosity}')
  result = run_python(*command[1:], check=False, timeout=180)
  assert result.returncode == 1, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  message = f'FolderNotWritableError: MODEL_DIR={a_file} is a file, not a folder'
  if verbosity is None:
    assert message in lines[-1] and 'Set --gin.MODEL_DIR to a folder' in lines[-1], lines[-1]
    assert 'Traceback' not in result.stderr
  else:
    # Every library's INFO lines are shown too (JAX logs its exit after the message), so the
    # message follows the traceback instead of ending the output.
    start = lines.index('Traceback (most recent call last):')
    after = next(i for i in range(start, len(lines)) if message in lines[i])
    assert any('ensure_writable_folder' in line for line in lines[start:after])
  assert a_file.read_text() == 'notes'
