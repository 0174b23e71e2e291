"""Makes a tiny random-weight Llama model with a byte-level BPE tokenizer, offline.

Usage: python make-tiny-model.py DIR

The weights are random (seeded), so the text it writes is junk but greedy decoding is
deterministic: tests assert on token ids, usage and finish reasons, never on text.
Shape: hidden 128, 2 layers, 4 heads, 2 KV heads, head_dim 32 (vLLM's CPU attention
backend rejects head_dim 16); vocabulary = the tokenizer's size.
"""

import json
import os
import sys

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<s>", "</s>", "<unk>", "<|end|>"]


def corpus():
    words = (
        "the quick brown fox jumps over the lazy dog while cohort routes prefill and "
        "decode requests across nodes of a slurm allocation with kv aware routing"
    ).split()
    for i in range(2000):
        yield " ".join(words[(i + j) % len(words)] for j in range(12))


def main(out):
    os.makedirs(out, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}, f)
    print(f"tiny model: vocab {len(fast)}, {sum(p.numel() for p in model.parameters())} parameters -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
