"""Evaluation: the offline PausePT -> PauseFT -> evaluate flow, inference-time M, metrics.

The end-to-end test runs the real commands' settings (pretrain, finetune with periodic
evaluation, evaluate: their gin files and flags, parsed as the commands parse them) in this
process, on a model that trains in milliseconds per step; what it checks is what the runs
write, and test_train.py and test_console.py start the commands themselves. The others use
freshly initialised parameters in-process, which is all that prefill inputs, metric plumbing
and batch-size invariance need.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pause_lm.pipeline import datasets as data
from pause_lm.model import decoding
from pause_lm.runtime import eval_results
from pause_lm.evaluation import evaluator as evaluation
from pause_lm.runtime import sharding
from pause_lm.model.transformer import Decoder, ModelConfig

from conftest import read_scalars, run_in_process

SEQUENCE_LENGTH = 96
M = 8
# The tests' small model (gin/experiments/tiny_test_model.gin), as flags after a run file.
SMALL_MODEL = (
  '--gin_file=gin/experiments/tiny_test_model.gin',
  f'--gin_bindings=ModelConfig.max_len = {SEQUENCE_LENGTH}',
)
CONFIG = ModelConfig(
  num_embeddings=256, num_layers=2, num_heads=2, emb_dim=64, mlp_dim=128, max_len=SEQUENCE_LENGTH
)


def _bindings(*bindings):
  return [*SMALL_MODEL, *(f'--gin_bindings={b}' for b in bindings)]


def _eval_scalars(model_dir):
  return {
    (step, tag): value
    for tag, values in read_scalars(model_dir).items()
    if tag.startswith('eval/')
    for step, value in values.items()
  }


_GENERATE = decoding.generate


@functools.cache
def _params():
  init = jax.jit(Decoder(CONFIG).init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  # Larger weights than the GPT-2 init separate the logits, so greedy choices do not hinge on
  # float rounding.
  return jax.tree.map(lambda p: p * 10.0, init['params'])


def test_pausept_pauseft_then_evaluate_at_several_inference_m(tmp_path):
  pretrained, finetuned = tmp_path / 'pausept', tmp_path / 'pauseft'
  run_in_process(
    'pause_lm.train',
    '--gin_file=gin/quickstart.gin',
    f"--gin.MODEL_DIR='{pretrained}'",
    *_bindings(
      f'SEQUENCE_LENGTH = {SEQUENCE_LENGTH}',
      'BATCH_SIZE = 8',
      'TRAIN_STEPS = 20',
      'WARMUP_STEPS = 2',
    ),
  )
  run_in_process(
    'pause_lm.train',
    '--gin_file=gin/pauseft.gin',
    f"--gin.MODEL_DIR='{finetuned}'",
    f"--gin.INIT_CHECKPOINT='{pretrained}'",
    "--gin.BASE_TASK='synthetic_qa'",
    f'--gin.NUM_PAUSES={M}',
    *_bindings(
      f'SEQUENCE_LENGTH = {SEQUENCE_LENGTH}',
      'BATCH_SIZE = 8',
      'TRAIN_STEPS = 20',
      'WARMUP_STEPS = 2',
      'LEARNING_RATE = 1e-3',
      'EVAL_EVERY_STEPS = 10',
      'EVAL_NUM_EXAMPLES = 8',
      'EVAL_BATCH_SIZE = 8',
    ),
  )
  # Periodic evaluation: scalars through the trainer's writer, files per step.
  scalars = _eval_scalars(finetuned)
  assert set(scalars) == {(10, 'eval/accuracy'), (20, 'eval/accuracy')}
  periodic = json.loads((finetuned / 'eval' / 'step_20' / 'metrics.json').read_text())
  assert periodic['num_examples'] == 8 and periodic['num_inference_pauses'] == M

  # The evaluate command's settings, at M_inf = M / 2.
  out = tmp_path / 'half'
  run_in_process(
    'pause_lm.evaluate',
    '--gin_file=gin/evaluate.gin',
    f"--gin.CHECKPOINT_PATH='{finetuned}'",
    f"--gin.TASK='synthetic_qa_pause{M}'",
    f'--gin.NUM_INFERENCE_PAUSES={M // 2}',
    '--gin.NUM_EXAMPLES=8',
    f"--gin.EVAL_OUTPUT_DIR='{out}'",
    *_bindings(),
  )
  metrics = json.loads((out / 'metrics.json').read_text())
  assert metrics['task'] == f'synthetic_qa_pause{M // 2}'
  assert metrics['num_inference_pauses'] == M // 2
  assert metrics['sequence_length'] == SEQUENCE_LENGTH  # read from the checkpoint
  assert metrics['finetuned_on'] == f'synthetic_qa_pause{M}'
  assert 0.0 <= metrics['metrics']['accuracy'] <= 100.0
  records = [json.loads(line) for line in (out / 'predictions.jsonl').read_text().splitlines()]
  assert len(records) == 8
  assert all(r['prefix'].count('<pause>') == M // 2 and r['num_pauses'] == M // 2 for r in records)
  assert {'prefix', 'prediction', 'target'} <= set(records[0])

  # The library, at M_inf = 0 and M, on the same checkpoint; then a scoring task.
  config = CONFIG
  params = evaluation.load_params(finetuned, config, sharding.create_mesh())
  for m_inf in (0, M):
    task = data.inference_task(f'synthetic_qa_pause{M}', m_inf)
    result = evaluation.TaskEvaluator(
      task, config, sequence_length=SEQUENCE_LENGTH, num_examples=8, batch_size=8
    )(params)
    eval_results.write_results(tmp_path / f'm{m_inf}', result)
    assert (
      json.loads((tmp_path / f'm{m_inf}' / 'metrics.json').read_text())['num_inference_pauses']
      == m_inf
    )
    assert all(r['prefix'].count('<pause>') == m_inf for r in result.records)
  choice = data.inference_task(f'synthetic_choice_pause{M}')
  result = evaluation.TaskEvaluator(
    choice, config, sequence_length=SEQUENCE_LENGTH, num_examples=3, batch_size=8
  )(params)
  assert choice == f'synthetic_choice_pause{M}_eval'
  assert result.num_examples == 3 and 0.0 <= result.metrics['accuracy'] <= 100.0
  assert all(len(r['candidates']) == 4 and len(r['target']) == 1 for r in result.records)


def test_inference_task_keeps_base_placement_and_filler():
  assert data.inference_task('synthetic_qa_pause10', 5) == 'synthetic_qa_pause5'
  assert data.inference_task('synthetic_qa_pause10') == 'synthetic_qa_pause10'
  assert data.inference_task('synthetic_qa_pause10', 0) == 'synthetic_qa_std'
  assert data.inference_task('synthetic_qa_std', 3) == 'synthetic_qa_pause3'
  assert data.inference_task('synthetic_qa_pause10_prepend', 2) == 'synthetic_qa_pause2_prepend'
  assert data.inference_task('synthetic_qa_filler10', 4) == 'synthetic_qa_filler4'
  assert data.inference_task('synthetic_choice_pause10_eval', 2) == 'synthetic_choice_pause2_eval'


def test_clear_errors():
  with pytest.raises(data.TaskNotRegisteredError, match='not registered'):
    data.inference_task('synthetic_qaa_pause10', 2)
  with pytest.raises(ValueError, match='not a downstream task'):
    data.inference_task('synthetic_pause_pretrain')
  with pytest.raises(ValueError, match='NUM_INFERENCE_PAUSES needs'):
    data.inference_task('synthetic_pause_pretrain', 2)
  with pytest.raises(FileNotFoundError, match='CHECKPOINT_PATH'):
    evaluation.evaluate(
      checkpoint_path='/nonexistent/run',
      task='synthetic_qa_pause2',
      model=CONFIG,
      mesh=sharding.create_mesh(),
    )


def _recorded_prefills(task, monkeypatch, batch_size=4, num_examples=5):
  """Runs an evaluation and returns every call that reached decoding.generate."""
  calls = []

  def recording(params, config, prefixes, prefix_lengths, **kwargs):
    calls.append((np.asarray(prefixes), np.asarray(prefix_lengths), kwargs))
    return _GENERATE(params, config, prefixes, prefix_lengths, **kwargs)

  monkeypatch.setattr(decoding, 'generate', recording)
  evaluator = evaluation.TaskEvaluator(
    task,
    CONFIG,
    sequence_length=SEQUENCE_LENGTH,
    num_examples=num_examples,
    batch_size=batch_size,
    progress=False,
  )
  evaluator(_params())
  return calls, evaluator.info.pause_id


@pytest.mark.parametrize('placement', ['', '_prepend'])
def test_inference_m_changes_only_the_pauses_in_the_prefill(monkeypatch, placement):
  five = data.inference_task(f'synthetic_qa_pause{M}{placement}', 5)
  two = data.inference_task(f'synthetic_qa_pause{M}{placement}', 2)
  calls_5, pause = _recorded_prefills(five, monkeypatch)
  calls_2, _ = _recorded_prefills(two, monkeypatch)
  assert len(calls_5) == len(calls_2) == 2
  for (prefixes_5, lengths_5, kwargs_5), (prefixes_2, lengths_2, kwargs_2) in zip(calls_5, calls_2):
    assert kwargs_5 == kwargs_2  # decode length, EOS, vocabulary limit, prefix-LM
    assert prefixes_5.shape == prefixes_2.shape  # one compiled program for every M
    real = lengths_2 > 0  # the rest pads the last batch
    np.testing.assert_array_equal(lengths_5[real], lengths_2[real] + 3)
    assert not lengths_5[~real].any()
    for row in range(len(lengths_5)):
      seen_5 = prefixes_5[row, : lengths_5[row]]
      seen_2 = prefixes_2[row, : lengths_2[row]]
      assert (seen_5 == pause).sum() == (5 if lengths_5[row] else 0)
      assert (seen_2 == pause).sum() == (2 if lengths_2[row] else 0)
      # Same prefix tokens, in the same order, once the pauses are taken out.
      np.testing.assert_array_equal(seen_5[seen_5 != pause], seen_2[seen_2 != pause])
      if placement:
        assert (seen_5[:5] == pause).all() and (seen_2[:2] == pause).all()
      elif lengths_5[row]:
        assert (seen_5[-5:] == pause).all() and (seen_2[-2:] == pause).all()
      # Nothing after the prefix reaches the model.
      assert not prefixes_5[row, lengths_5[row] :].any()


def test_metrics_of_hand_made_predictions():
  evaluator = evaluation.TaskEvaluator(
    'synthetic_qa_pause2', CONFIG, sequence_length=SEQUENCE_LENGTH, num_examples=4, progress=False
  )
  targets = [ex['targets_pretokenized'].decode() for ex in evaluator.examples]
  vocabulary = data.get_task('synthetic_qa_pause2').output_features['targets'].vocabulary
  # Right; right after the postprocessor strips spaces; wrong; right. Rows are fixed-width,
  # 0 after EOS, as decoding returns them.
  texts = [targets[0], f'  {targets[1]} ', targets[2] + '1', targets[3]]
  outputs = [vocabulary.encode(t) + [vocabulary.eos_id] for t in texts]
  outputs = [row + [0] * (8 - len(row)) for row in outputs]

  def predict(dataset, model_feature_shapes=None):
    del model_feature_shapes
    return [(int(i), outputs[int(i)]) for i, _ in dataset.as_numpy_iterator()]

  result = evaluator.evaluate_with(predict, None)
  assert result.metrics == {'accuracy': 75.0}  # t5's accuracy is a percentage
  assert [r['prediction'] for r in result.records] == [
    targets[0],
    targets[1],
    targets[2] + '1',
    targets[3],
  ]
  assert [r['target'] for r in result.records] == targets


def test_rank_classification_of_hand_made_scores():
  evaluator = evaluation.TaskEvaluator(
    'synthetic_choice_pause2_eval',
    CONFIG,
    sequence_length=SEQUENCE_LENGTH,
    num_examples=3,
    progress=False,
  )
  rows = evaluator.examples
  assert len(rows) == 12  # every candidate of the first 3 examples
  # Examples 0 and 2 rank their correct candidate first; example 1 ranks a wrong one first.
  wrong_of_1 = next(i for i, ex in enumerate(rows) if ex['idx'][0] == 1 and not ex['is_correct'])
  scores = [
    0.0 if i == wrong_of_1 else -1.0 if ex['is_correct'] and ex['idx'][0] != 1 else -5.0
    for i, ex in enumerate(rows)
  ]

  def score(dataset, model_feature_shapes=None):
    del model_feature_shapes
    return [(int(i), scores[int(i)]) for i, _ in dataset.as_numpy_iterator()]

  result = evaluator.evaluate_with(None, score)
  assert result.metrics['accuracy'] == pytest.approx(200.0 / 3)
  assert [r['prediction'] == r['target'][0] for r in result.records] == [True, False, True]


@pytest.mark.parametrize('task', ['synthetic_qa_pause3', 'synthetic_choice_pause3_eval'])
def test_same_results_for_every_batch_size(task):
  results = [
    evaluation.TaskEvaluator(
      task, CONFIG, sequence_length=SEQUENCE_LENGTH, num_examples=5, batch_size=b, progress=False
    )(_params())
    for b in (1, 3, 8)
  ]
  for other in results[1:]:
    assert other.metrics == results[0].metrics
    assert other.records == results[0].records
