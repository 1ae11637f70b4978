#!/usr/bin/env python3
"""PyTorch + transformers beside lop, for `lop bench engine`.

Loads a Hugging Face Llama folder with transformers (float32, as lop computes), runs the same windows of the
same token file through it, and prints one JSON object: the mean next-token loss, load and forward seconds,
tokens per second and the peak resident set size.

Set-up (on a developer machine; CI never runs this):
    python3 -m venv /path/to/venv && /path/to/venv/bin/pip install torch transformers safetensors numpy
    lop bench engine --python /path/to/venv/bin/python

Usage: engine_reference.py MODEL_DIR TOKENS.bin --context 128 --windows 8 --threads 2 [--layerwise]
(TOKENS.bin: little-endian uint16 ids, as lop reads `.bin` token files.)

--layerwise runs the same transformers modules (embedding, LlamaDecoderLayer, norm, head) one layer at a time,
loading each layer's weights as float32 just before it runs and dropping them after: a 7 B model in float32
(27 GB) does not fit a 24 GB machine whole. Only the layers' compute is timed then; the load time is the
summed weight reads, and the peak RSS is one layer's float32 weights plus the pages of the file that
safetensors maps.
"""
import argparse
import json
import os
import resource
import sys
import time

# Offline, quiet: the model is a local folder, and the progress bars would go into lop's table output.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("tokens")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layerwise", action="store_true")
    args = parser.parse_args()

    try:
        import numpy as np
        import torch
        import transformers
    except ImportError as error:  # the caller prints this in the table
        print(json.dumps({"error": f"PyTorch or transformers is not installed: {error}"}))
        return 0

    torch.set_num_threads(args.threads)
    ids = np.fromfile(args.tokens, dtype="<u2").astype(np.int64)
    needed = args.windows * args.context + 1
    if ids.size < needed:
        print(json.dumps({"error": f"{args.tokens} holds {ids.size} tokens; {needed} are needed"}))
        return 1
    # lop's windows: context + 1 tokens each, back to back, the last token of one starting the next.
    windows = np.stack([ids[i * args.context: i * args.context + args.context + 1] for i in range(args.windows)])
    inputs, targets = torch.from_numpy(windows[:, :-1]), torch.from_numpy(windows[:, 1:])

    if args.layerwise:
        logits, load_seconds, forward_seconds = layerwise(args.model, inputs, torch, transformers)
    else:
        started = time.perf_counter()
        model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        model.eval()
        load_seconds = time.perf_counter() - started
        with torch.inference_mode():
            started = time.perf_counter()
            logits = model(input_ids=inputs).logits
            forward_seconds = time.perf_counter() - started
    with torch.inference_mode():
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), targets.reshape(-1)).item()

    print(json.dumps({
        "loss": loss,
        "load_seconds": load_seconds,
        "forward_seconds": forward_seconds,
        "tokens": int(targets.numel()),
        "tokens_per_second": targets.numel() / forward_seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "layerwise": args.layerwise,
    }))
    return 0


def layerwise(folder, inputs, torch, transformers):
    """LlamaModel.forward's steps with transformers' own modules, each layer's weights loaded only for its turn."""
    from safetensors import safe_open
    from transformers.masking_utils import create_causal_mask

    config = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    load_seconds = forward_seconds = 0.0
    with safe_open(folder + "/model.safetensors", framework="pt") as weights:
        def load(module, prefix):
            nonlocal load_seconds
            started = time.perf_counter()
            module.to_empty(device="cpu")
            state = {name: weights.get_tensor(prefix + name).float() for name in module.state_dict()}
            module.load_state_dict(state)
            load_seconds += time.perf_counter() - started

        def timed(body):
            nonlocal forward_seconds
            started = time.perf_counter()
            with torch.inference_mode():
                result = body()
            forward_seconds += time.perf_counter() - started
            return result

        inner = model.model
        load(inner.embed_tokens, "model.embed_tokens.")
        hidden = timed(lambda: inner.embed_tokens(inputs))
        inner.embed_tokens.to("meta")
        rotary = type(inner.rotary_emb)(config=config)
        positions = torch.arange(inputs.shape[1]).unsqueeze(0)
        mask = create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=None, cache=None, position_ids=positions)
        embeddings = timed(lambda: rotary(hidden, position_ids=positions))
        for index, layer in enumerate(inner.layers):
            load(layer, f"model.layers.{index}.")
            hidden = timed(lambda: layer(hidden, attention_mask=mask, position_embeddings=embeddings, position_ids=positions))
            layer.to("meta")
        load(inner.norm, "model.norm.")
        hidden = timed(lambda: inner.norm(hidden))
        head = "model.embed_tokens." if config.tie_word_embeddings else "lm_head."
        load(model.lm_head, head)
        logits = timed(lambda: model.lm_head(hidden))
    return logits, load_seconds, forward_seconds


if __name__ == "__main__":
    sys.exit(main())
