r"""Makes the tokenizer reference files under tokenizer/ (run by hand, not in CI).

  python tests/testdata/hf/make_tokenizer_reference.py

Needs `tokenizers` and `transformers` (not dependencies of pause_lm; any scratch environment
with both). Trains a tiny byte-level BPE tokenizer (GPT-2's scheme, 400 tokens, a Llama-style
`<s>` prefix template) on embedded text, saves it as transformers does
(`PreTrainedTokenizerFast.save_pretrained`), then writes encodings.json: the ids that
transformers' `AutoTokenizer` gives for STRINGS, with and without special tokens, and its
decodes. tests/test_hf_tokenizer.py checks pause_lm's vocabulary against them.
"""

import json
import os

import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers
from tokenizers import processors
from tokenizers import trainers
import transformers

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tokenizer')
VOCAB_SIZE = 400
SPECIAL = ['<s>', '</s>', '<pad>']
CORPUS = [
  'The model thinks before it speaks: a pause token delays the answer.',
  'Pause tokens give the decoder extra computation before the next word.',
  'Language models are trained to predict the next token of a document.',
  'Numbers like 1234, 56.78 and 9e10 are split into pieces.',
  'Il était une fois un modèle qui réfléchissait avant de répondre.',
  'def add(a, b):\n    return a + b\n',
  'Questions and answers: what is 7 times 6? It is 42.',
] * 20
STRINGS = [
  'The model thinks before it speaks.',
  'pause tokens, pause tokens!',
  '  leading spaces and trailing ones  ',
  'line one\nline two\n\ttabbed',
  'Réfléchir avant de répondre: déjà vu.',
  'emoji 🙂 and 漢字 are bytes here',
  'unseen words: xylophone quizzically',
  '12345 + 678 = 13023',
  '',
]


def main():
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=VOCAB_SIZE,
    special_tokens=SPECIAL,
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tokenizer.train_from_iterator(CORPUS, trainer=trainer)
  tokenizer.post_processor = processors.TemplateProcessing(
    single='<s> $A', pair='<s> $A <s> $B', special_tokens=[('<s>', 0)]
  )
  fast = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tokenizer, bos_token='<s>', eos_token='</s>', pad_token='<pad>'
  )
  os.makedirs(OUT, exist_ok=True)
  fast.save_pretrained(OUT)

  auto = transformers.AutoTokenizer.from_pretrained(OUT)
  reference = {
    'transformers_version': transformers.__version__,
    'vocab_size': len(auto),
    'eos_id': auto.eos_token_id,
    'bos_id': auto.bos_token_id,
    'pad_id': auto.pad_token_id,
    'encodings': [
      {
        'text': text,
        'ids': auto(text, add_special_tokens=False)['input_ids'],
        'ids_with_special_tokens': auto(text)['input_ids'],
        'decoded': auto.decode(auto(text)['input_ids'], skip_special_tokens=True),
      }
      for text in STRINGS
    ],
  }
  with open(os.path.join(OUT, 'encodings.json'), 'w') as f:
    json.dump(reference, f, indent=1, ensure_ascii=False)
    f.write('\n')
  print(f'wrote {sorted(os.listdir(OUT))} to {OUT}')


if __name__ == '__main__':
  main()
