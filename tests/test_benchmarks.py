"""The benchmarks' CPU paths, so a first accelerator run is not their debugging session."""

import json
import os
import sys

from absl import flags
import pytest


def _import_benchmarks():
  """Imports the scripts without their absl flags clashing with the package's (e.g. show's).

  The scripts define flags at import, into the one global FLAGS that pause_lm's own
  entry points use too; the tests never read them, so they are dropped again and the flags
  defined before are put back.
  """
  # absl keeps name -> Flag (short names included) in one dict; swap it out and back whole,
  # since re-adding flags one by one trips over a flag's short name (e.g. 'v').
  registry = flags.FLAGS._flags()  # pylint: disable=protected-access
  saved = dict(registry)
  registry.clear()
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'benchmarks'))
  try:
    import accelerator_check  # pylint: disable=g-import-not-at-top
    import vs_pytorch  # pylint: disable=g-import-not-at-top
  finally:
    # Keep what pause_lm modules and absl (its --verbosity, if absl.logging was first imported
    # on the way) defined; drop the scripts' own flags.
    package_flags = {
      id(flag)
      for module, module_flags in flags.FLAGS.flags_by_module_dict().items()
      if module.startswith(('pause_lm', 'absl'))
      for flag in module_flags
    }
    kept = {name: flag for name, flag in registry.items() if id(flag) in package_flags}
    registry.clear()
    registry.update(kept)
    registry.update(saved)
  return accelerator_check, vs_pytorch


accelerator_check, vs_pytorch = _import_benchmarks()


_SAVED = []  # what the check hands its `save` after each part

# One xdist worker runs this file (`--dist loadgroup`, the Makefile's), so the tiny check, the
# file's slow part, runs once rather than once on each worker that gets one of its tests.
pytestmark = pytest.mark.xdist_group('benchmarks')


@pytest.fixture(scope='module')
def tiny_check():
  return accelerator_check.run_check(
    tiny=True,
    steps=1,
    repeats=1,
    prefix_len=8,
    decode_len=2,
    decode_batch=1,
    peak_tflops=None,
    save=lambda out: _SAVED.append(json.dumps(out)),
  )


def test_accelerator_check_tiny_measures_every_part(tiny_check):
  result = json.loads(json.dumps(tiny_check))  # the file main writes holds exactly this
  step = result['train_step']['1b_gin']
  assert 'error' not in step, step
  assert step['remat_policy'] == 'dots_with_no_batch_dims_saveable'
  assert step['attention_impl'] == 'xla'
  assert step['model'] == 'tiny' and step['dtype'] == 'bfloat16'
  assert step['loss_finite'] and step['tokens_per_sec'] > 0
  assert 0 < step['fraction_of_matmul']
  assert step['mfu'] is None  # a CPU has no datasheet peak
  memory = step['memory']
  # Arguments hold float32 parameters and two Adam moments at least.
  assert memory['argument_size_in_bytes'] >= 3 * 4 * step['params']
  assert memory['peak_bytes'] > memory['temp_size_in_bytes'] > 0
  attention = result['attention']
  assert attention['xla']['median_ms'] > 0
  decode = result['decode']
  assert 'error' not in decode, decode
  assert [decode[f'M={m}']['ratio_to_M=0'] > 0 for m in (0, 10, 50)] == [True] * 3
  assert decode['M=0']['ratio_to_M=0'] == 1.0


def test_accelerator_check_records_an_unavailable_kernel_instead_of_stopping(tiny_check):
  # No cuDNN on a CPU: the check still finishes and says why the field is missing.
  assert 'error' in tiny_check['attention']['cudnn']
  assert 'cudnn_speedup' not in tiny_check['attention']
  for variant in ('cudnn_attention', 'cudnn_attention_no_remat'):
    assert 'error' in tiny_check['train_step'][variant]


def test_accelerator_check_saves_after_every_part(tiny_check):
  # A run cut off by a time limit still leaves every part it finished in the JSON.
  parts = [sorted(json.loads(saved)) for saved in _SAVED]
  assert len(_SAVED) == len(accelerator_check.STEP_VARIANTS) + 2
  assert 'decode' not in parts[-2] and 'decode' in parts[-1]
  assert json.loads(_SAVED[-1]) == json.loads(json.dumps(tiny_check))


def test_accelerator_check_records_a_failing_part():
  def broken():
    raise ValueError('no such chip')

  part = accelerator_check._guarded('broken', broken)  # pylint: disable=protected-access
  assert part['error'] == 'ValueError: no such chip'
  assert 'wall_seconds' in part


def test_vs_pytorch_without_torch_says_how_to_install_it(monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # import torch now raises ImportError
  with pytest.raises(SystemExit, match=r"pip install -e '\.\[bench\]'"):
    vs_pytorch.torch_variants(None, 1, 8, use_compile=False)
