"""Hugging Face interop: checkpoints in and out (`models`, one name map both ways) and
tokenizers as SeqIO vocabularies with a `<pause>` row (`tokenizer`). Never torch."""

from pause_lm.hf.models import CONFIG_FILE
from pause_lm.hf.models import from_pretrained
from pause_lm.hf.models import hf_config
from pause_lm.hf.models import INDEX_FILE
from pause_lm.hf.models import model_config
from pause_lm.hf.models import num_embeddings
from pause_lm.hf.models import PAUSE_ID_KEY
from pause_lm.hf.models import read_config
from pause_lm.hf.models import save_pretrained
from pause_lm.hf.models import SINGLE_FILE
from pause_lm.hf.models import SUPPORTED
from pause_lm.hf.models import TOKENIZER_FILES
from pause_lm.hf.models import vocab_size
from pause_lm.hf.models import write_safetensors
