import Foundation
import Models
import Tensor

/// A LLaVA model's vision tower and projector as the separate `mmproj` GGUF that llama.cpp's multimodal library
/// (`tools/mtmd`) loads beside the language model: architecture `clip`, the `clip.vision.*` hyperparameters,
/// the `v.*` tower tensors and the `mm.0`/`mm.2` projector. Read from llama.cpp's `clip.cpp`, `clip-impl.h` and
/// `models/llava.cpp`:
/// - the graph runs the layers up to the deepest `clip.vision.feature_layer` (hidden state i is the input of
///   layer i, as in transformers' `hidden_states`), so the file names LLaVA's `vision_feature_layer` there and
///   holds no post-LayerNorm (LLaVA does not use it);
/// - the MLP's `fc1` is written as `ffn_down` and `fc2` as `ffn_up`, the names llama.cpp's LLaVA files have
///   always used (its loader swaps them back by shape, which holds for any pruned width);
/// - per-layer MLP widths need nothing: the graph takes each layer's width from its tensors;
/// - llama.cpp's LLaVA graph appends the class token after the patches, so the position table is rotated to
///   match; its feature selection then skips the first row, as if the class token were first, so llama.cpp
///   returns patches 2…N and the class token where transformers returns patches 1…N (a limit of llama.cpp's
///   graph, measured in the README).
public enum VisionProjectorGGUF {
    public static func file(_ m: LlavaModel, preprocessor: ImagePreprocessor, name: String, type: GGUFFile.TensorType) throws -> GGUFFile {
        let c = m.config, v = c.vision
        guard c.anyRes == nil else { throw ExportError("model_type: the mmproj is written for LLaVA; LLaVA-OneVision's AnyRes tiling and image_newline have no llama.cpp LLaVA form") }
        guard v.kind == .clip, let classEmbedding = m.vision.classEmbedding, let preNormWeight = m.vision.preNormWeight, let preNormBias = m.vision.preNormBias else {
            throw ExportError("vision_config.model_type: the mmproj is written for CLIP vision towers, not \(v.kind.rawValue)")
        }
        guard v.channels == 3 else { throw ExportError("vision_config.num_channels: \(v.channels); llama.cpp's CLIP reads RGB images") }
        guard [.quickGelu, .gelu].contains(v.activation) else {
            throw ExportError("vision_config.hidden_act: \(v.activation.rawValue) has no llama.cpp CLIP form (quick_gelu, gelu)")
        }
        guard c.projectorActivation == .gelu else { throw ExportError("projector_hidden_act: llama.cpp's LLaVA projector applies gelu, not \(c.projectorActivation.rawValue)") }
        guard c.visionFeatureSelect == "default" else { throw ExportError("vision_feature_select_strategy: llama.cpp's LLaVA graph drops the class token (default), not \(c.visionFeatureSelect)") }
        let featureLayer = c.visionLayersUsed
        var f = GGUFFile()
        f.set("general.architecture", .string("clip"))
        f.set("general.name", .string(name))
        f.set("general.description", .string("vision tower and projector of \(name), written by lop"))
        f.set("general.file_type", .uint32(LanguageModelGGUF.fileType(type)))
        f.set("clip.has_text_encoder", .bool(false))
        f.set("clip.has_vision_encoder", .bool(true))
        f.set("clip.has_llava_projector", .bool(true))
        f.set("clip.projector_type", .string("mlp"))
        f.set("clip.use_gelu", .bool(v.activation == .gelu))
        f.set("clip.use_silu", .bool(false))
        f.set("clip.vision.image_size", .uint32(UInt32(v.imageSize)))
        f.set("clip.vision.patch_size", .uint32(UInt32(v.patchSize)))
        f.set("clip.vision.embedding_length", .uint32(UInt32(v.hiddenSize)))
        f.set("clip.vision.feed_forward_length", .uint32(UInt32(v.ffnSizes.max() ?? v.intermediateSize)))
        f.set("clip.vision.block_count", .uint32(UInt32(featureLayer)))
        f.set("clip.vision.attention.head_count", .uint32(UInt32(v.heads)))
        f.set("clip.vision.attention.layer_norm_epsilon", .float32(Float(v.layerNormEps)))
        f.set("clip.vision.projection_dim", .uint32(UInt32(c.text.hiddenSize)))
        f.set("clip.vision.feature_layer", .int32s([featureLayer]))
        f.set("clip.vision.image_mean", .float32s(preprocessor.mean.map { Float($0) }))
        f.set("clip.vision.image_std", .float32s(preprocessor.std.map { Float($0) }))

        let t = m.vision
        // Convolution kernels stay F16 or F32 (ggml's im2col takes no quantised kernel).
        f.tensors.append(LanguageModelGGUF.matrix("v.patch_embd.weight", t.patchEmbedding.weight, type: type == .f32 ? .f32 : .f16))
        f.tensors.append(LanguageModelGGUF.vector("v.class_embd", classEmbedding.value.data))
        // llama.cpp's graph appends the class token after the patches and gives token i position row i: the rows
        // are rotated so that every token still gets its own position (attention does not see token order).
        let positions = t.positionEmbedding.value, h = v.hiddenSize, n = positions.shape[0]
        var rotated = [Float]()
        for r in Array(1..<n) + [0] { rotated += positions.data[(r * h)..<((r + 1) * h)] }
        f.tensors.append(LanguageModelGGUF.matrix("v.position_embd.weight", .float(Tensor(shape: [n, h], data: rotated)), type: .f32))
        f.tensors.append(LanguageModelGGUF.vector("v.pre_ln.weight", preNormWeight.value.data))
        f.tensors.append(LanguageModelGGUF.vector("v.pre_ln.bias", preNormBias.value.data))
        for (i, layer) in t.layers.prefix(featureLayer).enumerated() {
            let b = "v.blk.\(i)."
            for (short, weight, bias) in [("attn_q", layer.q, layer.qBias), ("attn_k", layer.k, layer.kBias), ("attn_v", layer.v, layer.vBias),
                                          ("attn_out", layer.out, layer.outBias), ("ffn_down", layer.fc1, layer.fc1Bias), ("ffn_up", layer.fc2, layer.fc2Bias)] {
                f.tensors.append(LanguageModelGGUF.matrix(b + short + ".weight", weight.weight, type: type))
                f.tensors.append(LanguageModelGGUF.vector(b + short + ".bias", bias.value.data))
            }
            f.tensors.append(LanguageModelGGUF.vector(b + "ln1.weight", layer.norm1Weight.value.data))
            f.tensors.append(LanguageModelGGUF.vector(b + "ln1.bias", layer.norm1Bias.value.data))
            f.tensors.append(LanguageModelGGUF.vector(b + "ln2.weight", layer.norm2Weight.value.data))
            f.tensors.append(LanguageModelGGUF.vector(b + "ln2.bias", layer.norm2Bias.value.data))
        }
        let zeros = { (n: Int) in [Float](repeating: 0, count: n) }
        f.tensors.append(LanguageModelGGUF.matrix("mm.0.weight", m.projector1.weight, type: type))
        f.tensors.append(LanguageModelGGUF.vector("mm.0.bias", m.projector1Bias?.value.data ?? zeros(c.text.hiddenSize)))
        f.tensors.append(LanguageModelGGUF.matrix("mm.2.weight", m.projector2.weight, type: type))
        f.tensors.append(LanguageModelGGUF.vector("mm.2.bias", m.projector2Bias?.value.data ?? zeros(c.text.hiddenSize)))
        return f
    }
}
