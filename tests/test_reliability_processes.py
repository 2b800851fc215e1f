"""Reliability faults that need real processes: two runs on one MODEL_DIR, a failing
background save, a typo on the command line, a process of a multi-process run killed
(docs/reliability.md)."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

from conftest import REPO, run_python

LAUNCH = REPO / 'launch' / 'local_multiprocess.sh'


def test_a_second_run_on_one_model_dir_stops_at_once_and_names_the_first(tmp_path, train_command):
  model_dir = tmp_path / 'run'
  first = subprocess.Popen(
    train_command(model_dir, 'TRAIN_STEPS = 100000', 'CheckpointConfig.save_every_steps = 2'),
    cwd=REPO,
    stderr=subprocess.PIPE,
    stdout=subprocess.DEVNULL,
    text=True,
  )
  try:
    for line in first.stderr:
      if re.search(r'step +4/100000 .*loss', line):
        break
    config = (model_dir / 'config.gin').read_text()
    second = run_python(
      *train_command(model_dir, 'TRAIN_STEPS = 3', 'BATCH_SIZE = 16')[1:], check=False
    )
    assert second.returncode == 1
    last = second.stderr.strip().splitlines()
    assert any(f'in use by another run: pid {first.pid} on host' in line for line in last[-4:]), (
      second.stderr[-3000:]
    )
    assert 'Traceback' not in second.stderr
    # The second run touched nothing: the first one's files are as they were.
    assert (model_dir / 'config.gin').read_text() == config
    assert len(list(model_dir.glob('events.out.tfevents*'))) == 1
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr[-3000:]
  finally:
    if first.poll() is None:
      first.kill()
  assert not (model_dir / 'run.lock').exists()  # Released on exit.


def test_a_failed_background_save_stops_training_with_the_cause_last(tmp_path, train_command):
  model_dir = tmp_path / 'run'
  command = train_command(
    model_dir, 'import save_fault', 'TRAIN_STEPS = 1000', 'CheckpointConfig.save_every_steps = 1'
  )
  result = run_python(*command[1:], pythonpath=REPO / 'tests', check=False)
  assert result.returncode == 1
  tail = '\n'.join(result.stderr.strip().splitlines()[-4:])
  assert 'CheckpointSaveError: Writing a checkpoint to' in tail, tail
  assert 'No space left on device' in tail and 'newest complete checkpoint is step 1' in tail
  # Stopped promptly: the save of step 2 fails while step 3 runs.
  steps = [int(m) for m in re.findall(r'step +(\d+)/1000 .*loss', result.stderr)]
  assert max(steps) <= 4, steps
  assert not (model_dir / 'run.lock').exists()


def test_a_mistyped_macro_fails_before_training():
  result = run_python(
    '-m',
    'pause_lm.train',
    '--gin_file=gin/quickstart.gin',
    "--gin.MODEL_DIR='/nonexistent/never'",
    '--gin.TRAIN_STEP=10',
    timeout=120,
    check=False,
  )
  assert result.returncode != 0
  assert 'TRAIN_STEP: Did you mean TRAIN_STEPS?' in result.stderr
  assert 'Traceback' not in result.stderr


def _wait_for_line(path, pattern, timeout):
  """Waits until the file at `path` has a line matching `pattern`."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if path.exists() and re.search(pattern, path.read_text(errors='replace'), re.MULTILINE):
      return
    time.sleep(0.5)
  raise AssertionError(f'no line matching {pattern!r} in {path} after {timeout} s')


def test_a_killed_process_stops_the_others_at_once_and_says_how_to_resume(tmp_path, train_command):
  log_dir = tmp_path / 'logs'
  env = {
    k: v
    for k, v in os.environ.items()
    if k not in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'XLA_FLAGS')
  }
  env.update(LOG_DIR=str(log_dir), PYTHON_BIN=sys.executable)
  # Two processes of one CPU device each, a run far longer than the test.
  command = train_command(tmp_path / 'run', 'TRAIN_STEPS = 100000', 'input_shards.num_shards = 2')
  launcher = subprocess.Popen(
    ['bash', str(LAUNCH), '2', '1', *command],
    cwd=REPO,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  pids = {}
  try:
    for line in launcher.stderr:
      started = re.match(r'Process (\d+): pid (\d+), log ', line)
      if started:
        pids[int(started.group(1))] = int(started.group(2))
      if len(pids) == 2:
        break
    # Process 0 logs the progress lines; both processes are stepping once it has one.
    _wait_for_line(log_dir / 'process_0.log', r'step +\d+/100000 .*loss', timeout=300)
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.monotonic()
    _, rest = launcher.communicate(timeout=60)
    stopped_after = time.monotonic() - killed_at
  finally:
    if launcher.poll() is None:  # The launcher failed: stop what it started, and it.
      for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
          os.kill(pid, signal.SIGKILL)
      launcher.kill()
  # Without the launcher stopping it, process 0 waits for its peer until gloo gives up (76 s).
  assert stopped_after < 15, stopped_after
  assert launcher.returncode == 128 + signal.SIGKILL
  last = rest.strip().splitlines()[-1]
  assert (
    f'Process 1 of 2 (pid {pids[1]}) was killed by SIGKILL (exit status 137); '
    f'log: {log_dir}/process_1.log.'
  ) in last, rest
  assert 'rerun the same command: it resumes from the last checkpoint' in last
  assert 'Killed' not in rest.replace('killed by SIGKILL', '')  # No shell notices before it.
  for pid in pids.values():  # Process 0 was stopped too, none is left behind.
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      continue
    raise AssertionError(f'pid {pid} still runs')
