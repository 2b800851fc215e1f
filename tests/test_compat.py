"""What users were told to write before the restructure keeps working, and says where it moved.

Old module paths (`pause_lm.trainer`, `pause_lm.vocab`, ...) are the new modules themselves,
imported with a DeprecationWarning that names the new path (pause_lm/runtime/compat.py); gin
configurable names are unchanged.
"""

import importlib
import pathlib
import re
import sys
import textwrap
import warnings

import gin
import pytest

from pause_lm.runtime import compat

REPO = pathlib.Path(__file__).resolve().parent.parent

# Every configurable gin knew before the restructure (commit 87e4c3c), by the short name that
# gin files, `--gin.NAME.param` flags and saved config.gin files use.
CONFIGURABLES_BEFORE = (
  'CheckpointConfig',
  'WarmStartConfig',
  'TruncationLimit',
  'input_shards',
  'evaluate',
  'periodic_evaluator',
  'Grid',
  'hf_vocabulary',
  'ModelConfig',
  'create_optimizer',
  'learning_rate_schedule',
  'RunLock',
  'create_mesh',
  'logical_axis_rules',
  'finetune_task',
  'commonsense_qa_files',
  'paper_vocabulary',
  'c4_source',
  'train',
  'c4_vocabulary',
)
# Configurables added since, listed in docs/api.md as well.
CONFIGURABLES_ADDED = ('file_task', 'harness_evaluator')

# The custom-task module of docs/custom_tasks.md as it was written before pause_lm.synthetic
# existed (commit 8d46818), verbatim but for the task's name.
OLD_DOCS_TASK_MODULE = """
import seqio
from t5.evaluation import metrics
import tensorflow as tf

from pause_lm import tasks
from pause_lm import vocab

_SIZES = {"train": 512, "validation": 64}


def sum_examples(split, shuffle_files=False, seed=None):
  del shuffle_files, seed
  inputs, targets = [], []
  for i in range(_SIZES[split]):
    digits = [(i * 7 + k * 3 + (split == "validation")) % 10 for k in range(4)]
    inputs.append("sum " + " ".join(map(str, digits)) + " :")
    targets.append(str(sum(digits)))
  return tf.data.Dataset.from_tensor_slices({"inputs": inputs, "targets": targets})


def strip(answer, example=None, is_target=False):
  del example, is_target
  return answer.strip()


tasks.register_downstream_task(
    "old_docs_sum",
    seqio.FunctionDataSource(sum_examples, splits=tuple(_SIZES),
                             num_input_examples=dict(_SIZES)),
    text_preprocessors=[],
    vocabulary=vocab.synthetic_vocabulary(),
    target_length=8,
    metric_fns=[metrics.accuracy],
    postprocess_fn=strip)
"""


def _forget(name, monkeypatch):
  """Undoes an earlier import of old path `name` in this process, as before a user's first."""
  import pause_lm  # pylint: disable=g-import-not-at-top

  monkeypatch.delitem(sys.modules, name, raising=False)
  monkeypatch.delattr(pause_lm, name.rpartition('.')[2], raising=False)


def _import_fresh(name, monkeypatch):
  """Imports `name` as a user's first import of it would, recording the warnings."""
  _forget(name, monkeypatch)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    module = importlib.import_module(name)
  return module, [w for w in caught if w.category is DeprecationWarning]


@pytest.mark.parametrize('old', sorted(compat.MOVED_MODULES))
def test_an_old_module_path_is_the_new_module_and_warns_with_its_new_path(old, monkeypatch):
  new = compat.MOVED_MODULES[old]
  module, caught = _import_fresh(old, monkeypatch)
  assert module is importlib.import_module(new)
  assert module.__name__ == new and module.__spec__.name == new  # Not re-executed, not renamed.
  assert [str(w.message).split(';')[0] for w in caught] == [f'{old} has moved to {new}']
  # The warning points at the line that imported the old path, not at the import machinery.
  assert caught[0].filename == __file__


def test_from_import_of_an_old_module_binds_the_same_objects(monkeypatch):
  _forget('pause_lm.trainer', monkeypatch)
  with pytest.deprecated_call(match='pause_lm.training.trainer'):
    from pause_lm import trainer  # pylint: disable=g-import-not-at-top
  from pause_lm.training import trainer as new_trainer  # pylint: disable=g-import-not-at-top

  assert trainer.train is new_trainer.train


def test_names_that_left_a_module_are_forwarded_with_a_warning():
  from pause_lm.data import synthetic  # pylint: disable=g-import-not-at-top
  from pause_lm.data import vocab  # pylint: disable=g-import-not-at-top
  from pause_lm.pipeline import datasets  # pylint: disable=g-import-not-at-top

  with pytest.deprecated_call(match='pause_lm.data.synthetic.synthetic_vocabulary'):
    assert vocab.synthetic_vocabulary is synthetic.synthetic_vocabulary
  import pause_lm.data  # pylint: disable=g-import-not-at-top

  with pytest.deprecated_call(match='pause_lm.pipeline.datasets.get_task'):
    assert pause_lm.data.get_task is datasets.get_task
  with pytest.raises(AttributeError, match='no attribute'):
    _ = pause_lm.data.no_such_name


def test_every_configurable_name_gin_files_used_before_still_resolves():
  # The old paths that gin files and saved config.gin files import (hf_tokenizer: docs/own_data.md).
  old_imports = ('checkpointing', 'evaluation', 'grid', 'hf_tokenizer', 'model', 'optimizer')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    for module in (*old_imports, 'sharding', 'tasks', 'tasks.paper', 'trainer'):
      importlib.import_module(f'pause_lm.{module}')
  for name in CONFIGURABLES_BEFORE:
    assert gin.config._REGISTRY.get_match(name) is not None, name  # pylint: disable=protected-access


def test_a_task_module_from_the_old_docs_registers_and_reads(tmp_path, monkeypatch):
  (tmp_path / 'old_docs_tasks.py').write_text(textwrap.dedent(OLD_DOCS_TASK_MODULE))
  monkeypatch.syspath_prepend(str(tmp_path))
  _forget('pause_lm.vocab', monkeypatch)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    importlib.import_module('old_docs_tasks')
  messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
  assert any(m.startswith('pause_lm.vocab has moved to pause_lm.data.vocab') for m in messages)
  assert any('synthetic_vocabulary has moved to pause_lm.data.synthetic' in m for m in messages)
  from pause_lm.pipeline import datasets  # pylint: disable=g-import-not-at-top

  task = datasets.get_task('old_docs_sum_pause10')
  example = next(iter(task.get_dataset({'inputs': 64, 'targets': 8}, split='validation')))
  assert (
    example['inputs'].numpy()[-10:].tolist()
    == [task.output_features['inputs'].vocabulary.pause_id] * 10
  )


def _api_table(heading: str) -> list[list[str]]:
  """The rows of docs/api.md's table under `## heading`, as lists of cell texts."""
  text = (REPO / 'docs' / 'api.md').read_text()
  section = text.split(f'## {heading}\n', 1)[1].split('\n## ', 1)[0]
  rows = [line.strip('|').split('|') for line in section.splitlines() if line.startswith('| `')]
  return [[cell.strip() for cell in row] for row in rows]


def _code_spans(cell: str) -> list[str]:
  return re.findall(r'`([^`]+)`', cell)


def test_docs_api_public_paths_import_and_have_their_names():
  rows = _api_table('Public paths')
  assert len(rows) > 15
  for path_cell, names_cell, _ in rows:
    (path,) = _code_spans(path_cell)
    module = importlib.import_module(path)
    with warnings.catch_warnings():
      warnings.simplefilter('error', DeprecationWarning)  # Public names are not deprecated.
      missing = [name for name in _code_spans(names_cell) if not hasattr(module, name)]
    assert not missing, f'{path} has no {missing}'


def test_docs_api_configurables_resolve_to_their_modules():
  rows = _api_table('Gin configurables')
  assert {_code_spans(name)[0] for name, _ in rows} == {*CONFIGURABLES_BEFORE, *CONFIGURABLES_ADDED}
  for name_cell, module_cell in rows:
    (name,), (module,) = _code_spans(name_cell), _code_spans(module_cell)
    importlib.import_module(module)
    configurable = gin.config._REGISTRY.get_match(name)  # pylint: disable=protected-access
    assert configurable is not None and configurable.wrapped.__module__ == module, name


def test_docs_api_moved_paths_are_what_compat_keeps():
  rows = _api_table('Moved paths')
  assert {_code_spans(old)[0]: _code_spans(new)[0] for old, new in rows} == compat.MOVED_MODULES
