#!/usr/bin/env python3
"""Reads a GGUF file lop wrote with the `gguf` package (llama.cpp's own Python reader, from PyPI) and checks it
against the Hugging Face folder it was exported from.

Checks: the metadata llama.cpp needs for the architecture is present with the right types; per-layer FFN widths
equal the folder's (lop_ffn_sizes or intermediate_size); every tensor, dequantised by the package, equals the
source weight (q/k rows un-permuted for the llama and deci graphs):
exactly for F32, to F16/BF16 rounding, and within half a Q8_0 step (scale/2 per block) for Q8_0; the tokenizer's
tokens equal tokenizer.json's vocabulary by id.

An `mmproj` file (architecture `clip`) is checked against the LLaVA folder's vision tower and projector: the
`clip.*` keys, `fc1` under `ffn_down` and `fc2` under `ffn_up`, the position table rotated by one row (llama.cpp
appends the class token), and the image mean and std of preprocessor_config.json.

Usage: gguf_check.py FILE.gguf MODEL_DIR
Prints one JSON object: {"ok": bool, "problems": [...], "architecture": ..., "tensors": N, "widths": [...]}.
"""
import json
import os
import struct
import sys

import numpy as np
import gguf


def read_safetensors(folder):
    tensors = {}
    index = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    for name in files:
        raw = open(os.path.join(folder, name), "rb").read()
        (length,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + length])
        data = raw[8 + length:]
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            chunk = data[begin:end]
            if entry["dtype"] == "F32":
                array = np.frombuffer(chunk, dtype="<f4")
            elif entry["dtype"] == "F16":
                array = np.frombuffer(chunk, dtype="<f2").astype(np.float32)
            elif entry["dtype"] == "BF16":
                array = (np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                raise SystemExit(f"unexpected dtype {entry['dtype']}")
            tensors[key] = array.reshape(entry["shape"]).astype(np.float32)
    return tensors


def unpermute(w, heads):
    """The inverse of convert_hf_to_gguf's q/k permutation (rows within each head: 2i + j <- j*d/2 + i)."""
    rows = w.shape[0]
    d = rows // heads
    return w.reshape(heads, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    path, folder = sys.argv[1], sys.argv[2]
    problems = []
    reader = gguf.GGUFReader(path)
    fields = {f.name: f for f in reader.fields.values()}

    def value(key):
        f = fields.get(key)
        if f is None:
            return None
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
            if f.types[-1] == gguf.GGUFValueType.STRING:
                return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            return [f.parts[i].tolist()[0] for i in f.data]
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(f.parts[-1]).decode("utf-8")
        return f.parts[-1].tolist()[0]

    def expect_type(key, kind):
        f = fields.get(key)
        if f is None:
            problems.append(f"missing {key}")
        elif f.types[0] != kind:
            problems.append(f"{key} has type {f.types[0].name}, expected {kind.name}")

    config = json.load(open(os.path.join(folder, "config.json")))
    text = config.get("text_config", config)
    arch = value("general.architecture")
    if arch == "clip":
        return check_projector(reader, value, expect_type, config, folder, problems)
    expect_type("general.architecture", gguf.GGUFValueType.STRING)
    for key in ["context_length", "embedding_length", "block_count", "rope.dimension_count"]:
        expect_type(f"{arch}.{key}", gguf.GGUFValueType.UINT32)
    for key in ["rope.freq_base", "attention.layer_norm_rms_epsilon"]:
        expect_type(f"{arch}.{key}", gguf.GGUFValueType.FLOAT32)
    per_layer = arch == "deci"
    kind = gguf.GGUFValueType.ARRAY if per_layer else gguf.GGUFValueType.UINT32
    for key in ["feed_forward_length", "attention.head_count", "attention.head_count_kv"]:
        expect_type(f"{arch}.{key}", kind)
    layers = text["num_hidden_layers"]
    widths = text.get("lop_ffn_sizes") or [text["intermediate_size"]] * layers
    file_widths = value(f"{arch}.feed_forward_length")
    file_widths = file_widths if isinstance(file_widths, list) else [file_widths] * layers
    if per_layer and file_widths != widths:
        problems.append(f"feed_forward_length {file_widths} != the folder's widths {widths}")
    if not per_layer and any(w > file_widths[0] for w in widths):
        problems.append(f"feed_forward_length {file_widths[0]} is narrower than a layer of {max(widths)}")
    if value(f"{arch}.block_count") != layers:
        problems.append(f"block_count {value(f'{arch}.block_count')} != {layers}")

    source = read_safetensors(folder)
    body = next(p for p in ["model.language_model.", "language_model.model.", "model."] if p + "embed_tokens.weight" in source)
    head = next((h for h in ["lm_head.weight", "language_model.lm_head.weight"] if h in source), None)
    names = {"token_embd.weight": body + "embed_tokens.weight", "output_norm.weight": body + "norm.weight"}
    if head:
        names["output.weight"] = head
    parts = {"attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
             "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
             "attn_output.weight": "self_attn.o_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
             "attn_k.bias": "self_attn.k_proj.bias", "attn_v.bias": "self_attn.v_proj.bias",
             "ffn_norm.weight": "post_attention_layernorm.weight", "ffn_gate.weight": "mlp.gate_proj.weight",
             "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight"}
    for i in range(layers):
        for short, long in parts.items():
            if f"{body}layers.{i}.{long}" in source:
                names[f"blk.{i}.{short}"] = f"{body}layers.{i}.{long}"
    heads, kv = text["num_attention_heads"], text.get("num_key_value_heads", text["num_attention_heads"])
    seen = set()
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":
            continue
        if t.name not in names:
            problems.append(f"unexpected tensor {t.name}")
            continue
        seen.add(t.name)
        got = dequantized(t)
        if arch != "qwen2" and t.name.endswith(("attn_q.weight", "attn_k.weight", "attn_q.bias", "attn_k.bias")):
            got = unpermute(got, heads if "attn_q" in t.name else kv)
        check_values(t, got, source[names[t.name]], names[t.name], problems)
    for name in names:
        if name not in seen:
            problems.append(f"missing tensor {name}")

    tokenizer_file = os.path.join(folder, "tokenizer.json")
    if os.path.exists(tokenizer_file):
        tok = json.load(open(tokenizer_file))
        vocab = {i: t for t, i in tok["model"]["vocab"].items()}
        for a in tok.get("added_tokens", []):
            vocab[a["id"]] = a["content"]
        tokens = value("tokenizer.ggml.tokens") or []
        mismatched = [i for i, t in vocab.items() if i >= len(tokens) or tokens[i] != t]
        if mismatched:
            problems.append(f"tokenizer.ggml.tokens differ from tokenizer.json at ids {mismatched[:5]}")
    print(json.dumps({"ok": not problems, "problems": problems[:20], "architecture": arch, "tensors": len(reader.tensors),
                      "widths": file_widths}))


def dequantized(t):
    """A tensor's values as float32 in row-major shape, dequantised by the gguf package."""
    shape = tuple(int(x) for x in reversed(t.shape))
    return gguf.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)


def check_values(t, got, want, label, problems):
    """F32 exactly; F16/BF16 to their rounding; Q8_0 within half a step plus the F16 rounding of the scale."""
    if got.shape != want.shape:
        problems.append(f"{t.name}: shape {got.shape} != {label} {want.shape}")
        return
    kind = t.tensor_type
    if kind == gguf.GGMLQuantizationType.F32:
        bad = not np.array_equal(got, want)
    elif kind in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16):
        bad = not np.allclose(got, want, rtol=1e-2 if kind == gguf.GGMLQuantizationType.BF16 else 1e-3, atol=1e-6)
    elif kind == gguf.GGMLQuantizationType.Q8_0:
        blocks = want.reshape(-1, 32)
        step = np.abs(blocks).max(axis=1, keepdims=True) / 127
        # Half a step, plus the F16 rounding of the scale itself (at most 127 · 2^-11 steps).
        bad = np.any(np.abs(got.reshape(-1, 32) - blocks) > step * (0.5 + 127 / 2048) + 1e-7)
    else:
        problems.append(f"{t.name}: unexpected type {kind.name}")
        return
    if bad:
        problems.append(f"{t.name}: values differ from {label} beyond {kind.name} rounding")


def check_projector(reader, value, expect_type, config, folder, problems):
    vision = config["vision_config"]
    for key in ["has_vision_encoder", "has_llava_projector", "use_gelu"]:
        expect_type(f"clip.{key}", gguf.GGUFValueType.BOOL)
    expect_type("clip.projector_type", gguf.GGUFValueType.STRING)
    for key in ["image_size", "patch_size", "embedding_length", "feed_forward_length", "block_count", "attention.head_count", "projection_dim"]:
        expect_type(f"clip.vision.{key}", gguf.GGUFValueType.UINT32)
    expect_type("clip.vision.attention.layer_norm_epsilon", gguf.GGUFValueType.FLOAT32)
    for key in ["image_mean", "image_std", "feature_layer"]:
        expect_type(f"clip.vision.{key}", gguf.GGUFValueType.ARRAY)
    layers = vision["num_hidden_layers"]
    feature = config.get("vision_feature_layer", -2)
    used = feature if feature >= 0 else layers + 1 + feature
    if value("clip.vision.feature_layer") != [used] or value("clip.vision.block_count") != used:
        problems.append(f"feature_layer {value('clip.vision.feature_layer')} / block_count {value('clip.vision.block_count')} != {used}")
    pre = json.load(open(os.path.join(folder, "preprocessor_config.json")))
    for key in ["image_mean", "image_std"]:
        if not np.allclose(value(f"clip.vision.{key}"), pre[key]):
            problems.append(f"clip.vision.{key} {value(f'clip.vision.{key}')} != {pre[key]}")
    source = read_safetensors(folder)
    v = next(p for p in ["vision_tower.vision_model.", "model.vision_tower.vision_model.", "vision_tower."] if p + "embeddings.patch_embedding.weight" in source)
    mm = "model.multi_modal_projector." if "model.multi_modal_projector.linear_1.weight" in source else "multi_modal_projector."
    positions = source[v + "embeddings.position_embedding.weight"]
    names = {"v.patch_embd.weight": source[v + "embeddings.patch_embedding.weight"], "v.class_embd": source[v + "embeddings.class_embedding"],
             "v.position_embd.weight": np.concatenate([positions[1:], positions[:1]]),
             "v.pre_ln.weight": source[v + "pre_layrnorm.weight"], "v.pre_ln.bias": source[v + "pre_layrnorm.bias"],
             "mm.0.weight": source[mm + "linear_1.weight"], "mm.0.bias": source[mm + "linear_1.bias"],
             "mm.2.weight": source[mm + "linear_2.weight"], "mm.2.bias": source[mm + "linear_2.bias"]}
    parts = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_out": "self_attn.out_proj",
             "ffn_down": "mlp.fc1", "ffn_up": "mlp.fc2", "ln1": "layer_norm1", "ln2": "layer_norm2"}
    for i in range(used):
        for short, long in parts.items():
            for suffix in ["weight", "bias"]:
                names[f"v.blk.{i}.{short}.{suffix}"] = source[f"{v}encoder.layers.{i}.{long}.{suffix}"]
    seen = set()
    for t in reader.tensors:
        if t.name not in names:
            problems.append(f"unexpected tensor {t.name}")
            continue
        seen.add(t.name)
        check_values(t, dequantized(t), names[t.name], t.name, problems)
    for name in names:
        if name not in seen:
            problems.append(f"missing tensor {name}")
    print(json.dumps({"ok": not problems, "problems": problems[:20], "architecture": "clip", "tensors": len(reader.tensors), "widths": []}))


if __name__ == "__main__":
    main()
