import Foundation
import Testing
@testable import Tensor

/// Every op's forward pass against a plain-loop reference in Double, on random and awkward sizes.
@Suite struct ForwardTests {
    let g = Graph(recording: false)

    /// Naive C = op(A)·op(B) for one matrix pair.
    func naiveMatmul(_ a: [Float], _ ra: Int, _ ca: Int, _ b: [Float], _ rb: Int, _ cb: Int, _ ta: Bool, _ tb: Bool) -> [Double] {
        let m = ta ? ca : ra, k = ta ? ra : ca, n = tb ? rb : cb
        var c = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let av = ta ? a[p * ca + i] : a[i * ca + p]
                    let bv = tb ? b[j * cb + p] : b[p * cb + j]
                    s += Double(av) * Double(bv)
                }
                c[i * n + j] = s
            }
        }
        return c
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func matmulAllTransposes(ta: Bool, tb: Bool) {
        var maker = Maker(seed: 1)
        for (m, k, n) in [(1, 1, 1), (7, 13, 5), (33, 17, 29), (64, 3, 1)] {
            let a = maker.tensor(ta ? [k, m] : [m, k]), b = maker.tensor(tb ? [n, k] : [k, n])
            let c = g.matmul(g.constant(a), g.constant(b), transposeA: ta, transposeB: tb)
            #expect(c.shape == [m, n])
            let reference = naiveMatmul(a.data, a.shape[0], a.shape[1], b.data, b.shape[0], b.shape[1], ta, tb)
            #expect(relativeError(c.tensor.data, reference) < 1e-5)
        }
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func batchedMatmulWithSharedAndPerBatchRight(ta: Bool, tb: Bool) {
        var maker = Maker(seed: 2)
        let (batch, m, k, n) = (3, 5, 11, 7)
        let a = maker.tensor(ta ? [2, batch, k, m] : [2, batch, m, k])
        let shared = maker.tensor(tb ? [n, k] : [k, n])
        let perBatch = maker.tensor(tb ? [2, batch, n, k] : [2, batch, k, n])
        for (b, isShared) in [(shared, true), (perBatch, false)] {
            let c = g.matmul(g.constant(a), g.constant(b), transposeA: ta, transposeB: tb)
            #expect(c.shape == [2, batch, m, n])
            for i in 0..<(2 * batch) {
                let aSlice = Array(a.data[(i * m * k)..<((i + 1) * m * k)])
                let bSlice = isShared ? b.data : Array(b.data[(i * k * n)..<((i + 1) * k * n)])
                let reference = naiveMatmul(aSlice, ta ? k : m, ta ? m : k, bSlice, tb ? n : k, tb ? k : n, ta, tb)
                #expect(relativeError(Array(c.tensor.data[(i * m * n)..<((i + 1) * m * n)]), reference) < 1e-5)
            }
        }
    }

    @Test func linearOverLeadingViewsEqualsLinearOverCopies() {
        var maker = Maker(seed: 3)
        let x = maker.tensor([2, 5, 9])
        let weight = maker.tensor([13, 9])
        // Keep the first 6 rows (gate/up pruning) of a [13, 9] weight.
        let rows = g.linear(g.constant(x), weight.leading(rows: 6))
        let rowsCopy = g.linear(g.constant(x), g.constant(weight.leading(rows: 6).materialized()))
        #expect(rows.shape == [2, 5, 6])
        #expect(rows.tensor.maxAbsDifference(rowsCopy.tensor) < 1e-5)
        // Keep the first 4 columns (down pruning) of a [7, 13] weight.
        let down = maker.tensor([7, 13])
        let h = maker.tensor([2, 5, 4])
        let cols = g.linear(g.constant(h), down.leading(columns: 4))
        let colsCopy = g.linear(g.constant(h), g.constant(down.leading(columns: 4).materialized()))
        #expect(cols.tensor.maxAbsDifference(colsCopy.tensor) < 1e-5)
        // materialized() really is the leading block.
        let block = down.leading(rows: 3, columns: 2).materialized()
        #expect(block.data == [down.data[0], down.data[1], down.data[13], down.data[14], down.data[26], down.data[27]])
    }

    @Test func elementwiseAndBroadcasting() {
        var maker = Maker(seed: 4)
        let a = maker.tensor([3, 4, 5]), bias = maker.tensor([5]), block = maker.tensor([4, 5]), s = maker.tensor([])
        for b in [bias, block, s, a] {
            let sum = g.add(g.constant(a), g.constant(b)).tensor.data
            let product = g.mul(g.constant(a), g.constant(b)).tensor.data
            for i in 0..<a.count {
                #expect(abs(sum[i] - (a.data[i] + b.data[i % b.count])) < 1e-6)
                #expect(abs(product[i] - a.data[i] * b.data[i % b.count]) < 1e-6)
            }
        }
        let x = maker.tensor([37])
        func check(_ y: Value, _ f: (Double) -> Double) {
            #expect(relativeError(y.tensor.data, x.data.map { f(Double($0)) }) < 1e-5)
        }
        check(g.silu(g.constant(x))) { $0 / (1 + exp(-$0)) }
        check(g.sigmoid(g.constant(x))) { 1 / (1 + exp(-$0)) }
        check(g.relu(g.constant(x))) { max($0, 0) }
        check(g.scale(g.constant(x), by: -2.5)) { -2.5 * $0 }
        check(g.geluExact(g.constant(x))) { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }
        check(g.geluTanh(g.constant(x))) { 0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) }
    }

    @Test func normsAndSoftmax() {
        var maker = Maker(seed: 5)
        let (rows, d) = (6, 23)
        let x = maker.tensor([2, 3, d], std: 3), w = maker.tensor([d]), b = maker.tensor([d])
        let rms = g.rmsNorm(g.constant(x), weight: g.constant(w), eps: 1e-5).tensor.data
        let ln = g.layerNorm(g.constant(x), weight: g.constant(w), bias: g.constant(b), eps: 1e-5).tensor.data
        let sm = g.softmax(g.constant(x)).tensor.data
        var rmsRef = [Double](), lnRef = [Double](), smRef = [Double]()
        for r in 0..<rows {
            let row = (0..<d).map { Double(x.data[r * d + $0]) }
            let ms = row.map { $0 * $0 }.reduce(0, +) / Double(d)
            rmsRef += row.enumerated().map { $0.element / (ms + 1e-5).squareRoot() * Double(w.data[$0.offset]) }
            let mean = row.reduce(0, +) / Double(d)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(d)
            lnRef += row.enumerated().map { ($0.element - mean) / (variance + 1e-5).squareRoot() * Double(w.data[$0.offset]) + Double(b.data[$0.offset]) }
            let top = row.max()!
            let exps = row.map { exp($0 - top) }
            let total = exps.reduce(0, +)
            smRef += exps.map { $0 / total }
        }
        #expect(relativeError(rms, rmsRef) < 1e-5)
        #expect(relativeError(ln, lnRef) < 1e-5)
        #expect(relativeError(sm, smRef) < 1e-6)
    }

    /// Naive multi-head attention in Double.
    func naiveAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, heads: Int, kvHeads: Int, causal: Bool) -> [Double] {
        let (batch, queries, width) = (q.shape[0], q.shape[1], q.shape[2])
        let keys = k.shape[1], d = width / heads, kvWidth = kvHeads * d
        var out = [Double](repeating: 0, count: q.count)
        for b in 0..<batch {
            for h in 0..<heads {
                let kh = h / (heads / kvHeads)
                for t in 0..<queries {
                    var scores = [Double](repeating: -.infinity, count: keys)
                    for s in 0..<keys where !causal || s <= t + keys - queries {
                        var dot = 0.0
                        for i in 0..<d { dot += Double(q.data[(b * queries + t) * width + h * d + i]) * Double(k.data[(b * keys + s) * kvWidth + kh * d + i]) }
                        scores[s] = dot / Double(d).squareRoot()
                    }
                    let top = scores.max()!
                    let exps = scores.map { $0 == -.infinity ? 0 : exp($0 - top) }
                    let total = exps.reduce(0, +)
                    for i in 0..<d {
                        var acc = 0.0
                        for s in 0..<keys { acc += exps[s] / total * Double(v.data[(b * keys + s) * kvWidth + kh * d + i]) }
                        out[(b * queries + t) * width + h * d + i] = acc
                    }
                }
            }
        }
        return out
    }

    // The last three cross causal attention's 64-row blocks (with and without cached keys before the queries).
    @Test(arguments: [(4, 4, true, 7, 7), (4, 2, true, 5, 5), (6, 1, false, 3, 9), (2, 2, true, 3, 8), (3, 3, false, 1, 1),
                      (2, 1, true, 150, 150), (2, 2, true, 70, 133), (1, 1, false, 65, 129)])
    func attentionMatchesNaive(heads: Int, kvHeads: Int, causal: Bool, queries: Int, keys: Int) {
        var maker = Maker(seed: 6)
        let d = 6
        let q = maker.tensor([2, queries, heads * d]), k = maker.tensor([2, keys, kvHeads * d]), v = maker.tensor([2, keys, kvHeads * d])
        let out = g.attention(g.constant(q), g.constant(k), g.constant(v), heads: heads, kvHeads: kvHeads, causal: causal)
        #expect(relativeError(out.tensor.data, naiveAttention(q, k, v, heads: heads, kvHeads: kvHeads, causal: causal)) < 1e-5)
    }

    @Test func ropeMatchesRotateHalf() {
        var maker = Maker(seed: 8)
        let (heads, d, positions) = (3, 8, 5)
        let x = maker.tensor([2, positions, heads * d])
        let out = g.rope(g.constant(x), heads: heads, theta: 10000, positionOffset: 3).tensor.data
        var reference = [Double](repeating: 0, count: x.count)
        for b in 0..<2 {
            for t in 0..<positions {
                for h in 0..<heads {
                    let base = (b * positions + t) * heads * d + h * d
                    for i in 0..<d {
                        let pair = i % (d / 2)
                        let angle = Double(t + 3) / pow(10000, Double(2 * pair) / Double(d))
                        let rotated = i < d / 2 ? -Double(x.data[base + i + d / 2]) : Double(x.data[base + i - d / 2])
                        reference[base + i] = Double(x.data[base + i]) * cos(angle) + rotated * sin(angle)
                    }
                }
            }
        }
        #expect(relativeError(out, reference) < 1e-5)
    }

    @Test func embeddingLossesAndReductions() {
        var maker = Maker(seed: 9)
        let table = maker.tensor([10, 4])
        let looked = g.embedding(g.constant(table), ids: [3, 0, 9, 3]).tensor
        #expect(looked.shape == [4, 4])
        #expect(Array(looked.data[0..<4]) == Array(table.data[12..<16]))
        #expect(Array(looked.data[12..<16]) == Array(table.data[12..<16]))

        let logits = maker.tensor([5, 7], std: 2)
        let targets = [2, -100, 6, 0, -100]
        var total = 0.0
        for r in [0, 2, 3] {
            let row = (0..<7).map { Double(logits.data[r * 7 + $0]) }
            total += log(row.map { exp($0) }.reduce(0, +)) - row[targets[r]]
        }
        let ce = g.crossEntropy(g.constant(logits), targets: targets).tensor.scalar
        #expect(abs(Double(ce) - total / 3) < 1e-5)
        #expect(g.crossEntropy(g.constant(logits), targets: [Int](repeating: -100, count: 5)).tensor.scalar == 0)

        let p = maker.tensor([3, 2]), t = maker.tensor([3, 2])
        let weights: [Float] = [1, 0, 3]
        var se = 0.0
        for r in 0..<3 { for j in 0..<2 { se += Double(weights[r]) * pow(Double(p.data[r * 2 + j] - t.data[r * 2 + j]), 2) } }
        let mse = g.meanSquaredError(g.constant(p), target: t, rowWeights: weights).tensor.scalar
        #expect(abs(Double(mse) - se / 8) < 1e-5)

        let x = maker.tensor([2, 3, 4])
        #expect(abs(Double(g.sum(g.constant(x)).tensor.scalar) - x.data.map(Double.init).reduce(0, +)) < 1e-5)
        let byAxis = g.sum(g.constant(x), axis: 1).tensor
        #expect(byAxis.shape == [2, 4])
        #expect(abs(byAxis.data[5] - (x.data[13] + x.data[17] + x.data[21])) < 1e-5)
        let meanAxis = g.mean(g.constant(x), axis: 2).tensor
        #expect(meanAxis.shape == [2, 3])
        #expect(abs(meanAxis.data[4] - (x.data[16] + x.data[17] + x.data[18] + x.data[19]) / 4) < 1e-6)
    }

    @Test func concatAndSliceAlongTheSequenceAxis() {
        var maker = Maker(seed: 10)
        let image = maker.tensor([2, 3, 4]), text = maker.tensor([2, 5, 4])
        let joined = g.concat([g.constant(image), g.constant(text)], axis: 1)
        #expect(joined.shape == [2, 8, 4])
        let back = g.slice(joined, axis: 1, 3..<8)
        #expect(back.tensor == text)
        #expect(g.slice(joined, axis: 1, 0..<3).tensor == image)
        // Row 1 of batch 1 of the joined tensor is image row 1 of batch 1.
        #expect(Array(joined.tensor.data[(8 + 1) * 4..<(8 + 2) * 4]) == Array(image.data[(3 + 1) * 4..<(3 + 2) * 4]))
        let lastAxis = g.concat([g.constant(image), g.constant(image)], axis: 2)
        #expect(lastAxis.shape == [2, 3, 8])
        #expect(g.slice(lastAxis, axis: 2, 4..<8).tensor == image)
    }

    @Test func vectorisedExpMatchesLibm() {
        var worst = 0.0
        var x: Float = -87
        while x < 88.5 {
            let got = Double(fastExp(x)), want = exp(Double(x))
            worst = max(worst, abs(got - want) / want)
            x += 0.0137
        }
        #expect(worst < 3e-7, "worst relative error \(worst)")
        #expect(fastExp(-100) == 0)
        #expect(fastExp(100) == .infinity)
        #expect(fastExp(.nan).isNaN)
        var values: [Float] = (0..<21).map { Float($0) - 10 }
        let sum = values.withUnsafeMutableBufferPointer { expInPlace($0.baseAddress!, count: 21, shift: 1) }
        let reference = (0..<21).map { exp(Double($0) - 11) }
        #expect(relativeError(values, reference) < 1e-6)
        #expect(abs(Double(sum) - reference.reduce(0, +)) / reference.reduce(0, +) < 1e-6)
    }
}
