"""Variant names: one parser and formatter for task names and grid folders."""

import pytest

from pause_lm.data import variants

Variant = variants.Variant

CASES = [  # (variant, task name of base 'my_task', folder name, report label)
  (Variant('std'), 'my_task_std', 'stdft', 'StdFT'),
  (Variant('pause', 10), 'my_task_pause10', 'pauseft10', 'PauseFT'),
  (Variant('pause', 5, 'prepend'), 'my_task_pause5_prepend', 'pauseft5_prepend', 'PauseFT'),
  (Variant('filler', 50), 'my_task_filler50', 'fillerft50', 'FillerFT'),
  (Variant('pause', 0, max_pauses=10), 'my_task_pause0to10', 'pauseft0to10', 'PauseFT(0..10)'),
  (
    Variant('pause', 2, 'prepend', 8),
    'my_task_pause2to8_prepend',
    'pauseft2to8_prepend',
    'PauseFT(2..8)',
  ),
  (Variant('filler', 1, max_pauses=3), 'my_task_filler1to3', 'fillerft1to3', 'FillerFT(1..3)'),
]


@pytest.mark.parametrize('variant,task,folder,label', CASES)
def test_names_round_trip(variant, task, folder, label):
  assert variant.task('my_task') == task
  assert variants.parse_task(task) == ('my_task', variant)
  assert variant.name == folder
  assert variants.parse_folder(folder) == variant
  assert variant.label == label


def test_make_and_largest():
  assert Variant.make(0) == Variant('std')
  assert Variant.make(0, max_pauses=4) == Variant('pause', 0, max_pauses=4)
  assert Variant.make(3, 'prepend', filler='.') == Variant('filler', 3, 'prepend')
  assert Variant('pause', 0, max_pauses=10).largest == 10
  assert Variant('pause', 7).largest == 7 and not Variant('pause', 7).random
  assert Variant('pause', 0, 'prepend', 10).with_pauses(3) == Variant('pause', 3, 'prepend')
  assert Variant('pause', 5).with_pauses(0) == Variant('std')


def test_other_names_and_bad_ranges():
  assert variants.parse_task('squad') is None
  assert variants.parse_task('squad_pause') is None
  assert variants.parse_task('my_task_pause10_eval') is None  # Callers strip `_eval`.
  with pytest.raises(ValueError, match='lo < hi.*pause5'):
    variants.parse_task('squad_pause5to5')
  with pytest.raises(ValueError, match='lo < hi'):
    variants.parse_folder('pauseft9to3')
  with pytest.raises(ValueError, match='Not a finetuning variant folder'):
    variants.parse_folder('pauseft')
  with pytest.raises(ValueError, match='no pauses'):
    Variant('std', 3)


def test_random_m_tasks_are_evaluated_at_one_fixed_m():
  from pause_lm.pipeline import datasets as data  # pylint: disable=g-import-not-at-top

  # Unset M_inf: the range's largest M; set: that M, same placement and filler.
  assert data.inference_task('synthetic_qa_pause0to10') == 'synthetic_qa_pause10'
  assert data.inference_task('synthetic_qa_pause0to10', 0) == 'synthetic_qa_std'
  assert data.inference_task('synthetic_qa_pause2to6_prepend', 3) == 'synthetic_qa_pause3_prepend'
  assert data.inference_task('synthetic_qa_filler1to4', 2) == 'synthetic_qa_filler2'
  assert data.inference_task('synthetic_choice_pause0to4_eval') == 'synthetic_choice_pause4_eval'


def test_finetune_task_registers_a_random_m_variant():
  import seqio  # pylint: disable=g-import-not-at-top
  from pause_lm.tasks import downstream  # pylint: disable=g-import-not-at-top

  name = downstream.finetune_task(
    'synthetic_first', num_pauses=1, placement='prepend', max_pauses=4
  )
  assert name == 'synthetic_first_pause1to4_prepend' and name in seqio.TaskRegistry.names()
  steps = [
    p.keywords
    for p in seqio.get_mixture_or_task(name).preprocessors
    if getattr(p, 'keywords', None)
  ]
  assert {'variant': Variant('pause', 1, 'prepend', 4), 'filler': None} in steps
