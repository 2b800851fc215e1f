"""The decoder (`transformer`), rotary embeddings, KV-cache decoding and scoring, and sizing."""

from pause_lm.model.transformer import Attention
from pause_lm.model.transformer import attention_mask
from pause_lm.model.transformer import Decoder
from pause_lm.model.transformer import DecoderBlock
from pause_lm.model.transformer import Mlp
from pause_lm.model.transformer import ModelConfig
