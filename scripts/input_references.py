#!/usr/bin/env python3
"""Reference inputs and expected outputs for lop's tokenizer and image-preprocessing code.

Writes, under Tests/References/inputs/ (and nowhere else):

  tokenizers/<name>/tokenizer.json   five small BPE tokenizers trained with the `tokenizers` library on the
                                     Debian GPL-3 + Apache-2.0 licence texts, each laid out like the
                                     tokenizer.json of the model family it imitates:
                                       gpt2     byte-level BPE, <|endoftext|> in the model vocabulary too
                                       llama3   Split(regex) + ByteLevel, ignore_merges, BOS via TemplateProcessing
                                       qwen2    NFC + Split(regex) + ByteLevel, ChatML/vision added tokens, no BOS
                                       llama2   legacy SentencePiece BPE (Prepend/Replace normaliser, byte fallback,
                                                <0x00>..<0xFF> at ids 3..258), LLaVA-1.5's <image> token
                                       mistral  SentencePiece BPE as recent transformers writes it (no normaliser,
                                                Metaspace pre-tokenizer with prepend_scheme "first")
  tokenizers/cases.json              test texts and, per tokenizer, ids with and without special tokens and the
                                     decoded strings (keeping and skipping special tokens)
  images/<file>                      small seeded PNG and JPEG images of odd sizes and several modes
  images/<file>.rgb                  Image.open(file).convert("RGB") as raw uint8 HWC bytes
  images/<processor>/<file>.f32      pixel_values[0] from transformers' PIL/NumPy image processors, float32
                                     little-endian, shape [3, H, W], C order; plus that processor's
                                     preprocessor_config.json
  versions.json                      package and codec versions the data was made with

transformers 5 calls its PIL/NumPy ("slow") image processors CLIPImageProcessorPil and LlavaImageProcessorPil
(CLIPImageProcessor is now the torchvision one), so those are what is used here.

Packages: tokenizers, transformers, numpy, Pillow. Everything is seeded or fixed, so a rerun gives
byte-identical files. Run from the repository root:

    python scripts/input_references.py
"""
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import PIL
import PIL.features
import tokenizers
import transformers
from PIL import Image
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoImageProcessor, CLIPImageProcessorPil, LlavaImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "References" / "inputs"
TOKENIZERS_DIR = OUT / "tokenizers"
IMAGES_DIR = OUT / "images"

LICENCES = [Path("/usr/share/common-licenses/GPL-3"), Path("/usr/share/common-licenses/Apache-2.0")]

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPM_SPECIALS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]

# Characters that occur at most this often in the SentencePiece-style training text are left out of llama2's
# alphabet (limit_alphabet), so they go through byte fallback even though they are ASCII.
LLAMA2_RARE_CHAR_COUNT = 3

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# ----------------------------------------------------------------------------------------------------------
# JSON output


def dumps(value, indent=0, ensure_ascii=False):
    """JSON with nested containers indented but lists of scalars kept on one line (merges, id lists)."""
    pad = "  " * indent
    inner = "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=ensure_ascii)}: {dumps(v, indent + 1, ensure_ascii)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(not isinstance(v, (dict, list)) for v in value):
            return "[" + ", ".join(json.dumps(v, ensure_ascii=ensure_ascii) for v in value) + "]"
        return "[\n" + ",\n".join(inner + dumps(v, indent + 1, ensure_ascii) for v in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


def write_json(path, value, ensure_ascii=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(value, ensure_ascii=ensure_ascii) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# Tokenizers


def licence_text():
    missing = [str(p) for p in LICENCES if not p.is_file()]
    if missing:
        sys.exit(f"missing licence text: {', '.join(missing)} (Debian's base-files package provides them)")
    return "".join(p.read_text(encoding="utf-8") for p in LICENCES)


def added(content, special=True, normalized=False):
    return AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=normalized, special=special)


def bpe_trainer(vocab_size, **kwargs):
    return trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False, **kwargs)


def train_gpt2(text):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.train_from_iterator([text], bpe_trainer(256 + 450, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    # GPT-2's <|endoftext|> is the last entry of the model vocabulary and an added token with normalized: true.
    tok.add_special_tokens([added("<|endoftext|>", normalized=True)])
    spec = json.loads(tok.to_str())
    eot = next(t for t in spec["added_tokens"] if t["content"] == "<|endoftext|>")
    assert eot["id"] == len(spec["model"]["vocab"])
    spec["model"]["vocab"]["<|endoftext|>"] = eot["id"]
    spec["model"]["continuing_subword_prefix"] = ""
    spec["model"]["end_of_word_suffix"] = ""
    return spec


def train_llama3(text):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.train_from_iterator([text], bpe_trainer(256 + 500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.add_special_tokens([added("<|begin_of_text|>"), added("<|end_of_text|>"), added("<|eot_id|>")])
    bos = tok.token_to_id("<|begin_of_text|>")
    # Meta-Llama-3's file: Sequence[ByteLevel (offsets only), TemplateProcessing adding <|begin_of_text|>].
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
            special_tokens=[("<|begin_of_text|>", bos)],
        ),
    ])
    return json.loads(tok.to_str())


def train_qwen2(text):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.train_from_iterator([text], bpe_trainer(256 + 400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([added(t) for t in
                            ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>"]])
    # Qwen3 keeps its reasoning markers as ordinary (non-special) added tokens.
    tok.add_tokens([added("<think>", special=False), added("</think>", special=False)])
    spec = json.loads(tok.to_str())
    spec["model"]["continuing_subword_prefix"] = ""
    spec["model"]["end_of_word_suffix"] = ""
    # The Python ByteLevel decoder takes no options; Qwen2's file spells them all false (decoding ignores them).
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return spec


def spm_training_text(text):
    # SentencePiece vocabularies such as Llama's have no newline piece: "\n" goes through byte fallback (<0x0A>).
    return text.replace("\n", " ")


def train_spm_bpe(text, vocab_size, limit_alphabet):
    """BPE over ▁-prefixed words, vocabulary <unk>, <s>, </s>, <0x00>..<0xFF>, alphabet, merges (Llama's order)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Used for training only: words are split at spaces, the way SentencePiece splits by whitespace.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    limit = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet}
    tok.train_from_iterator([text], bpe_trainer(vocab_size, special_tokens=SPM_SPECIALS + BYTE_TOKENS, **limit))
    vocab = tok.get_vocab()
    for i, token in enumerate(SPM_SPECIALS + BYTE_TOKENS):
        assert vocab[token] == i, (token, vocab.get(token), i)
    return tok


def finish_spm(tok, extra_specials):
    """Keep only <unk>, <s>, </s> (and the model's extras) as added tokens: <0xNN> live in the model vocab alone."""
    tok.add_special_tokens([added(t) for t in extra_specials])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", bos)])
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1, right=0),
    ])
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in BYTE_TOKENS]
    return spec


def train_llama2(text):
    text = spm_training_text(text)
    counts = Counter(text.replace(" ", "▁"))
    limit = sum(1 for c in counts.values() if c > LLAMA2_RARE_CHAR_COUNT)
    tok = train_spm_bpe(text, len(SPM_SPECIALS) + 256 + limit + 450, limit)
    kept = {c for c, n in counts.items() if n > LLAMA2_RARE_CHAR_COUNT}
    dropped = {c for c, n in counts.items() if n <= LLAMA2_RARE_CHAR_COUNT}
    vocab = tok.get_vocab()
    assert kept <= vocab.keys() and not (dropped & vocab.keys()), sorted(dropped & vocab.keys())
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    spec = finish_spm(tok, ["<image>"])  # LLaVA-1.5 adds <image> right after the 32000-entry vocabulary
    spec["pre_tokenizer"] = None
    return spec


def train_mistral(text):
    text = spm_training_text(text)
    alphabet = len(set(text.replace(" ", "▁")))
    tok = train_spm_bpe(text, len(SPM_SPECIALS) + 256 + alphabet + 400, None)
    # The layout transformers' LlamaTokenizer (legacy=False) writes: no normaliser, a Metaspace pre-tokenizer
    # that prepends ▁ to the first section only, and the ByteFallback decoder sequence.
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    return finish_spm(tok, ["[INST]", "[/INST]"])


TOKENIZERS = {
    "gpt2": train_gpt2,
    "llama3": train_llama3,
    "qwen2": train_qwen2,
    "llama2": train_llama2,
    "mistral": train_mistral,
}

LONG_WORD = ("pneumonoultramicroscopicsilicovolcanoconiosis" * 7)[:300]

TEXTS = [
    "Hello world",
    "The licensee may convey the Program under the terms of this License.",
    "I'll don't we've THEY'RE You'D she's",
    "1234567 and 3.14159",
    "0 00 000 0000 12,345.678 1e10 2024-06-30",
    "café naïve Zürich façade",
    "東京は日本の首都です",
    "안녕하세요, 세계! 한국어 텍스트입니다.",
    "👍🏽 👨\u200d👩\u200d👧 🇫🇷",
    "a     b\n\n\n   c\t\t d  \n",
    "   leading and trailing   ",
    "",
    " ",
    "     ",
    "\n",
    "hi<|im_start|>user\nhello<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>Describe it.",
    "<think>\nstep one\n</think>\n\nanswer",
    "a<think>b</think>c",
    "Hello<|endoftext|>World <|endoftext|> end<|endoftext|>",
    "<|begin_of_text|>hi<|eot_id|> x <|end_of_text|>",
    "USER: <image>\nWhat is shown? ASSISTANT:",
    "in<image>side and <s> and </s> here",
    "[INST] What is 2+2? [/INST] Four</s>",
    "[INST]What is it?[/INST]It is<image>this</s>No",
    "eeeeeee lllllll sssss ttttt 0000000 ......",
    "<unk> <0x41> literal",
    "e\u0301 vs \u00e9",
    "line one\r\nline two\r\n",
    "non\u00a0breaking\u2009thin\u3000ideographic",
    "!!!??? ... --- ''' \"\"\" [x] {y} ~z% Quick Jump 8!",
    LONG_WORD,
    "Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/> — «Le renard brun rapide», "
    "速い茶色の狐, быстрая лиса; Γρήγορη αλεπού! مرحبا بالعالم 🦊 (naïve café, 3½ km) 한국어.",
]


def make_tokenizers():
    text = licence_text()
    cases = {"texts": TEXTS, "tokenizers": {}}
    # The fixtures' byte tokenizer file (written by `lop fixtures inputs`), read by the library as it stands.
    fixture = ROOT / "Fixtures" / "tiny-llava" / "tokenizer.json"
    for name, train in list(TOKENIZERS.items()) + [("fixture", None)]:
        if train is None:
            tok = Tokenizer.from_file(str(fixture))
        else:
            path = TOKENIZERS_DIR / name / "tokenizer.json"
            spec = train(text)
            write_json(path, spec)
            tok = Tokenizer.from_file(str(path))
            # Nothing may be dropped or changed by the round trip through the library.
            assert json.loads(tok.to_str()) == spec, name
        results = {"with_special": [], "without_special": [], "decoded": [], "decoded_skip": []}
        for t in TEXTS:
            ids = tok.encode(t, add_special_tokens=True).ids
            results["with_special"].append(ids)
            results["without_special"].append(tok.encode(t, add_special_tokens=False).ids)
            results["decoded"].append(tok.decode(ids, skip_special_tokens=False))
            results["decoded_skip"].append(tok.decode(ids, skip_special_tokens=True))
        cases["tokenizers"][name] = results
    write_json(TOKENIZERS_DIR / "cases.json", cases, ensure_ascii=True)


# ----------------------------------------------------------------------------------------------------------
# Images


def texture(rng, height, width, channels):
    """Gradients plus seeded noise plus hard edges (a block, a stripe and a diagonal), uint8 HxWxC."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / (width - 1), y / (height - 1)
    ramps = [255 * u, 255 * v, 255 * (1 - u) * v + 60 * np.sin(7 * u), 255 * (u + v) / 2]
    img = np.stack([ramps[c % len(ramps)] for c in range(channels)], axis=-1)
    img += rng.normal(0, 18, size=img.shape)
    top, left = height // 4, width // 3
    img[top:top + height // 3, left:left + width // 4] = rng.integers(0, 256, size=channels)
    img[:, (2 * width) // 3] = 255 - img[:, (2 * width) // 3]
    diagonal = np.abs(x * height / width - y) < 0.8
    img[diagonal] = 0 if channels == 1 else rng.integers(0, 256, size=channels)
    img[0, 0], img[-1, -1] = 0, 255
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def alpha_channel(rng, height, width):
    y, x = np.mgrid[0:height, 0:width]
    a = np.rint(255 * x / (width - 1)).astype(np.int64) + rng.integers(-20, 21, size=(height, width))
    a = np.clip(a, 0, 255)
    a[:, 0] = 0
    a[:, -1] = 255
    a[height // 2:, : width // 4] = 0
    a[: height // 3, -(width // 4):] = 255
    a[y % 5 == 2] = 128
    return a.astype(np.uint8)


def make_images():
    rng = np.random.default_rng(20240630)
    made = []

    def save(img, name, **params):
        img.save(IMAGES_DIR / name, **params)
        made.append(name)

    save(Image.fromarray(texture(rng, 23, 37, 3), "RGB"), "rgb-37x23.png")
    save(Image.fromarray(texture(rng, 31, 19, 1)[..., 0], "L"), "grey-19x31.png")
    rgba = np.concatenate([texture(rng, 17, 29, 3), alpha_channel(rng, 17, 29)[..., None]], axis=-1)
    save(Image.fromarray(rgba, "RGBA"), "rgba-29x17.png")

    palette = rng.integers(0, 256, size=(16, 3), dtype=np.uint8)
    palette[0], palette[15] = 0, 255
    indices = (texture(rng, 21, 21, 1)[..., 0] // 16).astype(np.uint8)
    p = Image.frombytes("P", (21, 21), indices.tobytes())
    p.putpalette(palette.flatten().tolist())
    save(p, "palette-21x21.png")

    grey = Image.fromarray(texture(rng, 13, 15, 1)[..., 0], "L")
    save(Image.merge("LA", [grey, Image.fromarray(alpha_channel(rng, 13, 15), "L")]), "greyalpha-15x13.png")

    save(Image.fromarray(texture(rng, 27, 41, 3), "RGB"), "rgb-41x27.jpg", quality=90, subsampling="4:2:0")
    save(Image.fromarray(texture(rng, 35, 33, 3), "RGB"), "rgb444-33x35.jpg", quality=90, subsampling=0)
    save(Image.fromarray(texture(rng, 33, 23, 1)[..., 0], "L"), "grey-23x33.jpg", quality=90)
    save(Image.fromarray(texture(rng, 29, 45, 3), "RGB"), "rgb-progressive-45x29.jpg", quality=90, progressive=True)

    for name in made:
        with Image.open(IMAGES_DIR / name) as img:
            w, h = (int(n) for n in name.split("-")[-1].split(".")[0].split("x"))
            assert img.size == (w, h), (name, img.size)
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        assert rgb.shape == (h, w, 3)
        (IMAGES_DIR / f"{name}.rgb").write_bytes(rgb.tobytes())
    return made


def image_processors():
    common = dict(resample=3, do_resize=True, do_center_crop=True, do_rescale=True, rescale_factor=1 / 255,
                  do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
    return {
        "clip-down": CLIPImageProcessorPil(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16}, **common),
        "clip-up": CLIPImageProcessorPil(size={"shortest_edge": 48}, crop_size={"height": 40, "width": 40}, **common),
        "llava-pad": LlavaImageProcessorPil(do_pad=True, size={"shortest_edge": 20},
                                            crop_size={"height": 20, "width": 20}, **common),
    }


def make_pixel_values(images):
    for folder, processor in image_processors().items():
        out = IMAGES_DIR / folder
        out.mkdir(parents=True)
        processor.save_pretrained(str(out))
        reloaded = AutoImageProcessor.from_pretrained(str(out), backend="pil")
        assert type(reloaded) is type(processor), (folder, type(reloaded))
        height, width = processor.crop_size.height, processor.crop_size.width
        for name in images:
            with Image.open(IMAGES_DIR / name) as img:
                pixels = processor(images=img, return_tensors="np")["pixel_values"][0]
            with Image.open(IMAGES_DIR / name) as img:
                again = reloaded(images=img, return_tensors="np")["pixel_values"][0]
            assert pixels.dtype == np.float32 and pixels.shape == (3, height, width), (folder, name, pixels.shape)
            assert np.array_equal(pixels, again), (folder, name)
            (out / f"{name}.f32").write_bytes(np.ascontiguousarray(pixels, dtype="<f4").tobytes())


# ----------------------------------------------------------------------------------------------------------


def write_versions():
    versions = {
        "python": sys.version.split()[0],
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
        "Pillow": PIL.__version__,
        "numpy": np.__version__,
        "libjpeg_turbo": PIL.features.version("libjpeg_turbo"),
        "zlib": PIL.features.version("zlib"),
    }
    zlib_ng = PIL.features.version("zlib_ng")
    if zlib_ng:
        versions["zlib_ng"] = zlib_ng
    write_json(OUT / "versions.json", versions)


def main():
    for path in (TOKENIZERS_DIR, IMAGES_DIR):
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    make_tokenizers()
    make_pixel_values(make_images())
    write_versions()


if __name__ == "__main__":
    main()
