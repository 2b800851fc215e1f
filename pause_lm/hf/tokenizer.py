"""Hugging Face tokenizers (`tokenizer.json`) as seqio vocabularies, with the `<pause>` id.

A pretrained checkpoint's ids only mean something with its own tokenizer, so a model converted
from the Hub is trained and evaluated on text tokenized by its `tokenizer.json` (the
`tokenizers` library; no transformers, no torch). `HfTokenizerVocabulary` is that tokenizer as a
`seqio.Vocabulary`; `hf_vocabulary` wraps it in `PauseVocabulary`, whose pause id is the
vocabulary size (see `HfTokenizerVocabulary` for how that size is chosen).

Special ids come from the files Hugging Face keeps next to `tokenizer.json`: an argument wins,
then `tokenizer_config.json`, `special_tokens_map.json`, `config.json` (ids), then the
conventional `<|endoftext|>` / `</s>` tokens. A tokenizer without an EOS token is an error:
pretraining closes every document with EOS.

In tf.data, encoding and decoding run the Rust tokenizer through `tf.numpy_function` (declared
stateless: the tokenizer is a pure function of its input, so pipelines that hold it can still
be checkpointed). A batch of strings (rank 1) is encoded with one `encode_batch` call, which
tokenizes in parallel threads outside the GIL; the loaded tokenizer is cached per process.
"""

import functools
import json
import os
from typing import Any, Iterable, Mapping, Sequence

from absl import logging
import gin
import numpy as np
import seqio
import tensorflow as tf
import tokenizers

from pause_lm.data import vocab as vocab_lib

TOKENIZER_FILE = 'tokenizer.json'
_CONFIG_FILES = ('tokenizer_config.json', 'special_tokens_map.json')
NO_PAD_ID = -1
_CONVENTIONAL_EOS = ('<|endoftext|>', '</s>', '<|end_of_text|>', '<eos>')


def _tokenizer_file(path: str) -> str:
  """The tokenizer.json of a file or folder path; a local path made absolute, so that a
  vocabulary made in one working folder reads the same file from another (and the per-process
  cache never hands one folder's tokenizer to a same-named path elsewhere)."""
  if '://' not in path:
    path = os.path.abspath(path)
  return os.path.join(path, TOKENIZER_FILE) if tf.io.gfile.isdir(path) else path


@functools.lru_cache(maxsize=None)
def load_tokenizer(tokenizer_file: str) -> tokenizers.Tokenizer:
  """The parsed tokenizer, once per process (every pipeline thread shares it)."""
  if not tf.io.gfile.exists(tokenizer_file):
    raise FileNotFoundError(
      f'No Hugging Face tokenizer at {tokenizer_file!r}: pass the tokenizer.json file or the '
      'folder that holds it (a model downloaded from the Hub has one).'
    )
  with tf.io.gfile.GFile(tokenizer_file, 'rb') as f:
    text = f.read()
  try:
    return tokenizers.Tokenizer.from_str(text.decode('utf-8'))
  except Exception as e:  # The library raises a bare Exception for every unreadable file.
    raise ValueError(
      f'{tokenizer_file} is not a tokenizer the tokenizers library can read ({e}): use the '
      "model's own tokenizer.json, downloaded again."
    ) from None


def _read_json(folder: str, name: str) -> Mapping[str, Any]:
  """A settings file beside tokenizer.json ({} when absent); an invalid one is named."""
  path = os.path.join(folder, name)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path, 'rb') as f:
    text = f.read()
  try:
    settings = json.loads(text.decode('utf-8'))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{path} is not valid JSON ({e}): fix it or download it again.') from None
  if not isinstance(settings, dict):
    raise ValueError(f'{path} is not a JSON object of settings: fix it or download it again.')
  return settings


def _token_text(value) -> str | None:
  """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
  if isinstance(value, dict):
    return value.get('content')
  return value if isinstance(value, str) else None


def _first_id(value) -> int | None:
  """config.json's `eos_token_id` may be an int or a list (Llama 3: several stop tokens)."""
  if isinstance(value, list):
    return value[0] if value else None
  return value if isinstance(value, int) else None


class HfTokenizerVocabulary(seqio.Vocabulary):
  """A Hugging Face `tokenizer.json` as a seqio vocabulary.

  Its size is the tokenizer's (added tokens included) or, when a `config.json` beside it gives
  a larger `vocab_size`, that one: the checkpoint's embedding rows past the tokenizer (Qwen 2.5
  pads 151,665 tokens to 151,936 rows) are ids no text encodes to, and the `<pause>` row must
  come after all of them. `vocab_size` overrides both.

  Equality follows seqio's SentencePieceVocabulary: two vocabularies are equal when their
  settings are (file, special ids, size); the loaded tokenizer is not part of the state, so
  the object pickles (gin deep-copies configurable arguments) and reloads lazily.
  """

  def __init__(
    self,
    path: str,
    *,
    add_special_tokens: bool = False,
    eos_token: str | None = None,
    unk_token: str | None = None,
    pad_token: str | None = None,
    bos_token: str | None = None,
    vocab_size: int | None = None,
  ):
    """Reads the tokenizer and its special tokens now, so a bad path fails at registration.

    Args:
      path: a `tokenizer.json` file, or the folder that holds it (and, optionally,
        tokenizer_config.json / special_tokens_map.json / config.json). Any tf.io.gfile path.
      add_special_tokens: whether `encode` applies the tokenizer's post-processor (e.g. the
        BOS that Llama's template puts first). False gives the text's ids only, as seqio
        expects: the pipeline appends EOS itself.
      eos_token, unk_token, pad_token, bos_token: token strings that override the files.
      vocab_size: the model's vocabulary size, when neither file says it.
    """
    self._tokenizer_file = _tokenizer_file(path)
    self._add_special_tokens = add_special_tokens
    tokenizer = load_tokenizer(self._tokenizer_file)
    folder = os.path.dirname(self._tokenizer_file)
    configs = [_read_json(folder, name) for name in _CONFIG_FILES]
    model_config = _read_json(folder, 'config.json')
    overrides = {'eos': eos_token, 'unk': unk_token, 'pad': pad_token, 'bos': bos_token}
    ids = {
      kind: self._special_id(tokenizer, kind, override, configs, model_config)
      for kind, override in overrides.items()
    }
    if ids['eos'] is None:
      raise ValueError(
        f'The tokenizer {self._tokenizer_file!r} names no EOS token (none in '
        'tokenizer_config.json, special_tokens_map.json or config.json, and no '
        f'{" / ".join(_CONVENTIONAL_EOS)}): pass eos_token=... (gin: '
        "hf_vocabulary.eos_token = '...')."
      )
    self._eos_id, self._unk_id, self._bos_id = ids['eos'], ids['unk'], ids['bos']
    # seqio pads batches with 0 whatever this says; pad_id only fills the places decode_tf
    # must skip (after EOS, pauses). EOS cannot do that (decode stops at the first one), so a
    # tokenizer without its own pad token (GPT-2), or whose pad is EOS, gets -1: never a token.
    self._pad_id = ids['pad'] if ids['pad'] not in (None, ids['eos']) else NO_PAD_ID
    self._tokenizer_size = tokenizer.get_vocab_size(with_added_tokens=True)
    self._vocab_size = vocab_size or max(self._tokenizer_size, model_config.get('vocab_size') or 0)
    if 0 < (model_config.get('vocab_size') or 0) < self._tokenizer_size and not vocab_size:
      logging.warning(
        "%s: config.json's vocab_size (%d) is smaller than the tokenizer (%d tokens); the "
        'pause id is %d, and ids from %d on have no row in that model.',
        self._tokenizer_file,
        model_config['vocab_size'],
        self._tokenizer_size,
        self._vocab_size,
        model_config['vocab_size'],
      )
    if self._vocab_size < self._tokenizer_size:
      raise ValueError(
        f'vocab_size={self._vocab_size} is smaller than the tokenizer '
        f'({self._tokenizer_size} tokens); the pause id would collide with one.'
      )
    super().__init__(extra_ids=0)

  def _special_id(
    self,
    tokenizer,
    kind: str,
    override: str | None,
    configs: Sequence[Mapping[str, Any]],
    model_config,
  ) -> int | None:
    texts = [override] + [_token_text(c.get(f'{kind}_token')) for c in configs]
    if kind == 'unk':
      texts.append(json.loads(tokenizer.to_str())['model'].get('unk_token'))
    for text in texts:
      if text is None:
        continue
      token_id = tokenizer.token_to_id(text)
      if token_id is None:
        raise ValueError(
          f'The {kind} token {text!r} is not in the tokenizer '
          f'{self._tokenizer_file!r}; pass {kind}_token= one of its tokens.'
        )
      return token_id
    config_id = _first_id(model_config.get(f'{kind}_token_id'))
    if config_id is not None:
      return config_id
    if kind == 'eos':
      for text in _CONVENTIONAL_EOS:
        if tokenizer.token_to_id(text) is not None:
          return tokenizer.token_to_id(text)
    return None

  @property
  def tokenizer(self) -> tokenizers.Tokenizer:
    return load_tokenizer(self._tokenizer_file)

  @property
  def tokenizer_file(self) -> str:
    return self._tokenizer_file

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def unk_id(self) -> int | None:
    return self._unk_id

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @property
  def bos_id(self) -> int | None:
    return self._bos_id

  @property
  def _base_vocab_size(self) -> int:
    return self._vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s, add_special_tokens=self._add_special_tokens).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Many strings at once: the tokenizer's threads share the work, outside the GIL."""
    encodings = self.tokenizer.encode_batch(
      list(texts), add_special_tokens=self._add_special_tokens
    )
    return [e.ids for e in encodings]

  def _decode(self, ids: Iterable[int]) -> str:
    real = [int(i) for i in ids if 0 <= i < self._tokenizer_size]
    return self.tokenizer.decode(real, skip_special_tokens=True)

  def _encode_np(self, strings: np.ndarray):
    texts = [s.decode('utf-8') for s in np.asarray(strings, dtype=object).reshape(-1)]
    ids = self.encode_batch(texts)
    flat = np.fromiter((i for row in ids for i in row), dtype=np.int32)
    return flat, np.array([len(row) for row in ids], dtype=np.int64)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """A scalar string gives int32 ids [n]; a vector of strings gives a RaggedTensor."""
    rank = s.shape.rank
    if rank not in (0, 1):
      raise ValueError(
        f'HfTokenizerVocabulary.encode_tf takes a string scalar or vector, not shape {s.shape}.'
      )
    flat, lengths = tf.numpy_function(
      self._encode_np, [s], [tf.int32, tf.int64], stateful=False, name='hf_tokenizer_encode'
    )
    flat.set_shape([None])
    if rank == 0:
      return flat
    lengths.set_shape(s.shape)
    return tf.RaggedTensor.from_row_lengths(flat, lengths, validate=False)

  def _decode_np(self, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    rows = ids.reshape(-1, ids.shape[-1]) if ids.ndim else ids.reshape(1, 0)
    real = [[int(i) for i in row if 0 <= i < self._tokenizer_size] for row in rows]
    texts = self.tokenizer.decode_batch(real, skip_special_tokens=True)
    return np.array([t.encode('utf-8') for t in texts], dtype=object).reshape(ids.shape[:-1])

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """int ids [..., n] to strings [...]; special tokens (EOS, pad) are skipped."""
    if isinstance(ids, tf.RaggedTensor):
      ids = ids.to_tensor(default_value=self.pad_id)
    texts = tf.numpy_function(
      self._decode_np, [ids], tf.string, stateful=False, name='hf_tokenizer_decode'
    )
    texts.set_shape(ids.shape[:-1])
    return texts

  def _state(self) -> tuple:
    return (
      self._tokenizer_file,
      self._add_special_tokens,
      self._eos_id,
      self._unk_id,
      self._pad_id,
      self._bos_id,
      self._vocab_size,
    )

  def __eq__(self, other):
    return isinstance(other, HfTokenizerVocabulary) and self._state() == other._state()

  def __hash__(self):
    return hash(self._state())

  def __str__(self):
    return (
      f'HfTokenizerVocabulary(file={self._tokenizer_file}, size={self._vocab_size}, '
      f'eos_id={self._eos_id})'
    )

  __repr__ = __str__


@gin.configurable
def hf_vocabulary(
  path: str = gin.REQUIRED,
  *,
  add_special_tokens: bool = False,
  eos_token: str | None = None,
  unk_token: str | None = None,
  pad_token: str | None = None,
  bos_token: str | None = None,
  vocab_size: int | None = None,
) -> vocab_lib.PauseVocabulary:
  """A Hugging Face tokenizer with the `<pause>` id (= its vocabulary size); see above."""
  return vocab_lib.PauseVocabulary(
    HfTokenizerVocabulary(
      path,
      add_special_tokens=add_special_tokens,
      eos_token=eos_token,
      unk_token=unk_token,
      pad_token=pad_token,
      bos_token=bos_token,
      vocab_size=vocab_size,
    )
  )
