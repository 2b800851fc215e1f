"""seqio sources for your own pretraining text: plain text files and JSONL, by glob.

Both yield {'text': document} for `register_pretraining_task`. Patterns are anything
`tf.io.gfile.glob` expands (local paths, gs://...). The files of a split are shuffled (with the
task's seed) and read interleaved; with several hosts each reads its own subset of the files,
so a split needs at least as many files as there are hosts.

- Text files: one document per file (`document_per='file'`, the default: a file is a web
  page, a book, a source file), or one per line (`document_per='line'`, for corpora stored a
  document a line). Empty documents are skipped.
- JSONL: one JSON object per line with the document under `text_key` ('text'). A line
  without it stops the pipeline with an error naming the file and the line.
"""

import json
from typing import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

DOCUMENT_PER = ('file', 'line')
SplitPatterns = str | Mapping[str, str | Sequence[str]]


def _split_patterns(patterns: SplitPatterns, kind: str) -> dict[str, list[str]]:
  """{'train': [pattern, ...]} from one pattern (the train split) or a split mapping."""
  if isinstance(patterns, str):
    patterns = {'train': patterns}
  splits = {split: [p] if isinstance(p, str) else list(p) for split, p in patterns.items()}
  for split, split_patterns in splits.items():
    if not any(tf.io.gfile.glob(p) for p in split_patterns):
      raise FileNotFoundError(
        f'No {kind} file matches {split_patterns} (split {split!r}): check the path and the '
        'glob (e.g. "data/train/*.txt"); patterns are expanded with tf.io.gfile.glob.'
      )
  return splits


def _not_empty(example) -> tf.Tensor:
  return tf.strings.length(tf.strings.strip(example['text'])) > 0


def text_files_source(patterns: SplitPatterns, document_per: str = 'file') -> seqio.DataSource:
  """Plain UTF-8 text files: {'text': a whole file} or {'text': one line}.

  Args:
    patterns: a glob for the train split, or {split: glob or [globs]}, e.g.
      {'train': 'corpus/train/*.txt', 'validation': 'corpus/valid/*.txt'}.
    document_per: 'file' (each file is one document) or 'line' (each non-empty line is).
  """
  if document_per not in DOCUMENT_PER:
    raise ValueError(
      f"document_per={document_per!r}: use 'file' (one document per file) or 'line' (one per line)."
    )
  splits = _split_patterns(patterns, 'text')

  def read_file(path):
    if document_per == 'file':
      documents = tf.data.Dataset.from_tensors({'text': tf.io.read_file(path)})
    else:
      documents = tf.data.TextLineDataset(path).map(lambda line: {'text': line})
    return documents.filter(_not_empty)

  return seqio.FileDataSource(read_file, split_to_filepattern=splits)


def _jsonl_text(line: bytes, path: bytes, text_key: bytes) -> bytes:
  key = text_key.decode()
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path.decode()}: a line is not JSON ({e}): {line[:80]!r}') from e
  if not isinstance(record, dict) or not isinstance(record.get(key), str):
    raise ValueError(
      f'{path.decode()}: a line has no string field {key!r} '
      f'(jsonl_source(..., text_key=...) names it): {line[:80]!r}'
    )
  return np.bytes_(record[key].encode('utf-8'))


def jsonl_source(patterns: SplitPatterns, text_key: str = 'text') -> seqio.DataSource:
  """JSON Lines files, one document a line under `text_key`: {'text': document}.

  Args:
    patterns: a glob for the train split, or {split: glob or [globs]}.
    text_key: the field of each JSON object that holds the document's text.
  """
  splits = _split_patterns(patterns, 'JSONL')

  def read_file(path):
    def parse(line):
      text = tf.numpy_function(
        _jsonl_text, [line, path, text_key], tf.string, stateful=False, name='jsonl_text'
      )
      text.set_shape([])
      return {'text': text}

    lines = tf.data.TextLineDataset(path).filter(
      lambda line: tf.strings.length(tf.strings.strip(line)) > 0
    )
    return lines.map(parse).filter(_not_empty)

  return seqio.FileDataSource(read_file, split_to_filepattern=splits)
