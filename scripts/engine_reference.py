#!/usr/bin/env python3
"""PyTorch + transformers beside lop, for `lop bench engine`.

Loads a Hugging Face Llama folder with transformers (float32, as lop computes), runs the same windows of the
same token file through it, and prints one JSON object: the mean next-token loss, load and forward seconds,
tokens per second and the peak resident set size.

Set-up (on a developer machine; CI never runs this):
    python3 -m venv /path/to/venv && /path/to/venv/bin/pip install torch transformers safetensors numpy
    lop bench engine --python /path/to/venv/bin/python

Usage: engine_reference.py MODEL_DIR TOKENS.bin --context 128 --windows 8 --threads 2
(TOKENS.bin: little-endian uint16 ids, as lop reads `.bin` token files.)
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

    started = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    load_seconds = time.perf_counter() - started

    with torch.inference_mode():
        started = time.perf_counter()
        logits = model(input_ids=inputs).logits
        forward_seconds = time.perf_counter() - started
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
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
