r"""Writes an experiment grid's report: Table 1 layout, the M sweep and inference-M curves.

  python -m pause_lm.report runs/toy

Writes `report.md` and `figures/*.png` into the experiment folder, from every
`finetune/.../eval/minf{M}/metrics.json` under it; what the report holds and how its numbers
are computed: pause_lm/grid/report.py. Needs neither JAX nor TensorFlow.
"""

from collections.abc import Sequence

from absl import app

from pause_lm.grid import report
from pause_lm.runtime import console


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError('Usage: python -m pause_lm.report EXPERIMENT_DIR')
  print(report.write_report(argv[1]))


if __name__ == '__main__':
  app.run(console.report_errors(main))
