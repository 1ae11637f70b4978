import Foundation
import Testing
@testable import Tensor

/// Every op's backward against central finite differences (tolerances justified in `checkGradients`).
@Suite struct GradientTests {
    func expectClose(_ result: (normError: Double, elementError: Double), _ what: String) {
        #expect(result.normError < 1e-2, "\(what): gradient norm error \(result.normError)")
        #expect(result.elementError < 2e-2, "\(what): worst element error \(result.elementError)")
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func matmul(ta: Bool, tb: Bool) {
        var maker = Maker(seed: 11)
        let (m, k, n) = (3, 4, 5)
        let a = maker.tensor(ta ? [2, k, m] : [2, m, k])
        expectClose(checkGradients([a, maker.tensor(tb ? [n, k] : [k, n])]) { g, x in
            g.matmul(x[0], x[1], transposeA: ta, transposeB: tb)
        }, "matmul shared \(ta) \(tb)")
        expectClose(checkGradients([a, maker.tensor(tb ? [2, n, k] : [2, k, n])]) { g, x in
            g.matmul(x[0], x[1], transposeA: ta, transposeB: tb)
        }, "matmul batched \(ta) \(tb)")
    }

    @Test func linearWithBiasAndView() {
        var maker = Maker(seed: 12)
        expectClose(checkGradients([maker.tensor([2, 3, 4]), maker.tensor([5, 4]), maker.tensor([5])]) { g, x in
            g.linear(x[0], x[1], bias: x[2])
        }, "linear")
        let weight = maker.tensor([7, 6])
        expectClose(checkGradients([maker.tensor([3, 4])]) { g, x in g.linear(x[0], weight.leading(rows: 5, columns: 4)) }, "linear view")
    }

    @Test func elementwise() {
        var maker = Maker(seed: 13)
        let a = maker.tensor([3, 4])
        expectClose(checkGradients([a, maker.tensor([4])]) { g, x in g.add(x[0], x[1]) }, "add bias")
        expectClose(checkGradients([a, maker.tensor([3, 4])]) { g, x in g.mul(x[0], x[1]) }, "mul")
        expectClose(checkGradients([a, maker.tensor([4])]) { g, x in g.mul(x[0], x[1]) }, "mul scale")
        expectClose(checkGradients([a, maker.tensor([])]) { g, x in g.mul(x[0], x[1]) }, "mul scalar")
        expectClose(checkGradients([a]) { g, x in g.silu(x[0]) }, "silu")
        expectClose(checkGradients([a]) { g, x in g.sigmoid(x[0]) }, "sigmoid")
        expectClose(checkGradients([a]) { g, x in g.geluTanh(x[0]) }, "gelu tanh")
        expectClose(checkGradients([a]) { g, x in g.geluExact(x[0]) }, "gelu exact")
        expectClose(checkGradients([a]) { g, x in g.scale(x[0], by: 3) }, "scale")
        // ReLU's kink: probe only points at least 0.1 away from it.
        let away = Tensor(shape: a.shape, data: a.data.map { $0 >= 0 ? $0 + 0.1 : $0 - 0.1 })
        expectClose(checkGradients([away]) { g, x in g.relu(x[0]) }, "relu")
    }

    @Test func normsAndSoftmax() {
        var maker = Maker(seed: 14)
        let x = maker.tensor([2, 3, 6])
        expectClose(checkGradients([x, maker.tensor([6])]) { g, v in g.rmsNorm(v[0], weight: v[1], eps: 1e-5) }, "rmsNorm")
        expectClose(checkGradients([x, maker.tensor([6]), maker.tensor([6])]) { g, v in
            g.layerNorm(v[0], weight: v[1], bias: v[2], eps: 1e-5)
        }, "layerNorm")
        expectClose(checkGradients([x]) { g, v in g.softmax(v[0]) }, "softmax")
    }

    // The last case spans two causal blocks of 64 query rows.
    @Test(arguments: [(2, 2, true, 3, 4), (4, 2, true, 3, 4), (2, 1, false, 3, 4), (1, 1, true, 66, 67)])
    func attention(heads: Int, kvHeads: Int, causal: Bool, queries: Int, keys: Int) {
        var maker = Maker(seed: 15)
        let d = 4
        expectClose(checkGradients([maker.tensor([1, queries, heads * d]), maker.tensor([1, keys, kvHeads * d]), maker.tensor([1, keys, kvHeads * d])]) { g, x in
            g.attention(x[0], x[1], x[2], heads: heads, kvHeads: kvHeads, causal: causal)
        }, "attention \(heads)/\(kvHeads)")
    }

    @Test func ropeEmbeddingAndShapes() {
        var maker = Maker(seed: 16)
        expectClose(checkGradients([maker.tensor([2, 3, 8])]) { g, x in g.rope(x[0], heads: 2, theta: 100, positionOffset: 1) }, "rope")
        expectClose(checkGradients([maker.tensor([6, 3])]) { g, x in g.embedding(x[0], ids: [1, 5, 1, 0]) }, "embedding")
        let a = maker.tensor([2, 3, 2]), b = maker.tensor([2, 1, 2])
        expectClose(checkGradients([a, b]) { g, x in g.concat([x[0], x[1], x[0]], axis: 1) }, "concat")
        expectClose(checkGradients([a]) { g, x in g.slice(x[0], axis: 1, 1..<3) }, "slice")
        expectClose(checkGradients([a]) { g, x in g.reshape(x[0], [6, 2]) }, "reshape")
        expectClose(checkGradients([a]) { g, x in g.sum(x[0], axis: 0) }, "sum axis")
        expectClose(checkGradients([a]) { g, x in g.mean(x[0], axis: 2) }, "mean axis")
        expectClose(checkGradients([a]) { g, x in g.mean(x[0]) }, "mean")
    }

    @Test func losses() {
        var maker = Maker(seed: 17)
        expectClose(checkGradients([maker.tensor([4, 5])]) { g, x in g.crossEntropy(x[0], targets: [1, -100, 4, 0]) }, "cross-entropy")
        let target = maker.tensor([3, 2])
        expectClose(checkGradients([maker.tensor([3, 2])]) { g, x in g.meanSquaredError(x[0], target: target, rowWeights: [0.5, 2, 1]) }, "mse")
    }

    @Test func gradientsAccumulateAcrossUsesAndBackwardCalls() {
        // y = sum(w · w): dy/dw = 2w from one graph; two backward passes without zeroing give 4w.
        let w = Parameter("w", Tensor(shape: [3], data: [1, -2, 0.5]))
        for _ in 0..<2 {
            let g = Graph()
            let v = g.parameter(w)
            g.backward(g.sum(g.mul(v, v)))
        }
        #expect(w.gradient?.data == [4, -8, 2])
        w.zeroGradient()
        #expect(w.gradient == nil)
    }
}
