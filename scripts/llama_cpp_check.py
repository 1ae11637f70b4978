#!/usr/bin/env python3
"""Developer check: llama.cpp itself runs lop's GGUF exports (CI never runs this).

It needs llama-cpp-python, which builds llama.cpp from source (it fetches cmake from PyPI):
    python3 -m venv /path/to/venv && /path/to/venv/bin/pip install llama-cpp-python numpy
    /path/to/venv/bin/python scripts/llama_cpp_check.py .build/release/lop /tmp/lop-llama-cpp [--big MODEL_DIR]

1. Logits. tiny-llama is pruned by lop twice: uniformly (llama.cpp's `llama` architecture) and with OWL's
   per-layer widths (`deci`). Each is exported as F32, F16 and Q8_0. So is a random Qwen2 with q/k/v biases pruned
   to widths 32/96/64 (deci with biases); transformers loads the uniform folder as it is. llama.cpp's logits for 64 held-out tokens are
   compared with the float64 NumPy reference (scripts/reference_logits.py) on the same folder (llama.cpp's key/value
   cache in F32, so that only the weights' type differs). With --big, a
   1.1B-shaped random checkpoint (from `lop bench engine`) is exported as F16 and compared on 16 tokens too.
2. Images. tiny-llava is exported as its language model and its mmproj; llama.cpp's multimodal library (mtmd)
   encodes a 24 × 24 image, and its image embeddings are compared with the NumPy reference's projected features.
   Then tiny-llava pruned by OWL to 0.5 answers 12 questions about three drawn shapes images through llama.cpp
   (greedy decoding to EOS), beside lop's exact-match accuracy on the same files.
3. Tokenization. For each committed reference tokenizer (Tests/References/inputs/tokenizers), a tiny random
   Llama with that vocabulary is written and exported by lop. llama.cpp loads it vocab-only and tokenizes the
   cases' texts; its ids are compared with those of Hugging Face `tokenizers`.

Prints one JSON object per line, and a summary last.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(argv):
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def reference_logits(folder, tokens, workdir):
    request = os.path.join(workdir, "request.json")
    with open(request, "w") as f:
        json.dump({"model": folder, "tokens": [tokens]}, f)
    out = json.loads(run([sys.executable, os.path.join(ROOT, "scripts", "reference_logits.py"), request]))
    return np.array(out["logits"], dtype=np.float64).reshape(out["shape"])


def llama_cpp_logits(path, tokens):
    from llama_cpp import Llama
    # An F32 key/value cache: llama.cpp's default F16 cache alone moves the logits by ~1e-3 of their range.
    llm = Llama(model_path=path, n_ctx=max(64, len(tokens) + 8), logits_all=True, verbose=False, n_threads=2, n_batch=len(tokens),
                type_k=0, type_v=0)
    llm.eval(tokens)
    logits = np.array(llm.scores[:len(tokens)], dtype=np.float64)
    del llm
    return logits


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def random_qwen2(out):
    """A 3-layer Qwen2 with non-zero q/k/v biases, byte vocabulary (260), and the fixtures' tokenizer files."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(2)
    v, h, f, layers, heads, kv = 260, 64, 128, 3, 4, 2
    d = h // heads
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": v, "hidden_size": h, "intermediate_size": f,
              "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "max_position_embeddings": 256,
              "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False, "use_sliding_window": False}
    json.dump(config, open(os.path.join(out, "config.json"), "w"))
    t = {"model.embed_tokens.weight": rng.normal(0, 0.5, (v, h)), "model.norm.weight": 1 + rng.normal(0, 0.1, h),
         "lm_head.weight": rng.normal(0, 0.2, (v, h))}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + rng.normal(0, 0.1, h)
        t[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.1, h)
        for name, rows in [("q_proj", heads * d), ("k_proj", kv * d), ("v_proj", kv * d)]:
            t[p + f"self_attn.{name}.weight"] = rng.normal(0, 0.15, (rows, h))
            t[p + f"self_attn.{name}.bias"] = rng.normal(0, 0.2, rows)
        t[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.15, (h, heads * d))
        t[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.15, (f, h))
        t[p + "mlp.up_proj.weight"] = rng.normal(0, 0.15, (f, h))
        t[p + "mlp.down_proj.weight"] = rng.normal(0, 0.15, (h, f))
    write_safetensors(os.path.join(out, "model.safetensors"), t)
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(ROOT, "Fixtures", "tiny-llama", name), os.path.join(out, name))


def transformers_check(folder, tokens, work):
    """transformers loads a uniform variant's folder as it is (a plain intermediate_size) and computes its logits."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        return {"transformers": "not installed"}
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    with torch.no_grad():
        got = model(torch.tensor([tokens])).logits[0].double().numpy()
    reference = reference_logits(folder, tokens, work)
    return {"transformers": "loaded", "relative_error": float(np.abs(got - reference).max() / np.abs(reference).max())}


def tiny_llama_with(tokenizer_dir, out, vocab):
    """A one-layer random Llama whose embedding covers `vocab` ids, with the tokenizer's files beside it."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    h, f = 32, 64
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": h,
              "intermediate_size": f, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
              "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
              "tie_word_embeddings": False}
    json.dump(config, open(os.path.join(out, "config.json"), "w"))
    p = "model.layers.0."
    tensors = {"model.embed_tokens.weight": rng.normal(0, 0.02, (vocab, h)), "model.norm.weight": np.ones(h),
               "lm_head.weight": rng.normal(0, 0.02, (vocab, h)), p + "input_layernorm.weight": np.ones(h),
               p + "post_attention_layernorm.weight": np.ones(h)}
    for name in ["q_proj", "k_proj", "v_proj", "o_proj"]:
        tensors[p + f"self_attn.{name}.weight"] = rng.normal(0, 0.02, (h, h))
    tensors[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.02, (f, h))
    tensors[p + "mlp.up_proj.weight"] = rng.normal(0, 0.02, (f, h))
    tensors[p + "mlp.down_proj.weight"] = rng.normal(0, 0.02, (h, f))
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    shutil.copy(os.path.join(tokenizer_dir, "tokenizer.json"), os.path.join(out, "tokenizer.json"))


def mmproj_check(lop, work):
    """llama.cpp's embeddings of one image against transformers' LLaVA features (NumPy, float64)."""
    import ctypes
    from llama_cpp import Llama
    from llama_cpp import mtmd_cpp as mtmd
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import reference_logits as ref

    folder = os.path.join(ROOT, "Fixtures", "tiny-llava")
    lm, projector = os.path.join(work, "llava.gguf"), os.path.join(work, "llava-mmproj.gguf")
    run([lop, "export", folder, "--format", "gguf", "--type", "f32", "--out", lm, "--mmproj", projector])
    image = np.random.default_rng(1).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    llm = Llama(model_path=lm, n_ctx=128, verbose=False)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.warmup = False, 2, False
    ctx = mtmd.mtmd_init_from_file(projector.encode(), llm._model.model, params)
    if not ctx:
        return {"loaded": False}
    bitmap = mtmd.mtmd_bitmap_init(24, 24, (ctypes.c_uint8 * image.size).from_buffer_copy(image.tobytes()))
    chunks = mtmd.mtmd_input_chunks_init()
    text = mtmd.mtmd_input_text()
    prompt = mtmd.mtmd_default_marker() + b"Q: how many shapes? A: "
    text.text, text.text_len, text.add_special, text.parse_special = prompt, len(prompt), True, True
    if mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) != 0:
        return {"loaded": True, "tokenized": False}
    got = None
    hidden = json.load(open(os.path.join(folder, "config.json")))["text_config"]["hidden_size"]
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        if mtmd.mtmd_input_chunk_get_type(chunk) == 1:  # an image
            n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            mtmd.mtmd_encode_chunk(ctx, chunk)
            got = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=(n * hidden,)).reshape(n, hidden).astype(np.float64)
    config, w = ref.read_model(folder)
    pixels = ((image.astype(np.float64) / 255 - 0.5) / 0.5).transpose(2, 0, 1)
    states = ref.clip_hidden_states(config["vision_config"], w, "vision_tower.vision_model.", pixels)
    features = states[config.get("vision_feature_layer", -2)][1:]
    act = ref.ACTIVATIONS[config.get("projector_hidden_act", "gelu")]
    want = act(features @ w["multi_modal_projector.linear_1.weight"].T + w["multi_modal_projector.linear_1.bias"])
    want = want @ w["multi_modal_projector.linear_2.weight"].T + w["multi_modal_projector.linear_2.bias"]
    scale = np.abs(want).max()
    # llama.cpp's rows 0..N-2 are transformers' patches 1..N-1; its last row is the class token (see the README).
    return {"loaded": True, "image_tokens": int(got.shape[0]), "expected_tokens": int(want.shape[0]),
            "relative_error_patches_2_to_N": float(np.abs(got[:-1] - want[1:]).max() / scale),
            "relative_error_all_in_order": float(np.abs(got - want).max() / scale)}


COLORS = {"red": [0.9, 0.1, 0.1], "green": [0.1, 0.8, 0.1], "blue": [0.15, 0.25, 0.95], "yellow": [0.95, 0.9, 0.1]}
KINDS = ["square", "circle", "triangle"]
QUADRANTS = ["top left", "top right", "bottom left", "bottom right"]


def shapes_image(shapes):
    """tiny-llava's task image (Sources/Fixtures/ShapesDataset.swift's renderer): (colour, kind, quadrant) each."""
    s, half, r = 24, 12, 4
    pixels = np.full((s, s, 3), 0.12)
    for color, kind, quadrant in shapes:
        q = QUADRANTS.index(quadrant)
        cx, cy = (q % 2) * half + half // 2, (q // 2) * half + half // 2
        for y in range(s):
            for x in range(s):
                dx, dy = x - cx, y - cy
                inside = [abs(dx) <= r and abs(dy) <= r, dx * dx + dy * dy <= r * r + 1, -r <= dy <= r and abs(dx) * 2 <= dy + r][KINDS.index(kind)]
                if inside:
                    pixels[y, x] = COLORS[color]
    return np.round(pixels * 255).astype(np.uint8)


QUESTIONS = [
    ([("red", "square", "top left"), ("blue", "circle", "bottom right")],
     [("how many shapes?", "2"), ("what color is the shape at bottom right?", "blue"), ("what shape is red?", "square"),
      ("where is the blue shape?", "bottom right"), ("is there a red square?", "yes")]),
    ([("green", "triangle", "top right")],
     [("how many shapes?", "1"), ("what shape is green?", "triangle"), ("is there a blue circle?", "no"),
      ("what color is the shape at top right?", "green")]),
    ([("yellow", "circle", "bottom left"), ("red", "triangle", "top right"), ("green", "square", "bottom right")],
     [("how many shapes?", "3"), ("what shape is yellow?", "circle"), ("where is the green shape?", "bottom right")]),
]


def answers_check(lop, work):
    """A pruned tiny-llava's language model and mmproj answer image questions through llama.cpp (greedy, to EOS),
    beside lop's exact-match accuracy on the same images and questions."""
    import ctypes
    import llama_cpp
    from llama_cpp import Llama
    from llama_cpp import mtmd_cpp as mtmd
    from PIL import Image

    # tiny-llava pruned to half its language FFNs by OWL's per-layer widths (llama.cpp's deci), exported.
    folder = os.path.join(work, "llava-pruned")
    run([lop, "prune", os.path.join(ROOT, "Fixtures", "tiny-llava"), "--budget", "0.5", "--strategy", "owl", "--calibration", "shapes-train",
         "--out", folder, "--dtype", "f32"])
    lm, projector = os.path.join(work, "llava-pruned.gguf"), os.path.join(work, "llava-pruned-mmproj.gguf")
    run([lop, "export", folder, "--format", "gguf", "--type", "f32", "--out", lm, "--mmproj", projector])
    llm = Llama(model_path=lm, n_ctx=256, verbose=False, n_threads=2)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.warmup = False, 2, False
    ctx = mtmd.mtmd_init_from_file(projector.encode(), llm._model.model, params)
    rows, lines = [], []
    os.makedirs(os.path.join(work, "shapes"), exist_ok=True)
    for i, (shapes, questions) in enumerate(QUESTIONS):
        image = shapes_image(shapes)
        Image.fromarray(image).save(os.path.join(work, "shapes", f"{i}.png"))
        for question, expected in questions:
            lines.append(json.dumps({"image": f"shapes/{i}.png", "prompt": f"<image>Q: {question} A: ", "answer": expected}))
            llm.reset()
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm._ctx.ctx), True)
            bitmap = mtmd.mtmd_bitmap_init(24, 24, (ctypes.c_uint8 * image.size).from_buffer_copy(image.tobytes()))
            chunks = mtmd.mtmd_input_chunks_init()
            text = mtmd.mtmd_input_text()
            prompt = mtmd.mtmd_default_marker() + f"Q: {question} A: ".encode()
            text.text, text.text_len, text.add_special, text.parse_special = prompt, len(prompt), True, True
            mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1)
            n_past = llama_cpp.llama_pos(0)
            mtmd.mtmd_helper_eval_chunks(ctx, llm._ctx.ctx, chunks, 0, 0, 64, True, ctypes.byref(n_past))
            answer = []
            for _ in range(16):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
                token = int(logits.argmax())
                if token == 257:  # </s>
                    break
                answer.append(token)
                batch = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(token), 1)
                llama_cpp.llama_decode(llm._ctx.ctx, batch)
            said = bytes(t for t in answer if t < 256).decode("utf-8", "replace")
            rows.append({"question": question, "expected": expected, "llama.cpp": said})
    data = os.path.join(work, "shapes.jsonl")
    open(data, "w").write("\n".join(lines) + "\n")
    lop_accuracy = json.loads(run([lop, "eval", folder, "--data", data, "--json"]))["accuracy"]
    right = sum(r["expected"] == r["llama.cpp"] for r in rows)
    return {"questions": len(rows), "llama.cpp right": right, "lop accuracy": lop_accuracy, "answers": rows}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("lop")
    parser.add_argument("workdir")
    parser.add_argument("--big", help="a 1.1B-shaped model folder (lop bench engine writes one)")
    args = parser.parse_args()
    lop, work = os.path.abspath(args.lop), os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    summary = {"logits": [], "tokenization": []}

    fixture = os.path.join(ROOT, "Fixtures", "tiny-llama")
    heldout = np.fromfile(os.path.join(fixture, "heldout.bin"), dtype="<u2")[:64].tolist()
    variants = {
        "uniform": ["--strategy", "uniform", "--importance", "magnitude"],
        "owl": ["--strategy", "owl", "--calibration", "corpus", "--alignment", "32"],
    }
    for name, flags in variants.items():
        folder = os.path.join(work, name)
        run([lop, "prune", fixture, "--budget", "0.5", "--out", folder, "--dtype", "f32"] + flags)
        reference = reference_logits(folder, heldout, work)
        for kind in ["f32", "f16", "q8_0"]:
            path = os.path.join(work, f"{name}-{kind}.gguf")
            printed = run([lop, "export", folder, "--format", "gguf", "--type", kind, "--out", path])
            got = llama_cpp_logits(path, heldout)
            error = float(np.abs(got - reference).max() / np.abs(reference).max())
            agree = float(np.mean(got.argmax(1) == reference.argmax(1)))
            row = {"variant": name, "type": kind, "architecture": printed.split("architecture ")[1].split(",")[0],
                   "relative_error": error, "argmax_agreement": agree}
            print(json.dumps(row), flush=True)
            summary["logits"].append(row)

    # transformers reads the uniform variant's plain config.
    row = dict(variant="uniform", runtime="transformers", **transformers_check(os.path.join(work, "uniform"), heldout, work))
    print(json.dumps(row), flush=True)
    summary["logits"].append(row)

    # Qwen2 with biases and per-layer widths (32, 96, 64): llama.cpp's deci, its q and k biases permuted with their rows.
    qwen = os.path.join(work, "qwen2")
    random_qwen2(qwen)
    strategy = os.path.join(work, "qwen2-strategy.json")
    json.dump({"units": [f"language.layers.{i}.mlp" for i in range(3)], "ratios": [0.25, 0.75, 0.5]}, open(strategy, "w"))
    run([lop, "prune", qwen, "--budget", "0.5", "--strategy", strategy, "--importance", "magnitude", "--alignment", "32",
         "--out", qwen + "-owl", "--dtype", "f32"])
    reference = reference_logits(qwen + "-owl", heldout, work)
    for kind in ["f32", "q8_0"]:
        path = qwen + f"-owl-{kind}.gguf"
        printed = run([lop, "export", qwen + "-owl", "--format", "gguf", "--type", kind, "--out", path])
        got = llama_cpp_logits(path, heldout)
        row = {"variant": "qwen2 (biases), widths 32/96/64", "type": kind, "architecture": printed.split("architecture ")[1].split(",")[0],
               "relative_error": float(np.abs(got - reference).max() / np.abs(reference).max()),
               "argmax_agreement": float(np.mean(got.argmax(1) == reference.argmax(1)))}
        print(json.dumps(row), flush=True)
        summary["logits"].append(row)

    if args.big:
        tokens = list(range(100, 116))
        path = os.path.join(work, "big-f16.gguf")
        printed = run([lop, "export", args.big, "--format", "gguf", "--type", "f16", "--out", path])
        got = llama_cpp_logits(path, tokens)
        reference = reference_logits(os.path.abspath(args.big), tokens, work)
        row = {"variant": "1.1B random", "type": "f16", "architecture": printed.split("architecture ")[1].split(",")[0],
               "relative_error": float(np.abs(got - reference).max() / np.abs(reference).max())}
        print(json.dumps(row), flush=True)
        summary["logits"].append(row)

    summary["mmproj"] = mmproj_check(lop, work)
    print(json.dumps(summary["mmproj"]), flush=True)
    summary["answers"] = answers_check(lop, work)
    print(json.dumps(summary["answers"]), flush=True)

    from llama_cpp import Llama
    cases = json.load(open(os.path.join(ROOT, "Tests", "References", "inputs", "tokenizers", "cases.json")))
    for name, expected in cases["tokenizers"].items():
        if name == "fixture":
            continue
        tokenizer_dir = os.path.join(ROOT, "Tests", "References", "inputs", "tokenizers", name)
        tok = json.load(open(os.path.join(tokenizer_dir, "tokenizer.json")))
        vocab = max([i for i in tok["model"]["vocab"].values()] + [a["id"] for a in tok["added_tokens"]]) + 1
        folder = os.path.join(work, "tok-" + name)
        tiny_llama_with(tokenizer_dir, folder, vocab)
        path = folder + ".gguf"
        run([lop, "export", folder, "--format", "gguf", "--type", "f32", "--out", path])
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        mismatched = []
        for i, text in enumerate(cases["texts"]):
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            if ids != expected["with_special"][i]:
                mismatched.append(i)
        row = {"tokenizer": name, "texts": len(cases["texts"]), "identical": len(cases["texts"]) - len(mismatched), "mismatched": mismatched}
        print(json.dumps(row), flush=True)
        summary["tokenization"].append(row)
        del llm
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
