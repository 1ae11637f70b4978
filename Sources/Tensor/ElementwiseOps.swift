import Foundation

// Elementwise ops. A binary op's right operand may be broadcast: it has the left operand's shape, a suffix of
// it (a bias or a per-feature scale), or a single element (a scalar).

extension Graph {
    public func add(_ a: Value, _ b: Value) -> Value {
        let period = broadcastPeriod(a.shape, b.shape, op: "add")
        var out = a.tensor
        out.data.withUnsafeMutableBufferPointer { o in
            b.tensor.data.withUnsafeBufferPointer { pb in
                for i in 0..<o.count { o[i] += pb[i % period] }
            }
        }
        let bShape = b.shape
        return record(out, [a, b]) { g in [g, reduceToPeriod(g, period: period, shape: bShape)] }
    }

    public func mul(_ a: Value, _ b: Value) -> Value {
        let period = broadcastPeriod(a.shape, b.shape, op: "mul")
        var out = a.tensor
        out.data.withUnsafeMutableBufferPointer { o in
            b.tensor.data.withUnsafeBufferPointer { pb in
                for i in 0..<o.count { o[i] *= pb[i % period] }
            }
        }
        let (at, bt) = (a.tensor, b.tensor)
        return record(out, [a, b]) { g in
            var da = g, gb = g
            da.data.withUnsafeMutableBufferPointer { d in
                bt.data.withUnsafeBufferPointer { pb in for i in 0..<d.count { d[i] *= pb[i % period] } }
            }
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

    public func silu(_ x: Value) -> Value {
        unary(x, { $0 / (1 + exp(-$0)) }, { x, _ in
            let s = 1 / (1 + exp(-x))
            return s * (1 + x * (1 - s))
        })
    }

    public func sigmoid(_ x: Value) -> Value {
        unary(x, { 1 / (1 + exp(-$0)) }, { _, y in y * (1 - y) })
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

    /// y = f(x) elementwise; `derivative(x, y)` gives dy/dx.
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

/// Sums a gradient over the repeats of a broadcast operand.
func reduceToPeriod(_ g: Tensor, period: Int, shape: [Int]) -> Tensor {
    if g.count == period { return g.reshaped(shape) }
    var out = [Float](repeating: 0, count: period)
    g.data.withUnsafeBufferPointer { pg in
        for i in 0..<pg.count { out[i % period] += pg[i] }
    }
    return Tensor(shape: shape, data: out)
}
