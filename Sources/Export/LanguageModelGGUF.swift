import Foundation
import Models
import Tensor

/// A Llama-family decoder (or an MLLM's language model) as the GGUF llama.cpp runs:
/// - every layer the same width: architecture `llama` (Llama, Mistral) or `qwen2` (q/k/v biases required);
/// - per-layer widths: `deci`. llama.cpp reads `{arch}.feed_forward_length` as an array for every architecture,
///   but its `llama` and `qwen2` graphs build every FFN at layer 0's width (`hparams.n_ff()`), while `deci` builds
///   each at `n_ff(i)` and takes optional q/k/v/o biases, so Qwen2 variants go there too.
public enum LanguageModelGGUF {
    public struct Plan: Equatable, Sendable {
        public let architecture: String
        /// Each layer's FFN width in the file.
        public let widths: [Int]
    }

    /// How `config` is written.
    public static func plan(_ config: LlamaConfig) -> Plan {
        guard Set(config.ffnSizes).count == 1 else { return Plan(architecture: "deci", widths: config.ffnSizes) }
        return Plan(architecture: config.modelType == "qwen2" ? "qwen2" : "llama", widths: config.ffnSizes)
    }

    /// llama.cpp's file-type code for the tensors' main type.
    static func fileType(_ type: GGUFFile.TensorType) -> UInt32 {
        switch type {
        case .f32: return 0
        case .f16: return 1
        case .q8_0: return 7
        case .bf16: return 32
        }
    }

    /// The file for `model`'s decoder, its tensors in `type` (norms and biases stay F32, as llama.cpp's converter
    /// writes them), with the tokenizer's metadata when `tokenizer` is given.
    public static func file(_ model: LlamaModel, name: String, type: GGUFFile.TensorType, tokenizer: TokenizerMetadata?) throws -> (file: GGUFFile, plan: Plan) {
        let c = model.config
        if c.mropeSection != nil {
            throw ExportError("rope_parameters.mrope_section: Qwen2.5-VL's multimodal rotary positions need llama.cpp's qwen2vl architecture, which lop does not write")
        }
        let plan = plan(c)
        let a = plan.architecture
        var f = GGUFFile()
        f.set("general.architecture", .string(a))
        f.set("general.name", .string(name))
        f.set("general.file_type", .uint32(fileType(type)))
        f.set("\(a).vocab_size", .uint32(UInt32(c.vocabularySize)))
        f.set("\(a).context_length", .uint32(UInt32(c.maxPositions)))
        f.set("\(a).embedding_length", .uint32(UInt32(c.hiddenSize)))
        f.set("\(a).block_count", .uint32(UInt32(c.layers)))
        if a == "deci" {
            f.set("\(a).feed_forward_length", .int32s(plan.widths))
            f.set("\(a).attention.head_count", .int32s(Array(repeating: c.heads, count: c.layers)))
            f.set("\(a).attention.head_count_kv", .int32s(Array(repeating: c.kvHeads, count: c.layers)))
        } else {
            f.set("\(a).feed_forward_length", .uint32(UInt32(plan.widths[0])))
            f.set("\(a).attention.head_count", .uint32(UInt32(c.heads)))
            f.set("\(a).attention.head_count_kv", .uint32(UInt32(c.kvHeads)))
        }
        f.set("\(a).rope.freq_base", .float32(Float(c.ropeTheta)))
        f.set("\(a).rope.dimension_count", .uint32(UInt32(c.headDim)))
        f.set("\(a).attention.key_length", .uint32(UInt32(c.headDim)))
        f.set("\(a).attention.value_length", .uint32(UInt32(c.headDim)))
        f.set("\(a).attention.layer_norm_rms_epsilon", .float32(Float(c.rmsNormEps)))
        switch c.ropeScaling {
        case .none: break
        case .linear(let factor):
            f.set("\(a).rope.scaling.type", .string("linear"))
            f.set("\(a).rope.scaling.factor", .float32(Float(factor)))
        case .llama3:
            // llama.cpp takes Llama 3's per-frequency factors as a tensor (the converter's rope_freqs).
            let base = Rotary(theta: c.ropeTheta).frequencies(headDim: c.headDim), scaled = c.rotary.frequencies(headDim: c.headDim)
            let factors = zip(base, scaled).map { Float($0 / $1) }
            f.tensors.append(vector("rope_freqs.weight", factors))
        }
        if let tokenizer {
            tokenizer.add(to: &f)
        } else {
            // llama.cpp needs a vocabulary type; "none" runs the model on ids alone (a folder without tokenizer.json).
            f.set("tokenizer.ggml.model", .string("none"))
        }

        // llama.cpp's llama and deci graphs rotate adjacent pairs; Hugging Face rotates halves. The converter
        // permutes q and k rows so that both compute the same; qwen2's graph rotates halves as Hugging Face does.
        let permutes = a != "qwen2"
        let (qOrder, kOrder) = (pairOrder(rows: c.heads * c.headDim, heads: c.heads), pairOrder(rows: c.kvHeads * c.headDim, heads: c.kvHeads))
        f.tensors.append(matrix("token_embd.weight", model.embedTokens.weight, type: type))
        for (i, layer) in model.layers.enumerated() {
            let b = "blk.\(i)."
            f.tensors.append(matrix(b + "attn_norm.weight", layer.inputNorm.weight, type: .f32))
            f.tensors.append(matrix(b + "attn_q.weight", layer.q.weight, type: type, rowOrder: permutes ? qOrder : nil))
            f.tensors.append(matrix(b + "attn_k.weight", layer.k.weight, type: type, rowOrder: permutes ? kOrder : nil))
            f.tensors.append(matrix(b + "attn_v.weight", layer.v.weight, type: type))
            f.tensors.append(matrix(b + "attn_output.weight", layer.o.weight, type: type))
            // Biases of q and k rotate with their rows, so they are permuted the same way.
            if let q = layer.qBias { f.tensors.append(vector(b + "attn_q.bias", q.value.data, order: permutes ? qOrder : nil)) }
            if let k = layer.kBias { f.tensors.append(vector(b + "attn_k.bias", k.value.data, order: permutes ? kOrder : nil)) }
            if let v = layer.vBias { f.tensors.append(vector(b + "attn_v.bias", v.value.data)) }
            if let o = layer.oBias { f.tensors.append(vector(b + "attn_output.bias", o.value.data)) }
            f.tensors.append(matrix(b + "ffn_norm.weight", layer.postNorm.weight, type: .f32))
            f.tensors.append(matrix(b + "ffn_gate.weight", layer.gate.weight, type: type))
            f.tensors.append(matrix(b + "ffn_up.weight", layer.up.weight, type: type))
            f.tensors.append(matrix(b + "ffn_down.weight", layer.down.weight, type: type))
        }
        f.tensors.append(matrix("output_norm.weight", model.norm.weight, type: .f32))
        if let head = model.lmHead { f.tensors.append(matrix("output.weight", head.weight, type: type)) }
        return (f, plan)
    }

    /// Row order of the converter's q/k permutation: within each head, row 2i + j comes from row j·d/2 + i.
    static func pairOrder(rows: Int, heads: Int) -> [Int] {
        let d = rows / heads, half = d / 2
        return (0..<rows).map { r in
            let (h, within) = (r / d, r % d)
            return h * d + (within % 2) * half + within / 2
        }
    }

    /// A 1-D F32 tensor of `values`, optionally reordered (`out[i] = values[order[i]]`).
    static func vector(_ name: String, _ values: [Float], order: [Int]? = nil) -> GGUFFile.TensorEntry {
        let ordered = order.map { $0.map { values[$0] } } ?? values
        return GGUFFile.TensorEntry(name: name, shape: [ordered.count], type: .f32) { body in
            try ordered.withUnsafeBufferPointer { try body(0..<1, $0) }
        }
    }

    /// A weight as a tensor entry: 1-D weights stay 1-D; a matrix's rows may be reordered.
    static func matrix(_ name: String, _ weight: Weight, type: GGUFFile.TensorType, rowOrder: [Int]? = nil) -> GGUFFile.TensorEntry {
        let shape = weight.shape
        guard shape.count == 2 else {
            return GGUFFile.TensorEntry(name: name, shape: shape, type: type) { body in
                try weight.widened.data.withUnsafeBufferPointer { try body(0..<(weight.count / max(shape.last ?? 1, 1)), $0) }
            }
        }
        let (rows, columns) = (shape[0], shape[1])
        return GGUFFile.TensorEntry(name: name, shape: shape, type: type) { body in
            if rowOrder == nil, case .stored(let m) = weight {
                // Streamed a panel at a time: a large embedding is never widened whole.
                var failure: (any Error)?
                m.forEachWidenedPanel { range, panel in
                    guard failure == nil else { return }
                    do { try body(range, UnsafeBufferPointer(start: panel, count: range.count * columns)) } catch { failure = error }
                }
                if let failure { throw failure }
                return
            }
            let source = weight.widened.data
            guard let rowOrder else { return try source.withUnsafeBufferPointer { try body(0..<rows, $0) } }
            var out = [Float](repeating: 0, count: rows * columns)
            for r in 0..<rows {
                let from = rowOrder[r] * columns
                for col in 0..<columns { out[r * columns + col] = source[from + col] }
            }
            try out.withUnsafeBufferPointer { try body(0..<rows, $0) }
        }
    }
}

extension LanguageModelGGUF {
    /// Writes `model`'s language model to `path`, with its folder's tokenizer when the folder has a tokenizer.json
    /// (a broken one is an error, never left out in silence).
    @discardableResult
    public static func write(_ model: Model, name: String, type: GGUFFile.TensorType, to path: String) throws -> (plan: Plan, tensors: Int, tokenizer: Bool) {
        let hasTokenizer = model.folder.map { FileManager.default.fileExists(atPath: $0.path + "/tokenizer.json") } ?? false
        let metadata = try hasTokenizer ? { () throws -> TokenizerMetadata in
            let inputs = try model.inputs()
            return try TokenizerMetadata(inputs.tokenizer, vocabularySize: model.language.config.vocabularySize, eos: inputs.eos)
        }() : nil
        let (gguf, plan) = try file(model.language, name: name, type: type, tokenizer: metadata)
        try gguf.write(to: path)
        return (plan, gguf.tensors.count, metadata != nil)
    }
}
