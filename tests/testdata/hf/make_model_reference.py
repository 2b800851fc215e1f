"""Writes the tiny Hugging Face reference checkpoints that tests/test_hf.py compares against.

Run by hand, from the repository root, with a Python that has torch and transformers installed
(never in CI; the outputs are committed):

  python tests/testdata/hf/make_model_reference.py

For each family (GPT-2; Llama with grouped-query attention, llama3 rope_scaling and an untied
head, saved in three shards; Qwen2 with q/k/v biases and tied embeddings; Mistral with
multi-query attention; Qwen3 with q/k norms and a head_dim of its own; Gemma 3 text with
sliding-window layers (window 4, shorter than the test sequences); a SmolLM-shaped tied Llama
over the 400 ids of the test tokenizer) it
builds a random model with `from_config`, saves `config.json` + safetensors under `<family>/`,
and writes `<family>/reference.npz`:

  ids            int32 [2, 10]  token ids, starting with 0 (pause-lm's BOS convention)
  logits         float32 [2, 10, vocab] transformers' logits for `ids`
  prompt_<i>     int32 prompts of different lengths, without the leading 0
  greedy_<i>     int32 [8]  transformers' greedy continuation of [0] + prompt_<i>

The weights are drawn with a large initializer_range so that logits are well separated and
greedy choices do not hinge on float rounding.
"""

import os
import sys

import numpy as np
import torch
import transformers

OUT = os.path.dirname(os.path.abspath(__file__))
STEPS = 8
PROMPT_LENGTHS = (5, 2, 7)

ROPE_LLAMA3 = {
  'rope_type': 'llama3',
  'factor': 8.0,
  'low_freq_factor': 1.0,
  'high_freq_factor': 4.0,
  'original_max_position_embeddings': 16,
}

CONFIGS = {
  'gpt2': transformers.GPT2Config(
    vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4, initializer_range=0.4
  ),  # at 0.2 its greedy output repeats one token
  'llama': transformers.LlamaConfig(
    vocab_size=120,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rope_theta=500000.0,
    rope_scaling=ROPE_LLAMA3,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    initializer_range=0.2,
  ),
  'qwen2': transformers.Qwen2Config(
    vocab_size=90,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    initializer_range=0.2,
  ),
  'mistral': transformers.MistralConfig(
    vocab_size=80,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=1,
    max_position_embeddings=64,
    sliding_window=None,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    initializer_range=0.2,
  ),
  # SmolLM-shaped (Llama, tied embeddings) over the 400 ids of tests/testdata/hf/tokenizer:
  # the checkpoint docs/pretrained.md's walkthrough test converts, trains and exports.
  'smollm': transformers.LlamaConfig(
    vocab_size=400,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=0,
    eos_token_id=1,
    initializer_range=0.2,
  ),
  # Qwen3: per-head q/k RMSNorm, head_dim 16 apart from hidden_size / heads = 8, untied head.
  'qwen3': transformers.Qwen3Config(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=64,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    initializer_range=0.2,
  ),
  # Gemma 3 text: (1 + w) norms before and after attention and MLP, GeGLU, q/k norm, scaled
  # embeddings, tied head, head_dim 16 apart from 32 / 4, one key/value head as the 270M and 1B,
  # query_pre_attn_scalar != head_dim, and layers sliding, sliding, full with a window of 4
  # (shorter than every test sequence) and their own RoPE base; linear scaling on the global one.
  'gemma3': transformers.Gemma3TextConfig(
    vocab_size=110,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=64,
    query_pre_attn_scalar=24,
    sliding_window=4,
    layer_types=['sliding_attention', 'sliding_attention', 'full_attention'],
    rope_theta=1000000.0,
    rope_local_base_freq=10000.0,
    rope_scaling={'rope_type': 'linear', 'factor': 2.0},
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    # Smaller: the sqrt(hidden_size)-scaled tied embeddings otherwise outweigh the post-normed
    # blocks, and greedy decoding repeats the last token.
    initializer_range=0.05,
  ),
}
SHARDED = {'llama'}
# Families added later draw from seeds of their own, so that writing them (alone or with the
# rest) leaves the earlier families' files exactly as they were made.
OWN_SEEDS = {'qwen3': 3, 'gemma3': 4}


def _randomize_biases(model):
  """from_config zeroes biases; random ones make the bias mapping observable in the logits."""
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith('bias') or 'norm' in name or name.split('.')[-2].startswith('ln_'):
        param.add_(0.1 * torch.randn_like(param))


def main(families=None):
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  for family, config in CONFIGS.items():
    if family in OWN_SEEDS:
      torch.manual_seed(OWN_SEEDS[family])
      rng = np.random.default_rng(OWN_SEEDS[family])
    if families and family not in families:
      continue
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    _randomize_biases(model)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    directory = os.path.join(OUT, family)
    shard = '40KB' if family in SHARDED else '10GB'
    model.save_pretrained(directory, safe_serialization=True, max_shard_size=shard)
    os.remove(os.path.join(directory, 'generation_config.json'))

    vocab = config.vocab_size
    ids = rng.integers(1, vocab, (2, 10)).astype(np.int32)
    ids[:, 0] = 0
    with torch.no_grad():
      logits = model(torch.tensor(ids, dtype=torch.long)).logits.numpy().astype(np.float32)
    arrays = {'ids': ids, 'logits': logits}
    for i, length in enumerate(PROMPT_LENGTHS):
      prompt = rng.integers(1, vocab, length).astype(np.int32)
      inputs = torch.tensor([[0, *prompt]], dtype=torch.long)
      with torch.no_grad():
        # An explicit mask: generate() would otherwise take the leading 0 (= pad_token_id) for
        # padding and hide it.
        out = model.generate(
          inputs,
          attention_mask=torch.ones_like(inputs),
          max_new_tokens=STEPS,
          min_new_tokens=STEPS,
          do_sample=False,
          num_beams=1,
        )
      arrays[f'prompt_{i}'] = prompt
      arrays[f'greedy_{i}'] = out[0, inputs.shape[1] :].numpy().astype(np.int32)
    np.savez(os.path.join(directory, 'reference.npz'), **arrays)
    print(family, sorted(os.listdir(directory)))


if __name__ == '__main__':
  # Families to write (all by default): `python tests/testdata/hf/make_model_reference.py qwen3
  # gemma3`. (Skipping one of the first five changes the draws of those after it.)
  main(sys.argv[1:])
