#!/usr/bin/env python3
"""Writes tiny-qwen2.gguf for crates/kolm-train/tests/qwen2.rs: a two-layer
Qwen2 (q/k/v biases, NeoX rotary, grouped KV heads) with seeded random f32
weights and a byte-level SentencePiece vocabulary. No Qwen2 weights ship in
the registry packages kolm's tests use, so this checks the architecture
against llama.cpp's own Qwen2 graph instead. Deterministic: run it again (in
the venv of scripts/pyref-venv.sh, which has `gguf` and numpy) to rewrite
the file byte for byte."""
import os

import gguf
import numpy as np

E, HEADS, KV_HEADS, LAYERS, FF = 64, 4, 2, 2, 128
HEAD_DIM = E // HEADS
TOKENS = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
VOCAB = len(TOKENS)

rng = np.random.default_rng(7)


def normal(shape, std):
    return (rng.standard_normal(shape) * std).astype(np.float32)


def linear(out_dim, in_dim):
    return normal((out_dim, in_dim), 1.0 / np.sqrt(in_dim))


def norm():
    return (1.0 + normal((E,), 0.1)).astype(np.float32)


out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-qwen2.gguf")
w = gguf.GGUFWriter(out, "qwen2")
w.add_name("tiny-qwen2 (random weights, tests only)")
w.add_context_length(256)
w.add_embedding_length(E)
w.add_block_count(LAYERS)
w.add_feed_forward_length(FF)
w.add_head_count(HEADS)
w.add_head_count_kv(KV_HEADS)
w.add_rope_freq_base(1_000_000.0)
w.add_layer_norm_rms_eps(1e-6)
w.add_file_type(0)  # all F32
w.add_tokenizer_model("llama")
w.add_token_list(TOKENS)
w.add_token_scores([0.0] * VOCAB)
# UNKNOWN = 2, CONTROL = 3, BYTE = 6
w.add_token_types([2, 3, 3] + [6] * 256)
w.add_unk_token_id(0)
w.add_bos_token_id(1)
w.add_eos_token_id(2)

w.add_tensor("token_embd.weight", normal((VOCAB, E), 1.0))
for i in range(LAYERS):
    p = f"blk.{i}."
    w.add_tensor(p + "attn_norm.weight", norm())
    w.add_tensor(p + "attn_q.weight", linear(HEADS * HEAD_DIM, E))
    w.add_tensor(p + "attn_q.bias", normal((HEADS * HEAD_DIM,), 0.5))
    w.add_tensor(p + "attn_k.weight", linear(KV_HEADS * HEAD_DIM, E))
    w.add_tensor(p + "attn_k.bias", normal((KV_HEADS * HEAD_DIM,), 0.5))
    w.add_tensor(p + "attn_v.weight", linear(KV_HEADS * HEAD_DIM, E))
    w.add_tensor(p + "attn_v.bias", normal((KV_HEADS * HEAD_DIM,), 0.5))
    w.add_tensor(p + "attn_output.weight", linear(E, HEADS * HEAD_DIM))
    w.add_tensor(p + "ffn_norm.weight", norm())
    w.add_tensor(p + "ffn_gate.weight", linear(FF, E))
    w.add_tensor(p + "ffn_up.weight", linear(FF, E))
    w.add_tensor(p + "ffn_down.weight", linear(E, FF))
w.add_tensor("output_norm.weight", norm())
w.add_tensor("output.weight", linear(VOCAB, E))

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"wrote {out}")
