"""`python -m pause_lm.show` shows pauses and which targets are weighted."""

import json

from pause_lm.pipeline import datasets as data
from pause_lm import show

from conftest import run_python


def _run(*args):
  return run_python('-m', 'pause_lm.show', *args).stdout


def test_text_view_marks_unweighted_pause_targets():
  out = _run('--task=synthetic_pause_pretrain', '--n=2', '--sequence_length=128')
  headers = [line for line in out.splitlines() if line.startswith('--- example')]
  assert len(headers) == 2
  bodies = ' '.join(line for line in out.splitlines() if not line.startswith('---'))
  assert '[<pause>]' in bodies
  assert '<pause>' not in bodies.replace('[<pause>]', '')  # a pause target is never weighted


def test_json_view_has_the_model_features():
  out = _run('--task=synthetic_qa_pause10', '--n=2', '--sequence_length=96', '--json', '--seed=4')
  records = [json.loads(line) for line in out.splitlines()]
  assert len(records) == 2
  pause_id = data.task_info('synthetic_qa_pause10').pause_id
  for r in records:
    assert r['pause_id'] == pause_id
    assert r['decoder_input_tokens'].count(pause_id) == 10
    assert set(r) >= {
      'decoder_input_tokens',
      'decoder_target_tokens',
      'decoder_loss_weights',
      'decoder_causal_attention',
    }


def test_render_brackets_unweighted_targets():
  vocabulary = data.get_task('synthetic_std_pretrain').output_features['targets'].vocabulary
  ids = vocabulary.encode('max 5')
  example = {
    'decoder_target_tokens': ids + [vocabulary.pause_id, vocabulary.eos_id, 0],
    'decoder_loss_weights': [1] * len(ids) + [0, 1, 0],
  }
  assert show.render(example, vocabulary, vocabulary.pause_id).endswith('[<pause>] </s>')
