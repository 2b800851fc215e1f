r"""See what the model sees: decoded examples of a task, `<pause>` visible, weighted targets marked.

  python -m pause_lm.show --task=synthetic_pause_pretrain --n=2
  python -m pause_lm.show --task=synthetic_qa_pause10 --json
  python -m pause_lm.show --gin_file=my_tasks.gin --task=my_task_pause4

Like every pause-lm command it takes `--gin_file` / `--gin.NAME=value`: a gin file that imports
your task module makes its tasks showable, and bindings such as
`--gin.c4_vocabulary.spm_path="'/path/spiece.model'"` apply here as in training.

In the text view each target token is printed as its piece; a target whose loss weight is 0
(a `<pause>` target, a prefix token, padding) is wrapped in brackets, so `[<pause>]` marks the
positions the loss skips.
"""

import json
import sys

from absl import flags

# First: TensorFlow's start-up lines are printed as it is imported.
from pause_lm.runtime import console  # pylint: disable=g-bad-import-order

console.quiet_tensorflow_import()

# pylint: disable=g-import-not-at-top,wrong-import-position
from pause_lm.pipeline import datasets as data
from pause_lm.runtime import gin_utils
# pylint: enable=g-import-not-at-top,wrong-import-position

_TASK = flags.DEFINE_string('task', None, 'Registered task name.', required=True)
_SPLIT = flags.DEFINE_string('split', 'train', 'Split to read.')
_N = flags.DEFINE_integer('n', 3, 'Number of examples.')
_LENGTH = flags.DEFINE_integer('sequence_length', 256, 'Decoder sequence length.')
_SEED = flags.DEFINE_integer('seed', 0, 'seqio seed (shuffling and pause positions).')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object per example.')


def render(example, vocabulary, pause_id: int) -> str:
  """Target pieces in order; unweighted ones in [brackets]; padding omitted."""
  pieces = []
  for token, weight in zip(example['decoder_target_tokens'], example['decoder_loss_weights']):
    if token == 0:
      continue
    if token == pause_id:
      piece = '<pause>'
    elif token == vocabulary.eos_id:
      piece = '</s>'
    else:
      piece = vocabulary.base.decode([int(token)]).strip() or '_'
    pieces.append(piece if weight else f'[{piece}]')
  return ' '.join(pieces)


def examples(task_name: str, split: str, n: int, sequence_length: int, seed: int):
  ds = data.get_dataset(
    task_name,
    split,
    sequence_length=sequence_length,
    batch_size=1,
    shuffle=True,
    seed=seed,
    repeat=False,
    drop_remainder=False,
  )
  for batch in ds.take(n).as_numpy_iterator():
    yield {k: v[0] for k, v in batch.items()}


def main(argv):
  gin_utils.reject_positional_args(argv)
  console.setup_logging()
  gin_utils.parse_optional_settings()
  info = data.task_info(_TASK.value)
  vocabulary = data.get_task(_TASK.value).output_features['targets'].vocabulary
  for i, ex in enumerate(examples(_TASK.value, _SPLIT.value, _N.value, _LENGTH.value, _SEED.value)):
    if _JSON.value:
      record = {k: v.tolist() for k, v in ex.items()}
      record['pause_id'] = info.pause_id
      print(json.dumps(record))
      continue
    inputs = ex['decoder_input_tokens']
    targets = ex['decoder_target_tokens']
    real = targets != 0
    pauses = int(((inputs == info.pause_id) & real).sum())
    print(
      f'--- example {i}: {int(real.sum())} tokens, {pauses} <pause> in inputs '
      f'({100.0 * pauses / max(int(real.sum()), 1):.1f}%), '
      f'{int(ex["decoder_loss_weights"].sum())} weighted targets'
    )
    print(render(ex, vocabulary, info.pause_id))
  sys.stdout.flush()


if __name__ == '__main__':
  gin_utils.run(main)
