"""Set-up shared by the tests: quiet TensorFlow, no GPUs, the small-run fixtures, the helpers
several files use, and what keeps `make test` short on 2 CPU cores.

The tests have one small model, `gin/experiments/tiny_test_model.gin` (the experiment-grid
tests use it too). In-process tests parse it through the `configure` fixture; command-line
tests pass the `small_run_flags` fixture after their run file.

Shared helpers (imported as `from conftest import ...`): `run_python` starts a command,
`run_in_process` runs a train/evaluate command's settings here, `read_scalars` reads a run's
TensorBoard files, `LLAMA_FAMILY` is the Llama family's settings, and 8-device scripts share
one process (`register_eight_device_script`). For speed: one JAX compilation cache for the
session, `pausept_run` trained once, and the slowest tests started first (`_SLOW_FIRST`).
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

# pylint: disable=g-import-not-at-top,wrong-import-position
import gin
import pytest
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parent.parent

SMALL_MODEL_GIN = 'gin/experiments/tiny_test_model.gin'
# A run of seconds on 2 CPU cores: short sequences, small batches, metrics every step.
SMALL_RUN = (
  'ModelConfig.max_len = 64',
  'SEQUENCE_LENGTH = 32',
  'BATCH_SIZE = 8',
  'WARMUP_STEPS = 2',
  'train.log_every_steps = 1',
)


# One persistent JAX compilation cache for the session, in a folder made for it: most tests
# compile the same few programs (the small model's train step, the decoder's forward pass),
# in-process and in the commands they start, and a compile is most of a small run on 2 CPU
# cores. JAX reads these variables at import, so the xdist workers and every subprocess a test
# starts share the folder (their env is os.environ plus their own settings). The size bound
# turns on JAX's file lock, so one process never reads an entry another is still writing.
_CACHE_SETTINGS = {
  'jax_persistent_cache_min_compile_time_secs': 0.0,
  'jax_persistent_cache_min_entry_size_bytes': 0,
  'jax_compilation_cache_max_size': 16 * 2**30,
}
_OWN_CACHE_DIRS = []


def pytest_configure(config):
  """Creates the session's compilation cache in the first process (the xdist controller);
  its workers inherit the variables; a cache folder the user set already is used as it is."""
  del config
  if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    directory = tempfile.mkdtemp(prefix='pause_lm_tests_jax_cache_')
    _OWN_CACHE_DIRS.append(directory)
    os.environ['JAX_COMPILATION_CACHE_DIR'] = directory
  for name, value in _CACHE_SETTINGS.items():
    os.environ.setdefault(name.upper(), str(value))
  if 'jax' in sys.modules:  # Imported before this hook (by a plugin): read too early.
    import jax  # pylint: disable=g-import-not-at-top

    jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
    for name, value in _CACHE_SETTINGS.items():
      jax.config.update(name, type(value)(os.environ[name.upper()]))


def pytest_unconfigure(config):
  del config
  for directory in _OWN_CACHE_DIRS:
    shutil.rmtree(directory, ignore_errors=True)


def run_python(*args, env=None, pythonpath=None, timeout=300, cwd=REPO, check=True, program=None):
  """Runs `python *args` in a new process (from the repository root by default) and returns
  the finished process; with `check`, fails the test with the end of stderr unless it exits 0.

  `env` replaces os.environ (build it from os.environ to keep the session's settings);
  `pythonpath` puts a folder first on the new process's import path, before the repository;
  `program` runs another program than this Python (a launch script's `bash`).
  """
  env = dict(os.environ if env is None else env)
  if pythonpath is not None:
    env['PYTHONPATH'] = os.pathsep.join([str(pythonpath), str(REPO)])
  result = subprocess.run(
    [program or sys.executable, *map(str, args)],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  if check:
    assert result.returncode == 0, result.stderr[-5000:]
  return result


def run_in_process(module, *args):
  """Runs `python -m MODULE ARGS` for pause_lm.train or pause_lm.evaluate in this process: the
  command's gin files and bindings (its --gin.NAME=value shorthand too) are parsed as the
  command parses them, from the repository root, then the trainer or the evaluation runs and
  its result is returned. For tests that check what a run writes, not the process around it
  (its console, exit code, signals): a new process costs a JAX and TensorFlow import.
  """
  # pylint: disable=g-import-not-at-top
  from pause_lm.evaluation import evaluator
  from pause_lm.runtime import gin_utils
  from pause_lm.training import trainer
  # pylint: enable=g-import-not-at-top

  run = {'pause_lm.train': trainer.train, 'pause_lm.evaluate': evaluator.evaluate}[module]
  gin_files, bindings = [], []
  for arg in gin_utils.rewrite_gin_args([str(a) for a in args]):
    name, _, value = arg.partition('=')
    {'--gin_file': gin_files, '--gin_bindings': bindings}[name].append(value)
  cwd = os.getcwd()
  os.chdir(REPO)
  gin.clear_config()
  try:
    gin_utils.parse_gin(gin_files, bindings)
    return run()
  finally:
    gin.clear_config()
    os.chdir(cwd)


def script_result(result):
  """The JSON a test script printed after 'RESULT ' (on a line of its own)."""
  import json  # pylint: disable=g-import-not-at-top

  line = next(x for x in result.stdout.splitlines() if x.startswith('RESULT'))
  return json.loads(line[len('RESULT') :])


def read_scalars(model_dir):
  """{tag: {step: value}} from a run's TensorBoard event files, in the order they were written
  (a resumed run's later file wins for a step written twice)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  scalars = {}
  for path in sorted(pathlib.Path(model_dir).glob('events.out.tfevents*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        array = tf.make_ndarray(value.tensor)
        scalars.setdefault(value.tag, {})[event.step] = (
          float(array) if array.size == 1 and array.dtype.kind in 'biuf' else array
        )
  return scalars


# Scripts that need 8 devices (a fixed device count is set before JAX starts, so a new process):
# each test module registers its own at import, `eight_device_results` runs every registered
# one in one process (one start-up, not one each) and gives each its own folder and result.
# A script computes `out` (JSON-able); one that raises is reported as its error alone.
_EIGHT_DEVICE_SCRIPTS = {}
_EIGHT_DEVICE_RUNNER = """
import json, sys, traceback
results = {}
for name, (script, folder) in json.loads(sys.argv[1]).items():
  sys.argv = [name, folder]
  scope = {'__name__': '__main__'}
  try:
    exec(compile(script, name, 'exec'), scope)
    results[name] = {'out': scope['out']}
  except Exception:
    results[name] = {'error': traceback.format_exc()}
print('RESULT', json.dumps(results))
"""
# The xdist group of the tests that read `eight_device_results`: one worker runs them all.
EIGHT_DEVICES = pytest.mark.xdist_group('eight_devices')


def register_eight_device_script(name, script):
  """Adds `script` (its folder is sys.argv[1]; it sets `out`) to the 8-device process."""
  _EIGHT_DEVICE_SCRIPTS[name] = script


@pytest.fixture(scope='session')
def eight_device_results(tmp_path_factory):
  """{name: out} of every registered 8-device script, run once in one CPU-only process."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=8')
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    env.pop(name, None)
  import json  # pylint: disable=g-import-not-at-top

  scripts = {
    name: (script, str(tmp_path_factory.mktemp(name)))
    for name, script in _EIGHT_DEVICE_SCRIPTS.items()
  }
  results = script_result(
    run_python('-c', _EIGHT_DEVICE_RUNNER, json.dumps(scripts), env=env, timeout=1200)
  )

  def result(name):
    assert 'error' not in results[name], results[name]['error']
    return results[name]['out']

  return result


# The Llama family's settings where they differ from GPT-2's (RMSNorm, rotary positions,
# SwiGLU, no biases, tied head); each test adds its own head counts and rope scaling.
LLAMA_FAMILY = dict(
  norm='rms_norm',
  position_embedding='rope',
  mlp_activation='swiglu',
  qkv_bias=False,
  dense_bias=False,
  tie_embeddings=True,
)


@pytest.fixture(autouse=True)
def _xdist_groups_hold(request):
  """Fails a grouped test that `--dist loadgroup` did not group (pytest-xdist marks a group
  by adding `@name` to the node id, which pytest 9 ignores): its group's session fixture,
  like the 8-device process, would then run once per worker."""
  if getattr(request.config.option, 'loadgroup', False):
    if request.node.get_closest_marker('xdist_group') and '@' not in request.node.nodeid:
      pytest.fail(
        f'--dist loadgroup did not group {request.node.nodeid}: this pytest-xdist cannot mark '
        'groups under this pytest; install the pinned versions (requirements/constraints.txt).'
      )


@pytest.fixture(autouse=True)
def _no_gin_left_behind():
  """Clears gin after every test: a binding left behind (say, cuDNN attention from the
  accelerator check's CPU run) would reach every later `ModelConfig()` in the same worker."""
  yield
  gin.clear_config()


@pytest.fixture
def in_repo_root(monkeypatch):
  """Runs the test from the repository root, where gin files include each other; clears gin."""
  from pause_lm.runtime import gin_utils  # pylint: disable=g-import-not-at-top

  monkeypatch.chdir(gin_utils.REPO_ROOT)
  yield
  gin.clear_config()


@pytest.fixture
def configure(in_repo_root):
  """`configure(model_dir, *bindings, run_file=...)`: a run file (gin/quickstart.gin by
  default) with the small run, parsed in-process."""
  del in_repo_root
  from pause_lm.runtime import gin_utils  # pylint: disable=g-import-not-at-top

  def parse(model_dir, *bindings, run_file='gin/quickstart.gin'):
    gin.clear_config()
    gin_utils.parse_gin(
      [run_file, SMALL_MODEL_GIN], [*SMALL_RUN, f"MODEL_DIR = '{model_dir}'", *bindings]
    )

  return parse


SMALL_RUN_FLAGS = (f'--gin_file={SMALL_MODEL_GIN}', *(f'--gin_bindings={b}' for b in SMALL_RUN))


@pytest.fixture
def small_run_flags():
  """The small run as command-line flags, to follow a run file's --gin_file."""
  return list(SMALL_RUN_FLAGS)


@pytest.fixture(scope='session')
def pausept_run(tmp_path_factory):
  """The quickstart's PausePT run, small, to step 3: trained once per session (per xdist
  worker), for the tests that only start from such a run. `.model_dir` holds it (copy it
  before training on in it: later tests see the same folder), `.state` is what training
  returned."""
  import types  # pylint: disable=g-import-not-at-top

  model_dir = tmp_path_factory.mktemp('pausept_run')
  result = run_in_process(
    'pause_lm.train',
    '--gin_file=gin/quickstart.gin',
    *SMALL_RUN_FLAGS,
    f"--gin.MODEL_DIR='{model_dir}'",
    '--gin.TRAIN_STEPS=3',
  )
  return types.SimpleNamespace(model_dir=model_dir, state=result.state)


@pytest.fixture
def train_command(small_run_flags):
  """`train_command(model_dir, *bindings)`: the quickstart's training command, small run."""

  def command(model_dir, *bindings):
    return [
      sys.executable,
      '-m',
      'pause_lm.train',
      '--gin_file=gin/quickstart.gin',
      *small_run_flags,
      f"--gin.MODEL_DIR='{model_dir}'",
      *(f'--gin_bindings={b}' for b in bindings),
    ]

  return command


# The slowest tests (`pytest --durations=30`), slowest first, and run first: xdist hands tests
# out in collection order as workers free up, so a long test collected last would run alone at
# the end while the other worker idles. A name here that no longer exists only loses its place.
_SLOW_FIRST = (
  # conftest's 8-device process (one worker runs the group; the process starts at its first).
  'test_sharding.py::test_eight_devices_give_the_losses_of_one',
  'test_multihost.py::test_checkpoint_restores_on_more_or_fewer_devices',
  'test_harness.py::test_the_engine_on_a_sharded_mesh_scores_and_generates_as_on_one_device',
  'test_experiments.py::test_tiny_grid_end_to_end_resumes_and_reports',
  'test_multihost.py::test_two_processes_match_one_and_resume_on_a_different_mesh',
  'test_reliability_processes.py::test_a_killed_process_stops_the_others_at_once_and_says_how_to_resume',
  'test_reliability_processes.py::test_a_second_run_on_one_model_dir_stops_at_once_and_names_the_first',
  'test_custom_task.py::test_documented_custom_task_finetunes_and_evaluates',
  'test_train.py::test_resume_sees_the_same_batches_and_ends_identical',
  'test_pretrained_walkthrough.py::test_walkthrough',
  'test_benchmarks.py::test_accelerator_check_tiny_measures_every_part',
  'test_harness.py::test_pauseft_scores_the_same_through_the_harness_as_pause_lm_evaluate',
  'test_harness.py::test_the_walkthrough_runs_as_written',
  'test_decoding.py::test_scanned_layers_decode_like_unrolled_ones',
  'test_reliability.py::test_warm_start_from_a_deeper_model_lists_the_extra_layers',
  'test_evaluation.py::test_pausept_pauseft_then_evaluate_at_several_inference_m',
  'test_train.py::test_sigterm_saves_a_restorable_checkpoint_and_exits_cleanly',
  'test_own_data.py::test_a_mixture_trains',
  'test_console.py::test_quickstart_console_has_one_progress_line_per_interval',
  'test_console.py::test_show_loads_a_custom_task_module_from_a_gin_file',
  'test_command_errors.py::test_the_train_command_names_a_bad_model_dir_in_its_last_line',
  'test_reliability.py::test_damaged_steps_are_reported_moved_aside_and_the_run_falls_back',
  'test_show.py::test_text_view_marks_unweighted_pause_targets',
  'test_hf_checks.py::test_the_command_overwrites_only_when_asked',
  'test_reliability.py::test_diverging_run_never_saves_bad_state_and_resumes_at_a_lower_rate',
  'test_file_task_walkthrough.py::test_walkthrough',
  'test_multihost.py::test_compile_only_prints_per_device_memory',
  'test_decoding.py::test_cached_greedy_matches_full_recompute',
  'test_trainer.py::test_non_finite_loss_stops_without_saving_the_bad_state',
  'test_decoding.py::test_llama_family_cached_greedy_matches_full_recompute',
  'test_reliability_processes.py::test_a_failed_background_save_stops_training_with_the_cause_last',
  'test_experiments.py::test_random_m_finetune_then_evaluate_at_zero_and_hi',
  'test_train.py::test_missing_required_setting_names_the_flag',
  'test_verified_reads.py::test_resuming_with_fewer_layers_names_them_and_moves_nothing',
  'test_hf.py::test_paper_gpt2_decoder_exports_with_an_untied_head',
  'test_model.py::test_scan_and_remat_compute_the_same_function',
  'test_tasks.py::test_c4_tasks_under_tfds_mock_data',
  'test_model.py::test_dropout_is_active_only_when_not_deterministic',
  'test_decoding.py::test_never_emits_pause_or_padding_rows',
)


def pytest_collection_modifyitems(config, items):
  """Puts the slowest tests first."""
  del config
  rank = {name: i for i, name in enumerate(_SLOW_FIRST)}
  name = lambda item: item.nodeid.rpartition('/')[2].partition('@')[0].partition('[')[0]
  items.sort(key=lambda item: rank.get(name(item), len(rank)))
