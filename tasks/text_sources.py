"""seqio sources for your own pretraining text: plain text files and JSONL, by glob.

Both yield {'text': document} for `register_pretraining_task`. Patterns are anything
`tf.io.gfile.glob` expands (local paths, gs://...). The files of a split are shuffled (with the
task's seed) and read interleaved; with several hosts each reads its own subset of the files,
so a split needs at least as many files as there are hosts.

- Text files: one document per file (`document_per='file'`, the default: a file is a web
  page, a book, a source file), or one per line (`document_per='line'`, for corpora stored a
  document a line). Empty and whitespace-only documents are skipped.
- JSONL: one JSON object per line with the document under `text_key` ('text'). A line
  without it stops the pipeline with an error naming the file and the line.

Nothing read is trusted unchecked, and a bad file is named where it is read:
- Text must be UTF-8. A byte that is not stops the pipeline with a `DataSourceError` naming
  the file, the line and the byte, and how to re-encode the file (`iconv`); downstream, the
  tokenizer would only say that *some* string is not UTF-8.
- A document longer than `max_document_bytes` (UTF-8 bytes; `MAX_DOCUMENT_BYTES`, 1 MiB, by
  default) is split into pieces of at most that many bytes, cut between characters, in order,
  each a document of its own (the pretraining tasks close each with EOS). Tokenizing one
  document costs about 200 times its size in memory, so a 50 MB line would take some 10 GB
  and minutes before a first batch; 1 MiB pieces (about 300,000 tokens, far more than a
  sequence) take 0.2 GB and half a second. Text files are read in blocks of that size, never
  whole, so memory stays bounded whatever a file holds (a 50 MB line, a 10 GB file). A JSONL
  line is parsed whole (JSON cannot be parsed in parts); its text is then split the same way.

Every step is a tf.data transformation whose state tf.data saves (the unfinished end of a
document between two blocks included), so the input position in a checkpoint stays exact.
"""

import json
from typing import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

DOCUMENT_PER = ('file', 'line')
SplitPatterns = str | Mapping[str, str | Sequence[str]]
# The longest document (UTF-8 bytes) read as one; longer ones are split (module docstring).
MAX_DOCUMENT_BYTES = 1 << 20
# Below this a piece could not hold a character whole; no real limit comes near it.
_MIN_DOCUMENT_BYTES = 16


class DataSourceError(ValueError):
  """A file of a source cannot be read as documents; the message names the file and the fix.

  Raised inside the tf.data pipeline, where TensorFlow wraps it in its own error;
  `pause_lm.pipeline.datasets.TaskIterator` unwraps it again.
  """


class FileSource(seqio.FileDataSource):
  """A seqio.FileDataSource that says which patterns it reads, for errors that name them."""

  def __init__(self, read_file, split_to_filepattern: Mapping[str, list[str]], kind: str):
    super().__init__(read_file, split_to_filepattern=split_to_filepattern)
    self.kind = kind  # 'text' or 'JSONL': what the files are, in messages.
    self._patterns = {split: list(p) for split, p in split_to_filepattern.items()}

  def patterns(self, split: str) -> list[str]:
    return list(self._patterns.get(split, ()))


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


def _check_max_document_bytes(max_document_bytes: int) -> None:
  if not isinstance(max_document_bytes, int) or max_document_bytes < _MIN_DOCUMENT_BYTES:
    raise ValueError(
      f'max_document_bytes={max_document_bytes!r}: give the longest document to read whole, '
      f'in UTF-8 bytes, an integer >= {_MIN_DOCUMENT_BYTES} (default {MAX_DOCUMENT_BYTES}).'
    )


def _not_utf8(path: str, line: int, where: str, error: UnicodeDecodeError) -> DataSourceError:
  """The error for a byte that is not UTF-8; `where` says where it is ('byte 7 of the file')."""
  return DataSourceError(
    f'{path}, line {line}: not UTF-8 text (byte 0x{error.object[error.start]:02x}, {where}). '
    'Text sources read UTF-8 only: re-encode the file, e.g. '
    f'`iconv -f latin1 -t utf-8 {path} > {path}.utf8` for Latin-1 (`file -i {path}` guesses '
    'the encoding), and read the new file instead; or leave the file out of the pattern.'
  )


def _piece_end(text: bytes, start: int, limit: int) -> int:
  """The end of a piece of at most `limit` bytes from `start`: before a character's first
  byte, never inside one (a UTF-8 character has at most 3 continuation bytes, 10xxxxxx)."""
  end = start + limit
  for _ in range(3):
    if text[end] & 0xC0 != 0x80:
      break
    end -= 1
  return end


def _pieces(document: bytes, limit: int, final: bool) -> tuple[list[bytes], bytes]:
  """Cuts pieces of at most `limit` bytes off the front of `document`.

  Returns:
    The pieces, and the rest (at most `limit` bytes) that waits for the document's next
    bytes; with `final` (the document is complete) the rest is a piece too, and b''.
  """
  pieces, start = [], 0
  while len(document) - start > limit:
    end = _piece_end(document, start, limit)
    pieces.append(document[start:end])
    start = end
  rest = document[start:]
  if final:
    return [*pieces, rest], b''
  return pieces, rest


def _checked(piece: bytes, path: str, line: int, offset: int) -> bool:
  """Whether `piece` (at `line` and byte `offset` of the file) is a document to keep (not
  blank); raises if it is not UTF-8."""
  try:
    piece.decode('utf-8')
  except UnicodeDecodeError as e:
    line += piece.count(b'\n', 0, e.start)
    raise _not_utf8(path, line, f'byte {offset + e.start} of the file', e) from None
  return bool(piece.strip())


def _split_block(carry, block, last, line, offset, path, limit, per_line):
  """One block of a file in, its finished documents (pieces) out (a tf.data scan step).

  Args:
    carry: the unfinished document so far (at most `limit` bytes), from earlier blocks.
    block: the file's next bytes; `last`: whether the file has ended.
    line: the line (from 1) where `carry` starts; `offset`: its byte in the file.
    path, limit, per_line: the file, the longest piece, whether a line is a document.

  Returns:
    The documents (a string vector), and the new carry, line and offset.
  """
  path, limit = path.decode(), int(limit)
  text, line, offset = carry + block, int(line), int(offset)
  documents = []

  def emit(document: bytes, line: int, offset: int, final: bool) -> bytes:
    """Keeps the pieces cut off `document` (which starts at `line`, `offset`); returns the
    unfinished rest."""
    pieces, rest = _pieces(document, limit, final)
    for piece in pieces:
      if _checked(piece, path, line, offset):
        documents.append(piece)
      line, offset = line + piece.count(b'\n'), offset + len(piece)
    return rest

  start = 0
  if per_line:
    while (newline := text.find(b'\n', start)) >= 0:
      line_text = text[start:newline]
      emit(line_text[:-1] if line_text.endswith(b'\r') else line_text, line, offset, True)
      line, offset, start = line + 1, offset + newline + 1 - start, newline + 1
  unfinished = text[start:]
  rest = emit(unfinished, line, offset, final=bool(last))
  done = unfinished[: len(unfinished) - len(rest)]
  return (
    np.array(documents, dtype=object).reshape(-1),
    np.array(rest, dtype=object),
    np.int64(line + done.count(b'\n')),
    np.int64(offset + len(done)),
  )


def _file_size(path: bytes) -> np.int64:
  name = path.decode()
  try:
    return np.int64(tf.io.gfile.stat(name).length)
  except tf.errors.OpError as e:
    raise DataSourceError(
      f'{name} cannot be read ({e.message}); it matched the pattern when the task was set '
      'up. Check that it still exists and is readable, or leave it out of the pattern.'
    ) from None


def _blocks(path: tf.Tensor, block_bytes: int) -> tf.data.Dataset:
  """(bytes, last) blocks of `block_bytes` (the last shorter), then (b'', True): the file read
  in order without ever holding it whole."""
  size = tf.numpy_function(_file_size, [path], tf.int64, stateful=False, name='file_size')
  size.set_shape([])
  tail = size % block_bytes
  blocks = tf.data.FixedLengthRecordDataset(path, block_bytes, footer_bytes=tail).concatenate(
    # An empty tail (record_bytes=1 over a body of 0 bytes) reads nothing.
    tf.data.FixedLengthRecordDataset(path, tf.maximum(tail, 1), header_bytes=size - tail)
  )
  end = tf.data.Dataset.from_tensors((tf.constant(b''), tf.constant(True)))
  return blocks.map(lambda block: (block, tf.constant(False))).concatenate(end)


def text_files_source(
  patterns: SplitPatterns,
  document_per: str = 'file',
  max_document_bytes: int = MAX_DOCUMENT_BYTES,
) -> seqio.DataSource:
  """Plain UTF-8 text files: {'text': a whole file} or {'text': one line}.

  Args:
    patterns: a glob for the train split, or {split: glob or [globs]}, e.g.
      {'train': 'corpus/train/*.txt', 'validation': 'corpus/valid/*.txt'}.
    document_per: 'file' (each file is one document) or 'line' (each non-empty line is; a
      trailing '\\r' is dropped).
    max_document_bytes: a document (file or line) longer than this many UTF-8 bytes becomes
      pieces of at most this size, cut between characters, each its own document; files are
      read in blocks of this size (module docstring).
  """
  if document_per not in DOCUMENT_PER:
    raise ValueError(
      f"document_per={document_per!r}: use 'file' (one document per file) or 'line' (one per line)."
    )
  _check_max_document_bytes(max_document_bytes)
  splits = _split_patterns(patterns, 'text')

  def read_file(path):
    def step(state, element):
      carry, line, offset = state
      block, last = element
      documents, carry, line, offset = tf.numpy_function(
        _split_block,
        [carry, block, last, line, offset, path, max_document_bytes, document_per == 'line'],
        [tf.string, tf.string, tf.int64, tf.int64],
        stateful=False,
        name='split_text_block',
      )
      documents.set_shape([None])
      for scalar in (carry, line, offset):
        scalar.set_shape([])
      return (carry, line, offset), documents

    start = (tf.constant(b''), tf.constant(1, tf.int64), tf.constant(0, tf.int64))
    documents = _blocks(path, max_document_bytes).scan(start, step).unbatch()
    return documents.map(lambda document: {'text': document})

  return FileSource(read_file, splits, 'text')


def _jsonl_pieces(line, number, path, text_key, limit) -> np.ndarray:
  """A JSONL line's text as pieces of at most `limit` bytes; none for blank text."""
  path, key, number = path.decode(), text_key.decode(), int(number)
  try:
    record = json.loads(line)
  except UnicodeDecodeError as e:
    raise _not_utf8(path, number, f'byte {e.start} of the line', e) from None
  except json.JSONDecodeError as e:
    raise DataSourceError(f'{path}: line {number} is not JSON ({e}): {line[:80]!r}') from None
  if not isinstance(record, dict) or not isinstance(record.get(key), str):
    raise DataSourceError(
      f'{path}: a line has no string field {key!r} (line {number}; '
      f'jsonl_source(..., text_key=...) names the field): {line[:80]!r}'
    )
  try:
    text = record[key].encode('utf-8')
  except UnicodeEncodeError as e:
    raise DataSourceError(
      f'{path}, line {number}: field {key!r} holds {e.object[e.start : e.end]!r}, which is not '
      'text (an unpaired surrogate escape such as "\\ud800"). Fix or drop the record.'
    ) from None
  pieces, _ = _pieces(text, int(limit), final=True)
  return np.array([p for p in pieces if p.strip()], dtype=object).reshape(-1)


def jsonl_source(
  patterns: SplitPatterns, text_key: str = 'text', max_document_bytes: int = MAX_DOCUMENT_BYTES
) -> seqio.DataSource:
  """JSON Lines files, one document a line under `text_key`: {'text': document}.

  Args:
    patterns: a glob for the train split, or {split: glob or [globs]}.
    text_key: the field of each JSON object that holds the document's text.
    max_document_bytes: a text longer than this many UTF-8 bytes becomes pieces of at most
      this size, cut between characters, each its own document (module docstring).
  """
  _check_max_document_bytes(max_document_bytes)
  splits = _split_patterns(patterns, 'JSONL')

  def read_file(path):
    def parse(number, line):
      pieces = tf.numpy_function(
        _jsonl_pieces,
        [line, number, path, text_key, max_document_bytes],
        tf.string,
        stateful=False,
        name='jsonl_text',
      )
      pieces.set_shape([None])
      return pieces

    lines = tf.data.TextLineDataset(path).enumerate(start=1)
    lines = lines.filter(lambda number, line: tf.strings.length(tf.strings.strip(line)) > 0)
    return lines.map(parse).unbatch().map(lambda document: {'text': document})

  return FileSource(read_file, splits, 'JSONL')
