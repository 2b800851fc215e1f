r"""The GPT-2 130M training step here and in PyTorch + Hugging Face, side by side in one run.

  pip install -e '.[bench]'   # torch and transformers; never needed to train or test
  python benchmarks/vs_pytorch.py [--rounds=5] [--steps=3] [--compile=true]

Both sides train the same model on the same batch: gin/models/130m.gin (12 layers, 768 wide,
3072 MLP, learned positions, pre-LayerNorm, biases, tanh GELU, untied output without bias) in
float32, 8 x 256 random tokens, summed-then-averaged next-token cross-entropy over all 2,048
targets, AdamW (lr 1e-4 constant, b1 0.9, b2 0.95, eps 1e-8, weight decay 0.1 on matrices
only) behind global-norm clipping at 1. This project runs the trainer's own jitted step
(`train_state.jit_train_step`, built by benchmarks/train_step.py); PyTorch runs transformers'
`GPT2LMHeadModel` with SDPA attention, eagerly and (where it works) under `torch.compile`.
The variants are timed in alternating rounds, so machine noise hits them alike, and the
ratio of medians is printed against the faster PyTorch variant.

Each library's own float32 matmul (--matmul_repeats of them at --matmul_size cubed: XLA's
on this side, PyTorch's MKL on the other) is timed in the same rounds, and each step's model
FLOP/s is printed as a fraction of its own library's matmul rate. A training step is mostly
matmuls, so the ratio of the two matmul rates is about the step ratio when both steps are
equally lean, and the last line says what fraction of XLA's matmul rate this step would need
for 1.2x the faster peer: above 100%, no work on this project's step reaches it on that CPU.
"""

from collections.abc import Callable, Sequence
import os
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from pause_lm.hf import models as hf_models
from pause_lm.training import optimizer as optimizer_lib
import train_step as train_step_lib

_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Alternating rounds.')
# --steps (per variant per round), --batch_size and --sequence_length are train_step.py's flags.
# pylint: disable=protected-access
_STEPS, _BATCH, _LENGTH = train_step_lib._STEPS, train_step_lib._BATCH, train_step_lib._LENGTH
# pylint: enable=protected-access
_MODEL = flags.DEFINE_string('model', '130m', 'gin/models/NAME.gin, on both sides.')
_COMPILE = flags.DEFINE_bool('compile', True, 'Also time torch.compile of the model.')
# --matmul_size and --matmul_repeats are train_step.py's flags too.
# pylint: disable=protected-access
_MATMUL, _MATMUL_REPEATS = train_step_lib._MATMUL, train_step_lib._MATMUL_REPEATS
# pylint: enable=protected-access
MATMULS = ('xla matmul', 'pytorch matmul')

INSTALL_HINT = (
  "PyTorch and transformers are not installed. They live in this project's "
  "optional 'bench' extra: pip install -e '.[bench]'"
)


def jax_variant(model_name: str, batch_size: int, length: int):
  """(name, step function) of this project's jitted train step; compiled on the first call."""
  setup = train_step_lib.make_step(model_name, batch_size, length)
  holder = {'state': setup.state}

  def run():
    with jax.set_mesh(setup.mesh):
      holder['state'], metrics = setup.step(holder['state'], setup.batch)
    jax.block_until_ready(metrics)

  return setup.config, run


def torch_matmul(n: int, repeats: int) -> Callable[[], None]:
  """`repeats` back-to-back float32 n x n x n matmuls in PyTorch (MKL on x86 CPUs)."""
  import torch  # pylint: disable=g-import-not-at-top

  a, b = torch.randn(n, n), torch.randn(n, n)

  def run():
    for _ in range(repeats):
      torch.mm(a, b)

  return run


def decayed_hf_tensors(config) -> tuple[set[str], set[str]]:
  """(every GPT2LMHeadModel tensor, those the JAX side's AdamW decays).

  Read through the name map that converts checkpoints (`hf_models.hf_parameter_paths`): an HF
  tensor is decayed when `optimizer.weight_decay_mask` decays the parameters of ours it holds,
  so both sides decay the same matrices by construction.
  """
  sources = hf_models.hf_parameter_paths(config, 'gpt2')
  tree = {}
  for paths in sources.values():
    for path in paths:
      node = tree
      for key in path[:-1]:
        node = node.setdefault(key, {})
      node[path[-1]] = 0
  mask = optimizer_lib.weight_decay_mask(tree)

  def decays(path):
    node = mask
    for key in path:
      node = node[key]
    return node

  return set(sources), {name for name, paths in sources.items() if all(map(decays, paths))}


def torch_variants(
  config, batch_size: int, length: int, use_compile: bool
) -> list[tuple[str, Callable[[], None]]]:
  """GPT2LMHeadModel training steps (eager and compiled) with this project's hyperparameters."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit(f'{INSTALL_HINT} ({e})') from e
  torch.set_num_threads(os.cpu_count() or 1)
  gpt2 = transformers.GPT2Config(
    vocab_size=config.num_embeddings,
    n_positions=config.max_len,
    n_embd=config.emb_dim,
    n_layer=config.num_layers,
    n_head=config.num_heads,
    n_inner=config.mlp_dim,
    activation_function='gelu_new',
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    layer_norm_epsilon=1e-5,
    tie_word_embeddings=False,
    bos_token_id=None,
    eos_token_id=None,
  )
  rng = np.random.default_rng(0)
  tokens = torch.from_numpy(
    rng.integers(1, config.num_embeddings - 1, (batch_size, length)).astype(np.int64)
  )
  targets = torch.roll(tokens, -1, dims=1)
  names, decayed = decayed_hf_tensors(config)

  def make(name, compiled):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel._from_config(  # pylint: disable=protected-access
      gpt2, attn_implementation='sdpa', dtype=torch.float32
    )
    model.train()
    parameters = dict(model.named_parameters())
    if set(parameters) != names:
      raise RuntimeError(
        f'GPT2LMHeadModel has {sorted(set(parameters) ^ names)} where the name map differs.'
      )
    decay = [p for n, p in parameters.items() if n in decayed]
    no_decay = [p for n, p in parameters.items() if n not in decayed]
    optimizer = torch.optim.AdamW(
      [{'params': decay, 'weight_decay': 0.1}, {'params': no_decay, 'weight_decay': 0.0}],
      lr=1e-4,
      betas=(0.9, 0.95),
      eps=1e-8,
    )
    forward = torch.compile(model) if compiled else model

    def run():
      optimizer.zero_grad(set_to_none=True)
      logits = forward(input_ids=tokens).logits
      loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
      )
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      optimizer.step()

    return name, run

  variants = [make('pytorch eager', False)]
  if use_compile:
    name, run = make('pytorch compile', True)
    try:
      run()  # Compiles; a machine without a working C++ toolchain fails here.
      variants.append((name, run))
    except Exception as e:  # pylint: disable=broad-except
      print(
        f'torch.compile does not work here, timing eager only: {type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}'
      )
  return variants


def alternate(
  variants: Sequence[tuple[str, Callable[[], None]]], rounds: int, steps: int
) -> dict[str, list[float]]:
  """Seconds per step of each variant, per round; every variant warms up first."""
  for _, run in variants:
    run()
    run()
  seconds = {name: [] for name, _ in variants}
  for _ in range(rounds):
    for name, run in variants:
      start = time.perf_counter()
      for _ in range(steps):
        run()
      seconds[name].append((time.perf_counter() - start) / steps)
  return seconds


def main(argv: Sequence[str]) -> None:
  del argv
  batch, length, n, repeats = _BATCH.value, _LENGTH.value, _MATMUL.value, _MATMUL_REPEATS.value
  config, jax_run = jax_variant(_MODEL.value, batch, length)
  variants = [('pause_lm (jax)', jax_run)]
  variants += torch_variants(config, batch, length, _COMPILE.value)
  matmuls = (train_step_lib.matmul_round(n, repeats), torch_matmul(n, repeats))
  variants += list(zip(MATMULS, matmuls))
  seconds = alternate(variants, _ROUNDS.value, _STEPS.value)
  # Medians throughout: a round's matmuls run for about a second, not one lucky tenth.
  ceiling = {name: repeats * 2 * n**3 / statistics.median(seconds.pop(name)) for name in MATMULS}
  tokens = batch * length
  step_flops = config.flops_per_token(length) * tokens
  rate = {name: tokens / statistics.median(s) for name, s in seconds.items()}
  print(
    f'{_MODEL.value} float32, batch {batch} x {length}, {_ROUNDS.value} rounds x '
    f'{_STEPS.value} steps, {os.cpu_count()} CPU threads; tokens/s (median, min-max), and '
    f"model FLOP/s as a fraction of the library's own {n}^3 matmul:"
  )
  for name, s in seconds.items():
    own = ceiling['xla matmul' if name.startswith('pause_lm') else 'pytorch matmul']
    print(
      f'  {name:16s} {rate[name]:8.0f}  ({tokens / max(s):.0f}-{tokens / min(s):.0f})  '
      f'{rate[name] * step_flops / tokens / own:6.1%} of its matmul'
    )
  xla, mkl = ceiling['xla matmul'], ceiling['pytorch matmul']
  print(
    f'  matmul GFLOP/s: XLA {xla / 1e9:.1f}, PyTorch {mkl / 1e9:.1f}; '
    f'XLA / PyTorch {xla / mkl:.2f}x (the step ratio at equal efficiency)'
  )
  peers = {name: r for name, r in rate.items() if name.startswith('pytorch')}
  fastest = max(peers, key=peers.get)
  print(f'pause_lm / {fastest}: {rate["pause_lm (jax)"] / peers[fastest]:.2f}x (target >= 1.2x)')
  needed = 1.2 * peers[fastest] * step_flops / tokens / xla
  print(f"  1.2x {fastest} would take {needed:.0%} of XLA's own matmul rate in this step")


if __name__ == '__main__':
  app.run(main)
