"""Import paths that users were told to write before the library moved into subpackages.

Each old module path (`pause_lm.trainer`, `pause_lm.vocab`, ...) still imports: it is the very
module object at its new path, so classes, gin configurables and module state are shared, and
the import warns with a `DeprecationWarning` that names the new path. Old module names that are
now packages (`pause_lm.data`) forward their old attributes the same way, through
`forward_attribute`. `docs/api.md` lists the public paths; this table is the only place the old
ones live, and the layering test (tests/test_layering.py) exempts this module alone.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# Old module -> the module it is now.
MOVED_MODULES = {
  'pause_lm.aot': 'pause_lm.training.aot',
  'pause_lm.checkpoint_integrity': 'pause_lm.checkpointing.integrity',
  'pause_lm.console': 'pause_lm.runtime.console',
  'pause_lm.decoding': 'pause_lm.model.decoding',
  'pause_lm.distributed': 'pause_lm.runtime.distributed',
  'pause_lm.eval_results': 'pause_lm.runtime.eval_results',
  'pause_lm.feature_converters': 'pause_lm.data.feature_converters',
  'pause_lm.gin_utils': 'pause_lm.runtime.gin_utils',
  'pause_lm.hf_tokenizer': 'pause_lm.hf.tokenizer',
  'pause_lm.optimizer': 'pause_lm.training.optimizer',
  'pause_lm.preprocessors': 'pause_lm.data.preprocessors',
  'pause_lm.rope': 'pause_lm.model.rope',
  'pause_lm.run_lock': 'pause_lm.runtime.run_lock',
  'pause_lm.settings_check': 'pause_lm.training.settings_check',
  'pause_lm.sharding': 'pause_lm.runtime.sharding',
  'pause_lm.stateless_random': 'pause_lm.data.stateless_random',
  'pause_lm.synthetic': 'pause_lm.data.synthetic',
  'pause_lm.train_hooks': 'pause_lm.training.hooks',
  'pause_lm.train_state': 'pause_lm.training.train_state',
  'pause_lm.trainer': 'pause_lm.training.trainer',
  'pause_lm.variants': 'pause_lm.data.variants',
  'pause_lm.vocab': 'pause_lm.data.vocab',
}

# (module, old attribute) -> the module that defines it now. For modules whose path is now a
# package, and for names that moved out of a module that is still there.
MOVED_ATTRIBUTES = {
  **{
    ('pause_lm.data', name): 'pause_lm.pipeline.datasets'
    for name in (
      'TaskNotRegisteredError',
      'DatasetNotPreparedError',
      'TooManyTruncationsError',
      'TaskInfo',
      'get_task',
      'eval_task_name',
      'variant_num_pauses',
      'inference_task',
      'task_info',
      'task_feature_lengths',
      'feature_converter',
      'TruncationLimit',
      'truncated_examples',
      'check_truncation',
      'limit_truncation',
      'get_dataset',
    )
  },
  # Moved to pause_lm.synthetic (now pause_lm.data.synthetic) when the vocab <-> synthetic
  # import cycle was removed; the custom-task docs of that time told users to call it here.
  ('pause_lm.data.vocab', 'synthetic_vocabulary'): 'pause_lm.data.synthetic',
  ('pause_lm.data.vocab', 'cache_dir'): 'pause_lm.data.synthetic',
}


def _stacklevel() -> int:
  """The `warnings.warn` stack level (from `_warn`) of the user's line: the first frame
  outside this module, importlib and a package's `__getattr__`. `warnings` itself skips
  importlib's frozen bootstrap frames, so those are not counted."""
  level, frame = 1, sys._getframe(1)  # pylint: disable=protected-access
  while frame is not None and (
    frame.f_globals.get('__name__', '').startswith('importlib')
    or frame.f_code.co_filename == __file__
    or frame.f_code.co_name == '__getattr__'
  ):
    if not frame.f_code.co_filename.startswith('<frozen importlib'):
      level += 1
    frame = frame.f_back
  return level


def _warn(old: str, new: str) -> None:
  warnings.warn(
    f'{old} has moved to {new}; import it from there ({old} will be removed in a later '
    'release; docs/api.md lists the public paths).',
    DeprecationWarning,
    stacklevel=_stacklevel(),
  )


def forward_attribute(module_name: str, name: str):
  """A package's `__getattr__` body: the moved attribute, with a warning; else AttributeError."""
  new_module = MOVED_ATTRIBUTES.get((module_name, name))
  if new_module is None:
    raise AttributeError(f'module {module_name!r} has no attribute {name!r}')
  _warn(f'{module_name}.{name}', f'{new_module}.{name}')
  return getattr(importlib.import_module(new_module), name)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports an old module path as the module at its new path (the same object)."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname not in MOVED_MODULES:
      return None
    return importlib.util.spec_from_loader(fullname, self)

  def create_module(self, spec):
    return None  # A placeholder; exec_module puts the real module in its place.

  def exec_module(self, module):
    old = module.__name__
    _warn(old, MOVED_MODULES[old])
    # The import system returns what sys.modules holds under the old name once this returns,
    # so the old name is the new module itself, attributes and __spec__ untouched.
    sys.modules[old] = importlib.import_module(MOVED_MODULES[old])


def install() -> None:
  """Adds the finder once (pause_lm/__init__.py calls this on import)."""
  if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
