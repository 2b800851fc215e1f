"""Downstream tasks from JSONL, CSV and Parquet files (issue 25): `register_file_task` and gin's
`file_task`, their variants, metrics and choices, every bad file named by file, line and field,
and an input position that resumes exactly."""

import csv
import gzip
import inspect
import json
import re

import gin
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio
import tensorflow as tf

from pause_lm import tasks
from pause_lm.hf import tokenizer as hf_tokenizer
from pause_lm.pipeline import datasets as data
from pause_lm.tasks import file_tasks
from pause_lm.tasks.text_sources import DataSourceError
from test_own_data import TOKENIZER_DIR

VOCABULARY = hf_tokenizer.hf_vocabulary(TOKENIZER_DIR)
PAUSE_ID = VOCABULARY.pause_id
# Text that CSV must quote: the delimiters, a quote and a newline.
QUESTION = 'what is {i} plus {i}, "twice"\tin\nwords?'


def _rows(count, first=0):
  return [
    {'question': QUESTION.format(i=i), 'answer': str(2 * i), 'answers': [str(2 * i), f'{2 * i}.0']}
    for i in range(first, first + count)
  ]


def _write(path, rows, kind=None):
  """`rows` (dicts) as a JSONL, CSV, TSV or Parquet file; CSV and TSV keep the text fields."""
  kind = kind or path.suffix[1:]
  if kind == 'parquet':
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
  elif kind == 'jsonl':
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  else:
    names = [k for k, v in rows[0].items() if not isinstance(v, list)]
    with open(path, 'w', newline='') as f:
      writer = csv.DictWriter(
        f, names, delimiter='\t' if kind == 'tsv' else ',', extrasaction='ignore'
      )
      writer.writeheader()
      writer.writerows(rows)
  return path


def _register(name, files, **kwargs):
  kwargs = {'inputs': 'question: {question} answer:', 'targets': 'answer', **kwargs}
  kwargs.setdefault('vocabulary', VOCABULARY)
  kwargs.setdefault('target_length', 8)
  return tasks.register_file_task(name, files=files, **kwargs)


def _examples(task, split='train'):
  source = data.get_task(task).source
  return list(source.get_dataset(split, shuffle=False).as_numpy_iterator())


def _preprocessed(task, split='train'):
  """The task's examples as the model's features are made from them (tokenized, paused)."""
  dataset = data.get_task(task).get_dataset({'inputs': 32, 'targets': 8}, split, shuffle=False)
  return list(dataset.as_numpy_iterator())


def _read_error(task):
  """The error reading the task's source raises, as training reports it."""
  try:
    for _ in data.get_task(task).source.get_dataset('train', shuffle=False):
      pass
  except tf.errors.OpError as e:
    return data.input_error(task, e)
  raise AssertionError(f'{task} read without an error')


def _iterator(task, shuffle=False, batch_size=2):
  dataset = data.get_dataset(
    task, 'train', sequence_length=64, batch_size=batch_size, shuffle=shuffle, seed=3
  )
  return data.TaskIterator(dataset, task, 'train')


def test_the_arguments_are_the_documented_ones():
  names = list(inspect.signature(tasks.register_file_task).parameters)
  assert names[:1] == ['name']
  for name in ('files', 'inputs', 'targets', 'metric', 'vocabulary', 'target_length', 'choices'):
    assert name in names
  assert tasks.file_task is file_tasks.file_task


def test_every_format_gives_the_same_examples_in_order(tmp_path):
  rows = _rows(10)
  expected = [
    (f'question: {r["question"]} answer:'.encode(), r['answer'].encode(), [r['answer'].encode()])
    for r in rows
  ]
  for kind in ('jsonl', 'csv', 'tsv', 'parquet'):
    path = _write(tmp_path / f'train.{kind}', rows)
    if kind == 'jsonl':  # Blank lines are skipped.
      path.write_text(path.read_text().replace('\n', '\n\n', 3))
    if kind == 'csv':  # Excel's byte-order mark and line ends.
      path.write_bytes(b'\xef\xbb\xbf' + path.read_bytes().replace(b'\n', b'\r\n'))
    _register(f'formats_{kind}', {'train': str(path)})
    examples = _examples(f'formats_{kind}_std')
    got = [(e['inputs'], e['targets'], list(e['answers'])) for e in examples]
    assert got == expected, kind
  # Nested columns, as in SQuAD's Parquet files: only the columns read are loaded.
  nested = [{'q': r['question'], 'answers': {'text': r['answers'], 'start': [0, 1]}} for r in rows]
  pq.write_table(pa.Table.from_pylist(nested), tmp_path / 'nested.parquet')
  _register('formats_nested', str(tmp_path / 'nested.parquet'), inputs='q', targets='answers.text')
  assert [list(e['answers']) for e in _examples('formats_nested_std')] == [
    [a.encode() for a in r['answers']] for r in rows
  ]
  # Gzipped JSONL and CSV.
  for kind in ('jsonl', 'csv'):
    path = tmp_path / f'train.{kind}.gz'
    path.write_bytes(gzip.compress((tmp_path / f'train.{kind}').read_bytes()))
    _register(f'formats_{kind}_gz', str(path))
    examples = _examples(f'formats_{kind}_gz_std')
    assert [(e['inputs'], e['targets']) for e in examples] == [e[:2] for e in expected], kind
  # A URL is read through tf.io.gfile (gs:// the same way), Parquet included.
  _register('formats_url', {'train': f'file://{tmp_path}/train.parquet'})
  assert [e['inputs'] for e in _examples('formats_url_std')] == [e[0] for e in expected]


def test_its_variants_exist_as_for_every_task(tmp_path):
  _write(tmp_path / 'a.parquet', _rows(6))
  _write(tmp_path / 'b.parquet', _rows(6, first=6))
  _register('variants', str(tmp_path / '*.parquet'))
  for name in ('variants_std', 'variants_pause10', 'variants_pause50', 'variants_pause3_prepend'):
    assert name in tasks.known_names() or tasks.ensure_registered(name)
  for name in ('variants_pause0to10', 'variants_filler2', 'variants_pause4_prepend'):
    assert tasks.ensure_registered(name), name
  info = data.task_info('variants_pause10')
  assert info.prefix_lm and info.target_length == 8 and info.pause_id == PAUSE_ID
  batch = next(_iterator('variants_pause10'))
  pauses = batch['decoder_input_tokens'] == PAUSE_ID
  assert (pauses.sum(axis=1) == 10).all()
  paused_targets = batch['decoder_target_tokens'] == PAUSE_ID
  assert paused_targets.any() and (batch['decoder_loss_weights'][paused_targets] == 0).all()
  prepend = _preprocessed('variants_pause4_prepend')[0]['inputs']
  assert (prepend[:4] == PAUSE_ID).all() and (prepend[4:] != PAUSE_ID).all()
  assert data.inference_task('variants_pause10', 5) == 'variants_pause5'


def test_templates_read_fields_nested_fields_and_literal_braces():
  template = file_tasks.Template.parse('Q: {question} {{not a field}} C: {ctx.title}', 'inputs')
  assert template.fields == ('question', 'ctx.title') and not template.is_field
  record = {'question': 'why?', 'ctx': {'title': 'Pauses'}}
  assert template.render(record, 'f, line 1', 'inputs') == 'Q: why? {not a field} C: Pauses'
  assert file_tasks.Template.parse('question', 'inputs').is_field
  fields = file_tasks.Fields(
    file_tasks.Template.parse('{n} + {n}', 'inputs'), file_tasks.Template.parse('a.text', 't')
  )
  assert fields.example({'n': 3, 'a': {'text': ['6', 'six']}}, 'w') == ('3 + 3', ['6', 'six'], -1)
  assert fields.columns == ('n', 'a.text', 'a')
  for bad in ('', 'q: {question', 'q: {}', 'q: }'):
    with pytest.raises(ValueError, match='inputs='):
      file_tasks.Template.parse(bad, 'inputs')


def test_metrics_by_name():
  targets = [['7', 'seven'], ['the cat sat']]
  predictions = ['seven', 'The cat sat.']
  assert file_tasks.accuracy(targets, predictions) == {'accuracy': 50.0}
  squad = {}
  for fn in file_tasks.METRICS['squad']:
    squad.update(fn(targets, predictions))
  assert squad == {'em': 100.0, 'f1': 100.0}  # normalized: case, punctuation
  assert file_tasks.METRICS['exact_match'] + file_tasks.METRICS['f1'] == file_tasks.METRICS['squad']
  scores = file_tasks.rouge(targets, ['7', 'the cat'])
  assert set(scores) == {'rouge1', 'rouge2', 'rougeLsum'} and 0 < scores['rouge1'] < 100
  example = {'answers': np.array([b' 7 ', b'seven'], dtype=object)}
  assert file_tasks._postprocess(' 7', example, is_target=True) == ['7', 'seven']
  assert file_tasks._postprocess(' 7 \n', example) == '7'


def test_bad_arguments_are_refused_naming_the_argument(tmp_path):
  path = str(_write(tmp_path / 'train.jsonl', _rows(2)))
  with pytest.raises(ValueError, match=r"'bleu' is not one of \['accuracy', 'exact_match'"):
    _register('bad_metric', path, metric='bleu')
  with pytest.raises(ValueError, match='choices= is scored by rank classification'):
    _register('bad_choice_metric', path, choices='answers', metric='f1')
  with pytest.raises(TypeError, match='PauseVocabulary'):
    _register('bad_vocabulary', path, vocabulary=VOCABULARY.base)
  with pytest.raises(ValueError, match='target_length=0'):
    _register('bad_length', path, target_length=0)
  assert _register('twice', path) == 'twice' and _register('twice', path) == 'twice'
  with pytest.raises(ValueError, match="'twice' is already registered with other settings"):
    _register('twice', path, target_length=4)


def test_choices_make_a_rank_classification_task(tmp_path):
  rows = [
    {
      'goal': f'goal {i}',
      'endings': ['up', 'down', 'left'],
      'label': i % 3,
      'sol1': 'a',
      'sol2': 'b',
    }
    for i in range(6)
  ]
  _register(
    'choice_list',
    {'train': str(_write(tmp_path / 'list.jsonl', rows))},
    inputs='goal',
    targets='label',
    choices='endings',
  )
  for r in rows:
    r['right'] = 'b' if r['label'] % 2 else 'a'
  _register(
    'choice_fields',
    {'train': str(_write(tmp_path / 'fields.csv', rows))},
    inputs='goal: {goal}',
    targets='right',  # the correct candidate's text
    choices=['sol1', 'sol2'],
  )
  train = _preprocessed('choice_list_pause2')
  assert [e['targets_pretokenized'] for e in train] == [b'up', b'down', b'left'] * 2
  assert (train[0]['inputs'][-2:] == PAUSE_ID).all()
  evaluated = tasks.eval_task_name('choice_list_pause2')
  assert evaluated == 'choice_list_pause2_eval' and tasks.is_scoring(evaluated)
  candidates = _preprocessed(evaluated)
  assert len(candidates) == 18 and sum(bool(c['is_correct']) for c in candidates) == 6
  assert [c['targets_pretokenized'] for c in candidates[:3]] == [b'up', b'down', b'left']
  fields = _preprocessed('choice_fields_std')
  assert [e['targets_pretokenized'] for e in fields] == [b'a', b'b', b'a'] * 2
  assert fields[0]['inputs_pretokenized'] == b'goal: goal 0'


def _jsonl(folder, text):
  (folder / 'train.jsonl').write_text(text)
  return {'train': str(folder / 'train.jsonl')}


def _one_line_csv(folder, text):
  (folder / 'train.csv').write_text(text)
  return {'train': str(folder / 'train.csv')}


REGISTRATION_FAULTS = {
  'no file': (
    lambda f: {'train': str(_write(f / 'a.jsonl', _rows(2))), 'validation': str(f / 'v-*.jsonl')},
    FileNotFoundError,
    r"no file matches \[.*v-\*\.jsonl'\] \(split 'validation'\)",
  ),
  'empty split': (
    lambda f: {
      'train': str(_write(f / 'a.jsonl', _rows(2))),
      'validation': str(_jsonl(f, '\n \n')['train']),
    },
    DataSourceError,
    r"split 'validation' has no record: its 1 file\(s\) .*train\.jsonl",
  ),
  'header only': (
    lambda f: _one_line_csv(f, 'question,answer\n'),
    DataSourceError,
    r"split 'train' has no record",
  ),
  'csv header lacks a field': (
    lambda f: _one_line_csv(f, 'query,answer\nwhy,because\n'),
    DataSourceError,
    r"train\.csv, line 1: the header has no field 'question', .*\['query', 'answer'\]",
  ),
  'parquet lacks a column': (
    lambda f: {'train': str(_write(f / 'a.parquet', [{'query': 'q', 'answer': 'a'}]))},
    DataSourceError,
    r"a\.parquet: the Parquet schema has no column 'question'",
  ),
  'not parquet': (
    lambda f: (f / 'a.parquet').write_bytes(b'PAR1 not really') and {'train': str(f / 'a.parquet')},
    DataSourceError,
    r'a\.parquet cannot be read as Parquet \(',
  ),
  'unknown format': (
    lambda f: (f / 'a.txt').write_text('x') and {'train': str(f / 'a.txt')},
    ValueError,
    r'a\.txt: not a file format a file task reads \(\.txt\)',
  ),
  'two formats': (
    lambda f: {'train': [str(_write(f / 'a.jsonl', _rows(2))), str(_write(f / 'b.csv', _rows(2)))]},
    ValueError,
    r'reads files of several formats',
  ),
  'first record null': (
    lambda f: _jsonl(f, '\n{"question": null, "answer": "4"}\n'),
    DataSourceError,
    r"train\.jsonl, line 2: field 'question' \(inputs=\) is null",
  ),
}


@pytest.mark.parametrize('fault', sorted(REGISTRATION_FAULTS))
def test_registration_refuses_a_bad_file_naming_it(tmp_path, fault):
  make, error, message = REGISTRATION_FAULTS[fault]
  files = make(tmp_path)
  name = 'fault_' + fault.replace(' ', '_')
  with pytest.raises(error, match=message):
    _register(name, files)
  assert not tasks.ensure_registered(name + '_std')  # nothing registered


def _rows_then(folder, kind, bad_row, at=9, extra=None):
  """Rows, one of which (0-based `at`) is replaced by `bad_row`; `extra` rewrites the file."""
  rows = _rows(12)
  rows[at] = bad_row
  path = _write(folder / f'train.{kind}', rows)
  if extra:
    extra(path)
  return {'train': str(path)}


READING_FAULTS = {
  # 10th record of a JSONL file: line 10; the CSV header is line 1 and QUESTION spans 2 lines.
  'jsonl field missing': (
    lambda f: _rows_then(f, 'jsonl', {'question': 'q'}),
    r"train\.jsonl, line 10: no field 'answer', which targets= reads \(the record has fields "
    r"'question'\)",
  ),
  'jsonl not json': (
    lambda f: _rows_then(
      f,
      'jsonl',
      {'question': 'q', 'answer': 'a'},
      extra=lambda p: p.write_text(
        p.read_text().replace('{"question": "q", "answer": "a"}', '{"question": "q",')
      ),
    ),
    r'train\.jsonl, line 10: not JSON \(',
  ),
  'jsonl list in a template': (
    lambda f: _rows_then(f, 'jsonl', {'question': ['q'], 'answer': 'a'}),
    r"train\.jsonl, line 10: field 'question' \(inputs=\) holds list \['q'\], not text",
  ),
  'jsonl latin-1': (
    lambda f: _rows_then(
      f,
      'jsonl',
      {'question': 'caf\xe9', 'answer': 'a'},
      extra=lambda p: p.write_bytes(p.read_bytes().replace(b'caf\\u00e9', b'caf\xe9')),
    ),
    r'train\.jsonl, line 10: not UTF-8 text \(byte 0xe9',
  ),
  'csv too many fields': (
    lambda f: _rows_then(
      f,
      'csv',
      {'question': 'q', 'answer': 'a'},
      extra=lambda p: p.write_text(p.read_text().replace('q,a', 'q,a,b')),
    ),
    r'train\.csv, line 20: 3 field\(s\), but the header \(line 1\) names 2',
  ),
  'csv quote never closed': (
    lambda f: _rows_then(
      f,
      'csv',
      {'question': 'q', 'answer': 'a'},
      at=11,
      extra=lambda p: p.write_text(p.read_text().replace('q,a', '"q,a')),
    ),
    r'train\.csv, line 24: a quoted field opened in this record is never closed',
  ),
  'parquet null in a later row group': (
    lambda f: _rows_then(f, 'parquet', {'question': 'q', 'answer': None, 'answers': ['a']}),
    r"train\.parquet, row 10: field 'answer' \(targets=\) is null",
  ),
  'parquet no accepted answer': (
    lambda f: _rows_then(f, 'parquet', {'question': 'q', 'answer': 'a', 'answers': []}),
    r"train\.parquet, row 10: field 'answers' \(targets=\) is an empty list",
    {'targets': 'answers'},
  ),
  'jsonl choice not a candidate': (
    lambda f: _jsonl(
      f,
      '{"question": "q", "answer": "x", "c": ["x", "y"]}\n' * 9
      + '{"question": "q", "answer": "maybe", "c": ["x", "y"]}\n',
    ),
    r"train\.jsonl, line 10: field 'answer' \(targets=\) is 'maybe': with choices= it must be",
    {'choices': 'c'},
  ),
}


@pytest.mark.parametrize('fault', sorted(READING_FAULTS))
def test_a_bad_record_stops_reading_naming_file_line_and_field(tmp_path, fault):
  make, message, *kwargs = READING_FAULTS[fault]
  name = 'reading_' + fault.replace(' ', '_').replace('-', '_')
  _register(name, make(tmp_path), **(kwargs[0] if kwargs else {}))
  error = _read_error(name + '_std')
  assert isinstance(error, DataSourceError) and re.search(message, str(error)), error


def test_training_stops_at_a_bad_record_with_its_message(tmp_path):
  """The training path (TaskIterator) raises the source's error itself, unwrapped."""
  rows = [{'goal': 'g', 'endings': ['x', 'y'], 'label': 0}] * 3
  rows = rows + [{'goal': 'g', 'endings': ['x', 'y'], 'label': 2}]
  _register(
    'bad_label',
    {'train': str(_write(tmp_path / 'c.jsonl', rows))},
    inputs='goal',
    targets='label',
    choices='endings',
  )
  with pytest.raises(
    DataSourceError, match=r"c\.jsonl, line 4: field 'label' \(targets=\) is 2, bu"
  ):
    next(_iterator('bad_label_pause2'))


@pytest.mark.parametrize('kind', ['csv', 'parquet'])
def test_a_restored_input_position_gives_exactly_the_next_batches(tmp_path, kind):
  for f in range(3):
    _write(tmp_path / f'part_{f}.{kind}', _rows(10, first=10 * f))
  name = f'resume_{kind}'
  _register(name, str(tmp_path / f'*.{kind}'))
  # Unshuffled: a shuffle buffer of 1,000 examples would read these 30 rows 33 times over.
  first = _iterator(name + '_pause3', batch_size=4)
  for _ in range(3):
    next(first)
  first.save(tmp_path / 'position')
  expected = [next(first)['decoder_input_tokens'] for _ in range(4)]
  resumed = _iterator(name + '_pause3', batch_size=4)
  resumed.restore(tmp_path / 'position')
  for batch in expected:
    np.testing.assert_array_equal(next(resumed)['decoder_input_tokens'], batch)
  assert not np.array_equal(expected[0], expected[1])


GIN = """
import pause_lm.tasks
import pause_lm.hf.tokenizer

file_task.vocabulary = @hf_vocabulary()
hf_vocabulary.path = '{tokenizer}'
file_task.target_length = 8

file_task.name = 'gin_qa'
file_task.files = {{'train': '{folder}/qa.parquet'}}
file_task.inputs = 'question: {{question}} answer:'
file_task.targets = 'answers'
file_task.metric = ['exact_match', 'f1']

gin_mc/file_task.files = {{'train': '{folder}/mc.jsonl'}}
gin_mc/file_task.inputs = 'goal'
gin_mc/file_task.targets = 'label'
gin_mc/file_task.choices = 'endings'
gin_mc/file_task.metric = 'accuracy'
"""


def test_gin_alone_registers_file_tasks_on_request(tmp_path):
  _write(tmp_path / 'qa.parquet', _rows(4))
  _write(tmp_path / 'mc.jsonl', [{'goal': 'g', 'endings': ['x', 'y'], 'label': 1}] * 2)
  gin.parse_config(GIN.format(tokenizer=TOKENIZER_DIR, folder=tmp_path))
  assert 'gin_qa_std' not in seqio.TaskRegistry.names()  # nothing before it is asked for
  info = data.task_info('gin_qa_pause10')  # TASK = 'gin_qa_pause10'
  assert info.target_length == 8 and info.pause_id == PAUSE_ID
  assert [fn.__name__ for fn in data.get_task('gin_qa_pause10').metric_fns] == [
    'squad_em',
    'squad_f1',
  ]
  assert list(_examples('gin_qa_std')[1]['answers']) == [b'2', b'2.0']
  # BASE_TASK = 'gin_mc' with gin/pauseft.gin, a scoped task.
  assert tasks.finetune_task(base='gin_mc', num_pauses=2) == 'gin_mc_pause2'
  assert tasks.is_scoring(tasks.eval_task_name('gin_mc_pause2'))
  assert [e['targets_pretokenized'] for e in _preprocessed('gin_mc_std')] == [b'y', b'y']
  assert not tasks.ensure_registered('gin_nothing_pause10')
  # BASE_TASK = @file_task() names it too; calling again with the same bindings is a no-op.
  assert file_tasks.file_task() == 'gin_qa'
