import Foundation

// Normalisations and softmax over the last axis.

extension Graph {
    /// x / sqrt(mean(x²) + eps) · weight, over the last axis (Llama's RMSNorm).
    public func rmsNorm(_ x: Value, weight: Value, eps: Float) -> Value {
        let d = x.tensor.lastDimension, rows = x.tensor.leadingCount
        precondition(weight.shape == [d], "rmsNorm: weight \(weight.shape) does not match features \(d)")
        // One pass writes x̂ ⊙ w, and x̂ itself only when the backward pass will need it.
        let keepsNormalized = isRecording && (x.node != nil || weight.node != nil)
        var normalized = Tensor(uninitialized: keepsNormalized ? x.shape : [0]), out = Tensor(uninitialized: x.shape)
        var inverseRMS = [Float](repeating: 0, count: rows)
        let w = weight.tensor
        x.tensor.data.withUnsafeBufferPointer { px in
            normalized.data.withUnsafeMutableBufferPointer { pn in
                out.data.withUnsafeMutableBufferPointer { po in
                    w.data.withUnsafeBufferPointer { pw in
                        for r in 0..<rows {
                            let row = px.baseAddress! + r * d
                            let inv = 1 / (sumOfSquares(row, count: d) / Float(d) + eps).squareRoot()
                            inverseRMS[r] = inv
                            let target = po.baseAddress! + r * d
                            for j in 0..<d { target[j] = row[j] * inv * pw[j] }
                            if keepsNormalized {
                                let kept = pn.baseAddress! + r * d
                                for j in 0..<d { kept[j] = row[j] * inv }
                            }
                        }
                    }
                }
            }
        }
        let xhat = normalized
        return record(out, [x, weight]) { g in
            var dx = Tensor(zeros: xhat.shape)
            var dw = [Float](repeating: 0, count: d)
            for r in 0..<rows {
                // dx = inv · (ĝ − x̂ · mean(ĝ ⊙ x̂)), with ĝ = g ⊙ w.
                var dot: Float = 0
                for j in 0..<d {
                    let gh = g.data[r * d + j] * w.data[j]
                    dot += gh * xhat.data[r * d + j]
                    dw[j] += g.data[r * d + j] * xhat.data[r * d + j]
                }
                let mean = dot / Float(d)
                for j in 0..<d {
                    dx.data[r * d + j] = inverseRMS[r] * (g.data[r * d + j] * w.data[j] - xhat.data[r * d + j] * mean)
                }
            }
            return [dx, Tensor(shape: [d], data: dw)]
        }
    }

    /// (x − mean) / sqrt(var + eps) · weight + bias, over the last axis.
    public func layerNorm(_ x: Value, weight: Value, bias: Value, eps: Float) -> Value {
        let d = x.tensor.lastDimension, rows = x.tensor.leadingCount
        precondition(weight.shape == [d] && bias.shape == [d], "layerNorm: weight/bias do not match features \(d)")
        var xhat = x.tensor
        var inverseStd = [Float](repeating: 0, count: rows)
        xhat.data.withUnsafeMutableBufferPointer { p in
            for r in 0..<rows {
                var mean: Float = 0
                for j in 0..<d { mean += p[r * d + j] }
                mean /= Float(d)
                var variance: Float = 0
                for j in 0..<d { let c = p[r * d + j] - mean; variance += c * c }
                let inv = 1 / (variance / Float(d) + eps).squareRoot()
                inverseStd[r] = inv
                for j in 0..<d { p[r * d + j] = (p[r * d + j] - mean) * inv }
            }
        }
        let (w, b) = (weight.tensor, bias.tensor)
        var out = xhat
        forEachPeriod(&out.data, w.data) { $0 *= $1 }
        forEachPeriod(&out.data, b.data) { $0 += $1 }
        let normalized = xhat
        return record(out, [x, weight, bias]) { g in
            var dx = Tensor(zeros: normalized.shape)
            var dw = [Float](repeating: 0, count: d), db = [Float](repeating: 0, count: d)
            for r in 0..<rows {
                // dx = inv · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)), with ĝ = g ⊙ w.
                var sum: Float = 0, dot: Float = 0
                for j in 0..<d {
                    let gh = g.data[r * d + j] * w.data[j]
                    sum += gh
                    dot += gh * normalized.data[r * d + j]
                    dw[j] += g.data[r * d + j] * normalized.data[r * d + j]
                    db[j] += g.data[r * d + j]
                }
                let (meanG, meanDot) = (sum / Float(d), dot / Float(d))
                for j in 0..<d {
                    let gh = g.data[r * d + j] * w.data[j]
                    dx.data[r * d + j] = inverseStd[r] * (gh - meanG - normalized.data[r * d + j] * meanDot)
                }
            }
            return [dx, Tensor(shape: [d], data: dw), Tensor(shape: [d], data: db)]
        }
    }

    /// Softmax over the last axis.
    public func softmax(_ x: Value) -> Value {
        let d = x.tensor.lastDimension, rows = x.tensor.leadingCount
        var out = x.tensor
        out.data.withUnsafeMutableBufferPointer { p in
            for r in 0..<rows { softmaxRow(p.baseAddress! + r * d, count: d) }
        }
        let y = out
        return record(out, [x]) { g in
            var dx = g
            for r in 0..<rows {
                var dot: Float = 0
                for j in 0..<d { dot += g.data[r * d + j] * y.data[r * d + j] }
                for j in 0..<d { dx.data[r * d + j] = y.data[r * d + j] * (g.data[r * d + j] - dot) }
            }
            return [dx]
        }
    }
}

/// In-place, numerically stable softmax of `count` values; an all −∞ row becomes all zeros.
@inline(__always)
func softmaxRow(_ p: UnsafeMutablePointer<Float>, count: Int) {
    let largest = maximum(p, count: count)
    guard largest > -.infinity else {
        for j in 0..<count { p[j] = 0 }
        return
    }
    let inv = 1 / expInPlace(p, count: count, shift: largest)
    for j in 0..<count { p[j] *= inv }
}
