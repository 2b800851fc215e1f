"""Hugging Face tokenizers as seqio vocabularies, against transformers' own encodings."""

import json
import os
import pickle
import shutil

from clu.data import dataset_iterator
import numpy as np
import pytest
import seqio
import tensorflow as tf

from pause_lm.hf import tokenizer as hf_tokenizer
from pause_lm.data import vocab as vocab_lib

TOKENIZER_DIR = os.path.join(os.path.dirname(__file__), 'testdata', 'hf', 'tokenizer')
with open(os.path.join(TOKENIZER_DIR, 'encodings.json')) as f:
  REFERENCE = json.load(f)
ENCODINGS = REFERENCE['encodings']
TEXTS = [e['text'] for e in ENCODINGS]


@pytest.fixture(name='vocabulary')
def _vocabulary():
  return hf_tokenizer.HfTokenizerVocabulary(TOKENIZER_DIR)


def test_ids_equal_transformers(vocabulary):
  for e in ENCODINGS:
    assert vocabulary.encode(e['text']) == e['ids'], e['text']
    assert vocabulary.encode_tf(tf.constant(e['text'])).numpy().tolist() == e['ids']
  assert vocabulary.encode_batch(TEXTS) == [e['ids'] for e in ENCODINGS]
  with_template = hf_tokenizer.HfTokenizerVocabulary(TOKENIZER_DIR, add_special_tokens=True)
  assert [with_template.encode(t) for t in TEXTS] == [
    e['ids_with_special_tokens'] for e in ENCODINGS
  ]


def test_batched_encode_tf_is_ragged_in_order(vocabulary):
  ids = vocabulary.encode_tf(tf.constant(TEXTS))
  assert isinstance(ids, tf.RaggedTensor) and ids.shape[0] == len(TEXTS)
  assert ids.to_list() == [e['ids'] for e in ENCODINGS]


def test_decode_equals_transformers(vocabulary):
  for e in ENCODINGS:
    assert vocabulary.decode(e['ids_with_special_tokens']) == e['decoded']
  padded = tf.ragged.constant([e['ids'] for e in ENCODINGS]).to_tensor(
    default_value=REFERENCE['eos_id']
  )
  decoded = vocabulary.decode_tf(padded).numpy().tolist()
  assert [d.decode() for d in decoded] == [e['decoded'] for e in ENCODINGS]


def test_special_ids_and_size_from_the_config_files(vocabulary, tmp_path):
  assert (vocabulary.eos_id, vocabulary.bos_id, vocabulary.pad_id) == (
    REFERENCE['eos_id'],
    REFERENCE['bos_id'],
    REFERENCE['pad_id'],
  )
  assert vocabulary.vocab_size == REFERENCE['vocab_size'] and vocabulary.unk_id is None
  # A bare tokenizer.json plus a model config.json with padded rows and its own EOS id.
  shutil.copy(os.path.join(TOKENIZER_DIR, 'tokenizer.json'), tmp_path)
  (tmp_path / 'config.json').write_text(
    json.dumps({'vocab_size': 512, 'eos_token_id': [2, 1], 'bos_token_id': 0})
  )
  bare = hf_tokenizer.HfTokenizerVocabulary(str(tmp_path))
  assert (bare.vocab_size, bare.eos_id, bare.bos_id) == (512, 2, 0)
  assert bare.pad_id == hf_tokenizer.NO_PAD_ID  # no pad token and EOS cannot stand in
  with_pause = hf_tokenizer.hf_vocabulary(str(tmp_path))
  assert with_pause.pause_id == 512
  # Pauses and what follows EOS become pad_id (-1) inside decode_tf, and are skipped.
  ids = ENCODINGS[1]['ids']
  ids_tf = tf.constant([ids[:3] + [512] + ids[3:] + [2] + ids[:2]])
  assert with_pause.decode_tf(ids_tf).numpy().tolist() == [ENCODINGS[1]['text'].encode()]
  override = hf_tokenizer.HfTokenizerVocabulary(
    str(tmp_path / 'tokenizer.json'), eos_token='</s>', vocab_size=448
  )
  assert (override.eos_id, override.vocab_size) == (1, 448)


def test_bad_settings_name_the_fix(tmp_path):
  with pytest.raises(ValueError, match="eos token '<end>' is not in the tokenizer"):
    hf_tokenizer.HfTokenizerVocabulary(TOKENIZER_DIR, eos_token='<end>')
  with pytest.raises(ValueError, match='smaller than the tokenizer'):
    hf_tokenizer.HfTokenizerVocabulary(TOKENIZER_DIR, vocab_size=100)
  with pytest.raises(FileNotFoundError, match='tokenizer.json'):
    hf_tokenizer.HfTokenizerVocabulary(str(tmp_path))
  # No EOS anywhere: a tokenizer whose specials are renamed, without config files.
  spec = json.loads(open(os.path.join(TOKENIZER_DIR, 'tokenizer.json')).read())
  renamed = json.dumps(spec).replace('</s>', '<end>')
  (tmp_path / 'tokenizer.json').write_text(renamed)
  with pytest.raises(ValueError, match='names no EOS token.*eos_token'):
    hf_tokenizer.HfTokenizerVocabulary(str(tmp_path))
  assert hf_tokenizer.HfTokenizerVocabulary(str(tmp_path), eos_token='<end>').eos_id == 1


def test_pause_vocabulary_over_a_hf_tokenizer():
  vocabulary = hf_tokenizer.hf_vocabulary(TOKENIZER_DIR)
  assert isinstance(vocabulary, vocab_lib.PauseVocabulary)
  assert vocabulary.pause_id == REFERENCE['vocab_size'] == vocabulary.vocab_size - 1
  ids = ENCODINGS[1]['ids']  # "pause tokens, pause tokens!"
  with_pauses = ids[:2] + [vocabulary.pause_id] * 2 + ids[2:]
  assert vocabulary.decode(with_pauses).count(vocab_lib.PAUSE_TEXT) == 2
  assert vocabulary.decode_tf(tf.constant(with_pauses)).numpy().decode() == ENCODINGS[1]['text']
  assert vocabulary.pause_id not in vocabulary.encode(vocab_lib.PAUSE_TEXT)


def test_pickles_and_compares_like_seqio_vocabularies():
  vocabulary = hf_tokenizer.hf_vocabulary(TOKENIZER_DIR)
  copy = pickle.loads(pickle.dumps(vocabulary))
  assert copy == vocabulary and hash(copy.base) == hash(vocabulary.base)
  assert copy.encode(TEXTS[0]) == ENCODINGS[0]['ids']
  other = hf_tokenizer.hf_vocabulary(TOKENIZER_DIR, add_special_tokens=True)
  assert other != vocabulary
  assert hf_tokenizer.HfTokenizerVocabulary(TOKENIZER_DIR) != seqio.PassThroughVocabulary(400)


def test_in_a_parallel_tf_data_map_with_static_shapes(vocabulary):
  ds = tf.data.Dataset.from_tensor_slices(TEXTS * 4)
  ds = ds.map(vocabulary.encode_tf, num_parallel_calls=4, deterministic=True)
  assert ds.element_spec.shape.as_list() == [None]
  assert [x.tolist() for x in ds.as_numpy_iterator()] == [e['ids'] for e in ENCODINGS] * 4
  batched = tf.data.Dataset.from_tensor_slices(TEXTS).batch(4).map(vocabulary.encode_tf)
  assert sum((b.to_list() for b in batched), []) == [e['ids'] for e in ENCODINGS]


def test_in_a_seqio_task_whose_iterator_checkpoints(tmp_path):
  name = 'hf_tokenizer_test_task'
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  task = seqio.TaskRegistry.add(
    name,
    source=seqio.FunctionDataSource(
      lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensor_slices(
        {'targets': TEXTS}
      ),
      splits=('train',),
    ),
    preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
    output_features={
      'targets': seqio.Feature(hf_tokenizer.hf_vocabulary(TOKENIZER_DIR), add_eos=True)
    },
  )
  ds = task.get_dataset({'targets': 64}, split='train', shuffle=False, num_epochs=1)
  eos = REFERENCE['eos_id']
  assert [ex['targets'].tolist() for ex in ds.as_numpy_iterator()] == [
    e['ids'] + [eos] for e in ENCODINGS
  ]
  # Training saves the input position: the stateless tokenizer op must not block that.
  iterator = dataset_iterator.TfDatasetIterator(ds, checkpoint=True)
  next(iterator)
  iterator.save(tmp_path / 'data')
  expected = next(iterator)['targets']
  restored = dataset_iterator.TfDatasetIterator(ds, checkpoint=True)
  restored.restore(tmp_path / 'data')
  np.testing.assert_array_equal(next(restored)['targets'], expected)


def test_warns_when_the_model_has_fewer_rows_than_the_tokenizer(tmp_path, caplog):
  shutil.copy(os.path.join(TOKENIZER_DIR, 'tokenizer.json'), tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'vocab_size': 300}))
  with caplog.at_level('WARNING'):
    vocabulary = hf_tokenizer.HfTokenizerVocabulary(str(tmp_path))
  assert vocabulary.vocab_size == 400
  assert 'vocab_size (300) is smaller than the tokenizer (400 tokens)' in caplog.text


def test_a_relative_tokenizer_path_is_the_folder_it_named_when_made(tmp_path, monkeypatch):
  """Two folders each hold `model/tokenizer.json`; a vocabulary made from the relative path in
  one keeps reading that one's file, and one made in the other reads the other's (the loaded
  tokenizers are cached per process by file path)."""
  import tokenizers  # pylint: disable=g-import-not-at-top

  sizes = {}
  for name, words in (('a', 5), ('b', 9)):
    (tmp_path / name / 'model').mkdir(parents=True)
    vocab = {f'w{i}': i for i in range(words)}
    tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token='w0')).save(
      os.fspath(tmp_path / name / 'model' / 'tokenizer.json')
    )
  for name in ('a', 'b'):
    monkeypatch.chdir(tmp_path / name)
    sizes[name] = hf_tokenizer.hf_vocabulary('model', eos_token='w1')
  monkeypatch.chdir(tmp_path)
  assert sizes['b'].vocab_size - sizes['a'].vocab_size == 4
