"""Datasets of the offline demo tasks, made on the fly from pause-lm's embedded synthetic
corpus (`pause_lm.data.synthetic`): the same examples, in the same order, as the seqio tasks
`synthetic_qa`, `synthetic_choice` and the pretraining text, so no file or download is needed.

lm-eval calls these through `custom_dataset: !function utils.NAME` with the task's metadata
(`--metadata='{"num_examples": 64}'` sets how many examples each split holds).
"""

import datasets

from pause_lm.data import synthetic

_DEFAULT_EXAMPLES = 64


def _rows(make, split, num_examples):
  return [make(split, i) for i in range(int(num_examples))]


def _dataset(make, num_examples):
  return datasets.DatasetDict(
    {
      split: datasets.Dataset.from_list(_rows(make, split, num_examples))
      for split in ('train', 'validation')
    }
  )


def qa(num_examples=_DEFAULT_EXAMPLES, **unused):
  """{"inputs", "targets"}: seqio's synthetic_qa."""
  del unused
  return _dataset(synthetic.qa_example, num_examples)


def choice(num_examples=_DEFAULT_EXAMPLES, **unused):
  """{"inputs", "candidates", "label"}: seqio's synthetic_choice (before rank classification)."""
  del unused
  return _dataset(synthetic.choice_example, num_examples)


def text(num_examples=_DEFAULT_EXAMPLES, **unused):
  """{"text"}: documents of the pretraining corpus, for perplexity."""
  del unused
  return _dataset(lambda split, i: {'text': synthetic.document(split, i)}, num_examples)
