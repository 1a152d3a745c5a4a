"""A tiny random Phi4Flash checkpoint folder in the release's format, for end-to-end tests (lm-eval, needle,
generate): ``config.json`` (``model_type: "phi4flash"``) + ``model.safetensors`` + a byte-level ``tokenizer.json``
that encodes any text (256 byte tokens, then the Phi-4 specials ``<|endoftext|>`` = BOS = EOS = PAD,
``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>``)."""

from __future__ import annotations

from pathlib import Path

from yoco_eval.model.phi4flash_config import Phi4FlashConfig
from yoco_eval.model.phi4flash_load import build_phi4flash_preset, save_phi4flash

SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
ENDOFTEXT = 256  # the first special after the 256 byte tokens


def write_byte_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(folder / "tokenizer.json"))


def write_tiny_folder(folder: Path, seed: int = 0, max_len: int = 2048) -> Path:
    """The ``phi4flash-tiny`` shape with seeded random weights (vocab 512 >= the tokenizer's 261 ids)."""
    cfg = Phi4FlashConfig.from_name("phi4flash-tiny", bos_token_id=ENDOFTEXT, eos_token_id=ENDOFTEXT,
                                    pad_token_id=ENDOFTEXT, max_position_embeddings=max_len)  # fmt: skip
    save_phi4flash(build_phi4flash_preset(cfg, seed=seed), folder)
    write_byte_tokenizer(folder)
    return folder
