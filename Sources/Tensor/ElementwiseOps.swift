import Foundation

// Elementwise ops. A binary op's right operand may be broadcast: it has the left operand's shape, a suffix of
// it (a bias or a per-feature scale), or a single element (a scalar).

extension Graph {
    public func add(_ a: Value, _ b: Value) -> Value {
        let period = broadcastPeriod(a.shape, b.shape, op: "add")
        let out = combine(a.tensor, b.tensor, +)
        let bShape = b.shape
        return record(out, [a, b]) { g in [g, reduceToPeriod(g, period: period, shape: bShape)] }
    }

    public func mul(_ a: Value, _ b: Value) -> Value {
        let period = broadcastPeriod(a.shape, b.shape, op: "mul")
        let out = combine(a.tensor, b.tensor, *)
        let (at, bt) = (a.tensor, b.tensor)
        return record(out, [a, b]) { g in
            var da = g, gb = g
            forEachPeriod(&da.data, bt.data) { $0 *= $1 }
            gb.data.withUnsafeMutableBufferPointer { d in
                at.data.withUnsafeBufferPointer { pa in for i in 0..<d.count { d[i] *= pa[i] } }
            }
            return [da, reduceToPeriod(gb, period: period, shape: bt.shape)]
        }
    }

    /// a · s for a constant s.
    public func scale(_ a: Value, by s: Float) -> Value {
        unary(a, { $0 * s }, { _, _ in s })
    }

    /// x · σ(x) (Llama's FFN activation), in one vectorised pass; the backward pass recomputes σ.
    public func silu(_ x: Value) -> Value {
        var out = Tensor(uninitialized: x.shape)
        x.tensor.data.withUnsafeBufferPointer { px in
            out.data.withUnsafeMutableBufferPointer { o in
                let source = UnsafeRawPointer(px.baseAddress!), target = UnsafeMutableRawPointer(o.baseAddress!)
                var i = 0
                while i + 8 <= o.count {
                    let v = source.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                    target.storeBytes(of: v / (1 + exp8(-v)), toByteOffset: i * 4, as: SIMD8<Float>.self)
                    i += 8
                }
                while i < o.count { o[i] = px[i] / (1 + fastExp(-px[i])); i += 1 }
            }
        }
        let xt = x.tensor
        return record(out, [x]) { g in
            let s = Graph.logistic(xt)
            var dx = g
            dx.data.withUnsafeMutableBufferPointer { d in
                for i in 0..<d.count { d[i] *= s.data[i] * (1 + xt.data[i] * (1 - s.data[i])) }
            }
            return [dx]
        }
    }

    /// σ(x) = 1 / (1 + e^−x).
    public func sigmoid(_ x: Value) -> Value {
        let y = Graph.logistic(x.tensor)
        return record(y, [x]) { g in
            var dx = g
            dx.data.withUnsafeMutableBufferPointer { d in for i in 0..<d.count { d[i] *= y.data[i] * (1 - y.data[i]) } }
            return [dx]
        }
    }

    public func relu(_ x: Value) -> Value {
        unary(x, { max($0, 0) }, { x, _ in x > 0 ? 1 : 0 })
    }

    /// GELU with the tanh approximation (GPT-2, `gelu_pytorch_tanh`).
    public func geluTanh(_ x: Value) -> Value {
        let c: Float = (2 / Float.pi).squareRoot()
        return unary(x, { x in 0.5 * x * (1 + tanh(c * (x + 0.044715 * x * x * x))) }, { x, _ in
            let inner = c * (x + 0.044715 * x * x * x)
            let t = tanh(inner)
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
        })
    }

    /// GELU with the exact Gaussian CDF (`gelu` in Hugging Face configs).
    public func geluExact(_ x: Value) -> Value {
        let invSqrt2: Float = 1 / Float(2).squareRoot()
        let invSqrt2Pi: Float = 1 / (2 * Float.pi).squareRoot()
        return unary(x, { x in 0.5 * x * (1 + erf(x * invSqrt2)) }, { x, _ in
            0.5 * (1 + erf(x * invSqrt2)) + x * invSqrt2Pi * exp(-0.5 * x * x)
        })
    }

    /// σ of every element, with the vectorised exp.
    static func logistic(_ x: Tensor) -> Tensor {
        var out = x
        out.data.withUnsafeMutableBufferPointer { o in
            for i in 0..<o.count { o[i] = -o[i] }
            _ = expInPlace(o.baseAddress!, count: o.count)
            for i in 0..<o.count { o[i] = 1 / (1 + o[i]) }
        }
        return out
    }

    /// y = f(x) elementwise; `derivative(x, y)` gives dy/dx.
    @inline(__always)
    func unary(_ x: Value, _ f: (Float) -> Float, _ derivative: @escaping (Float, Float) -> Float) -> Value {
        var out = x.tensor
        out.data.withUnsafeMutableBufferPointer { o in for i in 0..<o.count { o[i] = f(o[i]) } }
        let (xt, yt) = (x.tensor, out)
        return record(out, [x]) { g in
            var dx = g
            dx.data.withUnsafeMutableBufferPointer { d in
                xt.data.withUnsafeBufferPointer { px in
                    yt.data.withUnsafeBufferPointer { py in
                        for i in 0..<d.count { d[i] *= derivative(px[i], py[i]) }
                    }
                }
            }
            return [dx]
        }
    }
}

/// How often the right operand repeats along the left one's elements; traps on shapes that do not broadcast.
func broadcastPeriod(_ a: [Int], _ b: [Int], op: String) -> Int {
    let count = b.reduce(1, *)
    let fits = b == a || count == 1 || (b.count <= a.count && Array(a.suffix(b.count)) == b)
    precondition(fits, "\(op): shape \(b) does not broadcast onto \(a)")
    return count
}

/// A new tensor of `a`'s shape with elements `op(a[i], b[i mod b.count])`, in one pass over fresh memory.
@inline(__always)
func combine(_ a: Tensor, _ b: Tensor, _ op: (Float, Float) -> Float) -> Tensor {
    var out = Tensor(uninitialized: a.shape)
    let period = b.count
    guard period > 0 else { return out }
    out.data.withUnsafeMutableBufferPointer { po in
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                var start = 0
                while start < pa.count {
                    for j in 0..<period { po[start + j] = op(pa[start + j], pb[j]) }
                    start += period
                }
            }
        }
    }
    return out
}

/// Applies `body(&a[i], b[i mod b.count])` over `a`, walking `b` in blocks (no division per element).
@inline(__always)
func forEachPeriod(_ a: inout [Float], _ b: [Float], _ body: (inout Float, Float) -> Void) {
    let period = b.count
    guard period > 0 else { return }
    a.withUnsafeMutableBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            var start = 0
            while start < pa.count {
                for j in 0..<period { body(&pa[start + j], pb[j]) }
                start += period
            }
        }
    }
}

/// Sums a gradient over the repeats of a broadcast operand.
func reduceToPeriod(_ g: Tensor, period: Int, shape: [Int]) -> Tensor {
    if g.count == period { return g.reshaped(shape) }
    var out = [Float](repeating: 0, count: period)
    g.data.withUnsafeBufferPointer { pg in
        out.withUnsafeMutableBufferPointer { po in
            var start = 0
            while start < pg.count {
                for j in 0..<period { po[j] += pg[start + j] }
                start += period
            }
        }
    }
    return Tensor(shape: shape, data: out)
}
