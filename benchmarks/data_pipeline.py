r"""Input-pipeline throughput: what pause injection costs, and how far the pipeline outruns training.

  python benchmarks/data_pipeline.py [--sequence_length=2048] [--batch_size=8] [--rounds=5]
  python benchmarks/data_pipeline.py --tokenizers [--hf_tokenizer=DIR_OR_TOKENIZER_JSON]

Prints tokens/s of the plain SeqIO pretraining pipeline and of the pause one (the same chunks
plus Algorithm 1), measured in alternating rounds in one process so machine noise hits both,
and their ratio. With --train_tokens_per_s (from benchmarks/train_step.py) it also prints how
many times over the pipeline feeds the train step.

With --tokenizers it instead compares tokenization in tf.data (characters/s and tokens/s of
the same documents): SentencePiece (tf_text's op, the C4 and synthetic tasks' path) against a
Hugging Face tokenizer.json (`pause_lm.hf_tokenizer`), per document as seqio's `tokenize`
preprocessor calls it, and in batches of --tokenize_batch documents.
"""

import statistics
import time

from absl import app
from absl import flags

import tensorflow as tf

from pause_lm import data
from pause_lm import hf_tokenizer
from pause_lm import synthetic
from pause_lm import vocab

_LENGTH = flags.DEFINE_integer("sequence_length", 2048, "Pretraining chunk length.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Batch size.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Batches timed per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds per pipeline.")
_TRAIN_RATE = flags.DEFINE_float("train_tokens_per_s", None,
                                 "Train-step consumption to compare against (tokens/s).")

_TOKENIZERS = flags.DEFINE_bool("tokenizers", False,
                                 "Compare SentencePiece and Hugging Face tokenization instead.")
_HF_TOKENIZER = flags.DEFINE_string(
    "hf_tokenizer", "tests/testdata/hf/tokenizer",
    "tokenizer.json (or its folder) for --tokenizers; the default is the tests' 400-token BPE.")
_DOCUMENTS = flags.DEFINE_integer("documents", 2000, "Documents tokenized per round.")
_TOKENIZE_BATCH = flags.DEFINE_integer("tokenize_batch", 64, "Documents per batched call.")

TASKS = {"plain": "synthetic_std_pretrain", "pause": "synthetic_pause_pretrain"}


def _iterator(task: str):
  ds = data.get_dataset(task, "train", sequence_length=_LENGTH.value,
                        batch_size=_BATCH.value, seed=0)
  it = ds.as_numpy_iterator()
  for _ in range(5):  # Warm up tf.data's threads and autotuning.
    next(it)
  return it


def _tokens_per_second(iterator) -> float:
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(iterator)
  return _BATCHES.value * _BATCH.value * _LENGTH.value / (time.perf_counter() - start)


def _tokenized(texts: list[str], encode_tf, batch: int | None) -> tf.data.Dataset:
  ds = tf.data.Dataset.from_tensor_slices(texts)
  if batch:
    ds = ds.batch(batch).map(encode_tf, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
  else:
    ds = ds.map(encode_tf, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.map(tf.size).prefetch(tf.data.AUTOTUNE)


def compare_tokenizers():
  """Characters/s and tokens/s of SentencePiece and HF tokenization in tf.data pipelines."""
  # Documents of ~8 synthetic ones each (~2,000 characters), so per-call overhead is not all.
  texts = [" ".join(synthetic.document("train", 8 * i + k) for k in range(8))
           for i in range(_DOCUMENTS.value)]
  characters = sum(len(t) for t in texts)
  hf = hf_tokenizer.HfTokenizerVocabulary(_HF_TOKENIZER.value)
  spm = vocab.synthetic_vocabulary().base
  pipelines = {
      "sentencepiece per document": _tokenized(texts, spm.encode_tf, None),
      "sentencepiece batched": _tokenized(texts, spm.encode_tf, _TOKENIZE_BATCH.value),
      "hf per document": _tokenized(texts, hf.encode_tf, None),
      "hf batched": _tokenized(texts, hf.encode_tf, _TOKENIZE_BATCH.value),
  }
  rates = {name: [] for name in pipelines}
  tokens = {}
  for name, ds in pipelines.items():  # Warm-up: traces and loads each tokenizer once.
    tokens[name] = sum(int(n) for n in ds.as_numpy_iterator())
  for _ in range(_ROUNDS.value):
    for name, ds in pipelines.items():
      start = time.perf_counter()
      for _ in ds:
        pass
      rates[name].append(characters / (time.perf_counter() - start))
  print(f"{len(texts)} documents, {characters:,} characters; HF tokenizer {hf.tokenizer_file}")
  for name, name_rates in rates.items():
    median = statistics.median(name_rates)
    print(f"{name:28s} {median:14,.0f} characters/s {median * tokens[name] / characters:12,.0f}"
          f" tokens/s  (rounds, characters/s: {', '.join(f'{r:,.0f}' for r in name_rates)})")


def main(argv):
  del argv
  if _TOKENIZERS.value:
    compare_tokenizers()
    return
  iterators = {name: _iterator(task) for name, task in TASKS.items()}
  rates = {name: [] for name in TASKS}
  for _ in range(_ROUNDS.value):
    for name, iterator in iterators.items():
      rates[name].append(_tokens_per_second(iterator))
  median = {name: statistics.median(r) for name, r in rates.items()}
  for name, task in TASKS.items():
    print(f"{name:6s} {task:26s} {median[name]:12,.0f} tokens/s  "
          f"(rounds: {', '.join(f'{r:,.0f}' for r in rates[name])})")
  cost = 1.0 - median["pause"] / median["plain"]
  print(f"pause injection cost: {100 * cost:.1f}% of the plain pipeline's throughput "
        f"(target < 5%)")
  if _TRAIN_RATE.value:
    print(f"pipeline / train step: {median['pause'] / _TRAIN_RATE.value:.1f}x (target >= 10x)")


if __name__ == "__main__":
  app.run(main)
