// Embedding lookup, reshaping, concatenation, slicing and reductions.

extension Graph {
    /// Rows of `table` (`[vocabulary, width]`) for each id: `[ids.count, width]`.
    public func embedding(_ table: Value, ids: [Int]) -> Value {
        precondition(table.shape.count == 2, "embedding: table must be a matrix, got \(table.shape)")
        let (vocabulary, width) = (table.shape[0], table.shape[1])
        var out = [Float](repeating: 0, count: ids.count * width)
        for (row, id) in ids.enumerated() {
            precondition(id >= 0 && id < vocabulary, "embedding: id \(id) is outside the vocabulary of \(vocabulary)")
            for j in 0..<width { out[row * width + j] = table.tensor.data[id * width + j] }
        }
        return record(Tensor(shape: [ids.count, width], data: out), [table]) { g in
            var dTable = Tensor(zeros: [vocabulary, width])
            for (row, id) in ids.enumerated() {
                for j in 0..<width { dTable.data[id * width + j] += g.data[row * width + j] }
            }
            return [dTable]
        }
    }

    /// Weighted sums of rows of `table` (`[rows, width]`): output row r is Σ wᵢ · table[iᵢ] over `mixes[r]`
    /// (a gather with interpolation weights, such as a feature map resampled bilinearly).
    public func mixRows(_ table: Value, _ mixes: [[(index: Int, weight: Float)]]) -> Value {
        precondition(table.shape.count == 2, "mixRows: table must be a matrix, got \(table.shape)")
        let (count, width) = (table.shape[0], table.shape[1])
        var out = [Float](repeating: 0, count: mixes.count * width)
        table.tensor.data.withUnsafeBufferPointer { t in
            for (row, terms) in mixes.enumerated() {
                for (i, w) in terms {
                    precondition(i >= 0 && i < count, "mixRows: row \(i) is outside the table's \(count)")
                    for j in 0..<width { out[row * width + j] += w * t[i * width + j] }
                }
            }
        }
        return record(Tensor(shape: [mixes.count, width], data: out), [table]) { g in
            var dTable = Tensor(zeros: [count, width])
            for (row, terms) in mixes.enumerated() {
                for (i, w) in terms { for j in 0..<width { dTable.data[i * width + j] += w * g.data[row * width + j] } }
            }
            return [dTable]
        }
    }

    /// Rows of a model's embedding table, Float or stored (a stored table is read row by row; no gradient).
    public func embedding(_ table: Parameter, ids: [Int]) -> Value {
        guard let matrix = table.stored, !isRecording else { return embedding(parameter(table), ids: ids) }
        let width = matrix.columns
        var out = Tensor(uninitialized: [ids.count, width])
        out.data.withUnsafeMutableBufferPointer { po in
            for (row, id) in ids.enumerated() {
                precondition(id >= 0 && id < matrix.rows, "embedding: id \(id) is outside the vocabulary of \(matrix.rows)")
                matrix.widen(rows: id..<(id + 1), into: po.baseAddress! + row * width)
            }
        }
        return constant(out)
    }

    public func reshape(_ x: Value, _ shape: [Int]) -> Value {
        let original = x.shape
        return record(x.tensor.reshaped(shape), [x]) { g in [g.reshaped(original)] }
    }

    /// Joins tensors along `axis` (e.g. image features and text embeddings along the sequence axis).
    public func concat(_ parts: [Value], axis: Int) -> Value {
        precondition(!parts.isEmpty, "concat of nothing")
        let shape0 = parts[0].shape
        precondition(axis >= 0 && axis < shape0.count, "concat: axis \(axis) out of range for \(shape0)")
        for part in parts {
            var a = part.shape, b = shape0
            a[axis] = 0
            b[axis] = 0
            precondition(a == b, "concat: \(part.shape) does not match \(shape0) off axis \(axis)")
        }
        let outer = shape0[..<axis].reduce(1, *), inner = shape0[(axis + 1)...].reduce(1, *)
        let sizes = parts.map { $0.shape[axis] }
        let total = sizes.reduce(0, +)
        var outShape = shape0
        outShape[axis] = total
        var out = [Float](repeating: 0, count: outer * total * inner)
        var start = 0
        for (part, size) in zip(parts, sizes) {
            for o in 0..<outer {
                for i in 0..<(size * inner) { out[(o * total + start) * inner + i] = part.tensor.data[o * size * inner + i] }
            }
            start += size
        }
        return record(Tensor(shape: outShape, data: out), parts) { g in
            var grads: [Tensor?] = []
            var start = 0
            for (part, size) in zip(parts, sizes) {
                var d = [Float](repeating: 0, count: outer * size * inner)
                for o in 0..<outer {
                    for i in 0..<(size * inner) { d[o * size * inner + i] = g.data[(o * total + start) * inner + i] }
                }
                grads.append(Tensor(shape: part.shape, data: d))
                start += size
            }
            return grads
        }
    }

    /// The elements at positions `range` along `axis`.
    public func slice(_ x: Value, axis: Int, _ range: Range<Int>) -> Value {
        let shape = x.shape
        precondition(axis >= 0 && axis < shape.count && range.lowerBound >= 0 && range.upperBound <= shape[axis],
                     "slice: \(range) along axis \(axis) does not fit \(shape)")
        let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *), size = shape[axis]
        var outShape = shape
        outShape[axis] = range.count
        var out = [Float](repeating: 0, count: outer * range.count * inner)
        for o in 0..<outer {
            for i in 0..<(range.count * inner) {
                out[o * range.count * inner + i] = x.tensor.data[(o * size + range.lowerBound) * inner + i]
            }
        }
        return record(Tensor(shape: outShape, data: out), [x]) { g in
            var d = Tensor(zeros: shape)
            for o in 0..<outer {
                for i in 0..<(range.count * inner) {
                    d.data[(o * size + range.lowerBound) * inner + i] = g.data[o * range.count * inner + i]
                }
            }
            return [d]
        }
    }

    /// Sum of all elements (a scalar).
    public func sum(_ x: Value) -> Value {
        var total: Double = 0
        for value in x.tensor.data { total += Double(value) }
        let shape = x.shape
        return record(Tensor(scalar: Float(total)), [x]) { g in [Tensor(repeating: g.scalar, shape: shape)] }
    }

    /// Mean of all elements (a scalar).
    public func mean(_ x: Value) -> Value {
        scale(sum(x), by: 1 / Float(max(x.tensor.count, 1)))
    }

    /// Sums along one axis, removing it.
    public func sum(_ x: Value, axis: Int) -> Value {
        let shape = x.shape
        precondition(axis >= 0 && axis < shape.count, "sum: axis \(axis) out of range for \(shape)")
        let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *), size = shape[axis]
        var outShape = shape
        outShape.remove(at: axis)
        var out = [Float](repeating: 0, count: outer * inner)
        for o in 0..<outer {
            for s in 0..<size {
                for i in 0..<inner { out[o * inner + i] += x.tensor.data[(o * size + s) * inner + i] }
            }
        }
        return record(Tensor(shape: outShape, data: out), [x]) { g in
            var d = Tensor(zeros: shape)
            for o in 0..<outer {
                for s in 0..<size {
                    for i in 0..<inner { d.data[(o * size + s) * inner + i] = g.data[o * inner + i] }
                }
            }
            return [d]
        }
    }

    /// Means along one axis, removing it.
    public func mean(_ x: Value, axis: Int) -> Value {
        scale(sum(x, axis: axis), by: 1 / Float(max(x.shape[axis], 1)))
    }
}
