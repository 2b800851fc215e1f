r"""Per-device memory of one 1B pretraining step (Adam, bf16 compute, fp32 params).

Compiles the step of gin/stdpt.gin ahead of time, on simulated CPU devices, for
the slices docs/scaling.md lists, and prints XLA's memory report for each:

  python benchmarks/memory_1b.py                # all settings below
  python benchmarks/memory_1b.py --devices=8    # one of them

Argument sizes (parameters and Adam moments) are exact for every backend;
temporaries are XLA:CPU's and only indicate the TPU/GPU figure. On the target
machine, `python -m pause_lm.train <run flags> --compile_only` gives its own.
"""

from collections.abc import Sequence
import os
import subprocess
import sys

from absl import app
from absl import flags

_DEVICES = flags.DEFINE_integer('devices', None, 'Only the setting with this many devices.')

# (devices, microbatches, what it stands for). BATCH_SIZE is 512 x 2048.
SETTINGS = (
  (1, 128, 'one H100 (80 GB): 4 rows per microbatch'),
  (4, 64, 'TPU v4-8 / v5p-8 (4 chips): 2 rows per chip per microbatch'),
  (8, 16, '8x H100: 4 rows per GPU per microbatch'),
  (16, 32, 'TPU v5e-16 (16 GB chips): 1 row per chip per microbatch'),
)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: Sequence[str]) -> None:
  del argv
  for devices, microbatches, label in SETTINGS:
    if _DEVICES.value and devices != _DEVICES.value:
      continue
    print(f'== {label}', flush=True)
    # A fresh process per setting: the device count is fixed at start-up.
    subprocess.run(
      [
        sys.executable,
        '-m',
        'pause_lm.training.aot',
        '--gin_file=gin/stdpt.gin',
        "--gin.MODEL_DIR='unused'",
        '--gin.NUM_EMBEDDINGS=32297',
        f'--simulated_devices={devices}',
        f'--gin.train.num_microbatches={microbatches}',
      ],
      cwd=REPO,
      check=True,
    )


if __name__ == '__main__':
  app.run(main)
