"""The paper's nine downstream tasks (Appendix F), each with its std and pause variants.

Each task turns its source into {"inputs", "targets"} text; `downstream.register_downstream_task`
adds tokenization and the pauses. Decoding tasks are scored on generated text with t5's
metrics; PIQA and HellaSwag are scoring tasks (rank classification over the candidates): their
training form keeps only the correct candidate, their `_eval` form every candidate.

Splits: every task exposes "train" (finetuning) and "validation" (evaluation). Where TFDS has no
held-out split of that name the nearest is used: GSM8k, CoQA and WebQuestions evaluate on
"test"; LAMBADA (no train split in TFDS) finetunes on "dev" and evaluates on "test".
CommonSenseQA is not in TFDS: it reads the official JSONL files from `commonsense_qa_files`.
"""

import json
import os
import re

import gin
import numpy as np
import seqio
import tensorflow as tf
from t5.data import postprocessors as t5_postprocessors
from t5.data import preprocessors as t5_preprocessors
from t5.evaluation import metrics as t5_metrics

from pause_lm.data import vocab as vocab_lib
from pause_lm.tasks import downstream

_NUMBER = re.compile(r'-?[\d,]*\.?\d+')


def _tfds(name, train='train', validation='validation'):
  return seqio.TfdsDataSource(
    tfds_name=name, splits={'train': train, 'validation': validation}, read_only=True
  )


def _map(fn):
  """A text preprocessor from a per-example function."""

  def preprocess(ds):
    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)

  preprocess.__name__ = fn.__name__
  return preprocess


# ----- GSM8k: the whole worked answer is the target; accuracy looks at the final number.
def _gsm8k(ex):
  return {
    'inputs': tf.strings.join(['question: ', ex['question'], ' answer:']),
    'targets': ex['answer'],
  }


def final_number(text: str) -> str | None:
  """GSM8k's answer: what follows '####', else the last number in the text; commas dropped."""
  tail = text.split('####')[-1] if '####' in text else text
  numbers = _NUMBER.findall(tail)
  return numbers[-1].replace(',', '').rstrip('.') if numbers else None


def gsm8k_accuracy(targets, predictions):
  hits = [
    final_number(p) is not None and final_number(p) == final_number(t)
    for t, p in zip(targets, predictions)
  ]
  return {'accuracy': 100.0 * float(np.mean(hits)) if hits else 0.0}


def gsm8k_rouge1(targets, predictions):
  return {'rouge1': t5_metrics.rouge(targets, predictions, score_keys=('rouge1',))['rouge1']}


# ----- CoQA: one example per question, the story and earlier turns as context.
def coqa_flatten(ds):
  def turns(ex):
    # One answer per question; a malformed record with more of one is cut to the pairs.
    n = tf.minimum(tf.size(ex['questions']), tf.size(ex['answers']['input_text']))
    questions, answers = ex['questions'][:n], ex['answers']['input_text'][:n]
    qa_text = tf.strings.join(['Q: ', questions, ' A: ', answers])

    def one(i):
      history = tf.strings.reduce_join(qa_text[:i], separator=' ')
      return {
        'inputs': tf.strings.join([ex['story'], ' ', history, ' Q: ', questions[i], ' A:']),
        'targets': answers[i],
        'answers': tf.reshape(answers[i], [1]),
      }

    return tf.data.Dataset.range(tf.cast(n, tf.int64)).map(one)

  return ds.flat_map(turns)


# ----- LAMBADA: predict the passage's last word.
def _lambada(ex):
  words = tf.strings.split(ex['passage'])
  return {
    'inputs': tf.strings.reduce_join(words[:-1], separator=' '),
    'targets': words[-1],
    'answers': words[-1:],
  }


# ----- WebQuestions and Natural Questions (closed book): any listed answer counts.
def _web_questions(ex):
  return {
    'inputs': tf.strings.join(['question: ', ex['question'], ' answer:']),
    'targets': ex['answers'][0],
    'answers': ex['answers'],
  }


def _natural_questions(ex):
  return {
    'inputs': tf.strings.join(['question: ', ex['question'], ' answer:']),
    'targets': ex['answer'][0],
    'answers': ex['answer'],
  }


def squad_em(targets, predictions):
  return {'em': t5_metrics.squad(targets, predictions)['em']}


def squad_f1(targets, predictions):
  return {'f1': t5_metrics.squad(targets, predictions)['f1']}


# ----- CommonSenseQA: official JSONL, decoded as the answer's text (EM).
@gin.configurable
def commonsense_qa_files(
  data_dir: str | None = None,
  train: str = 'train_rand_split.jsonl',
  validation: str = 'dev_rand_split.jsonl',
) -> dict[str, str]:
  data_dir = data_dir or os.environ.get('COMMONSENSE_QA_DIR', '')
  return {'train': os.path.join(data_dir, train), 'validation': os.path.join(data_dir, validation)}


def commonsense_qa_dataset(split: str, shuffle_files: bool = False, seed=None):
  del shuffle_files, seed
  path = commonsense_qa_files()[split]
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
      f'CommonSenseQA file {path!r} not found. Download train_rand_split.jsonl and '
      'dev_rand_split.jsonl (https://www.tau-nlp.org/commonsenseqa) into a directory and set '
      '--gin.commonsense_qa_files.data_dir="\'DIR\'" or COMMONSENSE_QA_DIR=DIR.'
    )
  inputs, targets = [], []
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      choices = record['question']['choices']
      listed = ' '.join(f'({c["label"]}) {c["text"]}' for c in choices)
      inputs.append(f'question: {record["question"]["stem"]} choices: {listed} answer:')
      targets.append(next(c['text'] for c in choices if c['label'] == record['answerKey']))
  return tf.data.Dataset.from_tensor_slices(
    {'inputs': inputs, 'targets': targets, 'answers': [[t] for t in targets]}
  )


# ----- PIQA and HellaSwag: rank classification.
def _piqa(mode):
  return downstream.rank_classification(
    lambda ex: tf.fill([2], tf.strings.join(['goal: ', ex['goal'], ' solution:'])),
    lambda ex: tf.stack([ex['sol1'], ex['sol2']]),
    lambda ex: tf.one_hot(ex['label'], 2, on_value=True, off_value=False),
    mode,
  )


def _hellaswag(mode):
  count = lambda ex: tf.size(ex['endings'])  # 4 in the real data
  return downstream.rank_classification(
    lambda ex: tf.fill([count(ex)], ex['context']),
    lambda ex: ex['endings'],
    lambda ex: tf.one_hot(ex['label'], count(ex), on_value=True, off_value=False),
    mode,
  )


@gin.configurable
def paper_vocabulary() -> seqio.Vocabulary:
  """The nine tasks use C4's vocabulary, as the models pretrained on C4 do."""
  return vocab_lib.c4_vocabulary()


def _declare(name, make_source, text_preprocessors, *, target_length, qa=True, **kwargs):
  if qa:
    kwargs.setdefault('metric_fns', [squad_em, squad_f1])
    kwargs.setdefault('postprocess_fn', t5_postprocessors.qa)
  downstream.declare_downstream_task(
    name,
    lambda: downstream.DownstreamBase(
      name=name,
      source=make_source(),
      text_preprocessors=tuple(text_preprocessors),
      vocabulary=paper_vocabulary(),
      target_length=target_length,
      **kwargs,
    ),
  )


def _register_all():
  """Declared, not built: sources and vocabulary are made on first request, after gin."""
  _declare(
    'gsm8k',
    lambda: _tfds('gsm8k:1.0.0', validation='test'),
    [_map(_gsm8k)],
    target_length=256,
    qa=False,
    metric_fns=(gsm8k_accuracy, gsm8k_rouge1),
  )
  _declare('squad', lambda: _tfds('squad/v1.1:3.0.0'), [t5_preprocessors.squad], target_length=32)
  _declare('coqa', lambda: _tfds('coqa:1.0.0', validation='test'), [coqa_flatten], target_length=32)
  _declare(
    'commonsense_qa',
    lambda: seqio.FunctionDataSource(commonsense_qa_dataset, splits=('train', 'validation')),
    [],
    target_length=16,
  )
  _declare(
    'lambada',
    lambda: _tfds('lambada:1.0.0', train='dev', validation='test'),
    [_map(_lambada)],
    target_length=8,
  )
  _declare(
    'web_questions',
    lambda: _tfds('web_questions:1.0.0', validation='test'),
    [_map(_web_questions)],
    target_length=32,
  )
  _declare(
    'natural_questions',
    lambda: _tfds('natural_questions_open:1.0.0'),
    [_map(_natural_questions)],
    target_length=32,
  )
  scoring = dict(
    qa=False,
    metric_fns=(downstream.rank_accuracy,),
    postprocess_fn=t5_postprocessors.rank_classification,
  )
  _declare(
    'piqa',
    lambda: _tfds('piqa:1.0.0'),
    [_piqa('train')],
    target_length=128,
    eval_text_preprocessors=(_piqa('eval'),),
    **scoring,
  )
  _declare(
    'hellaswag',
    lambda: _tfds('hellaswag:1.1.0'),
    [_hellaswag('train')],
    target_length=64,
    eval_text_preprocessors=(_hellaswag('eval'),),
    **scoring,
  )


_register_all()
