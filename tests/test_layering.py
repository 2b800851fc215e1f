"""One-way imports between pause-lm's packages, enforced (issue 22).

A package may import only itself and the packages after it on its line:

  runtime        (nothing of pause_lm)
  data           runtime
  tasks          data, runtime
  pipeline       tasks, data, runtime
  model          runtime
  checkpointing  runtime
  hf             model, data, checkpointing, runtime
  training       pipeline, tasks, data, model, checkpointing, runtime
  evaluation     pipeline, tasks, data, model, checkpointing, runtime
  grid           data, runtime
  harness        hf, pipeline, tasks, data, model, checkpointing, runtime
  commands       anything (the modules at the top of pause_lm/: train, evaluate, ...)

`tasks` is the top-level tasks/ folder, installed as pause_lm.tasks. Training never imports
evaluation (the periodic evaluator is handed in by the command) and evaluation never imports
training. Every row names only rows above it, so the layering has no cycle by construction.

Every import statement counts, those inside functions too: a late import is still a
dependency. The other rules:

(b) no cycle between subpackages, on the imports as they are;
(c) no library module (a subpackage's or tasks/) defines absl flags when it is imported: a
    user's program that imports the library keeps its own flag names, and a command defines
    the flags it reads and passes their values in (definitions inside a function the command
    calls, or under `if __name__ == '__main__':`, are not made on import);
(d) Orbax is imported in pause_lm/checkpointing only, so its API is wrapped in one place;
(e) light: grid, and the `experiments` and `report` commands, import no JAX, TensorFlow or
    what stands on them (SeqIO, Flax, Orbax, ...), so planning a grid and writing its report
    start in a second: not when imported (their module-level imports, followed through
    pause_lm's own modules), and grid not even inside a function.

pause_lm/runtime/compat.py is the one module not checked: it names the old import paths, as
strings for importlib, to alias them to the new modules.

Each failure names the file, the line and the rule.
"""

import ast
import collections
import dataclasses
import pathlib

from pause_lm.runtime import compat

REPO = pathlib.Path(__file__).resolve().parents[1]

# Package -> the packages it may import besides itself (the table above).
LAYERS = {
  'runtime': (),
  'data': ('runtime',),
  'tasks': ('data', 'runtime'),
  'pipeline': ('tasks', 'data', 'runtime'),
  'model': ('runtime',),
  'checkpointing': ('runtime',),
  'hf': ('model', 'data', 'checkpointing', 'runtime'),
  'training': ('pipeline', 'tasks', 'data', 'model', 'checkpointing', 'runtime'),
  'evaluation': ('pipeline', 'tasks', 'data', 'model', 'checkpointing', 'runtime'),
  'grid': ('data', 'runtime'),
  'harness': ('hf', 'pipeline', 'tasks', 'data', 'model', 'checkpointing', 'runtime'),
}
COMMANDS = 'commands'
EXEMPT = ('pause_lm/runtime/compat.py',)
ORBAX_PACKAGE = 'checkpointing'
# Third-party packages that a light module must not import (JAX, TensorFlow and what stands on
# them; matplotlib, gin, absl and etils are light).
HEAVY = ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'tensorflow', 'tensorflow_datasets', 'seqio')
HEAVY += ('t5', 'clu', 'torch', 'transformers')
LIGHT_PACKAGES = ('grid',)
LIGHT_COMMANDS = ('pause_lm.experiments', 'pause_lm.report')


@dataclasses.dataclass(frozen=True)
class Import:
  target: str  # The module imported, or module.attribute for `from module import attribute`.
  line: int
  at_import: bool  # Runs when the module is imported: not in a function, not under __main__.


@dataclasses.dataclass
class Module:
  name: str  # pause_lm.data.vocab, pause_lm.tasks.downstream
  path: str  # Relative to the repository: pause_lm/data/vocab.py, tasks/downstream.py
  package: str  # A key of LAYERS, or COMMANDS
  imports: list[Import]
  flag_lines: list[int]  # Lines that define absl flags on import.


def _is_main_guard(node: ast.AST) -> bool:
  """`if __name__ == '__main__':`."""
  return (
    isinstance(node, ast.If)
    and isinstance(node.test, ast.Compare)
    and isinstance(node.test.left, ast.Name)
    and node.test.left.id == '__name__'
    and len(node.test.comparators) == 1
    and isinstance(node.test.comparators[0], ast.Constant)
    and node.test.comparators[0].value == '__main__'
  )


def _defines_flag(node: ast.AST) -> bool:
  """`flags.DEFINE_string(...)` and the like (also `DEFINE_string(...)` imported by name)."""
  if not isinstance(node, ast.Call):
    return False
  func = node.func
  name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
  return name.startswith('DEFINE_')


def scan(source: str, module_name: str, is_package: bool) -> tuple[list[Import], list[int]]:
  """Every import of a module's source (absolute names), and its import-time flag lines."""
  imports, flag_lines = [], []
  package = module_name if is_package else module_name.rpartition('.')[0]

  def visit(node: ast.AST, at_import: bool) -> None:
    for child in ast.iter_child_nodes(node):
      child_at_import = at_import and not (
        isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        or _is_main_guard(child)
      )
      if isinstance(child, ast.Import):
        imports.extend(Import(a.name, child.lineno, child_at_import) for a in child.names)
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ''
        if child.level:
          parent = package.rsplit('.', child.level - 1)[0] if child.level > 1 else package
          base = f'{parent}.{base}' if base else parent
        names = [f'{base}.{a.name}' for a in child.names]
        imports.extend(Import(n, child.lineno, child_at_import) for n in names)
      elif child_at_import and _defines_flag(child):
        flag_lines.append(child.lineno)
      visit(child, child_at_import)

  visit(ast.parse(source), True)
  return imports, flag_lines


def _name_and_package(path: pathlib.Path) -> tuple[str, str]:
  relative = path.relative_to(REPO).with_suffix('')
  parts = list(relative.parts)
  if parts[0] == 'tasks':
    parts = ['pause_lm', *parts]
  if parts[-1] == '__init__':
    parts.pop()
  name = '.'.join(parts)
  is_top = relative.parts[0] == 'pause_lm' and len(relative.parts) == 2  # pause_lm/train.py
  return name, (COMMANDS if is_top or len(parts) == 1 else parts[1])


def load_modules() -> dict[str, Module]:
  modules = {}
  for path in sorted([*REPO.glob('pause_lm/**/*.py'), *REPO.glob('tasks/**/*.py')]):
    name, package = _name_and_package(path)
    imports, flag_lines = scan(path.read_text(), name, path.name == '__init__.py')
    relative = str(path.relative_to(REPO))
    modules[name] = Module(name, relative, package, imports, flag_lines)
  return modules


MODULES = load_modules()
LIBRARY = [m for m in MODULES.values() if m.package != COMMANDS and m.path not in EXEMPT]


def resolve(target: str) -> str | None:
  """The pause_lm module an import target runs (None for third-party ones)."""
  parts = target.split('.')
  for end in range(len(parts), 1, -1):
    if '.'.join(parts[:end]) in MODULES:
      return '.'.join(parts[:end])
  return None


def package_of(target: str) -> str | None:
  """The LAYERS package (or COMMANDS) an import target belongs to; None for third-party ones
  and for `pause_lm` itself (whose __init__ only installs the old-path aliases)."""
  module = resolve(target)
  return None if module is None else MODULES[module].package


def _old_path(target: str) -> str | None:
  """The old import path (runtime/compat.py) that `target` uses, if any."""
  for old in compat.MOVED_MODULES:
    if target == old or target.startswith(old + '.'):
      return old
  return None


def test_the_table_lists_each_package_below_what_it_imports():
  order = list(LAYERS)
  for package, allowed in LAYERS.items():
    assert all(order.index(a) < order.index(package) for a in allowed), package
  rows = [f'  {p:<15}{", ".join(a) or "(nothing of pause_lm)"}' for p, a in LAYERS.items()]
  assert '\n'.join(rows) in __doc__, 'The docstring table and LAYERS differ.'


def test_the_checker_sees_every_import():
  source = (
    'import jax\n'
    'from . import sibling\n'
    'def f():\n'
    '  from pause_lm.training import trainer\n'
    '  flags.DEFINE_string("inside", None, "")\n'
    'flags.DEFINE_bool("outside", False, "")\n'
    "if __name__ == '__main__':\n"
    '  flags.DEFINE_integer("main_only", 0, "")\n'
  )
  imports, flag_lines = scan(source, 'pause_lm.model.x', is_package=False)
  assert imports == [
    Import('jax', 1, True),
    Import('pause_lm.model.sibling', 2, True),
    Import('pause_lm.training.trainer', 4, False),
  ]
  assert flag_lines == [6]
  assert len(LIBRARY) > 40 and {m.package for m in LIBRARY} == set(LAYERS)
  assert package_of('pause_lm.tasks.downstream.finetune_task') == 'tasks'
  assert package_of('pause_lm.experiments') == COMMANDS


def test_a_package_imports_only_itself_and_the_packages_below_it():
  errors = []
  for module in LIBRARY:
    allowed = (module.package, *LAYERS[module.package])
    for imp in module.imports:
      old = _old_path(imp.target)
      if old is not None:
        errors.append(
          f'{module.path}:{imp.line}: (a) layering: {imp.target} is an old import path; '
          f'import {compat.MOVED_MODULES[old]} instead.'
        )
        continue
      package = package_of(imp.target)
      if package is not None and package not in allowed:
        may = ', '.join(LAYERS[module.package]) or 'nothing of pause_lm'
        errors.append(
          f'{module.path}:{imp.line}: (a) layering: {module.package} imports {imp.target} '
          f'({package}); {module.package} may import {may}.'
        )
  assert not errors, '\n'.join(errors)


def test_no_import_cycle_between_subpackages():
  edges = collections.defaultdict(dict)  # package -> {imported package: 'path:line'}
  for module in LIBRARY:
    for imp in module.imports:
      package = package_of(imp.target)
      if package not in (None, COMMANDS, module.package):
        edges[module.package].setdefault(package, f'{module.path}:{imp.line}')
  cycles = []

  def walk(package, path):
    for nxt in sorted(edges[package]):
      if nxt in path:
        cycle = path[path.index(nxt) :] + [nxt]
        cycles.append(
          ' -> '.join(cycle)
          + ' ('
          + '; '.join(f'{a}->{b} at {edges[a][b]}' for a, b in zip(cycle, cycle[1:]))
          + ')'
        )
      elif len(path) <= len(LAYERS):
        walk(nxt, path + [nxt])

  for package in sorted(edges):
    walk(package, [package])
  assert not cycles, '(b) import cycles between subpackages:\n' + '\n'.join(sorted(set(cycles)))


def test_no_library_module_defines_flags_on_import():
  errors = [
    f'{m.path}:{line}: (c) flags: a library module defines an absl flag on import; define it '
    'in the command that reads it (pause_lm/*.py) and pass the value in.'
    for m in LIBRARY
    for line in m.flag_lines
  ]
  assert not errors, '\n'.join(errors)


def test_only_checkpointing_imports_orbax():
  errors = [
    f'{m.path}:{imp.line}: (d) orbax: {imp.target} imported outside pause_lm/checkpointing; '
    'use (or add) a function of pause_lm.checkpointing.'
    for m in MODULES.values()
    if m.package != ORBAX_PACKAGE and m.path not in EXEMPT
    for imp in m.imports
    if imp.target.split('.')[0] == 'orbax'
  ]
  assert not errors, '\n'.join(errors)


def _runs(module_name: str) -> list[str]:
  """The modules that importing `module_name` runs first: its parent packages, then itself."""
  parts = module_name.split('.')
  return [p for p in ('.'.join(parts[:i]) for i in range(1, len(parts) + 1)) if p in MODULES]


def test_grid_and_its_commands_are_light():
  errors = []
  starts = [(m, True) for m in MODULES.values() if m.package in LIGHT_PACKAGES]
  starts += [(MODULES[name], False) for name in LIGHT_COMMANDS]
  for start, every_import in starts:
    seen, todo = set(), [(start, [])]
    while todo:
      module, chain = todo.pop()
      if module.name in seen:
        continue
      seen.add(module.name)
      for imp in module.imports:
        if not (imp.at_import or (every_import and module is start)):
          continue
        where = chain + [f'{module.path}:{imp.line}']
        if imp.target.split('.')[0] in HEAVY:
          errors.append(f'{" -> ".join(where)}: (e) light: {start.name} imports {imp.target}.')
        resolved = resolve(imp.target)
        if resolved is not None:
          todo.extend((MODULES[name], where) for name in _runs(resolved))
  assert not errors, '\n'.join(sorted(set(errors)))
