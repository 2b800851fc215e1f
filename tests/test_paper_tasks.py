"""The nine downstream tasks end to end under TFDS mock data (CommonSenseQA on a test JSONL)."""

import json

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from pause_lm.pipeline import datasets as data
from pause_lm.data import synthetic
from pause_lm.tasks import paper

TFDS_TASKS = [
  'gsm8k',
  'squad',
  'coqa',
  'lambada',
  'web_questions',
  'natural_questions',
  'piqa',
  'hellaswag',
]


@pytest.fixture(autouse=True)
def offline_vocabulary(monkeypatch):
  """C4's SentencePiece model lives on GCS; the synthetic one stands in for it here."""
  monkeypatch.setattr(seqio.TfdsDataSource, 'num_input_examples', lambda self, split: None)
  with gin.unlock_config():
    gin.bind_parameter('c4_vocabulary.spm_path', synthetic.sentencepiece_model_path())
  yield
  gin.clear_config()


def _first_batch(task, length=512, split='train'):
  ds = data.get_dataset(task, split, sequence_length=length, batch_size=2, seed=0)
  return next(ds.as_numpy_iterator())


SCORING_EXAMPLES = {
  'piqa': {'goal': 'boil water', 'id': '1', 'sol1': 'use a pot', 'sol2': 'use a sieve', 'label': 0},
  'hellaswag': {
    'activity_label': 'a',
    'context': 'He opens the door',
    'source_id': 's',
    'split_type': 'indomain',
    'label': 2,
    'endings': ['and flies', 'and sings', 'and walks in', 'and melts'],
  },
}


def _mock(base, num_examples=8):
  """Random examples from the builders' features; fixed ones for the scoring tasks, whose
  random labels would often name no candidate (and leave the training form empty)."""
  if base not in SCORING_EXAMPLES:
    return tfds.testing.mock_data(
      num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )

  def as_dataset(self, *args, **kwargs):
    del self, args, kwargs
    return tf.data.Dataset.from_tensors(SCORING_EXAMPLES[base]).repeat(num_examples)

  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


@pytest.mark.parametrize('base', TFDS_TASKS)
def test_tfds_task_runs_with_pauses(base):
  with _mock(base):
    info = data.task_info(f'{base}_pause10')
    batch = _first_batch(f'{base}_pause10')
    std = _first_batch(f'{base}_std')
  assert info.prefix_lm
  assert ((batch['decoder_input_tokens'] == info.pause_id).sum(axis=1) == 10).all()
  assert ((std['decoder_input_tokens'] == info.pause_id).sum(axis=1) == 0).all()
  assert (batch['decoder_loss_weights'].sum(axis=1) > 0).all()
  # Loss only on the answer: never on the prefix or its pauses.
  weighted_inputs = batch['decoder_target_tokens'][batch['decoder_loss_weights'] == 1]
  assert (weighted_inputs != info.pause_id).all()


@pytest.mark.parametrize('base,candidates', [('piqa', 2), ('hellaswag', 4)])
def test_scoring_tasks_evaluate_every_candidate(base, candidates):
  eval_name = data.eval_task_name(f'{base}_pause10')
  assert eval_name == f'{base}_pause10_eval'
  with _mock(base, num_examples=3):
    task = data.get_task(eval_name)
    examples = list(
      task.get_dataset(
        {'inputs': 256, 'targets': 64}, split='validation', shuffle=False
      ).as_numpy_iterator()
    )
  assert len(examples) == 3 * candidates
  assert sum(bool(ex['is_correct']) for ex in examples) == 3
  assert [tuple(ex['idx']) for ex in examples[:candidates]] == [(0, k) for k in range(candidates)]


def test_commonsense_qa_reads_the_official_jsonl(tmp_path):
  record = {
    'answerKey': 'B',
    'id': 'x',
    'question': {
      'question_concept': 'c',
      'stem': 'Where do fish live?',
      'choices': [{'label': 'A', 'text': 'desert'}, {'label': 'B', 'text': 'water'}],
    },
  }
  for name in ('train_rand_split.jsonl', 'dev_rand_split.jsonl'):
    (tmp_path / name).write_text(json.dumps(record) + '\n' + json.dumps(record) + '\n')
  with gin.unlock_config():
    gin.bind_parameter('commonsense_qa_files.data_dir', str(tmp_path))
  task = data.get_task('commonsense_qa_pause10')
  (ex, _) = task.get_dataset(
    {'inputs': 64, 'targets': 16}, split='validation', shuffle=False
  ).as_numpy_iterator()
  vocabulary = task.output_features['inputs'].vocabulary
  # The stand-in tokenizer has no capitals or brackets: compare through its own round trip.
  prefix = 'question: Where do fish live? choices: (A) desert (B) water answer:'
  expected = vocabulary.decode(vocabulary.encode(prefix)) + ' <pause>' * 10
  assert vocabulary.decode(ex['inputs'].tolist()) == expected
  assert vocabulary.decode(ex['targets'].tolist()) == 'water'


def test_commonsense_qa_missing_files_say_where_to_get_them(tmp_path):
  with gin.unlock_config():
    gin.bind_parameter('commonsense_qa_files.data_dir', str(tmp_path / 'missing'))
  with pytest.raises(FileNotFoundError, match='commonsense_qa_files.data_dir'):
    paper.commonsense_qa_dataset('train')


def test_gsm8k_metrics_on_hand_made_predictions():
  targets = [
    'Natalia sold 48/2 = 24 clips.\n#### 72',
    'so 1,000 in all\n#### 1000',
    '#### 5',
    '#### 3',
  ]
  predictions = ['She sold 24 clips ... #### 72', 'the answer is 1,000', '#### 6', 'no idea']
  assert paper.gsm8k_accuracy(targets, predictions) == {'accuracy': 50.0}
  assert paper.final_number('#### 1,234.') == '1234'
  assert paper.gsm8k_rouge1(['a b c d'], ['a b x y'])['rouge1'] == pytest.approx(50.0)


def test_qa_metrics_on_hand_made_predictions():
  targets = [['Denver Broncos', 'The Broncos'], ['1990'], ['blue']]
  predictions = ['the Broncos', 'in 1990', 'red']
  assert paper.squad_em(targets, predictions)['em'] == pytest.approx(100 / 3)
  # F1: 1.0 (exact after normalisation), 2/3 ("in 1990" vs "1990": p=1/2, r=1), 0.
  assert paper.squad_f1(targets, predictions)['f1'] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_rank_accuracy_on_hand_made_scores():
  from pause_lm.tasks import downstream  # pylint: disable=g-import-not-at-top

  # Two questions with two candidates each: (idx, is_correct, weight, target length).
  targets = [
    ((0, 0), True, 1.0, 3),
    ((0, 1), False, 1.0, 3),
    ((1, 0), False, 1.0, 3),
    ((1, 1), True, 1.0, 3),
  ]
  scores = [-1.0, -2.0, -0.5, -3.0]  # first right, second wrong
  assert downstream.rank_accuracy(targets, scores)['accuracy'] == pytest.approx(50.0)
  np.testing.assert_allclose(
    downstream.rank_accuracy(targets, [-1, -2, -3, -0.5])['accuracy'], 100.0
  )
