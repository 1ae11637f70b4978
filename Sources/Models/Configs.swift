import Foundation
import LopCore
import Tensor

/// A `config.json` key that is missing, of the wrong type, or out of range.
public struct ModelConfigError: Error, CustomStringConvertible, Equatable {
    public let key: String
    public let problem: String
    public var description: String { "config.json: \(key): \(problem)" }
}

/// Typed reads of one JSON object, with errors naming the full key path.
struct ConfigFields {
    let members: [String: JSON]
    let path: String

    init(_ json: JSON, path: String = "") throws(ModelConfigError) {
        guard let members = json.objectValue else { throw ModelConfigError(key: path.isEmpty ? "(top level)" : path, problem: "is not an object") }
        self.members = members
        self.path = path
    }

    func key(_ name: String) -> String { path.isEmpty ? name : path + "." + name }

    func int(_ name: String, default fallback: Int? = nil, minimum: Int = 1) throws(ModelConfigError) -> Int {
        guard let value = members[name], value != .null else {
            guard let fallback else { throw ModelConfigError(key: key(name), problem: "is missing") }
            return fallback
        }
        guard let v = value.intValue else { throw ModelConfigError(key: key(name), problem: "\(value.serialized()) is not an integer") }
        guard v >= minimum else { throw ModelConfigError(key: key(name), problem: "\(v) is below \(minimum)") }
        return v
    }

    func double(_ name: String, default fallback: Double?) throws(ModelConfigError) -> Double {
        guard let value = members[name], value != .null else {
            guard let fallback else { throw ModelConfigError(key: key(name), problem: "is missing") }
            return fallback
        }
        guard let v = value.doubleValue, v.isFinite, v > 0 else { throw ModelConfigError(key: key(name), problem: "\(value.serialized()) is not a positive number") }
        return v
    }

    func bool(_ name: String, default fallback: Bool) throws(ModelConfigError) -> Bool {
        guard let value = members[name], value != .null else { return fallback }
        guard let v = value.boolValue else { throw ModelConfigError(key: key(name), problem: "\(value.serialized()) is not true or false") }
        return v
    }

    func string(_ name: String, default fallback: String? = nil, allowed: [String]? = nil) throws(ModelConfigError) -> String {
        guard let value = members[name], value != .null else {
            guard let fallback else { throw ModelConfigError(key: key(name), problem: "is missing") }
            return fallback
        }
        guard let v = value.stringValue else { throw ModelConfigError(key: key(name), problem: "\(value.serialized()) is not a string") }
        if let allowed, !allowed.contains(v) {
            throw ModelConfigError(key: key(name), problem: "\"\(v)\" is not supported (expected one of \(allowed.joined(separator: ", ")))")
        }
        return v
    }

    /// lop's per-layer FFN widths: absent means every layer has `full`.
    func layerWidths(_ name: String, layers: Int, full: Int) throws(ModelConfigError) -> [Int] {
        guard let value = members[name], value != .null else { return Array(repeating: full, count: layers) }
        guard let items = value.arrayValue, items.count == layers else {
            throw ModelConfigError(key: key(name), problem: "must list one width per layer (\(layers))")
        }
        var widths: [Int] = []
        for item in items {
            guard let w = item.intValue, w >= 1, w <= full else {
                throw ModelConfigError(key: key(name), problem: "\(item.serialized()) is not a width in 1...\(full)")
            }
            widths.append(w)
        }
        return widths
    }

    /// Keys every transformers config may hold that never change a forward pass: names, dtypes, token ids, and the
    /// generation defaults older transformers wrote into every (nested) config.
    static let commonHarmless: Set<String> = [
        "architectures", "torch_dtype", "dtype", "transformers_version", "_name_or_path", "name_or_path", "bos_token_id", "eos_token_id",
        "sep_token_id", "decoder_start_token_id", "use_cache", "output_attentions", "output_hidden_states", "return_dict", "use_return_dict",
        "is_decoder", "is_encoder_decoder", "tokenizer_class", "id2label", "label2id", "problem_type", "chunk_size_feed_forward",
        "tie_encoder_decoder", "pruned_heads", "torchscript", "model_max_length", "add_cross_attention", "cross_attention_hidden_size",
        "finetuning_task", "prefix", "task_specific_params", "tf_legacy_loss", "use_bfloat16", "max_length", "min_length", "do_sample",
        "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
        "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
        "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
        "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    ]

    /// A key neither read nor known to be harmless may change the computation: an error, never ignored.
    func rejectUnknown(understood: Set<String>, harmless: Set<String>) throws(ModelConfigError) {
        for name in members.keys.sorted() where !understood.contains(name) && !harmless.contains(name) {
            throw ModelConfigError(key: key(name), problem: "is not understood by lop, and it may change what the model computes")
        }
    }

    func child(_ name: String) throws(ModelConfigError) -> ConfigFields {
        guard let value = members[name] else { throw ModelConfigError(key: key(name), problem: "is missing") }
        return try ConfigFields(value, path: key(name))
    }
}

/// The key lop adds to a pruned model's config: one FFN width per layer. `intermediate_size` keeps the base
/// model's width (the upper bound of every entry), so the base shape stays visible.
public let ffnSizesKey = "lop_ffn_sizes"

/// A Llama-family decoder's `config.json` (`LlamaForCausalLM`; Qwen2 and Mistral differ by one flag each).
public struct LlamaConfig: Equatable, Sendable {
    public var modelType: String
    public var vocabularySize: Int
    public var hiddenSize: Int
    /// The base model's FFN width.
    public var intermediateSize: Int
    /// Each layer's FFN width (all `intermediateSize` unless pruned).
    public var ffnSizes: [Int]
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var rmsNormEps: Double
    public var ropeTheta: Double
    /// How rotary frequencies are rescaled (`rope_parameters.rope_type`, or the older `rope_scaling`).
    public var ropeScaling: Rotary.Scaling = .none
    /// Qwen2.5-VL's multimodal rotary sections (`mrope_section`): how many of a head's frequency pairs follow the
    /// temporal, height and width position (nil: one position per token).
    public var mropeSection: [Int]?
    public var tiedEmbeddings: Bool
    /// Biases on q/k/v projections (Qwen2; Llama's `attention_bias`).
    public var qkvBias: Bool
    /// A bias on the output projection (Llama's `attention_bias`; not Qwen2).
    public var outputBias: Bool
    public var maxPositions: Int

    public init(vocabularySize: Int, hiddenSize: Int, intermediateSize: Int, layers: Int, heads: Int, kvHeads: Int,
                rmsNormEps: Double = 1e-5, ropeTheta: Double = 10000, tiedEmbeddings: Bool = false, maxPositions: Int = 2048) {
        modelType = "llama"
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        ffnSizes = Array(repeating: intermediateSize, count: layers)
        self.layers = layers
        self.heads = heads
        self.kvHeads = kvHeads
        headDim = hiddenSize / heads
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.tiedEmbeddings = tiedEmbeddings
        qkvBias = false
        outputBias = false
        self.maxPositions = maxPositions
    }

    public init(json: JSON) throws(ModelConfigError) {
        try self.init(fields: ConfigFields(json))
    }

    init(fields f: ConfigFields) throws(ModelConfigError) {
        modelType = try f.string("model_type", default: "llama", allowed: ["llama", "qwen2", "mistral", "qwen2_5_vl_text"])
        vocabularySize = try f.int("vocab_size")
        hiddenSize = try f.int("hidden_size")
        intermediateSize = try f.int("intermediate_size")
        layers = try f.int("num_hidden_layers")
        heads = try f.int("num_attention_heads")
        kvHeads = try f.int("num_key_value_heads", default: heads)
        guard heads % kvHeads == 0 else {
            throw ModelConfigError(key: f.key("num_key_value_heads"), problem: "\(kvHeads) does not divide num_attention_heads \(heads)")
        }
        guard hiddenSize % heads == 0 || f.members["head_dim"] != nil else {
            throw ModelConfigError(key: f.key("num_attention_heads"), problem: "\(heads) does not divide hidden_size \(hiddenSize)")
        }
        headDim = try f.int("head_dim", default: hiddenSize / heads)
        guard headDim % 2 == 0 else { throw ModelConfigError(key: f.key("head_dim"), problem: "\(headDim) is odd; rotary embeddings need pairs") }
        rmsNormEps = try f.double("rms_norm_eps", default: 1e-6)
        (ropeTheta, ropeScaling, mropeSection) = try Self.rotary(f, multimodal: modelType == "qwen2_5_vl_text")
        if let section = mropeSection, section.reduce(0, +) != headDim / 2 {
            throw ModelConfigError(key: f.key(f.members["rope_parameters"] != nil ? "rope_parameters.mrope_section" : "rope_scaling.mrope_section"),
                                   problem: "\(section) covers \(section.reduce(0, +)) frequency pairs; a head of \(headDim) has \(headDim / 2)")
        }
        tiedEmbeddings = try f.bool("tie_word_embeddings", default: false)
        let attentionBias = try f.bool("attention_bias", default: false)
        let qwen2 = modelType == "qwen2" || modelType == "qwen2_5_vl_text"
        qkvBias = qwen2 || attentionBias
        outputBias = !qwen2 && attentionBias
        maxPositions = try f.int("max_position_embeddings", default: 2048)
        _ = try f.string("hidden_act", default: "silu", allowed: ["silu"])
        if try f.bool("mlp_bias", default: false) { throw ModelConfigError(key: f.key("mlp_bias"), problem: "FFN biases are not supported") }
        ffnSizes = try f.layerWidths(ffnSizesKey, layers: layers, full: intermediateSize)
        try Self.checkAttentionWindows(f)
        try f.rejectUnknown(understood: Self.understood, harmless: Self.harmless)
    }

    /// Keys this type reads.
    static let understood: Set<String> = [
        "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "tie_word_embeddings", "attention_bias",
        "max_position_embeddings", "hidden_act", "mlp_bias", ffnSizesKey, "use_sliding_window", "sliding_window", "max_window_layers",
        "layer_types", "pretraining_tp",
    ]
    /// Keys that do not change what the model computes in evaluation (ids, dtypes, training-only settings, names).
    static let harmless: Set<String> = ConfigFields.commonHarmless.union(["pad_token_id", "initializer_range", "attention_dropout", "embd_pdrop", "resid_pdrop"])

    /// Qwen2 and Qwen2.5-VL's text model: q/k/v biases, no output bias.
    var isQwen2: Bool { modelType == "qwen2" || modelType == "qwen2_5_vl_text" }

    /// θ, the frequency scaling and (for a `multimodal` text model) the M-RoPE sections, from transformers 5's
    /// `rope_parameters` or the older `rope_theta` + `rope_scaling`; a `rope_type` lop does not implement is
    /// refused with the key's path, and so is a multimodal model without its sections.
    static func rotary(_ f: ConfigFields, multimodal: Bool = false) throws(ModelConfigError) -> (theta: Double, scaling: Rotary.Scaling, mrope: [Int]?) {
        var theta = try f.double("rope_theta", default: 10000)
        var source: ConfigFields?
        if let parameters = f.members["rope_parameters"], parameters != .null {
            let p = try ConfigFields(parameters, path: f.key("rope_parameters"))
            if let top = f.members["rope_theta"], let inner = p.members["rope_theta"], top.doubleValue != inner.doubleValue {
                throw ModelConfigError(key: p.key("rope_theta"), problem: "\(inner.serialized()) disagrees with rope_theta \(top.serialized())")
            }
            theta = try p.double("rope_theta", default: theta)
            source = p
        } else if let scaling = f.members["rope_scaling"], scaling != .null {
            source = try ConfigFields(scaling, path: f.key("rope_scaling"))
        }
        guard let p = source else {
            if multimodal { throw ModelConfigError(key: f.key("rope_parameters.mrope_section"), problem: "is missing (Qwen2.5-VL's text model needs its multimodal rotary sections)") }
            return (theta, .none, nil)
        }
        let typeKey = p.members["rope_type"] != nil ? "rope_type" : "type"
        var type = try p.string(typeKey, default: "default")
        var known: Set<String> = ["rope_type", "type", "rope_theta", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]
        var mrope: [Int]?
        if multimodal {
            // transformers reads the Hub's "mrope" type as the default frequencies with sections.
            if type == "mrope" { type = "default" }
            known.insert("mrope_section")
            guard let items = p.members["mrope_section"]?.arrayValue, items.count == 3, case let section = items.compactMap(\.intValue),
                  section.count == 3, section.allSatisfy({ $0 >= 0 }) else {
                throw ModelConfigError(key: p.key("mrope_section"), problem: p.members["mrope_section"] == nil ? "is missing (Qwen2.5-VL's text model needs its multimodal rotary sections)"
                                                                                                             : "must list three non-negative pair counts (temporal, height, width)")
            }
            mrope = section
        }
        for key in p.members.keys.sorted() where !known.contains(key) {
            if key == "partial_rotary_factor", p.members[key]?.doubleValue == 1 { continue }
            throw ModelConfigError(key: p.key(key), problem: "is not supported for rope_type \"\(type)\"" + (key == "mrope_section" ? " (multimodal rotary embeddings are Qwen2.5-VL's)" : ""))
        }
        if mrope != nil, type != "default" {
            throw ModelConfigError(key: p.key(typeKey), problem: "\"\(type)\" is not supported with mrope_section (lop implements default)")
        }
        switch type {
        case "default": return (theta, .none, mrope)
        case "linear": return (theta, .linear(factor: try p.double("factor", default: nil)), nil)
        case "llama3":
            let low = try p.double("low_freq_factor", default: nil), high = try p.double("high_freq_factor", default: nil)
            guard high > low else { throw ModelConfigError(key: p.key("high_freq_factor"), problem: "must exceed low_freq_factor \(low)") }
            return (theta, .llama3(factor: try p.double("factor", default: nil), lowFrequencyFactor: low, highFrequencyFactor: high,
                                   originalPositions: try p.int("original_max_position_embeddings")), nil)
        default:
            throw ModelConfigError(key: p.key(typeKey), problem: "\"\(type)\" is not supported (lop implements default, linear, llama3)")
        }
    }

    /// Attention patterns other than full causal attention in every layer are refused: sliding windows switched
    /// on, layer types other than full attention, tensor-parallel slicing of the projections.
    static func checkAttentionWindows(_ f: ConfigFields) throws(ModelConfigError) {
        if try f.bool("use_sliding_window", default: false) {
            throw ModelConfigError(key: f.key("use_sliding_window"), problem: "sliding-window attention is not supported")
        }
        if let window = f.members["sliding_window"], window != .null, f.members["use_sliding_window"] == nil {
            // Mistral's window: full attention as long as every sequence is shorter than it.
            let w = try f.int("sliding_window")
            let positions = try f.int("max_position_embeddings", default: 2048)
            guard w >= positions else {
                throw ModelConfigError(key: f.key("sliding_window"), problem: "\(window.serialized()) is shorter than max_position_embeddings \(positions); sliding-window attention is not supported")
            }
        }
        if let types = f.members["layer_types"], types != .null {
            guard let items = types.arrayValue, items.allSatisfy({ $0.stringValue == "full_attention" }) else {
                throw ModelConfigError(key: f.key("layer_types"), problem: "only full_attention layers are supported")
            }
        }
        if let tp = f.members["pretraining_tp"], tp != .null, tp.intValue != 1 {
            throw ModelConfigError(key: f.key("pretraining_tp"), problem: "\(tp.serialized()) is not supported (only 1)")
        }
    }

    /// The rotary embedding the attention applies.
    public var rotary: Rotary { Rotary(theta: ropeTheta, scaling: ropeScaling) }

    /// Whether some layer's FFN is narrower than the base width.
    public var isPruned: Bool { ffnSizes.contains { $0 != intermediateSize } }

    public var json: JSON {
        var members: [String: JSON] = [
            "architectures": .array([.string(modelType == "qwen2" ? "Qwen2ForCausalLM" : modelType == "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM")]),
            "model_type": .string(modelType),
            "vocab_size": .int(vocabularySize),
            "hidden_size": .int(hiddenSize),
            "intermediate_size": .int(intermediateSize),
            "num_hidden_layers": .int(layers),
            "num_attention_heads": .int(heads),
            "num_key_value_heads": .int(kvHeads),
            "head_dim": .int(headDim),
            "rms_norm_eps": .double(rmsNormEps),
            "rope_theta": .double(ropeTheta),
            "tie_word_embeddings": .bool(tiedEmbeddings),
            "max_position_embeddings": .int(maxPositions),
            "hidden_act": .string("silu"),
        ]
        if !isQwen2 { members["attention_bias"] = .bool(outputBias) }
        // Every layer at one width is a plain config transformers and llama.cpp load as it is; only differing
        // widths need lop's per-layer key.
        if Set(ffnSizes).count == 1 { members["intermediate_size"] = .int(ffnSizes[0]) } else { members[ffnSizesKey] = .array(ffnSizes.map { JSON.int($0) }) }
        if ropeScaling != .none { members["rope_scaling"] = Self.scalingJSON(ropeScaling) }
        if let mropeSection {
            members["rope_scaling"] = .object(["rope_type": .string("default"), "mrope_section": .array(mropeSection.map { JSON.int($0) })])
            members["architectures"] = nil
        }
        return .object(members)
    }

    /// The older `rope_scaling` form, which transformers 4 and 5 both read.
    static func scalingJSON(_ scaling: Rotary.Scaling) -> JSON {
        switch scaling {
        case .none: return .null
        case .linear(let factor): return .object(["rope_type": .string("linear"), "factor": .double(factor)])
        case .llama3(let factor, let low, let high, let original):
            return .object(["rope_type": .string("llama3"), "factor": .double(factor), "low_freq_factor": .double(low),
                            "high_freq_factor": .double(high), "original_max_position_embeddings": .int(original)])
        }
    }
}

/// The activations vision encoders and projectors use, by their Hugging Face names.
public enum Activation: String, Sendable, CaseIterable {
    case gelu, quickGelu = "quick_gelu", geluTanh = "gelu_pytorch_tanh", geluNew = "gelu_new", silu, relu
}

/// A ViT vision encoder's config: CLIP's (`clip_vision_model`: class token, pre-LayerNorm, `quick_gelu`) or
/// SigLIP's (`siglip_vision_model`: no class token, a biased patch embedding, `gelu_pytorch_tanh`, an optional
/// attention-pooling head). Both are pre-LN blocks with a `fc1`/`fc2` MLP.
public struct VisionConfig: Equatable, Sendable {
    public enum Kind: String, Sendable { case clip = "clip_vision_model", siglip = "siglip_vision_model" }
    public var kind: Kind
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var ffnSizes: [Int]
    public var layers: Int
    public var heads: Int
    public var imageSize: Int
    public var patchSize: Int
    public var channels: Int
    public var layerNormEps: Double
    public var activation: Activation
    /// SigLIP's multi-head attention pooling head (`vision_use_head`): loaded and written back, never run (an
    /// MLLM reads hidden states, not the pooled output).
    public var usesHead: Bool

    public init(hiddenSize: Int, intermediateSize: Int, layers: Int, heads: Int, imageSize: Int, patchSize: Int,
                channels: Int = 3, layerNormEps: Double = 1e-5, activation: Activation = .quickGelu, kind: Kind = .clip, usesHead: Bool = false) {
        self.kind = kind
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        ffnSizes = Array(repeating: intermediateSize, count: layers)
        self.layers = layers
        self.heads = heads
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.channels = channels
        self.layerNormEps = layerNormEps
        self.activation = activation
        self.usesHead = usesHead
    }

    public var patchesPerSide: Int { imageSize / patchSize }
    public var patchCount: Int { patchesPerSide * patchesPerSide }
    /// CLIP prepends a class token to the patches; SigLIP has none.
    public var hasClassToken: Bool { kind == .clip }
    /// Tokens the encoder's hidden states hold per image.
    public var tokenCount: Int { patchCount + (hasClassToken ? 1 : 0) }

    init(fields f: ConfigFields) throws(ModelConfigError) {
        let type = try f.string("model_type", default: "clip_vision_model", allowed: ["clip_vision_model", "vit", "siglip_vision_model"])
        kind = type == "siglip_vision_model" ? .siglip : .clip
        hiddenSize = try f.int("hidden_size")
        intermediateSize = try f.int("intermediate_size")
        layers = try f.int("num_hidden_layers")
        heads = try f.int("num_attention_heads")
        guard hiddenSize % heads == 0 else {
            throw ModelConfigError(key: f.key("num_attention_heads"), problem: "\(heads) does not divide hidden_size \(hiddenSize)")
        }
        imageSize = try f.int("image_size")
        patchSize = try f.int("patch_size")
        guard imageSize % patchSize == 0 else {
            throw ModelConfigError(key: f.key("patch_size"), problem: "\(patchSize) does not divide image_size \(imageSize)")
        }
        channels = try f.int("num_channels", default: 3)
        // Each kind's transformers defaults.
        layerNormEps = try f.double("layer_norm_eps", default: kind == .siglip ? 1e-6 : 1e-5)
        let act = try f.string("hidden_act", default: kind == .siglip ? "gelu_pytorch_tanh" : "quick_gelu", allowed: Activation.allCases.map(\.rawValue))
        activation = Activation(rawValue: act)!
        usesHead = kind == .siglip ? try f.bool("vision_use_head", default: true) : false
        ffnSizes = try f.layerWidths(ffnSizesKey, layers: layers, full: intermediateSize)
        var understood: Set<String> = ["model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                                       "patch_size", "num_channels", "layer_norm_eps", "hidden_act", ffnSizesKey]
        if kind == .siglip { understood.insert("vision_use_head") }
        try f.rejectUnknown(understood: understood,
                            harmless: ConfigFields.commonHarmless.union(["attention_dropout", "dropout", "initializer_factor", "initializer_range",
                                                                          "projection_dim"]))
    }

    var json: JSON {
        var members: [String: JSON] = [
            "model_type": .string(kind.rawValue),
            "hidden_size": .int(hiddenSize),
            "intermediate_size": .int(intermediateSize),
            "num_hidden_layers": .int(layers),
            "num_attention_heads": .int(heads),
            "image_size": .int(imageSize),
            "patch_size": .int(patchSize),
            "num_channels": .int(channels),
            "layer_norm_eps": .double(layerNormEps),
            "hidden_act": .string(activation.rawValue),
        ]
        if kind == .siglip { members["vision_use_head"] = .bool(usesHead) }
        if Set(ffnSizes).count == 1 { members["intermediate_size"] = .int(ffnSizes[0]) } else { members[ffnSizesKey] = .array(ffnSizes.map { JSON.int($0) }) }
        return .object(members)
    }
}

/// A LLaVA-style MLLM's config: `LlavaForConditionalGeneration` (vision encoder → MLP projector → decoder, one
/// tile per image) or `LlavaOnevisionForConditionalGeneration` (the same with AnyRes tiling and `image_newline`).
public struct LlavaConfig: Equatable, Sendable {
    public enum Kind: String, Sendable { case llava, onevision = "llava_onevision" }
    public var kind: Kind
    public var text: LlamaConfig
    public var vision: VisionConfig
    /// The token id whose positions receive image features, one position per feature.
    public var imageTokenIndex: Int
    public var projectorActivation: Activation
    /// Which vision hidden state feeds the projector: −1 is the last layer's output, −2 the one before it (HF).
    public var visionFeatureLayer: Int
    /// "default" drops the first token's feature (CLIP's class token), "full" keeps it.
    public var visionFeatureSelect: String
    /// Whether the projector's two layers have biases (`multimodal_projector_bias`).
    public var projectorBias = true
    /// LLaVA-OneVision's tiling (nil for LLaVA).
    public var anyRes: AnyRes?

    public init(text: LlamaConfig, vision: VisionConfig, imageTokenIndex: Int, visionFeatureLayer: Int = -1,
                visionFeatureSelect: String = "default", projectorActivation: Activation = .gelu, anyRes: AnyRes? = nil) {
        kind = anyRes == nil ? .llava : .onevision
        self.text = text
        self.vision = vision
        self.imageTokenIndex = imageTokenIndex
        self.visionFeatureLayer = visionFeatureLayer
        self.visionFeatureSelect = visionFeatureSelect
        self.projectorActivation = projectorActivation
        self.anyRes = anyRes
    }

    public init(json: JSON) throws(ModelConfigError) {
        let f = try ConfigFields(json)
        kind = Kind(rawValue: try f.string("model_type", default: "llava", allowed: ["llava", "llava_onevision"]))!
        text = try LlamaConfig(fields: f.child("text_config"))
        vision = try VisionConfig(fields: f.child("vision_config"))
        // transformers 5 names it image_token_id in code and still writes image_token_index; either is read.
        let tokenKey = f.members["image_token_index"] == nil && f.members["image_token_id"] != nil ? "image_token_id" : "image_token_index"
        imageTokenIndex = try f.int(tokenKey, default: kind == .onevision ? 151646 : nil, minimum: 0)
        guard imageTokenIndex < text.vocabularySize else {
            throw ModelConfigError(key: tokenKey, problem: "\(imageTokenIndex) is outside the vocabulary of \(text.vocabularySize)")
        }
        projectorBias = try f.bool("multimodal_projector_bias", default: true)
        if let layer = f.members["vision_feature_layer"], layer.arrayValue != nil {
            throw ModelConfigError(key: "vision_feature_layer", problem: "features from several layers (\(layer.serialized())) are not supported")
        }
        if try f.bool("tie_word_embeddings", default: false) != text.tiedEmbeddings {
            throw ModelConfigError(key: "tie_word_embeddings", problem: "disagrees with text_config.tie_word_embeddings")
        }
        projectorActivation = Activation(rawValue: try f.string("projector_hidden_act", default: "gelu", allowed: Activation.allCases.map(\.rawValue)))!
        // Each class's transformers defaults.
        let layer = try f.int("vision_feature_layer", default: kind == .onevision ? -1 : -2, minimum: -vision.layers - 1)
        guard layer <= vision.layers else {
            throw ModelConfigError(key: "vision_feature_layer", problem: "\(layer) is beyond the \(vision.layers) vision layers")
        }
        visionFeatureLayer = layer
        visionFeatureSelect = try f.string("vision_feature_select_strategy", default: kind == .onevision ? "full" : "default", allowed: ["default", "full"])
        var understood: Set<String> = ["model_type", "text_config", "vision_config", "image_token_index", "image_token_id", "projector_hidden_act",
                                       "vision_feature_layer", "vision_feature_select_strategy", "multimodal_projector_bias", "tie_word_embeddings"]
        if kind == .onevision {
            anyRes = try AnyRes(pinpoints: f.members["image_grid_pinpoints"], aspectRatio: try f.string("vision_aspect_ratio", default: "anyres_max_9"),
                                tileSize: vision.imageSize, key: f.key)
            guard featuresPerImage == vision.patchCount else {
                throw ModelConfigError(key: "vision_feature_select_strategy", problem: "\"\(visionFeatureSelect)\" leaves \(featuresPerImage) features per tile, but AnyRes tiles need the \(vision.patchCount) patches")
            }
            understood.formUnion(["image_grid_pinpoints", "vision_aspect_ratio"])
        }
        try f.rejectUnknown(understood: understood,
                            harmless: ConfigFields.commonHarmless.union(["image_seq_length", "ignore_index", "pad_token_id", "vocab_size",
                                                                          "video_token_index", "video_token_id"]))
    }

    /// How many vision layers run: hidden state `visionFeatureLayer` needs no layer after it.
    public var visionLayersUsed: Int { visionFeatureLayer < 0 ? vision.layers + 1 + visionFeatureLayer : visionFeatureLayer }

    /// Image features per tile (per image for LLaVA), hence image tokens per image in a LLaVA text.
    public var featuresPerImage: Int { vision.tokenCount - (visionFeatureSelect == "default" ? 1 : 0) }

    /// The image tokens an image with this layout takes in the text.
    public func imageTokens(for image: ImageBatch.Layout) throws(ModelInputError) -> Int {
        guard let anyRes else {
            guard image.tiles == 1 else { throw ModelInputError(problem: "an image has \(image.tiles) tiles; LLaVA takes one") }
            return featuresPerImage
        }
        if image.tiles == 1 { return featuresPerImage + 1 }
        let expected = anyRes.tileCount(height: image.height, width: image.width)
        guard image.tiles == expected else {
            throw ModelInputError(problem: "an image of \(image.height)×\(image.width) pixels has \(image.tiles) tiles; AnyRes makes \(expected) (the base image and the grid)")
        }
        return anyRes.featureCount(height: image.height, width: image.width, side: vision.patchesPerSide)
    }

    public var json: JSON {
        var members: [String: JSON] = [
            "architectures": .array([.string(kind == .onevision ? "LlavaOnevisionForConditionalGeneration" : "LlavaForConditionalGeneration")]),
            "model_type": .string(kind.rawValue),
            "text_config": text.json,
            "vision_config": vision.json,
            "image_token_index": .int(imageTokenIndex),
            "projector_hidden_act": .string(projectorActivation.rawValue),
            "vision_feature_layer": .int(visionFeatureLayer),
            "vision_feature_select_strategy": .string(visionFeatureSelect),
        ]
        // Written only when they differ from the defaults, so the configs (and content hashes) of models without
        // them stay as they were.
        if !projectorBias { members["multimodal_projector_bias"] = .bool(false) }
        if text.tiedEmbeddings { members["tie_word_embeddings"] = .bool(true) }
        if let anyRes {
            members["image_grid_pinpoints"] = anyRes.pinpointsJSON
            members["vision_aspect_ratio"] = .string("anyres_max_\(anyRes.maxTiles)")
        }
        return .object(members)
    }
}

extension ModelConfigError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
