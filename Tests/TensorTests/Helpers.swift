import Foundation
@testable import Tensor

/// Random tensors for tests, from a fixed seed so failures reproduce.
struct Maker {
    var generator: SeededGenerator
    init(seed: UInt64) { generator = SeededGenerator(seed: seed) }

    mutating func tensor(_ shape: [Int], std: Float = 1) -> Tensor {
        Tensor.normal(shape, std: std, generator: &generator)
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &generator) }
}

/// Largest |a − b| / (1 + |b|) over two equally long arrays.
func relativeError(_ a: [Float], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "lengths differ: \(a.count) vs \(b.count)")
    var worst = 0.0
    for i in a.indices { worst = max(worst, abs(Double(a[i]) - b[i]) / (1 + abs(b[i]))) }
    return worst
}

/// Checks an op's backward against central finite differences.
///
/// The op's output y is reduced to L = Σ wᵢ·yᵢ with fixed random weights w, so every output element's
/// gradient is exercised. Each input element is moved by ±h (h = 1e-2 on inputs of order 1); L is summed in
/// Double. Tolerance: truncation error is O(h²) ≈ 1e-4 times the third derivative, and Float rounding of the
/// outputs contributes about 1e-7·|L|/h ≈ 1e-5·|L|, so analytic and numeric gradients must agree to 1e-2 of
/// the gradient's norm, and every element to 2e-2·(1 + |numeric|).
/// Returns the worst relative error seen (as a norm ratio) so tests can also print it.
@discardableResult
func checkGradients(
    _ inputs: [Tensor], seed: UInt64 = 7, h: Float = 1e-2,
    _ op: (Graph, [Value]) -> Value
) -> (normError: Double, elementError: Double) {
    var maker = Maker(seed: seed)
    let probe = op(Graph(recording: false), inputs.map { Graph(recording: false).constant($0) })
    let weights = maker.tensor(probe.shape)

    func loss(_ values: [Tensor]) -> Double {
        let g = Graph(recording: false)
        let y = op(g, values.map { g.constant($0) })
        var total = 0.0
        for i in y.tensor.data.indices { total += Double(y.tensor.data[i]) * Double(weights.data[i]) }
        return total
    }

    let parameters = inputs.enumerated().map { Parameter("input\($0.offset)", $0.element) }
    let graph = Graph(recording: true)
    let y = op(graph, parameters.map { graph.parameter($0) })
    let l = graph.sum(graph.mul(y, graph.constant(weights)))
    graph.backward(l)

    var worstNorm = 0.0, worstElement = 0.0
    for (index, input) in inputs.enumerated() {
        let analytic = parameters[index].gradient?.data ?? [Float](repeating: 0, count: input.count)
        var numeric = [Double](repeating: 0, count: input.count)
        for i in 0..<input.count {
            var plus = inputs, minus = inputs
            plus[index].data[i] += h
            minus[index].data[i] -= h
            numeric[i] = (loss(plus) - loss(minus)) / Double(2 * h)
        }
        var difference = 0.0, norm = 0.0
        for i in numeric.indices {
            difference += pow(Double(analytic[i]) - numeric[i], 2)
            norm += numeric[i] * numeric[i]
            worstElement = max(worstElement, abs(Double(analytic[i]) - numeric[i]) / (1 + abs(numeric[i])))
        }
        worstNorm = max(worstNorm, difference.squareRoot() / max(norm.squareRoot(), 1e-3))
    }
    return (worstNorm, worstElement)
}
