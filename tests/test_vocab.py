"""The pause id sits outside the tokenizer, decodes visibly, and sizes the embedding table."""

import seqio
import tensorflow as tf

from pause_lm.data import vocab as vocab_lib


def test_pause_id_is_base_size_and_never_encoded():
  v = vocab_lib.PauseVocabulary(seqio.ByteVocabulary())
  assert v.pause_id == seqio.ByteVocabulary().vocab_size
  assert v.vocab_size == v.pause_id + 1
  text = '<pause> every byte \x00\xff and the word <pause>'
  assert v.pause_id not in v.encode(text)
  assert v.pause_id not in v.encode_tf(tf.constant(text)).numpy().tolist()


def test_decode_shows_or_drops_pauses():
  base = seqio.ByteVocabulary()
  ids = base.encode('ab') + [base.vocab_size] * 2 + base.encode('c')
  assert vocab_lib.PauseVocabulary(base).decode(ids) == 'ab <pause> <pause> c'
  assert vocab_lib.PauseVocabulary(base, keep_pauses_in_decode=False).decode(ids) == 'ab c'
  assert vocab_lib.PauseVocabulary(base).decode_tf(tf.constant(ids)).numpy() == b'abc'


def test_embedding_rows_pad_to_multiple_of_128():
  v = vocab_lib.PauseVocabulary(seqio.ByteVocabulary())  # 259 + 1
  assert vocab_lib.num_embeddings(v) == 384
  assert vocab_lib.num_embeddings(v, multiple=1) == v.vocab_size


def test_c4_vocabulary_path_is_configurable_and_lazy():
  v = vocab_lib.c4_vocabulary(spm_path='/nonexistent/c4.model', extra_ids=100)
  assert isinstance(v.base, seqio.SentencePieceVocabulary)
  assert v.base.sentencepiece_model_file == '/nonexistent/c4.model'


def test_rejects_double_wrapping():
  v = vocab_lib.PauseVocabulary(seqio.ByteVocabulary())
  try:
    vocab_lib.PauseVocabulary(v)
  except ValueError as e:
    assert 'base vocabulary' in str(e)
  else:
    raise AssertionError('double wrapping was accepted')
