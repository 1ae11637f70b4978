import Tensor

/// A small Llama-shaped causal Transformer (RMSNorm, RoPE attention, SwiGLU) built only from the engine's ops:
/// the workload of the tensor benchmark and of the engine's training tests.
public struct ToyTransformer {
    public let vocabulary: Int, width: Int, heads: Int, hidden: Int
    public let embedding: Parameter, output: Parameter, finalNorm: Parameter
    public let layers: [[Parameter]]  // attnNorm, q, k, v, o, mlpNorm, gate, up, down

    public init(vocabulary: Int, width: Int, heads: Int, hidden: Int, layers count: Int, seed: UInt64) {
        var gen = SeededGenerator(seed: seed)
        self.vocabulary = vocabulary
        self.width = width
        self.heads = heads
        self.hidden = hidden
        let std = 0.02 * 4
        embedding = Parameter("embed", .normal([vocabulary, width], std: Float(std), generator: &gen))
        output = Parameter("lm_head", .normal([vocabulary, width], std: Float(std), generator: &gen))
        finalNorm = Parameter("norm", Tensor(repeating: 1, shape: [width]))
        layers = (0..<count).map { i in
            [Parameter("l\(i).attn_norm", Tensor(repeating: 1, shape: [width])),
             Parameter("l\(i).q", .normal([width, width], std: Float(std), generator: &gen)),
             Parameter("l\(i).k", .normal([width, width], std: Float(std), generator: &gen)),
             Parameter("l\(i).v", .normal([width, width], std: Float(std), generator: &gen)),
             Parameter("l\(i).o", .normal([width, width], std: Float(std), generator: &gen)),
             Parameter("l\(i).mlp_norm", Tensor(repeating: 1, shape: [width])),
             Parameter("l\(i).gate", .normal([hidden, width], std: Float(std), generator: &gen)),
             Parameter("l\(i).up", .normal([hidden, width], std: Float(std), generator: &gen)),
             Parameter("l\(i).down", .normal([width, hidden], std: Float(std), generator: &gen))]
        }
    }

    public var parameters: [Parameter] { [embedding, output, finalNorm] + layers.flatMap { $0 } }

    /// Logits `[batch·length, vocabulary]` for token rows of equal length.
    public func logits(_ g: Graph, tokens: [[Int]]) -> Value {
        let (batch, length) = (tokens.count, tokens[0].count)
        var x = g.reshape(g.embedding(g.parameter(embedding), ids: tokens.flatMap { $0 }), [batch, length, width])
        for p in layers {
            let h = g.rmsNorm(x, weight: g.parameter(p[0]), eps: 1e-5)
            let q = g.rope(g.linear(h, g.parameter(p[1])), heads: heads, theta: 10000)
            let k = g.rope(g.linear(h, g.parameter(p[2])), heads: heads, theta: 10000)
            let v = g.linear(h, g.parameter(p[3]))
            x = g.add(x, g.linear(g.attention(q, k, v, heads: heads, kvHeads: heads, causal: true), g.parameter(p[4])))
            let m = g.rmsNorm(x, weight: g.parameter(p[5]), eps: 1e-5)
            let gated = g.mul(g.silu(g.linear(m, g.parameter(p[6]))), g.linear(m, g.parameter(p[7])))
            x = g.add(x, g.linear(gated, g.parameter(p[8])))
        }
        return g.reshape(g.linear(g.rmsNorm(x, weight: g.parameter(finalNorm), eps: 1e-5), g.parameter(output)), [batch * length, vocabulary])
    }
}

