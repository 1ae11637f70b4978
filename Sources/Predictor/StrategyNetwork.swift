import Foundation
import Pruning
import Tensor

/// Shape of one predictor network (LOP's defaults: 2 layers, width 128, 4 heads, GELU).
public struct NetworkShape: Codable, Sendable, Equatable {
    public var units: Int
    public var width = 128
    public var heads = 4
    public var layers = 2
    public var minimumRatio = 0.1
    public var maximumRatio = 1.0

    public init(units: Int) {
        self.units = units
    }

    /// The shape training settings ask for, with the ratios' bounds.
    init(units: Int, settings: PredictorSettings, bounds: KeepBounds) {
        self.units = units
        (width, heads, layers) = (settings.width, settings.heads, settings.layers)
        (minimumRatio, maximumRatio) = (bounds.minimumRatio, bounds.maximumRatio)
    }

    enum CodingKeys: String, CodingKey {
        case units, width, heads, layers, minimumRatio = "minimum_ratio", maximumRatio = "maximum_ratio"
    }
}

/// LOP's autoregressive strategy model: a small causal Transformer over unit positions. Position 0 reads the
/// budget (kept fraction), position i > 0 the keep ratio of unit i − 1; the output at position i is unit i's
/// keep ratio, a sigmoid mapped into the bounds. Each position's input is (value, is-budget flag, one-hot
/// position) through one linear map: the one-hot columns are the learnable positional embeddings.
public final class StrategyNetwork {
    public let shape: NetworkShape
    public let input, inputBias, finalNormWeight, finalNormBias, head, headBias: Parameter
    public let blocks: [[Parameter]]  // norm1 w/b, q, k, v, o, norm2 w/b, fc1, fc1 bias, fc2, fc2 bias

    public var parameters: [Parameter] { [input, inputBias] + blocks.flatMap { $0 } + [finalNormWeight, finalNormBias, head, headBias] }

    /// A freshly initialised network (seeded).
    public init(shape: NetworkShape, seed: UInt64) {
        precondition(shape.units > 0 && shape.width % shape.heads == 0, "a predictor needs units and a width divisible by its heads")
        self.shape = shape
        var g = SeededGenerator(seed: seed)
        let (w, features) = (shape.width, 2 + shape.units)
        func matrix(_ name: String, _ rows: Int, _ columns: Int, std: Float = 0.02) -> Parameter {
            Parameter(name, .normal([rows, columns], std: std, generator: &g))
        }
        input = matrix("input.weight", w, features, std: 0.2)
        inputBias = Parameter("input.bias", Tensor(zeros: [w]), decays: false)
        let residual = 0.02 / Float(2 * shape.layers).squareRoot()
        blocks = (0..<shape.layers).map { i in
            let p = "blocks.\(i)."
            return [Parameter(p + "norm1.weight", Tensor(repeating: 1, shape: [w]), decays: false), Parameter(p + "norm1.bias", Tensor(zeros: [w]), decays: false),
                    matrix(p + "q.weight", w, w), matrix(p + "k.weight", w, w), matrix(p + "v.weight", w, w), matrix(p + "o.weight", w, w, std: residual),
                    Parameter(p + "norm2.weight", Tensor(repeating: 1, shape: [w]), decays: false), Parameter(p + "norm2.bias", Tensor(zeros: [w]), decays: false),
                    matrix(p + "fc1.weight", 4 * w, w), Parameter(p + "fc1.bias", Tensor(zeros: [4 * w]), decays: false),
                    matrix(p + "fc2.weight", w, 4 * w, std: residual), Parameter(p + "fc2.bias", Tensor(zeros: [w]), decays: false)]
        }
        finalNormWeight = Parameter("norm.weight", Tensor(repeating: 1, shape: [w]), decays: false)
        finalNormBias = Parameter("norm.bias", Tensor(zeros: [w]), decays: false)
        head = matrix("head.weight", 1, w)
        headBias = Parameter("head.bias", Tensor(zeros: [1]), decays: false)
    }

    /// Inputs `[rows, units, 2 + units]` for teacher forcing: the budget, then each unit's ratio but the last.
    func inputs(budgets: [Double], ratios: [[Double]]) -> Tensor {
        let (n, f) = (shape.units, 2 + shape.units)
        var data = [Float](repeating: 0, count: budgets.count * n * f)
        for (row, budget) in budgets.enumerated() {
            for position in 0..<n {
                let base = (row * n + position) * f
                data[base] = Float(position == 0 ? budget : ratios[row][position - 1])
                data[base + 1] = position == 0 ? 1 : 0
                data[base + 2 + position] = 1
            }
        }
        return Tensor(shape: [budgets.count, n, f], data: data)
    }

    /// Predicted ratios `[rows, units]` for every position at once (teacher forcing).
    public func forward(_ g: Graph, _ inputs: Tensor) -> Value {
        let (rows, n, w) = (inputs.shape[0], shape.units, shape.width)
        var x = g.linear(g.constant(inputs), g.parameter(input), bias: g.parameter(inputBias))
        for p in blocks {
            let a = g.layerNorm(x, weight: g.parameter(p[0]), bias: g.parameter(p[1]), eps: 1e-5)
            let attended = g.attention(g.linear(a, g.parameter(p[2])), g.linear(a, g.parameter(p[3])), g.linear(a, g.parameter(p[4])),
                                       heads: shape.heads, kvHeads: shape.heads, causal: true)
            x = g.add(x, g.linear(attended, g.parameter(p[5])))
            let m = g.layerNorm(x, weight: g.parameter(p[6]), bias: g.parameter(p[7]), eps: 1e-5)
            x = g.add(x, g.linear(g.geluExact(g.linear(m, g.parameter(p[8]), bias: g.parameter(p[9]))), g.parameter(p[10]), bias: g.parameter(p[11])))
        }
        let normed = g.layerNorm(x, weight: g.parameter(finalNormWeight), bias: g.parameter(finalNormBias), eps: 1e-5)
        let out = g.sigmoid(g.linear(g.reshape(normed, [rows * n, w]), g.parameter(head), bias: g.parameter(headBias)))
        let (low, span) = (Float(shape.minimumRatio), Float(shape.maximumRatio - shape.minimumRatio))
        return g.reshape(g.add(g.scale(out, by: span), g.constant(Tensor(repeating: low, shape: [rows * n, 1]))), [rows, n])
    }

    /// Decodes one strategy unit by unit: each prediction is clamped by `clamp(i, ratio, decodedSoFar)` before it
    /// becomes the next position's input. One position at a time with cached keys and values (sgemv, no graph):
    /// the same function as `forward` on the decoded prefix, which the tests check, at a fraction of its cost.
    public func decode(budget: Double, clamp: (Int, Double, [Double]) -> Double) -> [Double] {
        let (n, w, heads) = (shape.units, shape.width, shape.heads)
        let headDim = w / heads, features = 2 + n
        let scale = 1 / Float(headDim).squareRoot()
        var keys = blocks.map { _ in [Float](repeating: 0, count: n * w) }, values = keys
        var x = [Float](repeating: 0, count: w), normed = x, q = x, attended = x, hidden = [Float](repeating: 0, count: 4 * w)
        var weights = [Float](repeating: 0, count: n)
        var ratios: [Double] = []
        func multiply(_ p: Parameter, _ input: [Float], _ output: inout [Float], accumulate: Bool = false) {
            input.withUnsafeBufferPointer { i in output.withUnsafeMutableBufferPointer { o in BLAS.matrixVector(p.value, i.baseAddress!, into: o.baseAddress!, accumulate: accumulate) } }
        }
        func layerNorm(_ weight: Parameter, _ bias: Parameter) {
            let mean = x.reduce(0, +) / Float(w)
            let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(w)
            let inverse = 1 / (variance + 1e-5).squareRoot()
            for j in 0..<w { normed[j] = (x[j] - mean) * inverse * weight.value.data[j] + bias.value.data[j] }
        }
        for t in 0..<n {
            // Position t's input (value, is-budget flag, one-hot t) through the input map: three columns of it.
            let value = Float(t == 0 ? budget : ratios[t - 1])
            input.value.data.withUnsafeBufferPointer { m in
                for j in 0..<w { x[j] = m[j * features] * value + (t == 0 ? m[j * features + 1] : 0) + m[j * features + 2 + t] + inputBias.value.data[j] }
            }
            for (b, p) in blocks.enumerated() {
                layerNorm(p[0], p[1])
                multiply(p[2], normed, &q)
                keys[b].withUnsafeMutableBufferPointer { k in normed.withUnsafeBufferPointer { BLAS.matrixVector(p[3].value, $0.baseAddress!, into: k.baseAddress! + t * w) } }
                values[b].withUnsafeMutableBufferPointer { v in normed.withUnsafeBufferPointer { BLAS.matrixVector(p[4].value, $0.baseAddress!, into: v.baseAddress! + t * w) } }
                for h in 0..<heads {
                    let offset = h * headDim
                    var largest = -Float.infinity
                    for u in 0...t {
                        var dot: Float = 0
                        for d in 0..<headDim { dot += q[offset + d] * keys[b][u * w + offset + d] }
                        weights[u] = dot * scale
                        largest = max(largest, weights[u])
                    }
                    var sum: Float = 0
                    for u in 0...t { weights[u] = exp(weights[u] - largest); sum += weights[u] }
                    for d in 0..<headDim {
                        var total: Float = 0
                        for u in 0...t { total += weights[u] * values[b][u * w + offset + d] }
                        attended[offset + d] = total / sum
                    }
                }
                multiply(p[5], attended, &x, accumulate: true)
                layerNorm(p[6], p[7])
                multiply(p[8], normed, &hidden)
                for j in 0..<4 * w {
                    let z = hidden[j] + p[9].value.data[j]
                    hidden[j] = 0.5 * z * (1 + erf(z / Float(2).squareRoot()))
                }
                multiply(p[10], hidden, &x, accumulate: true)
                for j in 0..<w { x[j] += p[11].value.data[j] }
            }
            layerNorm(finalNormWeight, finalNormBias)
            var logit = headBias.value.data[0]
            for j in 0..<w { logit += head.value.data[j] * normed[j] }
            let ratio = shape.minimumRatio + (shape.maximumRatio - shape.minimumRatio) * Double(1 / (1 + exp(-logit)))
            ratios.append(clamp(t, ratio, ratios))
        }
        return ratios
    }
}
