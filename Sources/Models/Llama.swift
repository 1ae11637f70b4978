import Foundation
import Tensor

/// What one FFN (a decoder's SwiGLU or a vision encoder's MLP) saw in a forward pass: importance scores and
/// outlier statistics are computed from it.
public struct FFNObservation {
    public enum Tower: Sendable { case language, vision }
    public let tower: Tower
    public let layer: Int
    /// The FFN's normalised input `[batch, length, hidden]`.
    public let input: Tensor
    /// Its hidden activation (`act(gate(x)) ⊙ up(x)`, or `act(fc1(x))`), `[batch, length, width]`.
    public let hidden: Tensor
}

/// How a forward pass runs beyond the weights themselves.
public struct ForwardOptions {
    /// Neurons each language-model FFN uses: the leading `k` of its (importance-ordered) neurons, read in place
    /// through BLAS leading dimensions. nil uses every neuron. Narrowed FFNs pass no gradient to their weights.
    public var ffnKeep: [Int]?
    /// The same for the vision encoder's MLPs (one entry per layer the encoder runs).
    public var visionKeep: [Int]?
    /// Receives every FFN's input and hidden activation.
    public var observe: ((FFNObservation) -> Void)?
    /// Down-projections `[hidden, keep]` that replace a language layer's (the leading `keep` columns) for this
    /// pass: re-fitted weights of a pruned FFN, evaluated without writing a model.
    public var ffnDown: [Int: Tensor]?
    /// The same for the vision encoder's MLP output (`fc2`, Qwen2.5-VL's `down_proj`): a `[hidden, keep]` weight
    /// and its `[hidden]` bias, by layer.
    public var visionOutput: [Int: (weight: Tensor, bias: Tensor)]?
    /// Runs only the first `languageLayers` decoder layers (then the final norm and head, whose output is then
    /// meaningless): a pass that only observes the early FFNs stops where they end.
    public var languageLayers: Int?

    public init(ffnKeep: [Int]? = nil, visionKeep: [Int]? = nil, observe: ((FFNObservation) -> Void)? = nil, ffnDown: [Int: Tensor]? = nil,
                visionOutput: [Int: (weight: Tensor, bias: Tensor)]? = nil) {
        self.ffnKeep = ffnKeep
        self.visionKeep = visionKeep
        self.observe = observe
        self.ffnDown = ffnDown
        self.visionOutput = visionOutput
    }
}

/// A Llama-family decoder (`LlamaForCausalLM`, `Qwen2ForCausalLM`, `MistralForCausalLM`): token embedding,
/// pre-RMSNorm blocks with rotary grouped-query attention and a SwiGLU FFN, final norm, LM head.
public final class LlamaModel {
    public struct Layer {
        public let inputNorm, q, k, v, o: Parameter
        public let qBias, kBias, vBias, oBias: Parameter?
        public let postNorm, gate, up, down: Parameter
    }

    public let config: LlamaConfig
    public let embedTokens: Parameter
    public let layers: [Layer]
    public let norm: Parameter
    /// nil when the head is tied to the embedding.
    public let lmHead: Parameter?
    /// Every weight, in load order, named as in Hugging Face checkpoints (with the prefix).
    public let parameters: [Parameter]
    /// Where it was loaded from (nil: built in memory).
    public internal(set) var folder: ModelFolder?

    /// Where a decoder's tensors are in a checkpoint: `body` before `embed_tokens.`, `layers.N.` and `norm.`, and
    /// the LM head's full name.
    public struct Names: Sendable, Equatable {
        public let body: String
        public let head: String
        public init(body: String, head: String) { (self.body, self.head) = (body, head) }
        /// `LlamaForCausalLM` and its kin.
        public static let causalLM = Names(body: "model.", head: "lm_head.weight")
    }

    /// Loads the weights `names` places (`model.layers.0.…` etc. for a causal LM) from `source`; shapes must match `config`.
    public init(config: LlamaConfig, weights source: any WeightSource, names: Names = .causalLM) throws {
        self.config = config
        var r = WeightReader(source, prefix: "")
        let (h, qWidth, kvWidth) = (config.hiddenSize, config.heads * config.headDim, config.kvHeads * config.headDim)
        embedTokens = try r.take(names.body + "embed_tokens.weight", [config.vocabularySize, h], .embedding, stored: true)
        var layers: [Layer] = []
        for i in 0..<config.layers {
            let p = names.body + "layers.\(i)."
            let f = config.ffnSizes[i]
            layers.append(Layer(
                inputNorm: try r.take(p + "input_layernorm.weight", [h], .normScale),
                q: try r.take(p + "self_attn.q_proj.weight", [qWidth, h], .matrix, stored: true),
                k: try r.take(p + "self_attn.k_proj.weight", [kvWidth, h], .matrix, stored: true),
                v: try r.take(p + "self_attn.v_proj.weight", [kvWidth, h], .matrix, stored: true),
                o: try r.take(p + "self_attn.o_proj.weight", [h, qWidth], .matrix, stored: true),
                qBias: try r.optional(p + "self_attn.q_proj.bias", [qWidth], .bias, when: config.qkvBias),
                kBias: try r.optional(p + "self_attn.k_proj.bias", [kvWidth], .bias, when: config.qkvBias),
                vBias: try r.optional(p + "self_attn.v_proj.bias", [kvWidth], .bias, when: config.qkvBias),
                oBias: try r.optional(p + "self_attn.o_proj.bias", [h], .bias, when: config.outputBias),
                postNorm: try r.take(p + "post_attention_layernorm.weight", [h], .normScale),
                gate: try r.take(p + "mlp.gate_proj.weight", [f, h], .matrix, stored: true),
                up: try r.take(p + "mlp.up_proj.weight", [f, h], .matrix, stored: true),
                down: try r.take(p + "mlp.down_proj.weight", [h, f], .matrix, stored: true)))
        }
        self.layers = layers
        norm = try r.take(names.body + "norm.weight", [h], .normScale)
        lmHead = config.tiedEmbeddings ? nil : try r.take(names.head, [config.vocabularySize, h], .matrix, stored: true)
        parameters = r.loaded
    }

    /// Token embeddings `[batch, length, hidden]` for rows of equal length.
    public func embed(_ g: Graph, tokens: [[Int]]) -> Value {
        let (batch, length) = (tokens.count, tokens.first?.count ?? 0)
        precondition(tokens.allSatisfy { $0.count == length }, "token rows must have equal length")
        return g.reshape(g.embedding(embedTokens, ids: tokens.flatMap { $0 }), [batch, length, config.hiddenSize])
    }

    /// Logits `[batch·length, vocabulary]` from input embeddings `[batch, length, hidden]`. `positions` gives a
    /// multimodal model's (temporal, height, width) position of every token (nil: 0, 1, 2, … in every row).
    public func logits(_ g: Graph, embeddings: Value, positions: MultimodalPositions? = nil, options: ForwardOptions = ForwardOptions()) -> Value {
        let (batch, length) = (embeddings.shape[0], embeddings.shape[1])
        precondition(options.ffnKeep.map { $0.count == layers.count } ?? true, "ffnKeep needs one entry per layer")
        var x = embeddings
        let eps = Float(config.rmsNormEps), rotary = config.rotary
        let tables = positions.map { p in
            precondition(p.rows == batch && p.length == length, "positions for \(p.rows)×\(p.length) tokens, embeddings of \(batch)×\(length)")
            return p.tables(rotary.frequencies(headDim: config.headDim), sections: config.mropeSection ?? [config.headDim / 2, 0, 0])
        }
        func rotate(_ v: Value, heads: Int) -> Value {
            guard let tables else { return g.rope(v, heads: heads, rotary: rotary) }
            return g.rotate(v, heads: heads, cosines: tables.cos, sines: tables.sin)
        }
        for (i, layer) in layers.enumerated().prefix(options.languageLayers ?? layers.count) {
            let h = g.rmsNorm(x, weight: g.parameter(layer.inputNorm), eps: eps)
            let q = rotate(g.linear(h, layer.q, bias: layer.qBias), heads: config.heads)
            let k = rotate(g.linear(h, layer.k, bias: layer.kBias), heads: config.kvHeads)
            let v = g.linear(h, layer.v, bias: layer.vBias)
            let attended = g.attention(q, k, v, heads: config.heads, kvHeads: config.kvHeads, causal: true)
            x = g.add(x, g.linear(attended, layer.o, bias: layer.oBias))
            let m = g.rmsNorm(x, weight: g.parameter(layer.postNorm), eps: eps)
            x = g.add(x, ffn(g, m, layer: layer, index: i, options: options))
        }
        let final = g.rmsNorm(x, weight: g.parameter(norm), eps: eps)
        let logits = g.linear(final, lmHead ?? embedTokens)
        return g.reshape(logits, [batch * length, config.vocabularySize])
    }

    public func logits(_ g: Graph, tokens: [[Int]], options: ForwardOptions = ForwardOptions()) -> Value {
        logits(g, embeddings: embed(g, tokens: tokens), options: options)
    }

    /// SwiGLU: down(silu(gate(x)) ⊙ up(x)), over all neurons or the leading `ffnKeep[index]` of them.
    func ffn(_ g: Graph, _ x: Value, layer: Layer, index: Int, options: ForwardOptions) -> Value {
        let width = layer.gate.shape[0]
        let keep = options.ffnKeep?[index] ?? width
        precondition(keep >= 0 && keep <= width, "layer \(index) keeps \(keep) of \(width) FFN neurons")
        let hidden = g.mul(g.silu(g.linear(x, layer.gate, rows: keep)), g.linear(x, layer.up, rows: keep))
        options.observe?(FFNObservation(tower: .language, layer: index, input: x.tensor, hidden: hidden.tensor))
        if let down = options.ffnDown?[index] {
            precondition(down.shape == [layer.down.shape[0], keep], "layer \(index): a replacement down-projection must be [\(layer.down.shape[0]), \(keep)]")
            return g.linear(hidden, down.leading(rows: nil, columns: nil))
        }
        return g.linear(hidden, layer.down, columns: keep)
    }
}

/// Every token's (temporal, height, width) position, row by row (Qwen2.5-VL's M-RoPE): text tokens have the same
/// value on all three axes; image tokens their grid cell's, offset by the text before them.
public struct MultimodalPositions: Equatable, Sendable {
    /// `[3][rows][length]`.
    public let axes: [[[Int]]]
    public init(axes: [[[Int]]]) {
        precondition(axes.count == 3, "three position axes")
        self.axes = axes
    }
    public var rows: Int { axes[0].count }
    public var length: Int { axes[0].first?.count ?? 0 }

    /// cos/sin `[rows, length, pairs]`: pair i rotates by the position on the axis whose section holds i times
    /// its frequency (transformers' `mrope_section` split of the frequencies, the same for both halves).
    func tables(_ frequencies: [Double], sections: [Int]) -> (cos: [Float], sin: [Float]) {
        let half = frequencies.count
        let axisOfPair = sections.enumerated().flatMap { Array(repeating: $0.offset, count: $0.element) }
        precondition(axisOfPair.count == half, "sections \(sections) do not cover \(half) pairs")
        var cosines = [Float](repeating: 0, count: rows * length * half), sines = cosines
        for r in 0..<rows {
            for t in 0..<length {
                for i in 0..<half {
                    let angle = Double(axes[axisOfPair[i]][r][t]) * frequencies[i]
                    cosines[(r * length + t) * half + i] = Float(cos(angle))
                    sines[(r * length + t) * half + i] = Float(sin(angle))
                }
            }
        }
        return (cosines, sines)
    }
}
