import Foundation
import Synchronization

// Multi-head attention (with grouped-query heads) and rotary position embeddings.

extension Graph {
    /// Query rows per block of causal attention: small enough to skip most masked scores, large enough for BLAS.
    static let causalBlock = 64

    /// softmax(q·kᵀ/√d [+ causal mask]) · v per head.
    ///
    /// `q` is `[batch, queries, heads·headDim]`; `k` and `v` are `[batch, keys, kvHeads·headDim]`, each key/value
    /// head shared by `heads / kvHeads` query heads. Heads are addressed in place through BLAS leading
    /// dimensions. With `causal`, query t sees keys up to t + (keys − queries).
    public func attention(_ q: Value, _ k: Value, _ v: Value, heads: Int, kvHeads: Int, causal: Bool) -> Value {
        precondition(q.shape.count == 3 && k.shape.count == 3 && v.shape == k.shape, "attention: shapes \(q.shape), \(k.shape), \(v.shape)")
        let (batch, queries, width) = (q.shape[0], q.shape[1], q.shape[2])
        let keys = k.shape[1]
        precondition(k.shape[0] == batch && heads > 0 && kvHeads > 0 && heads % kvHeads == 0 && width % heads == 0,
                     "attention: \(heads) heads over \(kvHeads) key/value heads do not fit \(q.shape), \(k.shape)")
        let headDim = width / heads
        precondition(k.shape[2] == kvHeads * headDim, "attention: keys are \(k.shape[2]) wide, expected \(kvHeads * headDim)")
        let group = heads / kvHeads
        let kvWidth = kvHeads * headDim
        let scale = 1 / Float(headDim).squareRoot()
        let offset = keys - queries
        // Training keeps every head's probabilities for the backward pass; inference reuses one buffer.
        let keepsProbabilities = isRecording && [q, k, v].contains { $0.node != nil }
        let probabilityCount = (keepsProbabilities ? batch * heads : 1) * queries * keys
        var probabilities = [Float](unsafeUninitializedCapacity: probabilityCount) { _, n in n = probabilityCount }
        var out = Tensor(uninitialized: q.shape)
        q.tensor.data.withUnsafeBufferPointer { pq in
            k.tensor.data.withUnsafeBufferPointer { pk in
                v.tensor.data.withUnsafeBufferPointer { pv in
                    probabilities.withUnsafeMutableBufferPointer { pp in
                        out.data.withUnsafeMutableBufferPointer { po in
                            for b in 0..<batch {
                                for h in 0..<heads {
                                    let qh = pq.baseAddress! + b * queries * width + h * headDim
                                    let kh = pk.baseAddress! + b * keys * kvWidth + (h / group) * headDim
                                    let vh = pv.baseAddress! + b * keys * kvWidth + (h / group) * headDim
                                    let p = pp.baseAddress! + (keepsProbabilities ? (b * heads + h) * queries * keys : 0)
                                    let o = po.baseAddress! + b * queries * width + h * headDim
                                    // Causal attention goes in blocks of query rows: a block's scores and values stop
                                    // at the last key its last row may see, so about half the work is never done.
                                    let block = causal ? Self.causalBlock : queries
                                    for start in stride(from: 0, to: queries, by: block) {
                                        let rows = min(block, queries - start)
                                        let reach = causal ? min(max(start + rows + offset, 0), keys) : keys
                                        let scores = p + start * keys
                                        BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: reach, k: headDim, alpha: scale,
                                                  a: qh + start * width, lda: width, b: kh, ldb: kvWidth, c: scores, ldc: keys)
                                        for t in start..<(start + rows) {
                                            // Causal rows normalise over the keys they may see; the rest stay 0.
                                            let visible = causal ? min(max(t + offset + 1, 0), keys) : keys
                                            let row = p + t * keys
                                            softmaxRow(row, count: visible)
                                            // The product with values reads up to `reach`; only training's saved
                                            // probabilities need the rest of the row.
                                            for s in visible..<(keepsProbabilities ? keys : reach) { row[s] = 0 }
                                        }
                                        BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: headDim, k: reach,
                                                  a: scores, lda: keys, b: vh, ldb: kvWidth, c: o + start * width, ldc: width)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let (qt, kt, vt, saved) = (q.tensor, k.tensor, v.tensor, probabilities)
        return record(out, [q, k, v]) { g in
            var dq = Tensor(zeros: qt.shape), dk = Tensor(zeros: kt.shape), dv = Tensor(zeros: vt.shape)
            var scores = [Float](repeating: 0, count: queries * keys)
            g.data.withUnsafeBufferPointer { pg in
                qt.data.withUnsafeBufferPointer { pq in
                    kt.data.withUnsafeBufferPointer { pk in
                        vt.data.withUnsafeBufferPointer { pv in
                            saved.withUnsafeBufferPointer { pp in
                                dq.data.withUnsafeMutableBufferPointer { pdq in
                                    dk.data.withUnsafeMutableBufferPointer { pdk in
                                        dv.data.withUnsafeMutableBufferPointer { pdv in
                                            scores.withUnsafeMutableBufferPointer { ds in
                                                for b in 0..<batch {
                                                    for h in 0..<heads {
                                                        let qOffset = b * queries * width + h * headDim
                                                        let kvOffset = b * keys * kvWidth + (h / group) * headDim
                                                        let p = pp.baseAddress! + (b * heads + h) * queries * keys
                                                        let go = pg.baseAddress! + qOffset
                                                        // dP = dO·vᵀ; dV += Pᵀ·dO
                                                        BLAS.gemm(transposeA: false, transposeB: true, m: queries, n: keys, k: headDim,
                                                                  a: go, lda: width, b: pv.baseAddress! + kvOffset, ldb: kvWidth,
                                                                  c: ds.baseAddress!, ldc: keys)
                                                        BLAS.gemm(transposeA: true, transposeB: false, m: keys, n: headDim, k: queries,
                                                                  a: p, lda: keys, b: go, ldb: width,
                                                                  beta: 1, c: pdv.baseAddress! + kvOffset, ldc: kvWidth)
                                                        // dS = P ⊙ (dP − rowsum(dP ⊙ P))
                                                        for t in 0..<queries {
                                                            var dot: Float = 0
                                                            for s in 0..<keys { dot += ds[t * keys + s] * p[t * keys + s] }
                                                            for s in 0..<keys { ds[t * keys + s] = p[t * keys + s] * (ds[t * keys + s] - dot) }
                                                        }
                                                        // dQ = scale·dS·k; dK += scale·dSᵀ·q
                                                        BLAS.gemm(transposeA: false, transposeB: false, m: queries, n: headDim, k: keys, alpha: scale,
                                                                  a: ds.baseAddress!, lda: keys, b: pk.baseAddress! + kvOffset, ldb: kvWidth,
                                                                  c: pdq.baseAddress! + qOffset, ldc: width)
                                                        BLAS.gemm(transposeA: true, transposeB: false, m: keys, n: headDim, k: queries, alpha: scale,
                                                                  a: ds.baseAddress!, lda: keys, b: pq.baseAddress! + qOffset, ldb: width,
                                                                  beta: 1, c: pdk.baseAddress! + kvOffset, ldc: kvWidth)
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return [dq, dk, dv]
        }
    }

    /// Rotary position embedding with the default frequencies θ^(−2i/headDim).
    public func rope(_ x: Value, heads: Int, theta: Float, positionOffset: Int = 0) -> Value {
        rope(x, heads: heads, rotary: Rotary(theta: Double(theta)), positionOffset: positionOffset)
    }

    /// Rotary position embedding as Llama applies it (`rotate_half`: element i pairs with i + headDim/2).
    /// `x` is `[batch, positions, heads·headDim]`; position t is rotated by angle (positionOffset + t)·fᵢ, the
    /// frequencies fᵢ as `rotary` gives them.
    public func rope(_ x: Value, heads: Int, rotary: Rotary, positionOffset: Int = 0) -> Value {
        precondition(x.shape.count == 3 && x.shape[2] % heads == 0 && (x.shape[2] / heads) % 2 == 0,
                     "rope: shape \(x.shape) does not split into \(heads) heads of even size")
        let (cosines, sines) = RotaryTables.shared.tables(positions: x.shape[1], headDim: x.shape[2] / heads, rotary: rotary, offset: positionOffset)
        return rotate(x, heads: heads, cosines: cosines, sines: sines)
    }

    /// The `rotate_half` rotation with angles given per position: `cosines`/`sines` hold `headDim/2` values per
    /// position, `[positions, headDim/2]` shared by every row of the batch or `[batch, positions, headDim/2]`
    /// (multimodal positions differ by row).
    public func rotate(_ x: Value, heads: Int, cosines: [Float], sines: [Float]) -> Value {
        precondition(x.shape.count == 3 && x.shape[2] % heads == 0 && (x.shape[2] / heads) % 2 == 0,
                     "rotate: shape \(x.shape) does not split into \(heads) heads of even size")
        let (batch, positions, width) = (x.shape[0], x.shape[1], x.shape[2])
        let headDim = width / heads, half = headDim / 2
        let perRow = cosines.count == batch * positions * half
        precondition(perRow || cosines.count == positions * half, "rotate: \(cosines.count) angles for \(batch)×\(positions) positions of \(half) pairs")
        precondition(sines.count == cosines.count, "rotate: as many sines as cosines")
        func rotate(_ input: Tensor, inverse: Bool) -> Tensor {
            var out = Tensor(uninitialized: input.shape)
            let sign: Float = inverse ? -1 : 1
            input.data.withUnsafeBufferPointer { pin in
                out.data.withUnsafeMutableBufferPointer { pout in
                    cosines.withUnsafeBufferPointer { pc in
                        sines.withUnsafeBufferPointer { ps in
                            for b in 0..<batch {
                                for t in 0..<positions {
                                    let table = ((perRow ? b * positions : 0) + t) * half
                                    for h in 0..<heads {
                                        let base = (b * positions + t) * width + h * headDim
                                        for i in 0..<half {
                                            let (c, sn) = (pc[table + i], ps[table + i])
                                            let (x1, x2) = (pin[base + i], pin[base + i + half])
                                            pout[base + i] = x1 * c - x2 * sign * sn
                                            pout[base + i + half] = x2 * c + x1 * sign * sn
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return out
        }
        // The rotation is orthogonal: its gradient is the inverse rotation.
        return record(rotate(x.tensor, inverse: false), [x]) { g in [rotate(g, inverse: true)] }
    }
}

/// A rotary embedding's frequencies: θ^(−2i/d) for pair i of a head of size d, rescaled as the checkpoint's
/// `rope_type` says (transformers' `modeling_rope_utils`).
public struct Rotary: Hashable, Sendable {
    public enum Scaling: Hashable, Sendable {
        case none
        /// Position interpolation: every frequency divided by the factor.
        case linear(factor: Double)
        /// Llama 3.1's: wavelengths longer than `original / low` divided by the factor, shorter than
        /// `original / high` kept, and a smooth blend between.
        case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalPositions: Int)
    }
    public var theta: Double
    public var scaling: Scaling

    public init(theta: Double, scaling: Scaling = .none) {
        self.theta = theta
        self.scaling = scaling
    }

    /// The frequency of each of the head's `headDim / 2` pairs.
    public func frequencies(headDim: Int) -> [Double] {
        (0..<(headDim / 2)).map { i in
            let f = 1 / pow(theta, Double(2 * i) / Double(headDim))
            switch scaling {
            case .none: return f
            case .linear(let factor): return f / factor
            case .llama3(let factor, let low, let high, let original):
                let wavelength = 2 * Double.pi / f
                let (lowWavelength, highWavelength) = (Double(original) / low, Double(original) / high)
                if wavelength < highWavelength { return f }
                if wavelength > lowWavelength { return f / factor }
                let smooth = (Double(original) / wavelength - low) / (high - low)
                return (1 - smooth) * f / factor + smooth * f
            }
        }
    }
}

/// cos/sin tables of rotary embeddings, computed once per (positions, head size, frequencies, offset): a forward
/// pass asks for the same tables in every layer, and a search asks for them thousands of times.
final class RotaryTables: Sendable {
    static let shared = RotaryTables()
    private struct Key: Hashable { let positions: Int, headDim: Int, rotary: Rotary, offset: Int }
    private let cache = Mutex<[Key: (cos: [Float], sin: [Float])]>([:])

    func tables(positions: Int, headDim: Int, rotary: Rotary, offset: Int) -> (cos: [Float], sin: [Float]) {
        let key = Key(positions: positions, headDim: headDim, rotary: rotary, offset: offset)
        if let hit = cache.withLock({ $0[key] }) { return hit }
        let half = headDim / 2
        var cosines = [Float](repeating: 0, count: positions * half), sines = cosines
        for (i, frequency) in rotary.frequencies(headDim: headDim).enumerated() {
            for t in 0..<positions {
                let angle = Double(offset + t) * frequency
                cosines[t * half + i] = Float(cos(angle))
                sines[t * half + i] = Float(sin(angle))
            }
        }
        cache.withLock { table in
            if table.count > 64 { table.removeAll() }  // bounded: shapes vary little in practice
            table[key] = (cosines, sines)
        }
        return (cosines, sines)
    }
}
