"""The embedded corpus: deterministic, generated on the fly, learnable by a tiny model on a CPU.

Every document is a function of (split, index) alone, so the corpus needs no download, is
identical on every machine and host, and holds as many tokens as a run asks for (2**20 train
documents of ~70 tokens each: ~70M tokens). Its exercises (arithmetic, sorting, reversal,
key-value recall, counting and maxima) are plain text whose answer comes only at the end, the
kind of problem where extra parallel computation before answering could plausibly help.

The same generators make the offline downstream tasks (`synthetic_qa`, `synthetic_choice`)
and train the corpus's own SentencePiece vocabulary (`synthetic_vocabulary`), on first use.
"""

import functools
import hashlib
import io
import os
import tempfile

import numpy as np
import seqio
import tensorflow as tf

from pause_lm.data import vocab as vocab_lib

SPLIT_SEEDS = {'train': 0, 'validation': 1, 'test': 2}
NUM_DOCUMENTS = {'train': 2**20, 'validation': 2**14, 'test': 2**14}
SPM_VOCAB_SIZE = 256
_SPM_TRAINING_DOCUMENTS = 5_000
_LETTERS = 'abcdefghijklmnopqrstuvwxyz'
# Bump when the generators change: the cached tokenizer is keyed by it.
CORPUS_VERSION = '3'


def _numbers(rng, n, high=100):
  return [int(x) for x in rng.integers(0, high, size=n)]


def _join(xs):
  return ' '.join(str(x) for x in xs)


def _addition(rng):
  a, b = _numbers(rng, 2, high=1000)
  return f'{a} + {b} =', f'{a + b}'


def _sort(rng):
  xs = _numbers(rng, int(rng.integers(3, 9)))
  return f'sort {_join(xs)} :', _join(sorted(xs))


def _reverse(rng):
  xs = list(rng.choice(list(_LETTERS), size=int(rng.integers(3, 9))))
  return f'reverse {_join(xs)} :', _join(xs[::-1])


def _recall(rng):
  keys = [f'k{k}' for k in rng.permutation(20)[: int(rng.integers(3, 8))]]
  values = _numbers(rng, len(keys))
  asked = int(rng.integers(len(keys)))
  pairs = ' , '.join(f'{k} = {v}' for k, v in zip(keys, values))
  return f'{pairs} ? {keys[asked]} =', f'{values[asked]}'


def _count_above(rng):
  xs = _numbers(rng, int(rng.integers(4, 12)))
  threshold = int(rng.integers(10, 90))
  return f'count > {threshold} in {_join(xs)} :', f'{sum(x > threshold for x in xs)}'


def _maximum(rng):
  xs = _numbers(rng, int(rng.integers(3, 10)))
  return f'max {_join(xs)} :', f'{max(xs)}'


EXERCISES = (_addition, _sort, _reverse, _recall, _count_above, _maximum)


def _rng(split: str, index: int, stream: int) -> np.random.Generator:
  return np.random.default_rng([stream, SPLIT_SEEDS[split], int(index)])


def document(split: str, index: int) -> str:
  """A pretraining document: 3-6 exercises, one a line, with their answers."""
  rng = _rng(split, index, stream=0)
  lines = []
  for _ in range(int(rng.integers(3, 7))):
    question, answer = EXERCISES[int(rng.integers(len(EXERCISES)))](rng)
    lines.append(f'{question} {answer}')
  return '\n'.join(lines)


def skills_document(split: str, index: int) -> str:
  """A pretraining document of 2-4 downstream-format exercises (`count`, `pairs`), answered.

  Moves the learning of a downstream skill into pretraining, where a grid spends most of its
  compute, so that finetuning can stay short, as in the paper. Its examples come from their
  own index stream, so downstream examples do not repeat here. (At toy scale even 1500 steps
  of it do not teach the tiny model to count: docs/results/toy/README.md.)
  """
  rng = _rng(split, index, stream=6)
  lines = []
  for _ in range(int(rng.integers(2, 5))):
    kind = ('count', 'pairs')[int(rng.integers(2))]
    example = QA_EXAMPLES[kind](split, int(rng.integers(2**62)))
    lines.append(f'{example["inputs"]} {example["targets"]}')
  return '\n'.join(lines)


def qa_example(split: str, index: int) -> dict[str, str]:
  """A downstream decoding example: a long list, one question about all of it, at the end.

  Answering needs a comparison with every listed value, which a single forward pass at the
  answer position must do in parallel: the setting where pause tokens could add width.
  """
  rng = _rng(split, index, stream=1)
  xs = _numbers(rng, int(rng.integers(12, 24)))
  if rng.integers(2):
    threshold = int(rng.integers(20, 80))
    return {
      'inputs': f'values {_join(xs)} . how many are greater than {threshold} ?',
      'targets': str(sum(x > threshold for x in xs)),
    }
  return {'inputs': f'values {_join(xs)} . which is the largest ?', 'targets': str(max(xs))}


def _digits(rng, low: int, high: int, smallest: int = 0) -> list[int]:
  return [int(x) for x in rng.integers(smallest, 10, size=int(rng.integers(low, high + 1)))]


# Single-digit lists (one token per value): shorter and easier than qa_example, ordered by
# how much independent work the answer needs, which comes in one token or two.


def count_example(split: str, index: int) -> dict[str, str]:
  """How many of 8-16 digits exceed a threshold: one comparison per value, then a count."""
  rng = _rng(split, index, stream=4)
  xs = _digits(rng, 8, 16)
  threshold = int(rng.integers(2, 8))
  return {
    'inputs': f'values {_join(xs)} . how many are greater than {threshold} ?',
    'targets': str(sum(x > threshold for x in xs)),
  }


def pairs_example(split: str, index: int) -> dict[str, str]:
  """How many pairs of 6-10 digits (1-9) add up to a target: ~n^2/2 independent comparisons.

  The 2SUM shape of Pfau et al. (2024), where filler tokens can help a transformer because
  the pairwise checks parallelise across extra positions.
  """
  rng = _rng(split, index, stream=5)
  xs = _digits(rng, 6, 10, smallest=1)
  target = int(rng.integers(8, 13))
  pairs = sum(xs[i] + xs[j] == target for i in range(len(xs)) for j in range(i + 1, len(xs)))
  return {
    'inputs': f'values {_join(xs)} . how many pairs add up to {target} ?',
    'targets': str(pairs),
  }


# Selection tasks: the answer is one token copied from the prefix, found by one comparison per
# listed letter (first), by comparing every pair of letters (repeated) or by matching one key
# (lookup). docs/results/toy/README.md has which ones the tiny model learns in a toy budget.


def first_example(split: str, index: int) -> dict[str, str]:
  """Which of five distinct letters comes first in the alphabet."""
  rng = _rng(split, index, stream=7)
  letters = [_LETTERS[i] for i in rng.choice(len(_LETTERS), size=5, replace=False)]
  return {'inputs': f'letters {_join(letters)} . which comes first ?', 'targets': min(letters)}


def repeated_example(split: str, index: int) -> dict[str, str]:
  """Which letter appears twice among six (five distinct, one of them repeated)."""
  rng = _rng(split, index, stream=10)
  letters = [_LETTERS[i] for i in rng.choice(len(_LETTERS), size=5, replace=False)]
  twice = letters[int(rng.integers(5))]
  letters = [letters[i] for i in rng.permutation(5)]
  letters.insert(int(rng.integers(6)), twice)
  return {'inputs': f'letters {_join(letters)} . which appears twice ?', 'targets': twice}


def lookup_example(split: str, index: int) -> dict[str, str]:
  """The digit paired with one of 4-6 distinct letter keys."""
  rng = _rng(split, index, stream=9)
  size = int(rng.integers(4, 7))
  keys = [_LETTERS[i] for i in rng.choice(len(_LETTERS), size=size, replace=False)]
  values = [int(x) for x in rng.integers(0, 10, size=size)]
  asked = int(rng.integers(size))
  pairs = ' , '.join(f'{k} {v}' for k, v in zip(keys, values))
  return {'inputs': f'pairs {pairs} . what is {keys[asked]} ?', 'targets': str(values[asked])}


QA_EXAMPLES = {
  'qa': qa_example,
  'count': count_example,
  'pairs': pairs_example,
  'first': first_example,
  'repeated': repeated_example,
  'lookup': lookup_example,
}


def choice_example(split: str, index: int) -> dict:
  """A downstream scoring example: pick the sorted copy of a list among four candidates."""
  rng = _rng(split, index, stream=2)
  xs = _numbers(rng, int(rng.integers(5, 10)))
  answer = sorted(xs)
  candidates = [answer]
  while len(candidates) < 4:
    wrong = list(answer)
    i, j = rng.choice(len(wrong), size=2, replace=False)
    wrong[i], wrong[j] = wrong[j], wrong[i]
    if wrong not in candidates:
      candidates.append(wrong)
  order = rng.permutation(4)
  return {
    'inputs': f'sort {_join(xs)} :',
    'candidates': [_join(candidates[k]) for k in order],
    'label': int(np.argmax(order == 0)),
  }


def _text_dataset(split: str, make_example, keys, batch: int = 64) -> tf.data.Dataset:
  """tf.data over `make_example(split, index)`, generated in batches to amortise Python calls."""
  if split not in NUM_DOCUMENTS:
    raise ValueError(f'Unknown split {split!r}; the synthetic data has {sorted(NUM_DOCUMENTS)}.')

  def generate(start):
    rows = [make_example(split, i) for i in range(int(start), int(start) + batch)]
    return [np.array([row[k] for row in rows], dtype=object) for k in keys]

  def to_features(start):
    columns = tf.numpy_function(generate, [start], [tf.string] * len(keys), stateful=False)
    return {k: tf.ensure_shape(c, [batch]) for k, c in zip(keys, columns)}

  starts = tf.data.Dataset.range(0, NUM_DOCUMENTS[split], batch)
  return starts.map(to_features).unbatch()


def pretraining_dataset(split: str, shuffle_files: bool = False, seed=None) -> tf.data.Dataset:
  """seqio dataset_fn: {"text": document}. Documents are i.i.d., so shuffling files is moot."""
  del shuffle_files, seed
  return _text_dataset(split, lambda s, i: {'text': document(s, i)}, ['text'])


def skills_pretraining_dataset(
  split: str, shuffle_files: bool = False, seed=None
) -> tf.data.Dataset:
  del shuffle_files, seed
  return _text_dataset(split, lambda s, i: {'text': skills_document(s, i)}, ['text'])


def qa_dataset(
  split: str, shuffle_files: bool = False, seed=None, kind: str = 'qa'
) -> tf.data.Dataset:
  """seqio dataset_fn of one QA_EXAMPLES kind: {"inputs", "targets"} strings."""
  del shuffle_files, seed
  return _text_dataset(split, QA_EXAMPLES[kind], ['inputs', 'targets'])


def choice_dataset(split: str, shuffle_files: bool = False, seed=None) -> tf.data.Dataset:
  del shuffle_files, seed

  def generate(start, batch=64):
    rows = [choice_example(split, i) for i in range(int(start), int(start) + batch)]
    return (
      np.array([r['inputs'] for r in rows], dtype=object),
      np.array([r['candidates'] for r in rows], dtype=object),
      np.array([r['label'] for r in rows], dtype=np.int64),
    )

  def to_features(start):
    inputs, candidates, label = tf.numpy_function(
      generate, [start], [tf.string, tf.string, tf.int64], stateful=False
    )
    return {
      'inputs': tf.ensure_shape(inputs, [64]),
      'candidates': tf.ensure_shape(candidates, [64, 4]),
      'label': tf.ensure_shape(label, [64]),
    }

  return tf.data.Dataset.range(0, NUM_DOCUMENTS[split], 64).map(to_features).unbatch()


def cache_dir() -> str:
  """Where generated artefacts (the synthetic tokenizer) live: $PAUSE_LM_CACHE or ~/.cache."""
  default = os.path.join(os.path.expanduser('~'), '.cache', 'pause_lm')
  return os.environ.get('PAUSE_LM_CACHE', default)


def _sentencepiece_cache_path() -> str:
  """The model's path in the cache, keyed by what fixes its bytes, so it needs no training."""
  digest = hashlib.sha256(f'{CORPUS_VERSION}:{SPM_VOCAB_SIZE}'.encode()).hexdigest()[:12]
  return os.path.join(cache_dir(), f'synthetic_spm_{digest}.model')


def _train_sentencepiece(path: str) -> None:
  """Trains the corpus's SentencePiece model into `path`, unless it is there already.

  Training is deterministic (fixed documents, one thread, fixed seed), and the file is written
  atomically, so concurrent processes and hosts agree on the same bytes.
  """
  if os.path.exists(path):
    return
  import sentencepiece as spm  # Only needed the first time.

  os.makedirs(os.path.dirname(path), exist_ok=True)
  sentences = []
  for i in range(_SPM_TRAINING_DOCUMENTS):
    sentences.extend(document('train', i).split('\n'))
    example = qa_example('train', i)
    sentences.append(f'{example["inputs"]} {example["targets"]}')
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(sentences),
    model_writer=model,
    vocab_size=SPM_VOCAB_SIZE,
    model_type='bpe',
    character_coverage=1.0,
    split_digits=True,
    num_threads=1,
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False) as f:
    f.write(model.getvalue())
  os.replace(f.name, path)


def sentencepiece_model_path() -> str:
  """The cached path of the corpus's SentencePiece model, trained first if it is missing."""
  path = _sentencepiece_cache_path()
  _train_sentencepiece(path)
  return path


class _TrainedOnLoadVocabulary(seqio.SentencePieceVocabulary):
  """A SentencePieceVocabulary that trains its model file when it first loads it.

  seqio already loads the model on first use; training there too lets every synthetic task be
  registered (at import) without the seconds of training, which only a run that tokenizes
  pays. Equality, pickling and copies are the base class's, which leave the loaded model out.
  """

  def _model_context(self):
    if not self._model:
      _train_sentencepiece(self.sentencepiece_model_file)
    return super()._model_context()


@functools.cache
def synthetic_vocabulary() -> vocab_lib.PauseVocabulary:
  """The embedded corpus's own SentencePiece model, trained on first use and then cached.

  One shared instance, since PauseVocabulary hashes its base by identity and seqio compares
  the vocabularies of tasks that are mixed.
  """
  return vocab_lib.PauseVocabulary(_TrainedOnLoadVocabulary(_sentencepiece_cache_path()))
