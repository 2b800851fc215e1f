r"""Trains a pause-lm model from gin files.

  python -m pause_lm.train --gin_file=gin/quickstart.gin \
      --gin.MODEL_DIR="'runs/quickstart'"

Later `--gin_file`s and `--gin_bindings` (or `--gin.NAME=value`) override
earlier ones. Re-running with the same MODEL_DIR resumes the run. The
settings actually used are written to MODEL_DIR/config.gin.
"""

from collections.abc import Sequence

from absl import app
from absl import flags
from absl import logging

from pause_lm import gin_utils
from pause_lm import trainer

FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}; settings go in gin '
                     'files, --gin_bindings or --gin.NAME=value.')
  logging.set_verbosity(logging.INFO)
  try:
    gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings,
                        FLAGS.gin_search_paths)
  except gin_utils.MissingSettingError as e:
    raise app.UsageError(str(e)) from None
  trainer.train()


if __name__ == '__main__':
  gin_utils.run(main)
