"""The `<pause>` token: one id past the tokenizer's vocabulary, never produced by `encode`.

Keeping the pause outside the tokenizer means no text can ever tokenize to it, so the model
can only see it where the pause preprocessors put it, and a standard-pretrained checkpoint's
vocabulary ids keep their meaning. It is one more row of the embedding table.
"""

import math
from typing import Iterable, Sequence

import gin
import seqio
import tensorflow as tf

PAUSE_TEXT = '<pause>'
# T5's C4 SentencePiece model (32,000 pieces + 100 extra ids). It lives on GCS; bind
# `c4_vocabulary.spm_path` (gin) to a local copy on machines without GCS access.
DEFAULT_C4_SPM_PATH = 'gs://t5-data/vocabs/cc_all.32000/sentencepiece.model'
DEFAULT_C4_EXTRA_IDS = 100
EMBEDDING_ROW_MULTIPLE = 128


class PauseVocabulary(seqio.Vocabulary):
  """Any seqio vocabulary plus one `<pause>` id (= the base vocabulary's size)."""

  def __init__(self, base: seqio.Vocabulary, keep_pauses_in_decode: bool = True):
    if isinstance(base, PauseVocabulary):
      raise ValueError(
        "PauseVocabulary wraps a tokenizer's vocabulary, not another "
        'PauseVocabulary: pass the base vocabulary.'
      )
    self._base = base
    self._keep_pauses = keep_pauses_in_decode
    super().__init__(extra_ids=0)

  @property
  def base(self) -> seqio.Vocabulary:
    return self._base

  @property
  def pause_id(self) -> int:
    return self._base.vocab_size

  @property
  def eos_id(self):
    return self._base.eos_id

  @property
  def unk_id(self):
    return self._base.unk_id

  @property
  def pad_id(self) -> int:
    return self._base.pad_id

  @property
  def bos_id(self):
    return self._base.bos_id

  @property
  def _base_vocab_size(self) -> int:
    return self._base.vocab_size + 1

  def _encode(self, s: str) -> Sequence[int]:
    return self._base.encode(s)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    return self._base.encode_tf(s)

  def _decode(self, ids: Iterable[int]) -> str:
    """Decodes runs of real tokens with the base vocabulary; shows or drops each pause."""
    pieces, run = [], []
    for i in ids:
      if i == self.pause_id:
        if run:
          pieces.append(self._base.decode(run))
          run = []
        if self._keep_pauses:
          pieces.append(PAUSE_TEXT)
      else:
        run.append(i)
    if run:
      pieces.append(self._base.decode(run))
    return ' '.join(p for p in pieces if p)

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """Drops pauses (as padding), since a string tensor op cannot splice in markers cheaply."""
    ids = tf.where(tf.equal(ids, self.pause_id), tf.cast(self.pad_id, ids.dtype), ids)
    return self._base.decode_tf(ids)

  def __eq__(self, other):
    return (
      isinstance(other, PauseVocabulary)
      and self._base == other._base
      and self._keep_pauses == other._keep_pauses
    )

  def __hash__(self):
    return hash((PauseVocabulary, id(self._base), self._keep_pauses))

  def __repr__(self):
    return f'PauseVocabulary(base={self._base!r}, pause_id={self.pause_id})'


def num_embeddings(vocabulary: seqio.Vocabulary, multiple: int = EMBEDDING_ROW_MULTIPLE) -> int:
  """Embedding rows for a vocabulary that includes the pause: padded for aligned matmuls."""
  return int(math.ceil(vocabulary.vocab_size / multiple) * multiple)


@gin.configurable
def c4_vocabulary(
  spm_path: str = DEFAULT_C4_SPM_PATH, extra_ids: int = DEFAULT_C4_EXTRA_IDS
) -> PauseVocabulary:
  """T5's C4 SentencePiece vocabulary with the pause; loading is lazy (first encode/decode)."""
  return PauseVocabulary(seqio.SentencePieceVocabulary(spm_path, extra_ids=extra_ids))


def __getattr__(name):
  # Names that moved out of this module (synthetic_vocabulary to pause_lm.data.synthetic).
  from pause_lm.runtime import compat  # pylint: disable=g-import-not-at-top

  return compat.forward_attribute(__name__, name)
