"""Downstream tasks from your own JSONL, CSV or Parquet files, with no Python of your own.

    register_file_task('my_qa', files={'train': 'data/train-*.parquet',
                                       'validation': 'data/valid-*.parquet'},
                       inputs='question: {question} context: {context}', targets='answers',
                       metric='squad', vocabulary=..., target_length=16)

or the same in a gin file (`file_task.NAME = ...`, see `file_task`), registers the base task
`my_qa`; its variants (`my_qa_std`, `my_qa_pause10`, `my_qa_pause0to10_prepend`, ...) are then
made on request as for every other downstream task (`tasks/downstream.py`).

- Files: a glob (or a list of globs) per split, expanded by `tf.io.gfile` (so `gs://` works);
  the format is the files' extension: `.jsonl` / `.ndjson` / `.json` (JSON Lines: one object a
  line), `.csv` / `.tsv` (a header line, then a record a line; quoted fields may hold the
  delimiter, quotes and newlines, RFC 4180), `.parquet`. All files of a task have one format.
  JSONL and CSV files may be gzipped (`.jsonl.gz`, `.csv.gz`).
- `inputs` and `targets` are a field's name (`'question'`) or a template over fields
  (`'question: {question} context: {context}'`; `{{` and `}}` are literal braces). A dotted
  name reads a nested field (`'answers.text'`, as in SQuAD's Parquet files). A `targets` field
  that holds a list gives several accepted answers: the first is trained on, every one counts
  in the metric.
- `metric`: 'accuracy' (the answer, stripped, is one of the accepted answers), 'exact_match'
  and 'f1' (SQuAD's normalized EM and token F1, best over the accepted answers; 'squad' is
  both), 'rouge' (ROUGE-1/2/Lsum against the first answer); or a list of them.
- `choices`: a rank-classification (scoring) task: the field holding the candidate answers (a
  list), or a list of fields holding one each (`['sol1', 'sol2']`). `targets` then names the
  correct candidate: its 0-based index, or its text. Training sees the correct candidate only;
  evaluation scores every one (the `_eval` form); the metric is 'accuracy'.

Files are streamed, never loaded whole: JSONL and CSV a line at a time (TensorFlow's
`TextLineDataset`), Parquet a row group at a time with only the columns the task reads
(pyarrow). Every step is a tf.data transformation whose state tf.data saves (the CSV reader's
unfinished quoted record included), so the input position saved in a checkpoint is exact.

Nothing is trusted unchecked. When a task is registered, every file is opened: a split that
matches no file, a file of no known format, a file that cannot be read, a header or schema
without a field the task reads, a first record that does not convert, and a split with no
record at all are refused there, naming the file. While reading, a record that lacks a field,
holds null or a list where text belongs, has no answer, or names a choice that is not there
stops the pipeline with a `DataSourceError` naming the file, the 1-based line (JSONL, CSV: the
line the record starts on; the header is line 1) or row (Parquet), and the field.
"""

import csv
import dataclasses
import functools
import gzip
import io
import json
import os
import re
from typing import Any, Callable, Mapping, Sequence

import gin
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from t5.data import postprocessors as t5_postprocessors
from t5.evaluation import metrics as t5_metrics
import tensorflow as tf

from pause_lm.data import vocab as vocab_lib
from pause_lm.tasks import downstream
from pause_lm.tasks import paper
from pause_lm.tasks.text_sources import DataSourceError
from pause_lm.tasks.text_sources import FileSource

# File extension -> format.
FORMATS = {
  '.jsonl': 'jsonl',
  '.ndjson': 'jsonl',
  '.json': 'jsonl',
  '.csv': 'csv',
  '.tsv': 'tsv',
  '.parquet': 'parquet',
}
_KIND = {'jsonl': 'JSONL', 'csv': 'CSV', 'tsv': 'TSV', 'parquet': 'Parquet'}
_DELIMITER = {'csv': ',', 'tsv': '\t'}
# JSONL and CSV records converted per Python call.
_BATCH_RECORDS = 64

SplitFiles = str | Sequence[str] | Mapping[str, str | Sequence[str]]


# ----- Fields and templates.


@dataclasses.dataclass(frozen=True)
class Template:
  """A field's name, or a template over fields: literal text and {field} parts, in order."""

  text: str
  parts: tuple[tuple[str, str | None], ...]  # (literal text, field after it or None)
  is_field: bool  # `text` is one field's name (no braces)

  @classmethod
  def parse(cls, text: Any, argument: str) -> 'Template':
    if not isinstance(text, str) or not text.strip():
      raise ValueError(
        f"{argument}={text!r}: give a field name (e.g. {argument}='question') or a template "
        "over fields (e.g. 'question: {question} context: {context}')."
      )
    if '{' not in text and '}' not in text:
      return cls(text, (('', text),), True)
    parts, literal, position = [], [], 0
    for match in re.finditer(r'\{\{|\}\}|\{([^{}]*)\}|[{}]', text):
      literal.append(text[position : match.start()])
      position = match.end()
      token = match.group(0)
      if token in ('{{', '}}'):
        literal.append(token[0])
        continue
      field = match.group(1)
      if field is None or not field.strip():
        raise ValueError(
          f'{argument}={text!r}: a lone {token!r} or an empty {{}} at character '
          f'{match.start() + 1}; fields are written {{name}}, literal braces {{{{ and }}}}.'
        )
      parts.append((''.join(literal), field.strip()))
      literal = []
    literal.append(text[position:])
    parts.append((''.join(literal), None))
    return cls(text, tuple(parts), False)

  @property
  def fields(self) -> tuple[str, ...]:
    return tuple(field for _, field in self.parts if field is not None)

  def render(self, record: Mapping[str, Any], where: str, argument: str) -> str:
    out = []
    for literal, field in self.parts:
      out.append(literal)
      if field is not None:
        out.append(_text(_lookup(record, field, where, argument), field, where, argument))
    return ''.join(out)


def _record_fields(record: Mapping[str, Any]) -> str:
  names = list(record)
  listed = ', '.join(repr(n) for n in names[:12])
  return listed + (f' and {len(names) - 12} more' if len(names) > 12 else '') if names else 'none'


def _lookup(record: Mapping[str, Any], field: str, where: str, argument: str) -> Any:
  """The value of `field` (a dotted name reads nested objects); raises naming the field."""
  if field in record:
    value = record[field]
  else:
    value = record
    for key in field.split('.'):
      if not isinstance(value, Mapping) or key not in value:
        raise DataSourceError(
          f'{where}: no field {field!r}, which {argument}= reads (the record has fields '
          f'{_record_fields(record)}). Fix the file, or the field name in {argument}=.'
        )
      value = value[key]
  if value is None:
    raise DataSourceError(
      f'{where}: field {field!r} ({argument}=) is null. Give every record a value, or leave '
      'the records without one out of the file.'
    )
  return value


def _text(value: Any, field: str, where: str, argument: str) -> str:
  if isinstance(value, str):
    try:
      value.encode('utf-8')
    except UnicodeEncodeError as e:
      raise DataSourceError(
        f'{where}: field {field!r} ({argument}=) holds {e.object[e.start : e.end]!r}, which is '
        'not text (an unpaired surrogate escape such as "\\ud800"). Fix or drop the record.'
      ) from None
    return value
  if isinstance(value, (bool, int, float, np.integer, np.floating)):
    return str(value)
  raise DataSourceError(
    f'{where}: field {field!r} ({argument}=) holds {type(value).__name__} '
    f'{_short(value)}, not text or a number.'
  )


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + '...'


# ----- One record in, one example out.


@dataclasses.dataclass(frozen=True)
class Fields:
  """What a task reads from each record, and how it becomes an example."""

  inputs: Template
  targets: Template
  choices: tuple[str, ...] | str | None = None  # a list field, or one field per candidate

  @property
  def scoring(self) -> bool:
    return self.choices is not None

  @property
  def columns(self) -> tuple[str, ...]:
    """The top-level fields read (a dotted name's first part; the whole name where it is a
    column of its own is found first, so both are kept)."""
    names = [*self.inputs.fields, *self.targets.fields]
    if self.choices is not None:
      names += [self.choices] if isinstance(self.choices, str) else list(self.choices)
    tops = [n for name in names for n in dict.fromkeys((name, name.split('.')[0]))]
    return tuple(dict.fromkeys(tops))

  def answers(self, record: Mapping[str, Any], where: str) -> list[str]:
    if not self.targets.is_field:
      answers = [self.targets.render(record, where, 'targets')]
    else:
      field = self.targets.text
      value = _lookup(record, field, where, 'targets')
      values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
      if not values:
        raise DataSourceError(
          f'{where}: field {field!r} (targets=) is an empty list: an example needs at least '
          'one accepted answer. Leave such records out of the file.'
        )
      answers = [_text(v, field, where, 'targets') for v in values]
    if not all(a.strip() for a in answers):
      raise DataSourceError(
        f'{where}: an answer in {self.targets.text!r} (targets=) is empty: there is nothing to '
        'learn or score. Leave such records out of the file.'
      )
    return answers

  def candidates(self, record: Mapping[str, Any], where: str) -> list[str]:
    if isinstance(self.choices, str):
      value = _lookup(record, self.choices, where, 'choices')
      if not isinstance(value, (list, tuple, np.ndarray)):
        raise DataSourceError(
          f'{where}: field {self.choices!r} (choices=) holds {type(value).__name__} '
          f'{_short(value)}, not a list of candidates; name one field per candidate instead '
          "(choices=['sol1', 'sol2'])."
        )
      values, field = list(value), self.choices
    else:
      values = [_lookup(record, f, where, 'choices') for f in self.choices]
      field = ', '.join(self.choices)
    if len(values) < 2:
      raise DataSourceError(
        f'{where}: field {field!r} (choices=) holds {len(values)} candidate(s); rank '
        'classification needs at least 2.'
      )
    return [_text(v, field, where, 'choices') for v in values]

  def label(self, record: Mapping[str, Any], candidates: list[str], where: str) -> int:
    """The correct candidate: `targets` as a 0-based index, or as the text of one."""
    if self.targets.is_field:
      value = _lookup(record, self.targets.text, where, 'targets')
    else:
      value = self.targets.render(record, where, 'targets')
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
      index = int(value)
    elif isinstance(value, str) and value in candidates:
      return candidates.index(value)
    elif isinstance(value, str) and value.strip().isdigit():
      index = int(value.strip())
    else:
      raise DataSourceError(
        f'{where}: field {self.targets.text!r} (targets=) is {_short(value)}: with choices= it '
        f'must be the 0-based index of the correct candidate, or its text (the candidates are '
        f'{_short(candidates)}).'
      )
    if not 0 <= index < len(candidates):
      raise DataSourceError(
        f'{where}: field {self.targets.text!r} (targets=) is {index}, but there are '
        f'{len(candidates)} candidates (0-based indices 0..{len(candidates) - 1}).'
      )
    return index

  def example(self, record: Any, where: str) -> tuple[str, list[str], int]:
    """(inputs, answers or candidates, label: the correct candidate, -1 if not scoring)."""
    if not isinstance(record, Mapping):
      raise DataSourceError(
        f'{where}: the record is {type(record).__name__} {_short(record)}, not an object '
        '(JSON Lines: one {"field": value, ...} object a line).'
      )
    inputs = self.inputs.render(record, where, 'inputs')
    if not self.scoring:
      return inputs, self.answers(record, where), -1
    candidates = self.candidates(record, where)
    return inputs, candidates, self.label(record, candidates, where)


def _pack(examples: list[tuple[str, list[str], int]]):
  """Examples as arrays tf.numpy_function returns: inputs [n], texts [n, k] padded with b'',
  the texts' counts [n], labels [n]."""
  width = max((len(texts) for _, texts, _ in examples), default=0)
  texts = np.full((len(examples), width), b'', dtype=object)
  for i, (_, values, _) in enumerate(examples):
    texts[i, : len(values)] = [v.encode('utf-8') for v in values]
  return (
    np.array([e[0].encode('utf-8') for e in examples], dtype=object).reshape(-1),
    texts.reshape(len(examples), width),
    np.array([len(e[1]) for e in examples], dtype=np.int64).reshape(-1),
    np.array([e[2] for e in examples], dtype=np.int64).reshape(-1),
  )


_PACKED = [tf.string, tf.string, tf.int64, tf.int64]


def _unpack(packed):
  """The packed arrays of one call, with their ranks (numpy_function loses them)."""
  inputs, texts, counts, labels = packed
  inputs.set_shape([None])
  texts.set_shape([None, None])
  counts.set_shape([None])
  labels.set_shape([None])
  return inputs, texts, counts, labels


def _example_dict(fields: Fields):
  def make(inputs, texts, count, label):
    texts = texts[:count]
    if fields.scoring:
      return {'inputs': inputs, 'choices': texts, 'label': label}
    return {'inputs': inputs, 'targets': texts[0], 'answers': texts}

  return make


# ----- Readers: one file in, its examples out, every step state tf.data saves.


def _not_utf8(path: str, line: int, error: UnicodeDecodeError) -> DataSourceError:
  return DataSourceError(
    f'{path}, line {line}: not UTF-8 text (byte 0x{error.object[error.start]:02x}, byte '
    f'{error.start + 1} of the line). Re-encode the file, e.g. `iconv -f latin1 -t utf-8 '
    f'{path} > {path}.utf8`, and read the new file instead.'
  )


def _jsonl_record(line: bytes, path: str, number: int) -> Any:
  try:
    return json.loads(line)
  except UnicodeDecodeError as e:
    raise _not_utf8(path, number, e) from None
  except json.JSONDecodeError as e:
    raise DataSourceError(
      f'{path}, line {number}: not JSON ({e.msg} at character {e.pos + 1}): {_short(line)}. '
      'JSON Lines files hold one JSON object a line.'
    ) from None


def _jsonl_batch(fields: Fields, numbers, lines, path):
  path = path.decode()
  examples = []
  for number, line in zip(numbers, lines):
    where = f'{path}, line {int(number)}'
    examples.append(fields.example(_jsonl_record(line, path, int(number)), where))
  return _pack(examples)


def _read_jsonl(fields: Fields, path: tf.Tensor) -> tf.data.Dataset:
  lines = tf.data.TextLineDataset(path, _compression(path)).enumerate(start=1)
  lines = lines.filter(lambda number, line: tf.strings.length(tf.strings.strip(line)) > 0)

  def convert(numbers, batch):
    packed = tf.numpy_function(
      functools.partial(_jsonl_batch, fields),
      [numbers, batch, path],
      _PACKED,
      stateful=False,
      name='jsonl_examples',
    )
    return _unpack(packed)

  return lines.batch(_BATCH_RECORDS).map(convert).unbatch().map(_example_dict(fields))


def _compression(path: tf.Tensor) -> tf.Tensor:
  """'GZIP' for a file named *.gz, else '' (none), as TextLineDataset takes it."""
  return tf.where(tf.strings.regex_full_match(path, r'.*\.[gG][zZ]'), 'GZIP', '')


def _complete(text: str) -> bool:
  """Whether CSV text ends outside a quoted field (RFC 4180: quotes pair up, "" included)."""
  return text.count('"') % 2 == 0


def _decode_line(line: bytes, path: str, number: int) -> str:
  try:
    return line.decode('utf-8')
  except UnicodeDecodeError as e:
    raise _not_utf8(path, number, e) from None


def _csv_step(header, pending, start, number, line, path):
  """One line of a CSV file in (a tf.data scan step): the header once it is complete, a
  record once it is (a quoted field may span lines), else the unfinished text carried on.

  Returns:
    header, pending text, the line it starts on, and whether a record is complete, its line
    and its text.
  """
  path, number = path.decode(), int(number)
  if number < 0:  # The end of the file.
    if pending:
      raise DataSourceError(
        f'{path}, line {int(start)}: a quoted field opened in this record is never closed '
        '(an odd number of " to the end of the file). Fix the quoting of the record.'
      )
    return header, pending, start, False, np.int64(0), b''
  text = _decode_line(line, path, number)
  if pending:
    text = pending.decode('utf-8') + '\n' + text
  else:
    start = np.int64(number)
    if number == 1:
      text = text.removeprefix('\ufeff')  # A byte-order mark (Excel's UTF-8 CSV).
  if not _complete(text):
    return header, text.encode('utf-8'), start, False, np.int64(0), b''
  record = text.encode('utf-8')
  if not header:
    return record, b'', start, False, np.int64(0), b''
  return header, b'', start, bool(text.strip()), np.int64(start), record


def _csv_row(text: str, delimiter: str, path: str, number: int) -> list[str]:
  try:
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter, strict=True))
  except csv.Error as e:
    raise DataSourceError(
      f'{path}, line {number}: not a CSV record ({e}): {_short(text)}'
    ) from None
  return rows[0] if rows else []


@functools.lru_cache(maxsize=64)
def _csv_header(header: bytes, delimiter: str, path: str) -> tuple[str, ...]:
  return tuple(_csv_row(header.decode('utf-8'), delimiter, path, 1))


def _csv_batch(fields: Fields, delimiter, headers, numbers, records, path):
  path, delimiter = path.decode(), delimiter.decode()
  examples = []
  for header, number, record in zip(headers, numbers, records):
    names = _csv_header(header, delimiter, path)
    row = _csv_row(record.decode('utf-8'), delimiter, path, int(number))
    where = f'{path}, line {int(number)}'
    if len(row) != len(names):
      raise DataSourceError(
        f'{where}: {len(row)} field(s), but the header (line 1) names {len(names)}: '
        f'{_short(record.decode("utf-8"))}. Quote values that hold the delimiter.'
      )
    examples.append(fields.example(dict(zip(names, row)), where))
  return _pack(examples)


def _read_csv(fields: Fields, delimiter: str, path: tf.Tensor) -> tf.data.Dataset:
  end = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.constant(b'')))
  lines = tf.data.TextLineDataset(path, _compression(path)).enumerate(start=1).concatenate(end)

  def step(state, element):
    header, pending, start = state
    number, line = element
    header, pending, start, emit, record_line, record = tf.numpy_function(
      _csv_step,
      [header, pending, start, number, line, path],
      [tf.string, tf.string, tf.int64, tf.bool, tf.int64, tf.string],
      stateful=False,
      name='csv_record',
    )
    for tensor in (header, pending, start, emit, record_line, record):
      tensor.set_shape([])
    return (header, pending, start), (emit, header, record_line, record)

  start = (tf.constant(b''), tf.constant(b''), tf.constant(0, tf.int64))
  records = lines.scan(start, step).filter(lambda emit, header, number, record: emit)

  def convert(emit, headers, numbers, batch):
    del emit
    packed = tf.numpy_function(
      functools.partial(_csv_batch, fields),
      [delimiter, headers, numbers, batch, path],
      _PACKED,
      stateful=False,
      name='csv_examples',
    )
    return _unpack(packed)

  return records.batch(_BATCH_RECORDS).map(convert).unbatch().map(_example_dict(fields))


def _unreadable(path: str, kind: str, error: Exception) -> DataSourceError:
  return DataSourceError(
    f'{path} cannot be read as {kind} ({type(error).__name__}: {error}). Check that it exists, '
    'is readable and is a complete file of that format, or leave it out of the pattern.'
  )


class _GFileReader(io.RawIOBase):
  """A `tf.io.gfile.GFile` as the seekable binary file pyarrow reads (gs:// and the other
  file systems TensorFlow knows; local files are opened by pyarrow itself)."""

  def __init__(self, path: str):
    super().__init__()
    self._file = tf.io.gfile.GFile(path, 'rb')

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
    self._file.seek(offset, whence)
    return self._file.tell()

  def tell(self) -> int:
    return self._file.tell()

  def readinto(self, buffer) -> int:
    data = self._file.read(len(buffer))
    buffer[: len(data)] = data
    return len(data)

  def close(self) -> None:
    self._file.close()
    super().close()


def _parquet_file(path: str) -> pq.ParquetFile:
  try:
    return pq.ParquetFile(path if '://' not in path else _GFileReader(path))
  except (OSError, pa.ArrowException, tf.errors.OpError) as e:
    raise _unreadable(path, 'Parquet', e) from None


def _columns(fields: Fields, schema_names: Sequence[str]) -> list[str]:
  return [c for c in fields.columns if c in schema_names]


def _row_groups(path) -> np.ndarray:
  """The 1-based row number each row group of a Parquet file starts at."""
  metadata = _parquet_file(path.decode()).metadata
  sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
  return (1 + np.cumsum([0, *sizes])[:-1]).astype(np.int64).reshape(-1)


def _parquet_group(fields: Fields, path, group, first_row):
  path = path.decode()
  parquet = _parquet_file(path)
  try:
    table = parquet.read_row_group(int(group), columns=_columns(fields, parquet.schema_arrow.names))
  except (OSError, pa.ArrowException) as e:
    raise _unreadable(path, 'Parquet', e) from None
  records = table.to_pylist()
  return _pack(
    [fields.example(r, f'{path}, row {int(first_row) + i}') for i, r in enumerate(records)]
  )


def _read_parquet(fields: Fields, path: tf.Tensor) -> tf.data.Dataset:
  starts = tf.numpy_function(_row_groups, [path], tf.int64, stateful=False, name='row_groups')
  starts.set_shape([None])

  def convert(group, first_row):
    packed = tf.numpy_function(
      functools.partial(_parquet_group, fields),
      [path, group, first_row],
      _PACKED,
      stateful=False,
      name='parquet_examples',
    )
    return _unpack(packed)

  groups = tf.data.Dataset.from_tensor_slices(starts).enumerate()
  return groups.map(convert).unbatch().map(_example_dict(fields))


def _reader(fields: Fields, file_format: str) -> Callable[[tf.Tensor], tf.data.Dataset]:
  if file_format == 'jsonl':
    return functools.partial(_read_jsonl, fields)
  if file_format == 'parquet':
    return functools.partial(_read_parquet, fields)
  return functools.partial(_read_csv, fields, _DELIMITER[file_format])


# ----- What is checked when a task is registered: every file opened, its first record.


def _open_text(path: str):
  """A JSONL or CSV file's bytes, gunzipped if it is named *.gz."""
  raw = tf.io.gfile.GFile(path, 'rb')
  return gzip.GzipFile(fileobj=raw, mode='rb') if path.lower().endswith('.gz') else raw


def _first_jsonl(fields: Fields, path: str) -> bool:
  """Whether the file has a record; converts the first one (raises as reading would)."""
  try:
    with _open_text(path) as f:
      for number, line in enumerate(f, start=1):
        if line.strip():
          fields.example(_jsonl_record(line, path, number), f'{path}, line {number}')
          return True
  except (tf.errors.OpError, OSError, EOFError) as e:
    raise _unreadable(path, 'JSONL', e) from None
  return False


def _first_csv(fields: Fields, path: str, delimiter: str) -> bool:
  header, text, start = None, '', 0
  try:
    with _open_text(path) as f:
      for number, raw in enumerate(f, start=1):
        line = _decode_line(raw, path, number).rstrip('\n').removesuffix('\r')
        if number == 1:
          line = line.removeprefix('\ufeff')
        text, start = (text + '\n' + line, start) if text else (line, number)
        if not _complete(text):
          continue
        if header is None:
          header = _csv_row(text, delimiter, path, 1)
          missing = [c for c in fields.columns if '.' not in c and c not in header]
          if missing:
            raise DataSourceError(
              f'{path}, line 1: the header has no field {missing[0]!r}, which the task reads '
              f'(the header names {_short(header)}). Fix the header, or the field name.'
            )
        elif text.strip():
          row = _csv_row(text, delimiter, path, start)
          if len(row) != len(header):
            raise DataSourceError(
              f'{path}, line {start}: {len(row)} field(s), but the header (line 1) names '
              f'{len(header)}: {_short(text)}. Quote values that hold the delimiter.'
            )
          fields.example(dict(zip(header, row)), f'{path}, line {start}')
          return True
        text = ''
  except (tf.errors.OpError, OSError, EOFError) as e:
    raise _unreadable(path, 'CSV', e) from None
  if text:
    raise DataSourceError(
      f'{path}, line {start}: a quoted field opened in this record is never closed (an odd '
      'number of " to the end of the file). Fix the quoting of the record.'
    )
  return False


def _first_parquet(fields: Fields, path: str) -> bool:
  parquet = _parquet_file(path)
  names = parquet.schema_arrow.names
  missing = [c for c in fields.columns if '.' not in c and c not in names]
  if missing:
    raise DataSourceError(
      f'{path}: the Parquet schema has no column {missing[0]!r}, which the task reads (its '
      f'columns are {_short(names)}). Fix the file, or the field name.'
    )
  if not parquet.metadata.num_rows:
    return False
  try:
    batch = next(parquet.iter_batches(batch_size=1, columns=_columns(fields, names)))
  except (OSError, pa.ArrowException, StopIteration) as e:
    raise _unreadable(path, 'Parquet', e) from None
  fields.example(batch.to_pylist()[0], f'{path}, row 1')
  return True


def _file_format(path: str) -> str:
  stem, extension = os.path.splitext(path.lower())
  if extension == '.gz':
    extension = os.path.splitext(stem)[1]
    if FORMATS.get(extension) == 'parquet':
      extension = '.parquet.gz'  # Parquet compresses inside the file.
  if extension not in FORMATS:
    raise ValueError(
      f'{path}: not a file format a file task reads ({extension or "no extension"}); use '
      f'{", ".join(FORMATS)} files (the format is the extension; JSONL and CSV may end in .gz).'
    )
  return FORMATS[extension]


def _split_files(files: SplitFiles) -> dict[str, list[str]]:
  if isinstance(files, str) or (
    isinstance(files, Sequence) and all(isinstance(f, str) for f in files)
  ):
    files = {'train': files}
  if not isinstance(files, Mapping) or not files:
    raise ValueError(
      f'files={files!r}: give a glob (or a list of globs) per split, e.g. '
      "{'train': 'data/train-*.parquet', 'validation': 'data/valid-*.parquet'}."
    )
  return {split: [p] if isinstance(p, str) else list(p) for split, p in files.items()}


def _check_files(name: str, fields: Fields, splits: Mapping[str, list[str]]) -> str:
  """Opens every file of every split (module docstring); returns the task's one format."""
  formats = {}
  for split, patterns in splits.items():
    matched = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not matched:
      raise FileNotFoundError(
        f'File task {name!r}: no file matches {patterns} (split {split!r}). Check the path and '
        'the glob (e.g. "data/train-*.parquet"); patterns are expanded with tf.io.gfile.glob.'
      )
    has_records = False
    for path in matched:
      file_format = formats.setdefault(path, _file_format(path))
      if file_format == 'jsonl':
        found = _first_jsonl(fields, path)
      elif file_format == 'parquet':
        found = _first_parquet(fields, path)
      else:
        found = _first_csv(fields, path, _DELIMITER[file_format])
      has_records = has_records or found
    if not has_records:
      raise DataSourceError(
        f'File task {name!r}: split {split!r} has no record: its {len(matched)} file(s) '
        f'matching {patterns} ({", ".join(matched[:5])}) are empty (or hold only a header). '
        'Put records in them, or point the pattern at the ones that hold them.'
      )
  if len(set(formats.values())) > 1:
    kinds = {f: [p for p, g in formats.items() if g == f][0] for f in set(formats.values())}
    raise ValueError(
      f'File task {name!r} reads files of several formats ({kinds}); give one task one '
      'format (register one task per format and mix them with register_mixture).'
    )
  return next(iter(formats.values()))


# ----- Metrics, by name.


def _postprocess(answer, example=None, is_target=False):
  """Predictions stripped; targets as the list of accepted answers, stripped."""
  if is_target and example is not None and 'answers' in example:
    return [tf.compat.as_text(a).strip() for a in example['answers']]
  return [answer.strip()] if is_target else answer.strip()


def accuracy(targets, predictions):
  """100 * the share of predictions that are one of their accepted answers."""
  hits = [p in t for t, p in zip(targets, predictions)]
  return {'accuracy': 100.0 * float(np.mean(hits)) if hits else 0.0}


def rouge(targets, predictions):
  """ROUGE-1, -2 and -Lsum (t5's) against each example's first accepted answer."""
  return t5_metrics.rouge([t[0] for t in targets], predictions)


METRICS = {
  'accuracy': (accuracy,),
  'exact_match': (paper.squad_em,),
  'f1': (paper.squad_f1,),
  'squad': (paper.squad_em, paper.squad_f1),
  'rouge': (rouge,),
}


def _metric_names(metric: str | Sequence[str], scoring: bool) -> tuple[str, ...]:
  names = (metric,) if isinstance(metric, str) else tuple(metric)
  for n in names:
    if n not in METRICS:
      raise ValueError(f'metric={metric!r}: {n!r} is not one of {sorted(METRICS)}.')
  if scoring and names != ('accuracy',):
    raise ValueError(
      f'metric={metric!r}: a task with choices= is scored by rank classification; its metric '
      "is 'accuracy' (the share of examples whose correct candidate scores highest)."
    )
  if not names:
    raise ValueError(f'metric={metric!r}: name at least one of {sorted(METRICS)}.')
  return names


# ----- Registration.


@dataclasses.dataclass(frozen=True)
class FileTaskSpec:
  """What `register_file_task` was given, normalized (two equal ones register one task)."""

  name: str
  files: tuple[tuple[str, tuple[str, ...]], ...]
  fields: Fields
  metric: tuple[str, ...]
  vocabulary: Any
  target_length: int


_SPECS: dict[str, FileTaskSpec] = {}


def _rank(fields: Fields, mode: str):
  size = lambda ex: tf.size(ex['choices'])
  return downstream.rank_classification(
    lambda ex: tf.fill([size(ex)], ex['inputs']),
    lambda ex: ex['choices'],
    lambda ex: tf.one_hot(ex['label'], size(ex), on_value=True, off_value=False),
    mode,
  )


def register_file_task(
  name: str,
  *,
  files: SplitFiles,
  inputs: str,
  targets: str,
  vocabulary: vocab_lib.PauseVocabulary,
  target_length: int,
  metric: str | Sequence[str] = 'accuracy',
  choices: str | Sequence[str] | None = None,
  num_pauses: Sequence[int] = downstream.PAPER_NUM_PAUSES,
) -> str:
  """Registers the downstream base task `name` over JSONL, CSV or Parquet files.

  Its variants (`{name}_std`, `{name}_pause10`, any M, `_prepend`, `_filler{M}`, random M)
  register on request, as for every downstream task. See the module docstring and
  docs/own_data.md. Registering the same name again with equal arguments does nothing.

  Args:
    name: the base task's name.
    files: {split: glob or [globs]} ('train' to finetune, 'validation' to evaluate), or one
      glob for 'train' only.
    inputs: the prefix: a field's name, or a template over fields ('question: {question}').
    targets: the answer: a field's name (a list field: several accepted answers) or a
      template; with `choices`, the correct candidate (0-based index, or its text).
    vocabulary: a PauseVocabulary, e.g. `pause_lm.hf.tokenizer.hf_vocabulary(path)`.
    target_length: the answer's token budget (EOS included); the prefix gets the rest.
    metric: 'accuracy', 'exact_match', 'f1', 'squad' (both) or 'rouge', or a list of them.
    choices: for rank classification: the list field of candidates, or one field each.
    num_pauses: the M whose variants are listed up front (any other M works on request).

  Returns:
    `name`.

  Raises:
    ValueError (DataSourceError for a file's content), FileNotFoundError, TypeError: what is
    wrong with the arguments or the files (module docstring); nothing is registered then.
  """
  if not isinstance(vocabulary, vocab_lib.PauseVocabulary):
    raise TypeError(
      f'register_file_task({name!r}) needs vocabulary= a pause_lm.data.vocab.PauseVocabulary, '
      f'not {type(vocabulary).__name__}: e.g. pause_lm.hf.tokenizer.hf_vocabulary(path) (in '
      "gin: file_task.vocabulary = @hf_vocabulary() and hf_vocabulary.path = '...')."
    )
  if isinstance(target_length, bool) or not isinstance(target_length, int) or target_length < 1:
    raise ValueError(
      f"target_length={target_length!r}: give the answer's token budget, EOS included, a "
      'positive integer.'
    )
  if choices is not None and not isinstance(choices, str):
    choices = tuple(choices)
    if not choices or not all(isinstance(c, str) and c for c in choices):
      raise ValueError(f'choices={choices!r}: give a list field, or one field per candidate.')
  fields = Fields(Template.parse(inputs, 'inputs'), Template.parse(targets, 'targets'), choices)
  splits = _split_files(files)
  spec = FileTaskSpec(
    name,
    tuple((s, tuple(p)) for s, p in splits.items()),
    fields,
    _metric_names(metric, fields.scoring),
    vocabulary,
    target_length,
  )
  if name in _SPECS:
    if _SPECS[name] == spec:
      return name
    raise ValueError(
      f'File task {name!r} is already registered with other settings ({_SPECS[name]}); give '
      'the new one another name.'
    )
  file_format = _check_files(name, fields, splits)
  source = FileSource(_reader(fields, file_format), splits, _KIND[file_format])
  metric_fns = [fn for n in spec.metric for fn in METRICS[n]]
  if fields.scoring:
    downstream.register_downstream_task(
      name,
      source,
      text_preprocessors=[_rank(fields, 'train')],
      vocabulary=vocabulary,
      target_length=target_length,
      metric_fns=[downstream.rank_accuracy],
      postprocess_fn=t5_postprocessors.rank_classification,
      eval_text_preprocessors=[_rank(fields, 'eval')],
      num_pauses=num_pauses,
    )
  else:
    downstream.register_downstream_task(
      name,
      source,
      text_preprocessors=[],
      vocabulary=vocabulary,
      target_length=target_length,
      metric_fns=metric_fns,
      postprocess_fn=_postprocess,
      num_pauses=num_pauses,
    )
  _SPECS[name] = spec
  return name


@gin.configurable
def file_task(
  name: str = gin.REQUIRED,
  files: SplitFiles = gin.REQUIRED,
  inputs: str = gin.REQUIRED,
  targets: str = gin.REQUIRED,
  metric: str | Sequence[str] = 'accuracy',
  vocabulary: vocab_lib.PauseVocabulary = gin.REQUIRED,
  target_length: int = gin.REQUIRED,
  choices: str | Sequence[str] | None = None,
) -> str:
  """`register_file_task` from gin: a gin file is all a file task needs.

      import pause_lm.tasks
      import pause_lm.hf.tokenizer
      file_task.name = 'my_qa'
      file_task.files = {'train': 'data/train.parquet', 'validation': 'data/valid.parquet'}
      file_task.inputs = 'question: {question}'
      file_task.targets = 'answers'
      file_task.metric = 'squad'
      file_task.target_length = 16
      file_task.vocabulary = @hf_vocabulary()
      hf_vocabulary.path = 'hf_model'

  The task registers when it is first asked for (`--gin.BASE_TASK="'my_qa'"` with
  gin/pauseft.gin, `TASK = 'my_qa_pause10'`), after every gin file is parsed; or name it as
  `BASE_TASK = @file_task()`. Several tasks: bind each in a scope named after it
  (`my_qa/file_task.files = ...`, `my_mc/file_task.choices = ...`); unscoped bindings (the
  vocabulary, say) are shared by all of them.

  Returns:
    The base task's name.
  """
  return register_file_task(
    name,
    files=files,
    inputs=inputs,
    targets=targets,
    metric=metric,
    vocabulary=vocabulary,
    target_length=target_length,
    choices=choices,
  )


def _bound(parameter: str) -> Any:
  try:
    return gin.query_parameter(parameter)
  except ValueError:
    return None


def declare_from_gin(base: str) -> None:
  """Registers `base` if gin binds it as a file task: `file_task.name = base`, or bindings
  of `file_task` in the scope `base`. Called by the downstream registry before it reports a
  base unknown."""
  if _bound('file_task.name') == base:
    file_task()
  elif re.fullmatch(r'[A-Za-z_][\w.]*', base) and any(
    _bound(f'{base}/file_task.{p}') is not None for p in ('files', 'inputs', 'targets', 'name')
  ):
    with gin.config_scope(base):
      file_task(name=base)


downstream.register_base_finder(declare_from_gin)
