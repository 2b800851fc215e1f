"""Data sources fail by name (issue 23): nothing read is trusted unchecked.

Each test injects the fault for real: empty and whitespace-only files, a Latin-1 file, a
mixture with rates that cannot be sampled, a line far longer than the document limit, a source
that blocks. The limits are test-sized (a few hundred bytes, a fraction of a second); the code
paths are those of the defaults.
"""

import json
import threading
import time

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from pause_lm import tasks
from pause_lm.hf import tokenizer as hf_tokenizer
from pause_lm.pipeline import datasets as data
from pause_lm.tasks import text_sources
from pause_lm.training import trainer
from test_own_data import TOKENIZER_DIR, all_batches

LIMIT = 300  # max_document_bytes in the long-document tests: a test-sized limit.
# Multi-byte characters (2, 3 and 4 bytes), so that pieces are cut between characters.
SENTENCE = 'Ein Café für 3 €, then 𝄞 music: the model pauses before it speaks. '


def _register(name, source):
  for variant in ('std', 'pause'):
    if f'{name}_{variant}_pretrain' in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(f'{name}_{variant}_pretrain')
  return tasks.register_pretraining_task(name, source, hf_tokenizer.hf_vocabulary(TOKENIZER_DIR))


def _iterator(task, length=64, batch_size=2, shuffle=False, wait=None):
  dataset = data.get_dataset(
    task, 'train', sequence_length=length, batch_size=batch_size, shuffle=shuffle, seed=0
  )
  return data.TaskIterator(dataset, task, 'train', wait=wait)


def _source_documents(source):
  return [x['text'] for x in source.get_dataset('train', shuffle=False).as_numpy_iterator()]


def _write_empty_corpus(folder, kind):
  if kind == 'jsonl':
    (folder / 'a.jsonl').write_text('{"text": "   "}\n\n{"text": ""}\n')
    (folder / 'b.jsonl').write_text('')
    return tasks.jsonl_source(str(folder / '*.jsonl')), ['a.jsonl', 'b.jsonl']
  (folder / 'a.txt').write_text('')
  (folder / 'b.txt').write_text('  \n\t\n\r\n')
  return tasks.text_files_source(str(folder / '*.txt'), kind), ['a.txt', 'b.txt']


@pytest.mark.parametrize('kind', ['file', 'line', 'jsonl'])
def test_an_empty_corpus_stops_at_the_first_batch_naming_the_task_pattern_and_files(tmp_path, kind):
  source, names = _write_empty_corpus(tmp_path, kind)
  std, _ = _register(f'empty_{kind}', source)
  iterator = _iterator(std.name)
  with pytest.raises(data.EmptyInputError) as raised:
    next(iterator)
  message = str(raised.value)
  assert f"Task '{std.name}' has no examples in split 'train'" in message
  assert 'before its first batch' in message and str(tmp_path / '*.') in message
  assert all(str(tmp_path / name) in message for name in names)
  assert '(0 bytes)' in message and 'Put text in the files' in message


def test_an_empty_corpus_stops_training_with_the_message_not_a_stop_iteration(tmp_path, configure):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  std, _ = _register('empty_training', _write_empty_corpus(corpus, 'line')[0])
  configure(tmp_path / 'run', f"TASK = '{std.name}'", 'TRAIN_STEPS = 2', 'WARMUP_STEPS = 1')
  with pytest.raises(data.EmptyInputError, match=f"Task '{std.name}' has no examples"):
    trainer.train()


def test_a_mixture_with_an_empty_task_names_each_task_and_its_files(tmp_path):
  (tmp_path / 'full.txt').write_text('Pause tokens delay the answer.\n' * 4)
  full, _ = _register('mix_full', tasks.text_files_source(str(tmp_path / 'full.txt'), 'line'))
  (tmp_path / 'none.txt').write_text('text')
  empty, _ = _register('mix_empty', tasks.text_files_source(str(tmp_path / 'none.txt')))
  (tmp_path / 'none.txt').write_text('')  # Emptied after registration, as a file can be.
  tasks.registry.register_mixture('mix_with_empty', [(full.name, 1.0), (empty.name, 1.0)])
  iterator = _iterator('mix_with_empty')
  with pytest.raises(data.EmptyInputError) as raised:
    for _ in range(100):  # It stops when it first draws from the empty task.
      next(iterator)
  message = str(raised.value)
  assert "Mixture 'mix_with_empty' has no examples" in message
  assert f"'{empty.name}' reads text files" in message and 'none.txt (0 bytes)' in message
  assert f"'{full.name}' reads text files" in message and 'any one of its tasks' in message
  seqio.MixtureRegistry.remove('mix_with_empty')


def _latin1_corpus(folder, kind):
  text = 'Un café au lait, s’il vous plaît.'.replace('’', "'")
  if kind == 'jsonl':
    path = folder / 'notes.jsonl'
    lines = [json.dumps({'text': 'fine'}).encode(), b'{"text": "' + text.encode('latin-1') + b'"}']
    path.write_bytes(b'\n'.join(lines) + b'\n')
    return path, tasks.jsonl_source(str(path))
  path = folder / 'notes.txt'
  path.write_bytes(b'A first line, in ASCII.\n' + text.encode('latin-1') + b'\n')
  return path, tasks.text_files_source(str(path), kind)


@pytest.mark.parametrize('kind', ['file', 'line', 'jsonl'])
def test_a_latin1_file_is_named_with_its_line_and_the_iconv_fix(tmp_path, kind):
  path, source = _latin1_corpus(tmp_path, kind)
  std, _ = _register(f'latin1_{kind}', source)
  with pytest.raises(text_sources.DataSourceError) as raised:
    next(_iterator(std.name))
  message = str(raised.value)
  assert message.startswith(f'{path}, line 2: not UTF-8 text (byte 0xe9')
  assert f'iconv -f latin1 -t utf-8 {path}' in message
  assert 'Traceback' not in message and '{{node' not in message  # TensorFlow's wrapping, gone.


@pytest.mark.parametrize(
  'rates,complaint',
  [
    ((-1.0, 1.0), "the rate of task 'rates_a_pause_pretrain' is -1.0"),
    ((0, 0.0), 'every rate is 0'),
    ((float('nan'), 1.0), "the rate of task 'rates_a_pause_pretrain' is nan"),
  ],
)
def test_mixture_rates_are_refused_at_registration_and_before_reading(tmp_path, rates, complaint):
  (tmp_path / 'a.txt').write_text('Some text.')
  names = [
    _register(n, tasks.text_files_source(str(tmp_path / 'a.txt')))[1].name
    for n in ('rates_a', 'rates_b')
  ]
  mixture = list(zip(names, rates))
  with pytest.raises(ValueError, match=f"Mixture 'bad_rates': {complaint}"):
    tasks.registry.register_mixture('bad_rates', mixture)
  assert 'bad_rates' not in seqio.MixtureRegistry.names()
  # Registered with seqio's own call, it is refused before anything is read.
  seqio.MixtureRegistry.add('bad_rates', mixture)
  try:
    with pytest.raises(ValueError, match=f"Mixture 'bad_rates': {complaint}"):
      data.get_dataset('bad_rates', 'train', sequence_length=32, batch_size=1)
  finally:
    seqio.MixtureRegistry.remove('bad_rates')


def _long_text(characters):
  return (SENTENCE * (characters // len(SENTENCE) + 1))[:characters]


@pytest.mark.parametrize('document_per', ['line', 'file'])
def test_a_document_far_longer_than_the_limit_comes_in_pieces_in_order(tmp_path, document_per):
  long_line = _long_text(100 * LIMIT)  # Over 100 pieces of at most LIMIT bytes.
  assert len(long_line.encode()) > 100 * LIMIT
  (tmp_path / 'long.txt').write_text(f'A short first line.\n{long_line}\nA short last line.\n')
  source = tasks.text_files_source(str(tmp_path / 'long.txt'), document_per, LIMIT)
  documents = _source_documents(source)
  assert max(len(d) for d in documents) <= LIMIT and len(documents) > 100
  text = b''.join(documents).decode()  # Each piece is whole UTF-8: cut between characters.
  if document_per == 'line':
    assert documents[0] == b'A short first line.' and documents[-1] == b'A short last line.'
    assert text == f'A short first line.{long_line}A short last line.'
  else:
    assert text == f'A short first line.\n{long_line}\nA short last line.\n'
  # Through the task: batches come out at once, and hold the pieces' text in order.
  std, _ = _register(f'long_{document_per}', source)
  start = time.monotonic()
  batch = next(_iterator(std.name, length=128, batch_size=4))
  assert time.monotonic() - start < 60 and batch['decoder_target_tokens'].shape == (4, 128)
  eos = hf_tokenizer.hf_vocabulary(TOKENIZER_DIR).eos_id
  batches = all_batches(std.name)
  targets = np.concatenate(
    [b['decoder_target_tokens'][0][b['decoder_loss_weights'][0] > 0] for b in batches]
  )
  vocabulary = hf_tokenizer.hf_vocabulary(TOKENIZER_DIR)
  assert (targets == eos).sum() == len(documents)  # One EOS closes each piece.
  decoded = ''.join(vocabulary.decode(t.tolist()) for t in _between_eos(targets, eos))
  assert decoded == text


def _between_eos(tokens, eos):
  """The token runs between EOS ids (decode stops at the first EOS)."""
  ends = np.flatnonzero(tokens == eos)
  return [tokens[a + 1 : b] for a, b in zip([-1, *ends[:-1]], ends)]


def test_a_jsonl_text_longer_than_the_limit_comes_in_pieces(tmp_path):
  long_text = _long_text(20 * LIMIT)
  (tmp_path / 'long.jsonl').write_text(json.dumps({'text': long_text}) + '\n')
  documents = _source_documents(tasks.jsonl_source(str(tmp_path / 'long.jsonl'), 'text', LIMIT))
  assert max(len(d) for d in documents) <= LIMIT and len(documents) > 5
  assert b''.join(documents).decode() == long_text


def test_the_input_position_inside_a_long_document_resumes_exactly(tmp_path):
  for f in range(3):
    (tmp_path / f'part_{f}.txt').write_text(
      '\n'.join(f'{f}/{i}: {_long_text(10 * LIMIT)}' for i in range(3)) + '\n'
    )
  std, _ = _register('long_resume', tasks.text_files_source(str(tmp_path / '*.txt'), 'line', LIMIT))
  first = _iterator(std.name, batch_size=4, shuffle=True)
  for _ in range(3):
    next(first)
  first.save(tmp_path / 'position')
  expected = [next(first)['decoder_target_tokens'] for _ in range(4)]
  resumed = _iterator(std.name, batch_size=4, shuffle=True)
  resumed.restore(tmp_path / 'position')
  for batch in expected:
    np.testing.assert_array_equal(next(resumed)['decoder_target_tokens'], batch)


def test_a_bad_document_limit_is_refused(tmp_path):
  (tmp_path / 'a.txt').write_text('text')
  with pytest.raises(ValueError, match=r'max_document_bytes=0: .* integer >= 16'):
    tasks.text_files_source(str(tmp_path / 'a.txt'), 'line', 0)
  with pytest.raises(ValueError, match=r"max_document_bytes='1MB'"):
    tasks.jsonl_source(str(tmp_path / 'a.txt'), max_document_bytes='1MB')


def test_a_source_that_blocks_is_reported_while_it_waits(caplog):
  """A source whose read does not return (here: one that waits on an event) is reported every
  InputWait.warn_after_seconds, naming the task and what it reads; the batch comes once the
  source does."""
  unblocked = threading.Event()

  def blocking_read(text):
    unblocked.wait(timeout=60)
    return text

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    texts = tf.data.Dataset.from_tensor_slices(['Pause tokens delay the answer.'] * 8)
    read = lambda t: tf.numpy_function(blocking_read, [t], tf.string, stateful=False)
    return texts.map(lambda t: {'text': tf.ensure_shape(read(t), [])})

  std, _ = _register('blocking', seqio.FunctionDataSource(dataset_fn, splits=('train',)))
  gin.bind_parameter('InputWait.warn_after_seconds', 0.2)
  iterator = _iterator(std.name)
  warnings = lambda: [r.getMessage() for r in caplog.records if 'Still waiting' in r.getMessage()]

  def unblock_once_reported():
    deadline = time.monotonic() + 30
    while len(warnings()) < 2 and time.monotonic() < deadline:
      time.sleep(0.05)
    unblocked.set()

  threading.Thread(target=unblock_once_reported, daemon=True).start()
  batch = next(iterator)
  assert batch['decoder_target_tokens'].shape == (2, 64)
  reported = warnings()
  assert len(reported) >= 2, 'no warning while the source blocked'
  assert f"Still waiting for the first batch of task '{std.name}'" in reported[0]
  assert 'FunctionDataSource' in reported[0] and 'warn_after_seconds=0.2' in reported[0]
  count = len(warnings())
  next(iterator)  # No longer blocked: no warning.
  time.sleep(0.5)
  assert len(warnings()) == count


def test_a_file_removed_after_the_pipeline_listed_it_is_named(tmp_path):
  for name in ('a.txt', 'b.txt'):
    (tmp_path / name).write_text('Pause tokens delay the answer.')
  std, _ = _register('removed_file', tasks.text_files_source(str(tmp_path / '*.txt')))
  iterator = _iterator(std.name)  # The files are listed here, read from the first batch on.
  (tmp_path / 'b.txt').unlink()
  with pytest.raises(text_sources.DataSourceError, match=r'b\.txt cannot be read .*still exists'):
    next(iterator)


def test_another_sources_python_error_is_raised_as_its_message_naming_the_task():
  """A source of another kind yielding Latin-1 bytes fails in the tokenizer; the error names
  the task and keeps the tokenizer's message, without TensorFlow's wrapping."""

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensors({'text': tf.constant('caf\xe9'.encode('latin-1'))})

  std, _ = _register('latin1_function', seqio.FunctionDataSource(dataset_fn, splits=('train',)))
  with pytest.raises(data.InputError) as raised:
    next(_iterator(std.name))
  message = str(raised.value)
  assert message.startswith(f"Reading the input of task '{std.name}' failed: UnicodeDecodeError:")
  assert "can't decode byte 0xe9" in message and 'Traceback' not in message
