/// A dense `Float` tensor: a shape and its elements in row-major order.
///
/// A value type: copies share storage until one is written (copy-on-write of `[Float]`).
public struct Tensor: Equatable, Sendable, CustomStringConvertible {
    /// Sizes of each axis, outermost first. A scalar has shape `[]`.
    public var shape: [Int]
    /// `shape.product` elements, row-major.
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative size in shape \(shape)")
        precondition(data.count == shape.reduce(1, *), "shape \(shape) needs \(shape.reduce(1, *)) elements, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    public init(zeros shape: [Int]) {
        self.init(repeating: 0, shape: shape)
    }

    public init(repeating value: Float, shape: [Int]) {
        self.init(shape: shape, data: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    /// A tensor whose elements the caller overwrites before reading (outputs of sgemm with beta = 0).
    init(uninitialized shape: [Int]) {
        let count = shape.reduce(1, *)
        self.shape = shape
        data = [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }

    /// A rank-0 tensor.
    public init(scalar: Float) {
        self.init(shape: [], data: [scalar])
    }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    /// The only element of a one-element tensor.
    public var scalar: Float {
        precondition(data.count == 1, "tensor of shape \(shape) is not a scalar")
        return data[0]
    }

    /// Size of the last axis (the feature axis); 1 for a scalar.
    public var lastDimension: Int { shape.last ?? 1 }

    /// Number of rows when the tensor is seen as a matrix [everything but the last axis, last axis].
    public var leadingCount: Int { lastDimension == 0 ? 0 : count / lastDimension }

    /// The same elements under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, data: data)
    }

    public var description: String {
        let preview = data.prefix(8).map { String(format: "%.4g", Double($0)) }.joined(separator: ", ")
        return "Tensor(\(shape): [\(preview)\(data.count > 8 ? ", …" : "")])"
    }

    /// Largest absolute difference from another tensor of the same shape.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(shape == other.shape, "shapes differ: \(shape) vs \(other.shape)")
        var worst: Float = 0
        for i in data.indices { worst = max(worst, abs(data[i] - other.data[i])) }
        return worst
    }
}

/// A leading sub-block `[0..<rows, 0..<columns]` of a row-major matrix, addressed in place through the
/// matrix's row stride (BLAS's leading dimension). Nested pruning keeps the first `k` rows or columns of a
/// weight this way, with no copy.
public struct MatrixView: Sendable {
    /// The full matrix; its storage is shared, not copied.
    public let base: Tensor
    public let rows: Int
    public let columns: Int
    /// Elements between the starts of consecutive rows: the full matrix's column count.
    public var leadingDimension: Int { base.shape[1] }

    public init(_ base: Tensor, rows: Int? = nil, columns: Int? = nil) {
        precondition(base.rank == 2, "a matrix view needs a rank-2 tensor, got shape \(base.shape)")
        let r = rows ?? base.shape[0], c = columns ?? base.shape[1]
        precondition(r >= 0 && r <= base.shape[0] && c >= 0 && c <= base.shape[1],
                     "view \(r)×\(c) does not fit in \(base.shape)")
        self.base = base
        self.rows = r
        self.columns = c
    }

    /// The view's elements copied into a tensor of their own (for tests and for writing pruned checkpoints).
    public func materialized() -> Tensor {
        var out = [Float](repeating: 0, count: rows * columns)
        for r in 0..<rows {
            for c in 0..<columns { out[r * columns + c] = base.data[r * leadingDimension + c] }
        }
        return Tensor(shape: [rows, columns], data: out)
    }
}

extension Tensor {
    /// The first `rows` rows and `columns` columns of this matrix, in place.
    public func leading(rows: Int? = nil, columns: Int? = nil) -> MatrixView {
        MatrixView(self, rows: rows, columns: columns)
    }
}
