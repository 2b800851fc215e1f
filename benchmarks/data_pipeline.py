r"""Input-pipeline throughput: what pause injection costs, and how far it outruns training.

  python benchmarks/data_pipeline.py [--sequence_lengths=256,2048] [--batch_size=8] [--rounds=9]
  python benchmarks/data_pipeline.py --tokenizers [--hf_tokenizer=DIR_OR_TOKENIZER_JSON]

For each sequence length, prints tokens/s of the plain SeqIO pretraining pipeline and of the
pause one (the same chunks plus Algorithm 1), measured in alternating rounds in one process so
machine noise hits both (each round on a fresh, warmed-up iterator, the other pipeline's
stopped): the median and the spread (min-max) over rounds, and the cost of
injection as 1 - pause/plain of the medians. Tokens are every position of every batch
(padding included, as the train step sees them); `real` counts non-padding targets only.
It also prints the pause pipeline's real tokens per CPU-second (process CPU time: every
tf.data thread, tokenization included), and how many such cores feed one 8-GPU host at the
1B step (gin/models/1b.gin, 2048 tokens) assuming 50% MFU of the H100's 989 dense bf16
TFLOP/s, with FLOPs per token from `ModelConfig.flops_per_token`. With --train_tokens_per_s
(from benchmarks/train_step.py) it also prints how many times over the pipeline feeds that
train step.

With --tokenizers it instead compares tokenization in tf.data (characters/s and tokens/s of
the same documents): SentencePiece (tf_text's op, the C4 and synthetic tasks' path) against a
Hugging Face tokenizer.json (`pause_lm.hf.tokenizer`), per document as seqio's `tokenize`
preprocessor calls it, and in batches of --tokenize_batch documents.
"""

import statistics
import time

from absl import app
from absl import flags
import gin
import numpy as np

import tensorflow as tf

from pause_lm.pipeline import datasets as data
from pause_lm.hf import tokenizer as hf_tokenizer
from pause_lm.model import transformer as model_lib
from pause_lm.data import synthetic

_LENGTHS = flags.DEFINE_list('sequence_lengths', ['256', '2048'], 'Pretraining chunk lengths.')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Batch size.')
_TOKENS = flags.DEFINE_integer(
  'tokens_per_round', 2**21, 'Tokens (positions) timed per pipeline per round.'
)
_WARMUP = flags.DEFINE_integer(
  'warmup_tokens', 2**19, "Tokens read, untimed, from each round's fresh iterator first."
)
_ROUNDS = flags.DEFINE_integer('rounds', 9, 'Alternating rounds per pipeline.')
_TRAIN_RATE = flags.DEFINE_float(
  'train_tokens_per_s', None, 'Train-step consumption to compare against (tokens/s).'
)

_TOKENIZERS = flags.DEFINE_bool(
  'tokenizers', False, 'Compare SentencePiece and Hugging Face tokenization instead.'
)
_HF_TOKENIZER = flags.DEFINE_string(
  'hf_tokenizer',
  'tests/testdata/hf/tokenizer',
  "tokenizer.json (or its folder) for --tokenizers; the default is the tests' 400-token BPE.",
)
_DOCUMENTS = flags.DEFINE_integer('documents', 2000, 'Documents tokenized per round.')
_TOKENIZE_BATCH = flags.DEFINE_integer('tokenize_batch', 64, 'Documents per batched call.')

TASKS = {'plain': 'synthetic_std_pretrain', 'pause': 'synthetic_pause_pretrain'}
GPUS_PER_HOST = 8
H100_BF16_FLOPS = 989e12
ASSUMED_MFU = 0.5


def tokens_per_second_1b_gpu(sequence_length: int = 2048) -> float:
  """Tokens/s one H100 trains the 1B model at, at ASSUMED_MFU."""
  gin.clear_config()
  gin.parse_config_files_and_bindings(['gin/models/1b.gin'], ['NUM_EMBEDDINGS = 32297'])
  flops_per_token = model_lib.ModelConfig().flops_per_token(sequence_length)
  gin.clear_config()
  return ASSUMED_MFU * H100_BF16_FLOPS / flops_per_token


def _iterator(task: str, length: int):
  """A fresh iterator, warmed up (tf.data's threads, autotuning, the first batches)."""
  ds = data.get_dataset(task, 'train', sequence_length=length, batch_size=_BATCH.value, seed=0)
  it = ds.as_numpy_iterator()
  for _ in range(max(1, _WARMUP.value // (_BATCH.value * length))):
    next(it)
  return it


def _one_round(iterator, length: int) -> tuple[float, float, float]:
  """(positions/s, real tokens/s, real tokens per CPU-second) over one round."""
  batches = max(1, _TOKENS.value // (_BATCH.value * length))
  real = 0
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    real += int(np.count_nonzero(next(iterator)['decoder_target_tokens']))
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return batches * _BATCH.value * length / wall, real / wall, real / cpu


def _spread(values) -> str:
  return f'{statistics.median(values):12,.0f} (min {min(values):,.0f}, max {max(values):,.0f})'


def benchmark(length: int) -> dict[str, float]:
  """Alternating rounds of both pipelines at one length; prints and returns the medians."""
  rounds = {name: [] for name in TASKS}
  for _ in range(_ROUNDS.value):
    for name, task in TASKS.items():
      # One live pipeline at a time: an idle iterator's threads would keep filling its
      # buffers during the other's round, taking that round's CPU and flattering its own.
      iterator = _iterator(task, length)
      rounds[name].append(_one_round(iterator, length))
      del iterator
  median = {}
  for name, task in TASKS.items():
    positions, real, per_cpu = zip(*rounds[name])
    median[name] = statistics.median(positions)
    median[f'{name}_per_cpu'] = statistics.median(per_cpu)
    print(
      f'L={length:5d} {name:6s} {task:24s} tokens/s {_spread(positions)}; '
      f'real tokens/s {statistics.median(real):,.0f}; '
      f'real tokens per CPU-second {median[f"{name}_per_cpu"]:,.0f}'
    )
  cost = 1.0 - median['pause'] / median['plain']
  cpu_cost = 1.0 - median['pause_per_cpu'] / median['plain_per_cpu']
  print(
    f"L={length:5d} pause injection cost: {100 * cost:.1f}% of the plain pipeline's tokens/s "
    f'(target < 5%); {100 * cpu_cost:.1f}% of its tokens per CPU-second'
  )
  return median


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
  texts = [
    ' '.join(synthetic.document('train', 8 * i + k) for k in range(8))
    for i in range(_DOCUMENTS.value)
  ]
  characters = sum(len(t) for t in texts)
  hf = hf_tokenizer.HfTokenizerVocabulary(_HF_TOKENIZER.value)
  spm = synthetic.synthetic_vocabulary().base
  pipelines = {
    'sentencepiece per document': _tokenized(texts, spm.encode_tf, None),
    'sentencepiece batched': _tokenized(texts, spm.encode_tf, _TOKENIZE_BATCH.value),
    'hf per document': _tokenized(texts, hf.encode_tf, None),
    'hf batched': _tokenized(texts, hf.encode_tf, _TOKENIZE_BATCH.value),
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
  print(f'{len(texts)} documents, {characters:,} characters; HF tokenizer {hf.tokenizer_file}')
  for name, name_rates in rates.items():
    median = statistics.median(name_rates)
    print(
      f'{name:28s} {median:14,.0f} characters/s {median * tokens[name] / characters:12,.0f}'
      f' tokens/s  (rounds, characters/s: {", ".join(f"{r:,.0f}" for r in name_rates)})'
    )


def main(argv):
  del argv
  if _TOKENIZERS.value:
    compare_tokenizers()
    return
  per_gpu = tokens_per_second_1b_gpu()
  host = GPUS_PER_HOST * per_gpu
  for length in map(int, _LENGTHS.value):
    median = benchmark(length)
    print(
      f'L={length:5d} one 8-GPU host at the 1B step ({ASSUMED_MFU:.0%} MFU of '
      f'{H100_BF16_FLOPS / 1e12:g} TFLOP/s: {per_gpu:,.0f} tokens/s per GPU) needs '
      f'{host:,.0f} tokens/s = {host / median["pause_per_cpu"]:.1f} CPU cores of this '
      'pause pipeline'
    )
    if _TRAIN_RATE.value:
      print(
        f'L={length:5d} pipeline / train step: {median["pause"] / _TRAIN_RATE.value:.1f}x '
        '(target >= 10x)'
      )


if __name__ == '__main__':
  app.run(main)
