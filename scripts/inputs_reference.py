#!/usr/bin/env python3
"""Hugging Face tokenizers, Pillow and transformers beside lop, for `lop bench inputs`.

Times what lop's input path does, the way a user's Python pipeline does it: load a tokenizer.json with
`tokenizers`, encode a text file (one call, special tokens added), and decode + preprocess an image file with
Pillow and transformers' Pillow-backend image processor built from a preprocessor_config.json. Prints one JSON
object with median seconds and the ids' count (lop checks it has the same).

Set-up (on a developer machine; CI never runs this):
    python3 -m venv /path/to/venv && /path/to/venv/bin/pip install tokenizers pillow transformers torch numpy
    lop bench inputs --python /path/to/venv/bin/python

Usage: inputs_reference.py TOKENIZER.json TEXT_FILE PREPROCESSOR_DIR IMAGE [IMAGE ...] --repeats N
"""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def median_seconds(repeats, body):
    body()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        body()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("tokenizer")
    parser.add_argument("text")
    parser.add_argument("preprocessor")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from PIL import Image
    from tokenizers import Tokenizer
    from transformers import AutoImageProcessor

    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    load = median_seconds(args.repeats, lambda: Tokenizer.from_file(args.tokenizer))
    tokenizer = Tokenizer.from_file(args.tokenizer)
    ids = tokenizer.encode(text).ids
    encode = median_seconds(args.repeats, lambda: tokenizer.encode(text))
    processor = AutoImageProcessor.from_pretrained(args.preprocessor, backend="pil")
    images = {}
    for path in args.images:
        def run(path=path):
            with Image.open(path) as image:
                processor(images=image, return_tensors="np")
        images[os.path.basename(path)] = median_seconds(args.repeats, run)
    print(json.dumps({"load": load, "encode": encode, "ids": len(ids), "images": images}))


if __name__ == "__main__":
    main()
