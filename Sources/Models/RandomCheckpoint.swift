import Foundation
import Tensor

/// A random-weight Llama checkpoint of a real model's shape, written one tensor at a time (a 7 B one never
/// sits in memory): matrices ~ N(0, 0.02), norm scales 1. For the engine benchmark and the memory tests; the
/// loader checks every name and shape when the folder is read back.
public enum RandomCheckpoint {
    /// TinyLlama-1.1B's shape: 22 layers, hidden 2048, FFN 5632, 32 heads / 4 KV heads, vocabulary 32000.
    public static let tinyLlama = LlamaConfig(vocabularySize: 32000, hiddenSize: 2048, intermediateSize: 5632, layers: 22, heads: 32, kvHeads: 4)
    /// Llama-2-7B's shape: 32 layers, hidden 4096, FFN 11008, 32 heads, vocabulary 32000.
    public static let llama7B = LlamaConfig(vocabularySize: 32000, hiddenSize: 4096, intermediateSize: 11008, layers: 32, heads: 32, kvHeads: 32)

    /// Names and shapes of a Llama checkpoint's tensors.
    public static func shapes(_ c: LlamaConfig) -> [String: [Int]] {
        let (h, q, kv) = (c.hiddenSize, c.heads * c.headDim, c.kvHeads * c.headDim)
        var shapes: [String: [Int]] = ["model.embed_tokens.weight": [c.vocabularySize, h], "model.norm.weight": [h]]
        if !c.tiedEmbeddings { shapes["lm_head.weight"] = [c.vocabularySize, h] }
        for i in 0..<c.layers {
            let p = "model.layers.\(i).", f = c.ffnSizes[i]
            shapes[p + "input_layernorm.weight"] = [h]
            shapes[p + "post_attention_layernorm.weight"] = [h]
            shapes[p + "self_attn.q_proj.weight"] = [q, h]
            shapes[p + "self_attn.k_proj.weight"] = [kv, h]
            shapes[p + "self_attn.v_proj.weight"] = [kv, h]
            shapes[p + "self_attn.o_proj.weight"] = [h, q]
            shapes[p + "mlp.gate_proj.weight"] = [f, h]
            shapes[p + "mlp.up_proj.weight"] = [f, h]
            shapes[p + "mlp.down_proj.weight"] = [h, f]
        }
        return shapes
    }

    /// Writes `config.json` and `model.safetensors` into `directory` (created); returns the weights' bytes.
    @discardableResult
    public static func write(_ config: LlamaConfig, dtype: DType, seed: UInt64, to directory: String) throws -> Int {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let json = Checkpoint.naming(dtype, in: config.json)
        try AtomicFile.write(Data((json.serialized(pretty: true) + "\n").utf8), to: directory + "/config.json")
        let shapes = shapes(config)
        var generator = SeededGenerator(seed: seed)
        try SafeTensorsFile.write(shapes: shapes, dtype: dtype, to: directory + "/" + Checkpoint.singleFile) { name in
            let shape = shapes[name]!
            if shape.count == 1 { return .float(Tensor(repeating: 1, shape: shape)) }
            return .float(fastNormal(shape, std: 0.02, generator: &generator))
        }
        return shapes.values.reduce(0) { $0 + $1.reduce(1, *) } * dtype.byteSize
    }

    /// Gaussian values by the Box–Muller pair from one generator draw per two values (a 7 B model in tens of
    /// seconds rather than minutes).
    static func fastNormal(_ shape: [Int], std: Float, generator: inout SeededGenerator) -> Tensor {
        let count = shape.reduce(1, *)
        var data = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            let bits = generator.next()
            let u1 = max(Float(bits >> 40) / Float(1 << 24), 1e-7), u2 = Float(bits & 0xFF_FFFF) / Float(1 << 24)
            let radius = (-2 * log(u1)).squareRoot() * std, angle = 2 * Float.pi * u2
            data[i] = radius * cos(angle)
            if i + 1 < count { data[i + 1] = radius * sin(angle) }
            i += 2
        }
        return Tensor(shape: shape, data: data)
    }

    /// Random token ids in [0, vocabulary) as a little-endian uint16 `.bin` file (vocabularies up to 65536).
    public static func writeTokens(count: Int, vocabulary: Int, seed: UInt64, to path: String) throws {
        precondition(vocabulary <= 65536, "uint16 token files hold vocabularies up to 65536")
        var generator = SeededGenerator(seed: seed)
        let ids = (0..<count).map { _ in UInt16(generator.next() % UInt64(vocabulary)).littleEndian }
        try AtomicFile.write(ids.withUnsafeBytes { Data($0) }, to: path)
    }
}
