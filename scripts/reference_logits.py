#!/usr/bin/env python3
"""Independent NumPy reference for lop's model engine.

Reads a Hugging Face model folder (config.json + safetensors, sharded or not) with its own safetensors
parser, runs the Llama decoder or the LLaVA model in float64 following the Hugging Face modelling code, and
prints the logits. lop's tests compare their own logits against these.

Input (the file named by the first argument, or stdin; JSON): {"model": DIR, "tokens": [[id, ...], ...], "images": [[[[...]]]] (optional, one per row
holding image tokens, [channels][size][size])}
Output (stdout, JSON): {"shape": [rows, vocab], "logits": [...flat...]}
"""
import json
import math
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length].decode("utf-8"))
    data = raw[8 + length:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        chunk = data[begin:end]
        shape = entry["shape"]
        if entry["dtype"] == "F32":
            array = np.frombuffer(chunk, dtype="<f4").astype(np.float64)
        elif entry["dtype"] == "F16":
            array = np.frombuffer(chunk, dtype="<f2").astype(np.float64)
        elif entry["dtype"] == "BF16":
            bits = np.frombuffer(chunk, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32).astype(np.float64)
        else:
            raise ValueError(f"unsupported dtype {entry['dtype']}")
        tensors[name] = array.reshape(shape)
    return tensors


def read_model(directory):
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(directory, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        for name in files:
            weights.update(read_safetensors(os.path.join(directory, name)))
    else:
        weights.update(read_safetensors(os.path.join(directory, "model.safetensors")))
    return config, weights


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


ACTIVATIONS = {
    "gelu": gelu,
    "quick_gelu": lambda x: x / (1.0 + np.exp(-1.702 * x)),
    "gelu_pytorch_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "gelu_new": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0),
}


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def layer_norm(x, w, b, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def attention(q, k, v, heads, kv_heads, causal):
    """q: [T, heads*d], k/v: [S, kv_heads*d]."""
    t, s = q.shape[0], k.shape[0]
    d = q.shape[1] // heads
    out = np.zeros_like(q)
    for h in range(heads):
        g = h // (heads // kv_heads)
        qh, kh, vh = q[:, h * d:(h + 1) * d], k[:, g * d:(g + 1) * d], v[:, g * d:(g + 1) * d]
        scores = qh @ kh.T / math.sqrt(d)
        if causal:
            mask = np.triu(np.ones((t, s), dtype=bool), k=1 + s - t)
            scores = np.where(mask, -np.inf, scores)
        out[:, h * d:(h + 1) * d] = softmax(scores) @ vh
    return out


def rope(x, heads, theta):
    t = x.shape[0]
    d = x.shape[1] // heads
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    angles = np.outer(np.arange(t, dtype=np.float64), inv)
    cos = np.concatenate([np.cos(angles)] * 2, axis=1)
    sin = np.concatenate([np.sin(angles)] * 2, axis=1)
    out = np.empty_like(x)
    for h in range(heads):
        xh = x[:, h * d:(h + 1) * d]
        rotated = np.concatenate([-xh[:, d // 2:], xh[:, :d // 2]], axis=1)
        out[:, h * d:(h + 1) * d] = xh * cos + rotated * sin
    return out


def llama(config, w, prefix, embeddings, hidden_states=None):
    """embeddings: [T, hidden] for one row; returns logits [T, vocab]. Appends each layer's FFN hidden
    activation [T, width] to hidden_states when given."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    eps = config.get("rms_norm_eps", 1e-6)
    theta = config.get("rope_theta", 10000.0)
    x = embeddings
    for i in range(config["num_hidden_layers"]):
        p = f"{prefix}model.layers.{i}."

        def proj(name, h):
            y = h @ w[p + name + ".weight"].T
            bias = w.get(p + name + ".bias")
            return y if bias is None else y + bias

        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = rope(proj("self_attn.q_proj", h), heads, theta)
        k = rope(proj("self_attn.k_proj", h), kv_heads, theta)
        v = proj("self_attn.v_proj", h)
        x = x + proj("self_attn.o_proj", attention(q, k, v, heads, kv_heads, True))
        m = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = m @ w[p + "mlp.gate_proj.weight"].T
        up = m @ w[p + "mlp.up_proj.weight"].T
        ffn = ACTIVATIONS["silu"](gate) * up
        if hidden_states is not None:
            hidden_states.append(ffn)
        x = x + ffn @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w[prefix + "model.norm.weight"], eps)
    head = w.get(prefix + "lm_head.weight", w[prefix + "model.embed_tokens.weight"])
    return x @ head.T


def clip_hidden_states(config, w, prefix, image):
    """image: [C, S, S]; returns the list of hidden states [1 + patches, hidden] (embeddings, then each layer)."""
    p = config["patch_size"]
    c, s, _ = image.shape
    side = s // p
    kernel = w[prefix + "embeddings.patch_embedding.weight"]  # [hidden, C, p, p]
    patches = []
    for py in range(side):
        for px in range(side):
            block = image[:, py * p:(py + 1) * p, px * p:(px + 1) * p]
            patches.append(np.tensordot(kernel, block, axes=([1, 2, 3], [0, 1, 2])))
    x = np.vstack([w[prefix + "embeddings.class_embedding"][None, :], np.array(patches)])
    x = x + w[prefix + "embeddings.position_embedding.weight"]
    eps = config.get("layer_norm_eps", 1e-5)
    act = ACTIVATIONS[config.get("hidden_act", "quick_gelu")]
    x = layer_norm(x, w[prefix + "pre_layrnorm.weight"], w[prefix + "pre_layrnorm.bias"], eps)
    states = [x]
    heads = config["num_attention_heads"]
    for i in range(config["num_hidden_layers"]):
        l = f"{prefix}encoder.layers.{i}."

        def lin(name, h):
            return h @ w[l + name + ".weight"].T + w[l + name + ".bias"]

        a = layer_norm(x, w[l + "layer_norm1.weight"], w[l + "layer_norm1.bias"], eps)
        x = x + lin("self_attn.out_proj", attention(lin("self_attn.q_proj", a), lin("self_attn.k_proj", a),
                                                     lin("self_attn.v_proj", a), heads, heads, False))
        m = layer_norm(x, w[l + "layer_norm2.weight"], w[l + "layer_norm2.bias"], eps)
        x = x + lin("mlp.fc2", act(lin("mlp.fc1", m)))
        states.append(x)
    return states


def main():
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            request = json.load(f)
    else:
        request = json.load(sys.stdin)
    config, w = read_model(request["model"])
    rows = []
    if config.get("model_type") == "llava":
        text = config["text_config"]
        images = iter(request.get("images", []))
        image_token = config["image_token_index"]
        for row in request["tokens"]:
            x = w["language_model.model.embed_tokens.weight"][row]
            positions = [i for i, t in enumerate(row) if t == image_token]
            if positions:
                image = np.array(next(images), dtype=np.float64)
                states = clip_hidden_states(config["vision_config"], w, "vision_tower.vision_model.", image)
                feature = states[config.get("vision_feature_layer", -2)]
                if config.get("vision_feature_select_strategy", "default") == "default":
                    feature = feature[1:]
                hidden = ACTIVATIONS[config.get("projector_hidden_act", "gelu")](
                    feature @ w["multi_modal_projector.linear_1.weight"].T + w["multi_modal_projector.linear_1.bias"])
                feature = hidden @ w["multi_modal_projector.linear_2.weight"].T + w["multi_modal_projector.linear_2.bias"]
                x = x.copy()
                x[positions] = feature
            rows.append(llama(text, w, "language_model.", x))
    else:
        per_row = []
        for row in request["tokens"]:
            states = []
            rows.append(llama(config, w, "", w["model.embed_tokens.weight"][row], states))
            per_row.append(states)
    logits = np.vstack(rows)
    reply = {"shape": list(logits.shape), "logits": [float(v) for v in logits.ravel()]}
    if request.get("importance") and config.get("model_type") != "llava":
        # LOP's criterion per layer: per row, each token's activation over its L2 norm, then the L2 norm
        # over tokens per neuron; averaged over rows. Also each neuron's activation norm over all tokens.
        lop, norms = [], []
        for layer in range(len(per_row[0])):
            scores = [np.sqrt(((h / np.linalg.norm(h, axis=1, keepdims=True)) ** 2).sum(axis=0)) for h in (r[layer] for r in per_row)]
            lop.append([float(v) for v in np.mean(scores, axis=0)])
            norms.append([float(v) for v in np.sqrt(sum((r[layer] ** 2).sum(axis=0) for r in per_row))])
        reply["lop"], reply["hidden_norms"] = lop, norms
    json.dump(reply, sys.stdout)


if __name__ == "__main__":
    main()
