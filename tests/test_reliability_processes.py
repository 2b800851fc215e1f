"""Reliability faults that need real processes: two runs on one MODEL_DIR, a failing
background save, a typo on the command line (docs/reliability.md)."""

import re
import signal
import subprocess

from conftest import REPO, run_python


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
