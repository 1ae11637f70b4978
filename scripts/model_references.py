#!/usr/bin/env python3
"""Tiny reference checkpoints and transformers' logits for them, for lop's model-loading and engine tests.

Writes, under Tests/References/models/ (and nowhere else; each folder below is deleted and rewritten on every run):

  llama-rope-default/   LlamaForCausalLM (vocab 96, hidden 32, 2 layers, 4 heads, 2 KV heads, head_dim 8,
                        intermediate 48), rope_parameters {"rope_type": "default", "rope_theta": 100000.0}
  llama-rope-linear/    the same weights, rope_type "linear", factor 2.0
  llama-rope-llama3/    the same weights, rope_type "llama3", factor 8.0, low_freq_factor 1.0,
                        high_freq_factor 4.0, original_max_position_embeddings 256 (max_position_embeddings 1024
                        here, since transformers warns unless the original length is the smaller). With rope_theta
                        1e5 and head_dim 8 the four wavelengths are 6.3, 111.7, 1987 and 35334 against the
                        bounds 64 and 256, so one frequency is kept, one is smoothed and two are divided by 8.
      Each holds config.json and model.safetensors exactly as LlamaForCausalLM.save_pretrained writes them.

  llava-v5/             LlavaForConditionalGeneration: CLIP vision tower (image 24, patch 6, hidden 32, 2 layers,
                        4 heads, intermediate 48, quick_gelu), gelu projector, Llama text model as above
                        (vocab 96, image_token_index 95, default RoPE with theta 1e5), vision_feature_layer -1,
                        vision_feature_select_strategy "default". config.json and model.safetensors exactly as
                        transformers 5 save_pretrained writes them for a model built from a config: it reverts the
                        LLaVA renaming on save (language_model.model.*, language_model.lm_head.weight,
                        multi_modal_projector.*, vision_tower.*) but, with no loaded checkpoint to copy, leaves out
                        the CLIPVisionModel `vision_model.` level (vision_tower.embeddings.*, not
                        vision_tower.vision_model.embeddings.*).
  llava-v4.52/          the same tensors under the names the transformers 4.52+ classes use for their parameters
                        (LlavaForConditionalGeneration._checkpoint_conversion_mapping targets):
                        model.language_model.*, model.vision_tower.vision_model.*, model.multi_modal_projector.*,
                        lm_head.weight.
  llava-hub/            the same tensors in the llava-hf Hub layout: language_model.model.*,
                        language_model.lm_head.weight, vision_tower.vision_model.*, multi_modal_projector.*.
      llava-v4.52 and llava-hub carry a transformers-4-style config.json: the llava-v5 one with `dtype` written as
      `torch_dtype` (top level and in text_config) and text_config's `rope_parameters` written as a flat
      `rope_theta` plus `"rope_scaling": null`, and no `transformers_version`. Both renamed folders are checked
      here: LlavaForConditionalGeneration.from_pretrained loads each with no missing, unexpected or mismatched keys
      and gives the llava-v5 logits bit for bit.

  cases.json            {"<folder>": {"cases": [{"name", "tokens", "pixels", "logits"}]}}: transformers' float32
                        logits (eval mode, no grad, eager attention, default positions, no padding) for fixed
                        inputs. tokens is [[id, ...], ...]; pixels is null or {"shape": [n, 3, 24, 24],
                        "data": [...]}; logits is {"shape": [rows * length, vocab], "data": [...]}, row-major.
                        Floats are the shortest decimals that read back to the exact float32 values.
                        llama-*: "two-rows", two rows of 12 ids.
                        llava-*: "text-only" (one row of 10 ids, no image token), "one-image" (id 1, 16 image
                        tokens, 5 ids; one image) and "two-images" (two such rows, two different images).
  versions.json         package versions the data was made with

Weights: after construction every parameter is redrawn from N(0, 0.2) (norm weights 1 + N(0, 0.1), norm biases
N(0, 0.1)) so the logits are far from flat; they are stored as float32.

Packages: torch, transformers, numpy, safetensors. Everything is seeded or fixed and runs on one CPU thread, so a
rerun gives byte-identical files. Run from the repository root:

    python scripts/model_references.py
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import safetensors
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

from input_references import QWEN2_PATTERN  # Qwen2's split pattern, as the input references use it
from PIL import Image
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "References" / "models"

VOCAB = 96
IMAGE_TOKEN = 95
ROPE_THETA = 100000.0
IMAGE_SIZE = 24
PATCH = 6
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2  # 16 with the "default" strategy (class token dropped)

TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=48,
    max_position_embeddings=64,
)

# The ViT towers' shape (CLIP for LLaVA, SigLIP for OneVision).
VISION = dict(image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)

LLAMAS = {
    "llama-rope-default": ({"rope_type": "default", "rope_theta": ROPE_THETA}, {}),
    "llama-rope-linear": ({"rope_type": "linear", "factor": 2.0, "rope_theta": ROPE_THETA}, {}),
    "llama-rope-llama3": (
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 256,
            "rope_theta": ROPE_THETA,
        },
        {"max_position_embeddings": 1024},
    ),
}

LLAVAS = ("llava-v5", "llava-v4.52", "llava-hub")

ONEVISION = "llava-onevision"
# Tiles of 24 px (16 features each); pinpoints up to 2 x 3 tiles; "anyres_max_2" shrinks any unpadded grid above
# 2 tiles' worth of features (by the 1.1 margin) with bilinear interpolation.
ONEVISION_PINPOINTS = [[24, 24], [24, 48], [48, 24], [48, 48], [48, 72], [72, 48]]
ONEVISION_ASPECT = "anyres_max_2"
# (name, [(height, width, seed) per image], prompt): images in one row; a row with one image is tiled (AnyRes), a
# row with several gives each only its base tile padded to a square, as transformers does.
QWEN_VL = "qwen2.5-vl"
QWEN_VL_HUB = "qwen2.5-vl-hub"
# 6-px patches merged 2 x 2 (so image sides are multiples of 12), windows of 24 px (2 x 2 merged units), full
# attention in blocks 1 and 3 of 4; between 2 x 2 and 6 x 6 merged units per image.
QWEN_VL_PIXELS = (12 * 12 * 4, 12 * 12 * 36)
# (name, [(height, width, seed) per image], prompt)
QWEN_VL_CASES = [
    ("small", [(14, 20, 21)], "<|vision_start|><|image_pad|><|vision_end|>What is this?"),
    ("wide", [(30, 75, 22)], "Look: <|vision_start|><|image_pad|><|vision_end|> now."),
    ("large", [(90, 70, 23)], "<|vision_start|><|image_pad|><|vision_end|>Describe it."),
    ("two-images", [(26, 40, 24), (50, 25, 25)], "<|vision_start|><|image_pad|><|vision_end|> and <|vision_start|><|image_pad|><|vision_end|>: same?"),
]
ONEVISION_CASES = [
    ("wide", [(16, 60, 11)], "<image>\nWhat is this?"),
    ("tall", [(45, 22, 12)], "Look: <image> now."),
    ("large", [(50, 70, 13)], "<image>\nDescribe it."),
    ("two-images", [(30, 18, 14), (16, 40, 15)], "<image> and <image>: same?"),
]


def fail(message):
    sys.exit(f"model_references: {message}")


def randomize(model, seed):
    """Redraws every parameter, in name order, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            is_norm = "norm" in name or "layrnorm" in name
            if is_norm and name.endswith(".weight"):
                parameter.copy_(1.0 + 0.1 * noise)
            elif is_norm:
                parameter.copy_(0.1 * noise)
            else:
                parameter.copy_(0.2 * noise)


def logits_of(model, tokens, pixels=None):
    with torch.no_grad():
        inputs = {"input_ids": torch.tensor(tokens, dtype=torch.long)}
        if pixels is not None:
            inputs["pixel_values"] = torch.from_numpy(pixels)
        output = model(**inputs, use_cache=False)
    return output.logits.to(torch.float32).reshape(-1, output.logits.shape[-1]).numpy()


def floats(array):
    """Shortest decimal strings that read back to the exact float32 values, as JSON numbers."""
    return [float(str(value)) for value in np.asarray(array, dtype=np.float32).reshape(-1)]


def case(name, tokens, pixels, logits):
    return {
        "name": name,
        "tokens": tokens,
        "pixels": None if pixels is None else {"shape": list(pixels.shape), "data": floats(pixels)},
        "logits": {"shape": list(logits.shape), "data": floats(logits)},
    }


def write_json(path, value, indent=None):
    text = json.dumps(value, indent=indent, sort_keys=indent is not None)
    path.write_text(text + "\n", encoding="utf-8")


def check_llama3_frequencies(config):
    """The llama3 adjustment must keep, smooth and scale at least one frequency each."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    head_dim = config.head_dim
    plain = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    adjusted, attention = ROPE_INIT_FUNCTIONS["llama3"](config)
    ratio = (plain / adjusted).tolist()
    kept = sum(1 for r in ratio if abs(r - 1.0) < 1e-6)
    scaled = sum(1 for r in ratio if abs(r - 8.0) < 1e-5)
    smoothed = len(ratio) - kept - scaled
    if attention != 1.0 or min(kept, scaled, smoothed) < 1:
        fail(f"llama3 rope does not exercise every branch: ratios {ratio}")
    return ratio


def make_llamas():
    rng = np.random.default_rng(1234)
    tokens = rng.integers(0, VOCAB, size=(2, 12)).tolist()
    state = None
    entries = {}
    for folder, (rope, extra) in LLAMAS.items():
        config = LlamaConfig(**{**TEXT, **extra}, rope_parameters=dict(rope), attn_implementation="eager")
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        if state is None:
            randomize(model, 1)
            state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            model.load_state_dict(state)
        model.eval()
        if rope["rope_type"] == "llama3":
            check_llama3_frequencies(config)
        model.save_pretrained(OUT / folder)
        logits = logits_of(model, tokens)
        entries[folder] = {"cases": [case("two-rows", tokens, None, logits)]}
    return entries


def llava_config():
    return LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", **VISION, hidden_act="quick_gelu"),
        text_config=dict(
            model_type="llama",
            **TEXT,
            rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        ),
        image_token_index=IMAGE_TOKEN,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        attn_implementation="eager",
    )


def rename(name, layout):
    """Maps a tensor name as transformers 5 saves it (llava-v5) to the given layout."""
    if layout == "llava-hub":
        if name.startswith("vision_tower."):
            return "vision_tower.vision_model." + name[len("vision_tower."):]
        return name
    if layout == "llava-v4.52":
        for old, new in (
            ("language_model.model.", "model.language_model."),
            ("language_model.lm_head.", "lm_head."),
            ("vision_tower.", "model.vision_tower.vision_model."),
            ("multi_modal_projector.", "model.multi_modal_projector."),
        ):
            if name.startswith(old):
                return new + name[len(old):]
        fail(f"unexpected tensor name {name}")
    return name


def legacy_config(config):
    """The transformers-4 spelling of a transformers-5 LLaVA config.json."""
    result = {k: v for k, v in config.items() if k != "transformers_version"}
    result["torch_dtype"] = result.pop("dtype")
    text = dict(result["text_config"])
    rope = text.pop("rope_parameters")
    if set(rope) != {"rope_type", "rope_theta"} or rope["rope_type"] != "default":
        fail(f"unexpected text rope_parameters {rope}")
    text["rope_theta"] = rope["rope_theta"]
    text["rope_scaling"] = None
    if "dtype" in text:
        text["torch_dtype"] = text.pop("dtype")
    result["text_config"] = text
    return result


def load_checked(folder, model_class=LlavaForConditionalGeneration):
    model, info = model_class.from_pretrained(
        folder, output_loading_info=True, attn_implementation="eager", dtype=torch.float32
    )
    problems = {key: value for key, value in info.items() if value}
    if problems:
        fail(f"{folder.name}: loading reported {problems}")
    return model.eval()


def save_with_processor(model, processor, folder):
    """The model and its processor's parts (save_pretrained of the whole processor needs its video processor)."""
    model.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)


def make_llavas():
    rng = np.random.default_rng(5678)
    text_ids = rng.integers(2, IMAGE_TOKEN, size=(1, 10)).tolist()
    image_rows = [[1] + [IMAGE_TOKEN] * IMAGE_TOKENS + rng.integers(2, IMAGE_TOKEN, size=5).tolist() for _ in range(2)]
    pixels = rng.standard_normal((2, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    inputs = [
        ("text-only", text_ids, None),
        ("one-image", image_rows[:1], pixels[:1].copy()),
        ("two-images", image_rows, pixels),
    ]

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(llava_config())
    randomize(model, 2)
    model.eval()
    v5 = OUT / "llava-v5"
    model.save_pretrained(v5)
    reference = [logits_of(model, tokens, image) for _, tokens, image in inputs]

    with safe_open(v5 / "model.safetensors", "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    config = json.loads((v5 / "config.json").read_text(encoding="utf-8"))

    entries = {}
    for folder in LLAVAS:
        path = OUT / folder
        if folder != "llava-v5":
            path.mkdir(parents=True)
            renamed = {rename(name, folder): tensor for name, tensor in tensors.items()}
            if len(renamed) != len(tensors):
                fail(f"{folder}: renaming merged tensor names")
            save_file(renamed, str(path / "model.safetensors"), metadata=metadata)
            write_json(path / "config.json", legacy_config(config), indent=2)
        loaded = load_checked(path)
        cases = []
        for (name, tokens, image), expected in zip(inputs, reference):
            logits = logits_of(loaded, tokens, image)
            if not np.array_equal(logits, expected):
                fail(f"{folder} {name}: logits differ from the built model by {np.abs(logits - expected).max()}")
            cases.append(case(name, tokens, image, logits))
        entries[folder] = {"cases": cases}
    return entries


def byte_level_tokenizer(specials):
    """A Qwen2-style byte-level BPE (NFC, the Qwen2 split, ByteLevel) trained on the GPL-3 text, 64 merges, with
    Qwen2's specials and the model's image tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    text = Path("/usr/share/common-licenses/GPL-3").read_text(encoding="utf-8")
    trainer = trainers.BpeTrainer(vocab_size=256 + 64, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def test_image(height, width, seed):
    """A seeded RGB image: a smooth gradient plus noise, so resampling and tiling matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 128 + 0 * x], axis=-1)
    noise = rng.integers(-40, 41, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def onevision_config(vocab, image_token):
    return LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", **VISION, vision_use_head=True),
        text_config=dict(
            model_type="qwen2",
            **{**TEXT, "vocab_size": vocab, "max_position_embeddings": 256},
            rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        ),
        image_token_index=image_token,
        video_token_index=image_token - 1,
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_aspect_ratio=ONEVISION_ASPECT,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        attn_implementation="eager",
    )


def image_only(processor_class):
    """`processor_class` without its video processor (which needs torchvision); images and text are processed by
    the class's unchanged code."""

    class ImageOnly(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return ImageOnly


def make_onevision():
    """LlavaOnevisionForConditionalGeneration (SigLIP with its pooling head, Qwen2 text model), saved with its
    processor; each case goes through the processor from PIL images, as a user's would."""
    tokenizer = byte_level_tokenizer(["<image>"])
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    processor = image_only(LlavaOnevisionProcessor)(
        image_processor=LlavaOnevisionImageProcessorPil(
            size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_grid_pinpoints=ONEVISION_PINPOINTS),
        tokenizer=tokenizer,
        num_image_tokens=IMAGE_TOKENS,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=ONEVISION_ASPECT,
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(onevision_config(len(tokenizer), image_token))
    randomize(model, 3)
    model.eval()
    folder = OUT / ONEVISION
    save_with_processor(model, processor, folder)
    loaded = load_checked(folder, LlavaOnevisionForConditionalGeneration)

    images_dir = folder / "images"
    images_dir.mkdir()
    cases = [case("text-only", [tokenizer("Free software, for all.")["input_ids"]], None,
                  logits_of(loaded, [tokenizer("Free software, for all.")["input_ids"]]))]
    branches = set()
    for name, shapes, prompt in ONEVISION_CASES:
        images = []
        for h, w, seed in shapes:
            image = test_image(h, w, seed)
            image.save(images_dir / f"{name}-{len(images)}.png")
            images.append(image)
        inputs = processor(text=[prompt], images=[images], return_tensors="pt")
        tokens = inputs["input_ids"].tolist()
        with torch.no_grad():
            output = loaded(**inputs, use_cache=False)
            features = loaded.model.get_image_features(
                inputs["pixel_values"], inputs["image_sizes"], batch_num_images=inputs["batch_num_images"]).pooler_output
        if sum(row.count(image_token) for row in tokens) != sum(f.shape[0] for f in features):
            fail(f"{name}: the processor's image tokens disagree with the model's features")
        if len(images) == 1:
            branches.update(onevision_branches(shapes[0][:2]))
        pixels = inputs["pixel_values"].numpy()
        logits = output.logits.to(torch.float32).reshape(-1, output.logits.shape[-1]).numpy()
        entry = case(name, tokens, pixels, logits)
        entry["image_sizes"] = inputs["image_sizes"].tolist()
        entry["prompt"] = prompt
        entry["images"] = [f"images/{name}-{i}.png" for i in range(len(images))]
        cases.append(entry)
    if branches != {"unpad-height", "unpad-width", "interpolate", "no-interpolate"}:
        fail(f"the one-image cases exercise only {sorted(branches)}")
    return {ONEVISION: {"cases": cases}}


def onevision_branches(size):
    """Which of pack_image_features' branches an image of `size` (height, width) takes."""
    from transformers.image_processing_utils import select_best_resolution

    height, width = size
    best = select_best_resolution([height, width], ONEVISION_PINPOINTS)
    side = IMAGE_SIZE // PATCH
    current_h, current_w = best[0] // IMAGE_SIZE * side, best[1] // IMAGE_SIZE * side
    if width / height > current_w / current_h:
        taken = {"unpad-height"}
        current_h -= 2 * ((current_h - int(round(height * current_w / width, 7))) // 2)
    else:
        taken = {"unpad-width"}
        current_w -= 2 * ((current_w - int(round(width * current_h / height, 7))) // 2)
    maximum = int(ONEVISION_ASPECT.strip("anyres_max_"))
    ratio = (current_h * current_w / (maximum * side * side)) ** 0.5
    return taken | {"interpolate" if ratio > 1.1 else "no-interpolate"}


def qwen_vl_config(vocab, ids):
    return Qwen2_5_VLConfig(
        vision_config=dict(
            depth=4,
            hidden_size=32,
            intermediate_size=48,
            num_heads=4,
            patch_size=PATCH,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=24,
            fullatt_block_indexes=[1, 3],
            out_hidden_size=32,
            hidden_act="silu",
        ),
        text_config=dict(
            **{**TEXT, "vocab_size": vocab, "max_position_embeddings": 256},
            rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": [2, 1, 1]},
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        attn_implementation="eager",
    )


def hub_qwen_vl_config(config):
    """The Hub's Qwen2.5-VL config.json (as Qwen/Qwen2.5-VL-7B-Instruct has it): text settings at the top level,
    `rope_theta` and `rope_scaling: {"type": "mrope", "mrope_section"}`, the vision config with `in_chans`."""
    text = dict(config["text_config"])
    rope = text.pop("rope_parameters")
    result = {k: v for k, v in config.items() if k not in ("text_config", "transformers_version", "dtype")}
    for key, value in text.items():
        if key not in ("model_type", "dtype"):
            result[key] = value
    result["rope_theta"] = rope["rope_theta"]
    result["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    result["torch_dtype"] = "float32"
    vision = {k: v for k, v in config["vision_config"].items() if k not in ("dtype", "rope_parameters")}
    vision["in_chans"] = vision.pop("in_channels")
    result["vision_config"] = vision
    return result


def make_qwen_vl():
    """Qwen2_5_VLForConditionalGeneration saved with its processor's files, the same folder with the Hub's
    config.json form, and cases that go through Qwen2_5_VLProcessor from PIL images. transformers 5 saves the
    Hub's tensor names (visual.*, model.*, lm_head.*), so both folders share them."""
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer = byte_level_tokenizer(specials)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    low, high = QWEN_VL_PIXELS
    processor = image_only(Qwen2_5_VLProcessor)(
        image_processor=Qwen2VLImageProcessorPil(patch_size=PATCH, temporal_patch_size=2, merge_size=2,
                                                 size={"shortest_edge": low, "longest_edge": high}),
        tokenizer=tokenizer,
    )
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(qwen_vl_config(len(tokenizer), ids))
    randomize(model, 4)
    model.eval()
    folder = OUT / QWEN_VL
    save_with_processor(model, processor, folder)

    hub = OUT / QWEN_VL_HUB
    hub.mkdir()
    shutil.copyfile(folder / "model.safetensors", hub / "model.safetensors")
    write_json(hub / "config.json", hub_qwen_vl_config(json.loads((folder / "config.json").read_text(encoding="utf-8"))), indent=2)

    images_dir = folder / "images"
    images_dir.mkdir()
    text = [tokenizer("Free software, for all.")["input_ids"]]
    inputs = [("text-only", {"input_ids": torch.tensor(text)}, None, None)]
    for name, shapes, prompt in QWEN_VL_CASES:
        images = []
        for h, w, seed in shapes:
            image = test_image(h, w, seed)
            image.save(images_dir / f"{name}-{len(images)}.png")
            images.append(image)
        inputs.append((name, processor(text=[prompt], images=images, return_tensors="pt"), prompt, len(images)))
    factor = 2 * PATCH
    branches = set()
    for _, shapes, _ in QWEN_VL_CASES:
        for h, w, _ in shapes:
            area = round(h / factor) * factor * round(w / factor) * factor
            branches.add("max_pixels" if area > high else "min_pixels" if area < low else "rounded")
            if (h / factor) % 1 == 0.5 or (w / factor) % 1 == 0.5:
                branches.add("half-even")
    if branches != {"max_pixels", "min_pixels", "rounded", "half-even"}:
        fail(f"the image cases exercise only {sorted(branches)} of smart_resize")

    entries = {}
    for path in (folder, hub):
        loaded = load_checked(path, Qwen2_5_VLForConditionalGeneration)
        cases = []
        for name, batch, prompt, count in inputs:
            with torch.no_grad():
                output = loaded(**batch, use_cache=False)
            logits = output.logits.to(torch.float32).reshape(-1, output.logits.shape[-1]).numpy()
            pixels = batch["pixel_values"].numpy() if "pixel_values" in batch else None
            entry = case(name, batch["input_ids"].tolist(), pixels, logits)
            if prompt is not None:
                entry["image_grid_thw"] = batch["image_grid_thw"].tolist()
                entry["prompt"] = prompt
                entry["images"] = [f"images/{name}-{i}.png" for i in range(count)]
            cases.append(entry)
        entries[path.name] = {"cases": cases}
    for a, b in zip(entries[QWEN_VL]["cases"], entries[QWEN_VL_HUB]["cases"]):
        if a["logits"] != b["logits"]:
            fail(f"{a['name']}: the Hub layout gives other logits")
    del entries[QWEN_VL_HUB]["cases"][1:]  # the Hub folder's text-only case; the image cases are the same
    return entries


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    OUT.mkdir(parents=True, exist_ok=True)
    for name in list(LLAMAS) + list(LLAVAS) + [ONEVISION, QWEN_VL, QWEN_VL_HUB, "cases.json", "versions.json"]:
        target = OUT / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    entries = {}
    entries.update(make_llamas())
    entries.update(make_llavas())
    entries.update(make_onevision())
    entries.update(make_qwen_vl())
    write_json(OUT / "cases.json", entries)
    write_json(
        OUT / "versions.json",
        {
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "safetensors": safetensors.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        indent=2,
    )


if __name__ == "__main__":
    main()
