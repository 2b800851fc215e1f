r"""Input-pipeline throughput: what pause injection costs, and how far the pipeline outruns training.

  python benchmarks/data_pipeline.py [--sequence_length=2048] [--batch_size=8] [--rounds=5]

Prints tokens/s of the plain SeqIO pretraining pipeline and of the pause one (the same chunks
plus Algorithm 1), measured in alternating rounds in one process so machine noise hits both,
and their ratio. With --train_tokens_per_s (from benchmarks/train_step.py) it also prints how
many times over the pipeline feeds the train step.
"""

import statistics
import time

from absl import app
from absl import flags

from pause_lm import data

_LENGTH = flags.DEFINE_integer("sequence_length", 2048, "Pretraining chunk length.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Batch size.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Batches timed per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds per pipeline.")
_TRAIN_RATE = flags.DEFINE_float("train_tokens_per_s", None,
                                 "Train-step consumption to compare against (tokens/s).")

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


def main(argv):
  del argv
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
