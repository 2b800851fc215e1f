"""Your own pretraining text (text files, JSONL, TFDS) with a HF tokenizer, and mixtures."""

import json
import os

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from pause_lm.pipeline import datasets as data
from pause_lm.hf import tokenizer as hf_tokenizer
from pause_lm import tasks
from pause_lm.training import trainer
from test_tasks import assert_pause_pretraining_batch
from test_tasks import assert_same_text

TOKENIZER_DIR = os.path.join(os.path.dirname(__file__), 'testdata', 'hf', 'tokenizer')
LENGTH = 256
SENTENCES = [
  'The model thinks before it speaks, and a pause token delays the answer.',
  'Pause tokens give the decoder extra computation before the next word.',
  'Numbers like 1234 and 56.78 are split into pieces by the tokenizer.',
  'Questions and answers: what is 7 times 6? It is 42, said the model.',
]


def _documents(n, offset=0):
  return [
    ' '.join(SENTENCES[(i + k) % 4] for k in range(1 + (i % 3))) for i in range(offset, offset + n)
  ]


def _register(name, source):
  for variant in ('std', 'pause'):
    if f'{name}_{variant}_pretrain' in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(f'{name}_{variant}_pretrain')
  return tasks.register_pretraining_task(name, source, hf_tokenizer.hf_vocabulary(TOKENIZER_DIR))


@pytest.fixture(name='corpus')
def _corpus(tmp_path):
  """8 documents a file in 3 text files (one per line), 24 files of one, 3 JSONL files."""
  for f in range(3):
    docs = _documents(8, offset=8 * f)
    (tmp_path / f'lines_{f}.txt').write_text(
      '\n'.join(docs[:4]) + '\n\n' + '\n'.join(docs[4:]) + '\n'
    )
    (tmp_path / f'records_{f}.jsonl').write_text(
      ''.join(json.dumps({'id': i, 'text': d}) + '\n' for i, d in enumerate(docs))
    )
    for i, doc in enumerate(docs):
      (tmp_path / f'doc_{f}_{i}.txt').write_text(doc + '\nsecond line of the same document\n')
  return tmp_path


def _batch(task, seed=0, length=LENGTH, batch_size=8):
  # No shuffle: its buffer of 1,000 chunks would tokenize the corpus many times over.
  ds = data.get_dataset(
    task, 'train', sequence_length=length, batch_size=batch_size, seed=seed, shuffle=False
  )
  return next(ds.as_numpy_iterator())


def all_batches(task):
  """Every train batch of `task`, one chunk of 64 tokens each, in order (one pass)."""
  ds = data.get_dataset(
    task,
    'train',
    sequence_length=64,
    batch_size=1,
    shuffle=False,
    repeat=False,
    drop_remainder=False,
  )
  return list(ds.as_numpy_iterator())


def _all_targets(task):
  return np.concatenate([b['decoder_target_tokens'][0] for b in all_batches(task)])


@pytest.mark.parametrize('kind', ['lines', 'files', 'jsonl'])
def test_pause_variant_as_for_c4(corpus, kind):
  source = {
    'lines': lambda: tasks.text_files_source(str(corpus / 'lines_*.txt'), 'line'),
    'files': lambda: tasks.text_files_source(str(corpus / 'doc_*.txt')),
    'jsonl': lambda: tasks.jsonl_source(str(corpus / 'records_*.jsonl')),
  }[kind]()
  std, pause = _register(f'own_{kind}', source)
  assert (std.name, pause.name) == (f'own_{kind}_std_pretrain', f'own_{kind}_pause_pretrain')
  info = data.task_info(pause.name)
  assert info.pause_id == 400 and info.eos_id == 1 and not info.prefix_lm
  assert_pause_pretraining_batch(_batch(pause.name), info.pause_id)
  assert_same_text(_batch(std.name, seed=4), _batch(pause.name, seed=4), info.pause_id)


def test_documents_per_line_and_per_file(corpus):
  """Every document is closed by one EOS: 24 documents either way, read whole and in order."""
  vocabulary = hf_tokenizer.hf_vocabulary(TOKENIZER_DIR)
  _register('own_count_lines', tasks.text_files_source(str(corpus / 'lines_0.txt'), 'line'))
  _register('own_count_files', tasks.text_files_source(str(corpus / 'doc_0_*.txt')))
  lines = _all_targets('own_count_lines_std_pretrain')
  files = _all_targets('own_count_files_std_pretrain')
  assert (lines == vocabulary.eos_id).sum() == 8 and (files == vocabulary.eos_id).sum() == 8
  text = vocabulary.decode(lines[lines != 0].tolist() + [])  # decode stops at the first EOS
  assert text == _documents(1)[0]
  assert (
    vocabulary.decode(files[files != 0].tolist())
    == _documents(8)[0] + '\nsecond line of the same document\n'
  )


def test_bad_sources_say_what_is_wrong(corpus):
  with pytest.raises(FileNotFoundError, match=r"No JSONL file matches.*'train'"):
    tasks.jsonl_source(str(corpus / 'missing_*.jsonl'))
  with pytest.raises(ValueError, match="document_per='page'"):
    tasks.text_files_source(str(corpus / 'doc_*.txt'), 'page')
  with pytest.raises(TypeError, match='PauseVocabulary'):
    tasks.register_pretraining_task(
      'own_bad',
      tasks.text_files_source(str(corpus / '*.txt')),
      hf_tokenizer.HfTokenizerVocabulary(TOKENIZER_DIR),
    )
  (corpus / 'bad.jsonl').write_text('{"content": "no text field"}\n')
  _register('own_bad_jsonl', tasks.jsonl_source({'train': str(corpus / 'bad.jsonl')}))
  with pytest.raises(Exception, match=r"bad.jsonl: a line has no string field 'text'"):
    _batch('own_bad_jsonl_std_pretrain', length=32, batch_size=1)


def test_tfds_text_dataset(monkeypatch):
  monkeypatch.setattr(seqio.TfdsDataSource, 'num_input_examples', lambda self, split: None)
  _register('own_tfds', seqio.TfdsDataSource('lm1b:1.1.0', splits=('train',)))
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
    info = data.task_info('own_tfds_pause_pretrain')
    batch = _batch('own_tfds_pause_pretrain', length=128, batch_size=4)
  pauses = batch['decoder_target_tokens'] == info.pause_id
  assert pauses.any() and (batch['decoder_loss_weights'][pauses] == 0).all()


def _register_mixture(corpus):
  _register('own_mix_lines', tasks.text_files_source(str(corpus / 'lines_*.txt'), 'line'))
  _register('own_mix_jsonl', tasks.jsonl_source(str(corpus / 'records_*.jsonl')))
  if 'own_mixture' in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove('own_mixture')
  seqio.MixtureRegistry.add(
    'own_mixture', [('own_mix_lines_pause_pretrain', 1.0), ('own_mix_jsonl_pause_pretrain', 3.0)]
  )


def test_a_mixture_is_a_training_task(corpus):
  _register_mixture(corpus)
  info = data.task_info('own_mixture')
  assert info.pause_id == 400 and info.num_embeddings == 512 and info.target_length is None
  assert_pause_pretraining_batch(_batch('own_mixture'), info.pause_id)
  with pytest.raises(data.TaskNotRegisteredError, match='own_mixture'):
    data.get_task('own_mixtrue')


def test_a_mixture_trains(corpus, tmp_path, configure):
  _register_mixture(corpus)
  configure(
    tmp_path / 'run',
    "TASK = 'own_mixture'",
    'TRAIN_STEPS = 3',
    'WARMUP_STEPS = 1',
    'CheckpointConfig.save_every_steps = 1',
  )
  result = trainer.train()
  metrics = dict(result.history)
  assert sorted(metrics) == [1, 2, 3] and all(np.isfinite(m['loss']) for m in metrics.values())
  assert 0.07 <= metrics[1]['pause_share'] <= 0.11
