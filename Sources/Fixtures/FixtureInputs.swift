import Foundation
import Models

/// The fixtures' input side files, so that they read text and images as any model does: a `tokenizer.json` that
/// is the byte tokenizer (a byte-level BPE with one token per byte at the byte's id and no merges, the special
/// tokens after them, a BOS template), its `tokenizer_config.json`, and tiny-llava's `preprocessor_config.json`
/// (no resize of its 24-pixel images, rescale, normalise to [-1, 1] as the shapes renderer does).
extension Fixtures {
    /// The input side files of a fixture's folder, by name.
    public static func inputFiles(_ name: String) -> [String: Data] { FixtureInputs.files(vision: name == "tiny-llava") }
}

enum FixtureInputs {
    static func files(vision: Bool) -> [String: Data] {
        var files = ["tokenizer.json": Data((tokenizer.serialized(pretty: true) + "\n").utf8),
                     "tokenizer_config.json": Data((tokenizerConfig.serialized(pretty: true) + "\n").utf8)]
        if vision { files["preprocessor_config.json"] = Data((preprocessor.serialized(pretty: true) + "\n").utf8) }
        return files
    }

    static let specials = [("<s>", ByteTokenizer.bos), ("</s>", ByteTokenizer.eos), ("<pad>", ByteTokenizer.pad), ("<image>", ByteTokenizer.image)]

    static var tokenizer: JSON {
        let byteLevel: JSON = .object(["type": .string("ByteLevel"), "add_prefix_space": .bool(false), "trim_offsets": .bool(true), "use_regex": .bool(false)])
        var vocabulary: [String: JSON] = [:]
        for (b, scalar) in ByteLevelAlphabet.characters.enumerated() { vocabulary[String(scalar)] = .int(b) }
        let added: [JSON] = specials.map { content, id in
            .object(["id": .int(id), "content": .string(content), "single_word": .bool(false), "lstrip": .bool(false), "rstrip": .bool(false),
                     "normalized": .bool(false), "special": .bool(true)])
        }
        func piece(_ kind: String, _ id: String) -> JSON { .object([kind: .object(["id": .string(id), "type_id": .int(0)])]) }
        return .object([
            "version": .string("1.0"), "truncation": .null, "padding": .null,
            "added_tokens": .array(added),
            "normalizer": .null,
            "pre_tokenizer": byteLevel,
            "post_processor": .object([
                "type": .string("TemplateProcessing"),
                "single": .array([piece("SpecialToken", "<s>"), piece("Sequence", "A")]),
                "pair": .array([piece("SpecialToken", "<s>"), piece("Sequence", "A"), piece("Sequence", "B")]),
                "special_tokens": .object(["<s>": .object(["id": .string("<s>"), "ids": .array([.int(ByteTokenizer.bos)]), "tokens": .array([.string("<s>")])])]),
            ]),
            "decoder": byteLevel,
            "model": .object([
                "type": .string("BPE"), "dropout": .null, "unk_token": .null, "continuing_subword_prefix": .null, "end_of_word_suffix": .null,
                "fuse_unk": .bool(false), "byte_fallback": .bool(false), "ignore_merges": .bool(false),
                "vocab": .object(vocabulary), "merges": .array([]),
            ]),
        ])
    }

    static let tokenizerConfig: JSON = .object([
        "bos_token": .string("<s>"), "eos_token": .string("</s>"), "pad_token": .string("<pad>"),
        "model_max_length": .int(256), "tokenizer_class": .string("PreTrainedTokenizerFast"),
    ])

    static let preprocessor: JSON = .object([
        "image_processor_type": .string("CLIPImageProcessor"),
        "do_resize": .bool(true), "size": .object(["shortest_edge": .int(ShapesDataset.imageSize)]), "resample": .int(3),
        "do_center_crop": .bool(true), "crop_size": .object(["height": .int(ShapesDataset.imageSize), "width": .int(ShapesDataset.imageSize)]),
        "do_rescale": .bool(true), "rescale_factor": .double(1.0 / 255),
        "do_normalize": .bool(true), "image_mean": .array([.double(0.5), .double(0.5), .double(0.5)]),
        "image_std": .array([.double(0.5), .double(0.5), .double(0.5)]), "do_convert_rgb": .bool(true),
    ])
}
