"""The experiment grid: its runs and folders, a resumable tiny grid, and the report's numbers."""

import dataclasses
import json
import logging
import re
import shlex

from etils import epath
import pytest

from pause_lm import experiments
from pause_lm.runtime import eval_results
from pause_lm.grid import spec as grid_lib
from pause_lm.grid import report
from pause_lm.grid import runner

from conftest import run_python

Finetune = grid_lib.Finetune


def _grid(**overrides) -> grid_lib.Grid:
  settings = dict(
    experiment_dir='exp',
    tasks=['squad', 'gsm8k'],
    pretrain_gin_files=['gin/stdpt.gin'],
    finetune_gin_files=['gin/stdft.gin'],
    eval_gin_files=['gin/evaluate.gin'],
    num_pauses=[10, 50],
    inference_pauses=[0, 5],
    num_seeds=3,
    finetune_bindings={'TRAIN_STEPS': 7},
    task_bindings={'squad': {'TRAIN_STEPS': 9}},
  )
  settings.update(overrides)
  return grid_lib.Grid(**settings)


def test_expand_runs_names_and_dependencies():
  runs = grid_lib.expand(_grid())
  names = [r.name for r in runs]
  assert names[:2] == ['pretrain/stdpt', 'pretrain/pausept']
  # 2 tasks x 2 pretraining x (StdFT + 2 M) x 3 seeds.
  assert len(runs) == 2 + 2 * 2 * 3 * 3
  assert len(set(names)) == len(names)
  assert 'finetune/squad/pausept_pauseft50/seed2' in names
  by_name = {r.name: r for r in runs}
  run = by_name['finetune/squad/pausept_pauseft10/seed1']
  assert run.depends_on == 'pretrain/pausept'
  bindings = dict(run.train.bindings)
  assert bindings['TASK'] == "'squad_pause10'"
  assert bindings['INIT_CHECKPOINT'] == "'exp/pretrain/pausept'"
  assert bindings['train.seed'] == '1'
  assert bindings['TRAIN_STEPS'] == '9'  # The per-task value wins.
  assert dict(by_name['finetune/gsm8k/stdpt_stdft/seed0'].train.bindings)['TRAIN_STEPS'] == '7'
  # Its own M first, then the sweep; StdFT only at 0.
  assert [dict(c.bindings)['NUM_INFERENCE_PAUSES'] for c in run.evals] == ['10', '0', '5']
  assert run.evals[1].output_dir == 'exp/finetune/squad/pausept_pauseft10/seed1/eval/minf0'
  assert len(by_name['finetune/squad/stdpt_stdft/seed0'].evals) == 1
  # Equal token budgets: the two pretraining runs differ only in their task.
  std, pause = (dict(r.train.bindings) for r in runs[:2])
  assert {k for k in std if std[k] != pause[k]} == {'MODEL_DIR', 'TASK'}


def test_expand_ablations_and_pretrained_checkpoints():
  grid = _grid(
    tasks=['squad'], prepend=True, filler=True, num_seeds=1, pretrained={'stdpt': 'gs://b/stdpt'}
  )
  runs = grid_lib.expand(grid)
  names = [r.name for r in runs]
  assert names[0] == 'pretrain/pausept'
  assert 'finetune/squad/stdpt_pauseft10_prepend/seed0' in names
  assert 'finetune/squad/pausept_pauseft50_prepend/seed0' in names
  assert 'finetune/squad/stdpt_fillerft50/seed0' in names
  assert not any('pausept_filler' in n for n in names)
  filler = next(r for r in runs if r.name.endswith('stdpt_fillerft10/seed0'))
  assert dict(filler.train.bindings)['TASK'] == "'squad_filler10'"
  assert dict(filler.train.bindings)['INIT_CHECKPOINT'] == "'gs://b/stdpt'"
  assert filler.depends_on is None
  prepend = next(r for r in runs if r.name.endswith('pausept_pauseft10_prepend/seed0'))
  assert dict(prepend.train.bindings)['TASK'] == "'squad_pause10_prepend'"
  assert len(prepend.evals) == 1  # Inference sweeps are for appended pauses only.


def test_folder_names_round_trip():
  for finetune in (
    Finetune('std', 0),
    Finetune('pause', 10),
    Finetune('pause', 5, 'prepend'),
    Finetune('filler', 50),
    Finetune('pause', 0, max_pauses=10),
  ):
    assert grid_lib.parse_finetune(finetune.name) == finetune
  key = grid_lib.parse_eval_path(
    'runs/x/finetune/squad_v2/pausept_pauseft10/seed3/eval/minf0/metrics.json'
  )
  assert key == grid_lib.EvalKey('squad_v2', 'pausept', Finetune('pause', 10), 3, 0)
  assert key.label == 'PausePT_PauseFT'
  assert (
    grid_lib.parse_eval_path(
      'runs/x/finetune/squad/pausept_pauseft10/seed3/eval/step_100/metrics.json'
    )
    is None
  )
  key = grid_lib.parse_eval_path('x/finetune/t/stdpt_pauseft0to10/seed0/eval/minf2/metrics.json')
  assert key.finetune == Finetune('pause', 0, max_pauses=10) and key.m_inf == 2
  assert key.label == 'StdPT_PauseFT(0..10)'


def test_expand_random_m_variants():
  runs = grid_lib.expand(
    _grid(tasks=['squad'], num_pauses=[10], random_pauses=[[0, 10]], num_seeds=2)
  )
  names = [r.name for r in runs]
  # 2 pretraining x (StdFT, PauseFT10, PauseFT(0..10)) x 2 seeds.
  assert len(runs) == 2 + 2 * 3 * 2
  run = next(r for r in runs if r.name == 'finetune/squad/pausept_pauseft0to10/seed1')
  assert dict(run.train.bindings)['TASK'] == "'squad_pause0to10'"
  assert run.depends_on == 'pretrain/pausept'
  # Evaluated at its largest M first, then the sweep; always the same task, at a fixed M.
  assert [dict(c.bindings)['NUM_INFERENCE_PAUSES'] for c in run.evals] == ['10', '0', '5']
  assert {dict(c.bindings)['TASK'] for c in run.evals} == {"'squad_pause0to10'"}
  assert run.evals[1].output_dir.endswith('pausept_pauseft0to10/seed1/eval/minf0')
  assert 'finetune/squad/stdpt_pauseft0to10/seed0' in names
  for bad in ([[5, 5]], [[3]], [[-1, 4]]):
    with pytest.raises(ValueError, match='random_pauses'):
      _grid(random_pauses=bad)


def test_grid_rejects_bad_settings():
  with pytest.raises(ValueError, match='task_bindings'):
    _grid(task_bindings={'lambada': {}})
  with pytest.raises(ValueError, match='num_pauses'):
    _grid(num_pauses=[0])


def test_printed_commands_in_stages_and_parseable():
  text = runner.print_commands(grid_lib.expand(_grid(tasks=['squad'], num_seeds=1)))
  stages = [line for line in text.splitlines() if line.startswith('#')]
  assert [s.split(':')[0] for s in stages] == ['# pretraining', '# finetuning', '# evaluation']
  commands = [shlex.split(line) for line in text.splitlines() if not line.startswith('#')]
  assert commands[0][:3] == ['python', '-m', 'pause_lm.train']
  assert "--gin.MODEL_DIR='exp/pretrain/stdpt'" in commands[0]
  assert commands[-1][2] == 'pause_lm.evaluate'
  assert len(commands) == 2 + 2 * 3 + 2 * (1 + 3 + 3)


def test_mean_std_formatting():
  assert report.format_mean_std([10.0, 20.0, 30.0]) == '20.0 ± 10.0'
  assert report.format_mean_std([7.25]) == '7.2 ± 0.0'
  assert report.format_mean_std([1.0, 2.0], digits=2) == '1.50 ± 0.71'
  assert report.format_mean_std([50.0, 52.0], seeds=5) == '51.0 ± 1.4 (n=2)'
  assert report.format_mean_std([]) == '–'


def _write_metrics(root, run, m_inf, value, step=10):
  path = epath.Path(root) / 'finetune' / run / 'eval' / f'minf{m_inf}' / 'metrics.json'
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps({'step': step, 'metrics': {'accuracy': value}}))


def test_report_picks_best_m_and_draws_figures(tmp_path):
  values = {
    'stdpt_stdft': [10, 12],
    'stdpt_pauseft2': [11, 13],
    'stdpt_pauseft5': [20, 22],
    'pausept_stdft': [9, 9],
    'pausept_pauseft2': [30, 34],
    'pausept_pauseft5': [25, 25],
  }
  for run, seeds in values.items():
    m = int(run[-1]) if run[-1].isdigit() else 0
    for seed, value in enumerate(seeds):
      _write_metrics(tmp_path, f'task/{run}/seed{seed}', m, value)
      if m:
        _write_metrics(tmp_path, f'task/{run}/seed{seed}', 0, value / 10)
  text = report.write_report(tmp_path).read_text()
  table1 = next(line for line in text.splitlines() if line.startswith('| task | accuracy'))
  assert table1 == (
    '| task | accuracy | 11.0 ± 1.4 | 21.0 ± 1.4 (M=5) | 9.0 ± 0.0 | 32.0 ± 2.8 (M=2) |'
  )
  assert '| task | accuracy | PausePT_PauseFT | 2 | 0 | 3.2 ± 0.3 |' in text
  assert (tmp_path / 'figures/task_accuracy_num_pauses.png').exists()
  assert (tmp_path / 'figures/task_accuracy_inference_pauses.png').exists()
  assert '## Empty answers' not in text  # No predictions files, nothing to say.


def test_report_shows_random_m_next_to_fixed_m(tmp_path):
  values = {
    'stdpt_stdft': {0: [40, 42]},
    'stdpt_pauseft10': {10: [50, 54], 0: [10, 12]},
    'stdpt_pauseft0to10': {10: [60, 60], 0: [44, 46]},
    'pausept_pauseft0to10': {10: [70, 72], 0: [30, 30]},
  }
  for run, by_m_inf in values.items():
    for m_inf, seeds in by_m_inf.items():
      for seed, value in enumerate(seeds):
        _write_metrics(tmp_path, f'task/{run}/seed{seed}', m_inf, value)
  text = report.write_report(tmp_path).read_text()
  header = next(line for line in text.splitlines() if line.startswith('| Task | Metric | StdPT'))
  assert header.endswith('| PausePT_PauseFT | StdPT_PauseFT(0..10) | PausePT_PauseFT(0..10) |')
  table1 = next(line for line in text.splitlines() if line.startswith('| task | accuracy'))
  # Best fixed M is 10 (the only one); the range's columns are at M_inf = hi.
  assert table1 == (
    '| task | accuracy | 41.0 ± 1.4 | 52.0 ± 2.8 (M=10) | – | – | 60.0 ± 0.0 | 71.0 ± 1.4 |'
  )
  assert '| task | accuracy | StdPT_PauseFT | 0..10 | 0 | 45.0 ± 1.4 |' in text
  assert '| task | accuracy | StdPT_PauseFT | 10 | 0 | 11.0 ± 1.4 |' in text
  assert '| task | accuracy | PausePT_PauseFT | 0..10 | 71.0 ± 1.4 |' in text
  assert (tmp_path / 'figures/task_accuracy_inference_pauses.png').exists()


def test_report_counts_empty_answers(tmp_path):
  for run, m_inf, outputs in (
    ('pausept_pauseft2/seed0', 0, ['', ' ', '3', '4']),
    ('pausept_pauseft2/seed1', 0, ['1', '', '3', '4']),
    ('pausept_pauseft2/seed0', 2, ['1', '2', '3', '4']),
    ('pausept_stdft/seed0', 0, ['1', '2', '3', '4']),
  ):
    _write_metrics(tmp_path, f'task/{run}', m_inf, 50.0)
    (tmp_path / 'finetune/task' / run / f'eval/minf{m_inf}/predictions.jsonl').write_text(
      ''.join(json.dumps({'output': o, 'prediction': o.strip()}) + '\n' for o in outputs)
    )
  assert (
    report.empty_answer_percent(
      tmp_path / 'finetune/task/pausept_pauseft2/seed0/eval/minf0/predictions.jsonl'
    )
    == 50
  )
  text = report.write_report(tmp_path).read_text()
  section = text.split('## Empty answers')[1].split('\n## ')[0]
  assert 'Every other of the 4 decoding evaluations answered every example.' in section
  assert [line for line in section.splitlines() if line.startswith('| task')] == [
    '| task | pausept_pauseft2 | 0 | 2 of 2 | 0: 50.0, 1: 25.0 |'
  ]


def test_print_commands_command_line():
  output = run_python(
    '-m',
    'pause_lm.experiments',
    '--gin_file=gin/experiments/toy.gin',
    '--gin.NUM_SEEDS=1',
    '--print_commands',
    '--only=pretrain/',
    cwd=grid_lib.__file__.rsplit('/', 2)[0],
  )
  lines = output.stdout.splitlines()
  assert lines[0].startswith('# pretraining: 2 runs')
  assert "--gin.TASK='synthetic_pause_pretrain'" in shlex.split(lines[2])
  assert re.search(r"--gin.MODEL_DIR='/.*/runs/toy/pretrain/pausept'", lines[2])


def _mtimes(folder: epath.Path) -> dict[str, float]:
  return {str(p): p.stat().st_mtime for p in folder.rglob('*')}


def test_tiny_grid_end_to_end_resumes_and_reports(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  grid = runner.load_grid(['gin/experiments/tiny_test.gin'], [f"EXPERIMENT_DIR = '{tmp_path}'"])
  # An interrupted grid: pretraining done, one finetuning run stopped at step 2 of 3, and
  # evaluated there.
  early = dataclasses.replace(grid, finetune_bindings={**grid.finetune_bindings, 'TRAIN_STEPS': 2})
  first = experiments.run_grid(early, only=r'^pretrain/|pausept_pauseft2/seed0$')
  resumed = f'{tmp_path}/finetune/synthetic_qa/pausept_pauseft2/seed0'
  assert first == [
    f'{tmp_path}/pretrain/stdpt',
    f'{tmp_path}/pretrain/pausept',
    resumed,
    f'{resumed}/eval/minf2',
    f'{resumed}/eval/minf0',
  ]
  pretrained = _mtimes(tmp_path / 'pretrain')

  caplog.clear()
  second = experiments.run_grid(grid)
  assert not any('/pretrain/' in d for d in second)
  assert _mtimes(tmp_path / 'pretrain') == pretrained
  assert resumed in second and f'{resumed}/eval/minf0' in second  # Stale evaluation redone.
  assert f'Resuming from {resumed}/checkpoints/2' in caplog.text
  # 8 finetuning runs (one resumed) and 12 evaluations, nothing else.
  assert len(second) == 8 + 12
  assert experiments.run_grid(grid) == []

  text = report.write_report(tmp_path).read_text()
  # The report reads the predictions the evaluations wrote (names shared via grid_lib).
  assert '## Empty answers' in text
  files = sorted(tmp_path.glob('finetune/*/*/seed*/eval/minf*/metrics.json'))
  assert len(files) == 12
  cells = {}
  for path in files:
    key = grid_lib.parse_eval_path(str(path))
    assert json.loads(path.read_text())['step'] == 3
    cells.setdefault((key.pretrain, key.finetune.name, key.m_inf), []).append(
      json.loads(path.read_text())['metrics']['accuracy']
    )
  for (pretrain, finetune, m_inf), values in cells.items():
    label = f'{grid_lib.LABELS[pretrain]}_PauseFT'
    if finetune == 'pauseft2':
      row = f'| synthetic_qa | accuracy | {label} | 2 | {m_inf} | '
      assert row + report.format_mean_std(values) + ' |' in text
  table1 = next(
    line for line in text.splitlines() if line.startswith('| synthetic_qa | accuracy |')
  )
  assert re.split(r' \| ', table1.strip('| '))[2:] == [
    report.format_mean_std(cells['stdpt', 'stdft', 0]),
    report.format_mean_std(cells['stdpt', 'pauseft2', 2]) + ' (M=2)',
    report.format_mean_std(cells['pausept', 'stdft', 0]),
    report.format_mean_std(cells['pausept', 'pauseft2', 2]) + ' (M=2)',
  ]


def test_run_refuses_to_start_before_its_pretraining(tmp_path):
  grid = runner.load_grid(['gin/experiments/tiny_test.gin'], [f"EXPERIMENT_DIR = '{tmp_path}'"])
  with pytest.raises(RuntimeError, match='pretrain/stdpt, which is not finished'):
    experiments.run_grid(grid, only='stdpt_stdft/seed0$')


def test_random_m_finetune_then_evaluate_at_zero_and_hi(tmp_path):
  grid = runner.load_grid(
    ['gin/experiments/tiny_test.gin'],
    [
      f"EXPERIMENT_DIR = '{tmp_path}'",
      'Grid.num_pauses = []',
      'Grid.random_pauses = [[0, 3]]',
      'Grid.num_seeds = 1',
    ],
  )
  run = f'{tmp_path}/finetune/synthetic_qa/stdpt_pauseft0to3/seed0'
  executed = experiments.run_grid(grid, only=r'^pretrain/stdpt$|stdpt_pauseft0to3')
  assert executed == [f'{tmp_path}/pretrain/stdpt', run, f'{run}/eval/minf3', f'{run}/eval/minf0']
  assert "TASK = 'synthetic_qa_pause0to3'" in epath.Path(run, 'config.gin').read_text()
  for m_inf, task in ((3, 'synthetic_qa_pause3'), (0, 'synthetic_qa_std')):
    folder = epath.Path(run, 'eval', f'minf{m_inf}')
    metrics = json.loads((folder / eval_results.METRICS_FILE).read_text())
    assert metrics['task'] == task and metrics['num_inference_pauses'] == m_inf
    assert metrics['finetuned_on'] == 'synthetic_qa_pause0to3'
    assert metrics['causal_pauses'] is True  # read as it was finetuned (issue 26)
    records = [
      json.loads(line) for line in (folder / eval_results.PREDICTIONS_FILE).read_text().splitlines()
    ]
    assert len(records) == 8 and all(r['prefix'].count('<pause>') == m_inf for r in records)
  text = report.write_report(tmp_path).read_text()
  assert '| StdPT_PauseFT(0..3) | PausePT_PauseFT(0..3) |' in text
  assert '| synthetic_qa | accuracy | StdPT_PauseFT | 0..3 | 0 |' in text
