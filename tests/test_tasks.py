"""Registered tasks end to end: synthetic (offline), C4 under TFDS mock data, clear errors."""

import itertools

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from pause_lm import tasks
from pause_lm.pipeline import datasets as data
from pause_lm.data import synthetic
from pause_lm.tasks import pretraining

LENGTH = 256


def _batch(task, seed=0, length=LENGTH, batch_size=8, split='train'):
  ds = data.get_dataset(task, split, sequence_length=length, batch_size=batch_size, seed=seed)
  return next(ds.as_numpy_iterator())


def assert_pause_pretraining_batch(batch, pause_id, shape=(8, LENGTH)):
  """Algorithm 1's share of pauses; loss on every real target and on no pause target."""
  assert batch['decoder_input_tokens'].shape == shape
  targets, weights = batch['decoder_target_tokens'], batch['decoder_loss_weights']
  is_pause = targets == pause_id
  share = is_pause.mean()
  assert 0.07 < share <= 0.1  # round(0.1 * 256) = 26 inserted, some trimmed away
  np.testing.assert_array_equal(weights, (~is_pause & (targets != 0)).astype(weights.dtype))
  assert not (batch['decoder_input_tokens'] == pause_id).all(axis=1).any()


def assert_same_text(std_batch, pause_batch, pause_id):
  """Each pause row is its standard row with pauses inserted (and the tail trimmed)."""
  for s, p in zip(std_batch['decoder_target_tokens'], pause_batch['decoder_target_tokens']):
    real = p[(p != pause_id) & (p != 0)]
    assert len(real) > 0
    np.testing.assert_array_equal(real, s[: len(real)])


def test_synthetic_pause_pretraining_batches():
  info = data.task_info('synthetic_pause_pretrain')
  assert_pause_pretraining_batch(_batch('synthetic_pause_pretrain'), info.pause_id)


def test_pause_and_std_variants_see_the_same_text():
  info = data.task_info('synthetic_pause_pretrain')
  assert_same_text(
    _batch('synthetic_std_pretrain', seed=3),
    _batch('synthetic_pause_pretrain', seed=3),
    info.pause_id,
  )


def test_same_seed_same_batches_other_seed_other_batches():
  a, b, c = (_batch('synthetic_pause_pretrain', seed=s)['decoder_target_tokens'] for s in (5, 5, 6))
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()


def test_hosts_read_disjoint_shards():
  kwargs = dict(sequence_length=64, batch_size=4, shuffle=False, num_shards=2)
  first = next(
    data.get_dataset('synthetic_std_pretrain', 'train', shard_id=0, **kwargs).as_numpy_iterator()
  )['decoder_target_tokens']
  second = next(
    data.get_dataset('synthetic_std_pretrain', 'train', shard_id=1, **kwargs).as_numpy_iterator()
  )['decoder_target_tokens']
  assert not any((row == other).all() for row in first for other in second)


@pytest.mark.parametrize(
  'task,num_pauses',
  [('synthetic_qa_std', 0), ('synthetic_qa_pause10', 10), ('synthetic_qa_pause50', 50)],
)
def test_synthetic_qa_variants(task, num_pauses):
  info = data.task_info(task)
  assert info.prefix_lm and info.target_length == 8
  batch = _batch(task, length=128)
  for inputs, weights, causal in zip(
    batch['decoder_input_tokens'], batch['decoder_loss_weights'], batch['decoder_causal_attention']
  ):
    first_target = int(np.argmax(weights))
    prefix_end = first_target  # decoder position of the last prefix token
    assert (inputs[prefix_end - num_pauses + 1 : prefix_end + 1] == info.pause_id).all()
    assert (inputs == info.pause_id).sum() == num_pauses
    assert causal[: prefix_end + 1].all() and not causal[prefix_end + 1 :].any()


def _answer(inputs: str) -> str:
  """The answer of a count or pairs question, recomputed from its text alone."""
  values_text, question = inputs.removeprefix('values ').split(' . ')
  values = [int(x) for x in values_text.split()]
  number = int(question.split()[-2])
  if question.startswith('how many are greater'):
    return str(len([x for x in values if x > number]))
  assert question.startswith('how many pairs add up to'), question
  return str(len([p for p in itertools.combinations(values, 2) if sum(p) == number]))


@pytest.mark.parametrize('kind', ['count', 'pairs'])
def test_single_digit_tasks_answer_their_question(kind):
  for i in range(200):
    example = synthetic.QA_EXAMPLES[kind]('validation', i)
    assert example['targets'] == _answer(example['inputs'])
  # Through the pipeline: each row's answer is still the answer of its own prefix.
  task = f'synthetic_{kind}_pause5'
  info = data.task_info(task)
  vocabulary = data.get_task(task).output_features['targets'].vocabulary
  batch = _batch(task, length=64, split='validation')
  for tokens, weights in zip(batch['decoder_target_tokens'], batch['decoder_loss_weights']):
    prefix = tokens[: np.argmax(weights)]
    assert (prefix[-5:] == info.pause_id).all()
    prefix_text = vocabulary.decode(prefix[prefix != info.pause_id].tolist())
    assert vocabulary.decode(tokens[weights > 0].tolist()) == _answer(prefix_text)


def _selection_answer(inputs: str) -> str:
  """The answer of a first-letter, repeated-letter or lookup question, from its text alone."""
  if inputs.startswith('letters '):
    letters_text, question = inputs.removeprefix('letters ').split(' . ')
    letters = letters_text.split()
    if question == 'which appears twice ?':
      twice = [x for x in letters if letters.count(x) == 2]
      assert len(letters) == 6 and len(twice) == 2 and len(set(letters)) == 5
      return twice[0]
    assert question == 'which comes first ?' and len(set(letters)) == 5
    return min(letters, key='abcdefghijklmnopqrstuvwxyz'.index)
  pairs_text, question = inputs.removeprefix('pairs ').split(' . ')
  key = question.removeprefix('what is ').removesuffix(' ?')
  table = dict(pair.split() for pair in pairs_text.split(' , '))
  return table[key]


@pytest.mark.parametrize('kind', ['first', 'repeated', 'lookup'])
def test_selection_tasks_answer_their_question_with_random_m(kind):
  answers = set()
  for i in range(300):
    example = synthetic.QA_EXAMPLES[kind]('validation', i)
    assert example['targets'] == _selection_answer(example['inputs'])
    answers.add(example['targets'])
  assert len(answers) >= 10  # Not a constant: a model has to read the list.
  # M from 0..6 per row, registered from the name alone; each answer still its prefix's.
  task = f'synthetic_{kind}_pause0to6'
  info = data.task_info(task)
  vocabulary = data.get_task(task).output_features['targets'].vocabulary
  batch = _batch(task, length=64, batch_size=32, split='validation')
  counts = []
  rows = zip(
    batch['decoder_input_tokens'], batch['decoder_target_tokens'], batch['decoder_loss_weights']
  )
  for inputs, tokens, weights in rows:
    # The delay-robust row teaches the first answer token after 0..M pauses (issue 26), so
    # the first weighted target follows the prefix's last token, and the answer as a whole
    # follows the last pause.
    prefix_end = int(np.argmax(weights > 0))
    counts.append(int((inputs == info.pause_id).sum()))
    assert (inputs[prefix_end + 1 : prefix_end + 1 + counts[-1]] == info.pause_id).all()
    prefix_text = vocabulary.decode(tokens[:prefix_end].tolist())
    answer = tokens[prefix_end + counts[-1] :][weights[prefix_end + counts[-1] :] > 0]
    assert vocabulary.decode(answer.tolist()) == _selection_answer(prefix_text)
    assert len(set(tokens[prefix_end : prefix_end + counts[-1] + 1])) == 1  # one answer token
  assert set(counts) <= set(range(7)) and len(set(counts)) >= 4


def test_skills_corpus_is_answered_exercises_unlike_the_downstream_ones():
  downstream = {
    synthetic.QA_EXAMPLES[kind]('validation', i)['inputs']
    for kind in ('count', 'pairs')
    for i in range(2000)
  }
  for i in range(100):
    for line in synthetic.skills_document('train', i).split('\n'):
      inputs, answer = line.rsplit(' ? ', 1)
      assert answer == _answer(inputs + ' ?') and inputs + ' ?' not in downstream
  batch = _batch('synthetic_skills_pause_pretrain', length=128)
  share = (
    batch['decoder_target_tokens'] == data.task_info('synthetic_skills_pause_pretrain').pause_id
  ).mean()
  assert 0.07 < share <= 0.1


def test_variants_registered_from_their_names():
  info = data.task_info('synthetic_qa_pause3_prepend')
  inputs = _batch('synthetic_qa_pause3_prepend', length=128)['decoder_input_tokens']
  np.testing.assert_array_equal(inputs[:, 1:4], info.pause_id)
  dot = synthetic_dot = (
    data.get_task('synthetic_qa_filler4').output_features['inputs'].vocabulary.encode('.')[0]
  )
  filler = _batch('synthetic_qa_filler4', length=128)
  assert (filler['decoder_input_tokens'] == info.pause_id).sum() == 0
  first = np.argmax(filler['decoder_loss_weights'], axis=1)
  for row, end in zip(filler['decoder_input_tokens'], first):
    assert (row[end - 3 : end + 1] == synthetic_dot).all()
  del dot


def test_truncated_prefixes_are_counted():
  # 24 values + question need ~80 tokens; 40 - 8 (answer) leaves 32, of which 30 go to pauses.
  ds = data.get_dataset(
    'synthetic_qa_pause30', 'validation', sequence_length=40, batch_size=4, repeat=False
  )
  for batch in ds.take(2).as_numpy_iterator():
    assert (batch['decoder_input_tokens'] == data.task_info('synthetic_qa_pause30').pause_id).sum(
      axis=1
    ).tolist() == [30] * 4
  # The pipeline runs ahead of the consumer, so it may have counted a few more.
  assert data.truncated_examples()['synthetic_qa_pause30'] >= 8


def test_unknown_task_names_the_fix():
  with pytest.raises(data.TaskNotRegisteredError, match='synthetic_pause_pretrain'):
    data.get_task('synthetic_pause_pretrian')


def _reregister_c4(spm_path, tfds_data_dir=None):
  for name in ('c4_std_pretrain', 'c4_pause_pretrain'):
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
  gin.clear_config()
  gin.bind_parameter('c4_vocabulary.spm_path', spm_path)
  gin.bind_parameter('c4_source.tfds_data_dir', tfds_data_dir)


def test_c4_tasks_under_tfds_mock_data(monkeypatch):
  # mock_data fakes examples but not split metadata, which seqio asks for a size hint.
  monkeypatch.setattr(seqio.TfdsDataSource, 'num_input_examples', lambda self, split: None)
  _reregister_c4(synthetic.sentencepiece_model_path())
  try:
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
      info = data.task_info('c4_pause_pretrain')
      assert info.name == 'c4_pause_pretrain' and not info.prefix_lm
      for task in ('c4_std_pretrain', 'c4_pause_pretrain'):
        batch = _batch(task, length=128, batch_size=2)
        pauses = batch['decoder_target_tokens'] == info.pause_id
        assert pauses.any() == (task == 'c4_pause_pretrain')
        assert (batch['decoder_loss_weights'][pauses] == 0).all()
        assert batch['decoder_loss_weights'].sum() > 100
  finally:
    _reregister_c4(pretraining.vocab_lib.DEFAULT_C4_SPM_PATH)
    gin.clear_config()


def test_c4_without_prepared_data_says_how_to_prepare(tmp_path):
  _reregister_c4(synthetic.sentencepiece_model_path(), str(tmp_path))
  try:
    with pytest.raises(data.DatasetNotPreparedError, match='TFDS_DATA_DIR'):
      _batch('c4_std_pretrain', length=64, batch_size=1)
  finally:
    _reregister_c4(pretraining.vocab_lib.DEFAULT_C4_SPM_PATH)
    gin.clear_config()


_EPOCH_EXAMPLES = 220  # a small training split, read for several epochs


def _small_split(split, shuffle_files=False, seed=None):
  del shuffle_files, seed
  return tf.data.Dataset.from_tensor_slices(
    {
      'inputs': [f'letters {i % 7} {i % 5} {i % 3} :' for i in range(_EPOCH_EXAMPLES)],
      'targets': [str(i % 10) for i in range(_EPOCH_EXAMPLES)],
    }
  )


def _epoch_task():
  if 'epochs_first_std' not in tasks.known_names():
    tasks.register_downstream_task(
      'epochs_first',
      seqio.FunctionDataSource(_small_split, splits=('train',)),
      text_preprocessors=[],
      vocabulary=synthetic.synthetic_vocabulary(),
      target_length=4,
    )
  return 'epochs_first_pause0to10'


def _pauses_per_example(task, seed, epochs):
  pause_id = data.task_info(task).pause_id
  dataset = data.get_task(task).get_dataset(
    {'inputs': 28, 'targets': 4}, 'train', shuffle=False, num_epochs=epochs, seed=seed
  )
  counts = [int((ex['inputs'] == pause_id).sum()) for ex in dataset.as_numpy_iterator()]
  return np.array(counts).reshape(epochs, _EPOCH_EXAMPLES)


def test_random_m_is_drawn_anew_each_time_an_example_comes_back():
  """A small split is read for several epochs; each epoch draws every example's M again
  (issue 26 asked): two epochs agree on an example's M about as often as two independent
  draws do (0.32 for half at 10 and half uniform over 0..10), each epoch draws every M of
  0..10, and the draws are the same for the same seed."""
  task = _epoch_task()
  counts = _pauses_per_example(task, seed=3, epochs=2)
  for epoch in counts:
    assert set(np.unique(epoch)) == set(range(11))
  same = (counts[0] == counts[1]).mean()
  assert same < 0.45, f'{same:.0%} of examples kept their M from epoch 1 to epoch 2'
  np.testing.assert_array_equal(_pauses_per_example(task, seed=3, epochs=2), counts)
  assert not np.array_equal(_pauses_per_example(task, seed=4, epochs=2), counts)


def test_random_m_input_position_resumes_exactly_after_an_epoch(tmp_path):
  """The redrawn M's are part of the saved input position: a restore in the second epoch gives
  exactly the batches (pauses included) that the uninterrupted run gave."""
  task = _epoch_task()

  def iterator():
    dataset = data.get_dataset(task, 'train', sequence_length=32, batch_size=8, seed=0)
    return data.TaskIterator(dataset, task, 'train')

  first = iterator()
  for _ in range(_EPOCH_EXAMPLES // 8 + 3):  # into the second epoch
    next(first)
  first.save(tmp_path / 'position')
  expected = [next(first)['decoder_input_tokens'] for _ in range(4)]
  resumed = iterator()
  resumed.restore(tmp_path / 'position')
  for batch in expected:
    np.testing.assert_array_equal(next(resumed)['decoder_input_tokens'], batch)
