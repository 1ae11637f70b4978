import Dispatch
import Foundation

/// Element types weights are stored in (safetensors' names). Half types are little-endian, as in every file lop reads.
public enum DType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"

    public var byteSize: Int { self == .f32 ? 4 : 2 }

    /// PyTorch's name for the type (`torch_dtype` in a Hugging Face config).
    public var torchName: String { ["F32": "float32", "F16": "float16", "BF16": "bfloat16"][rawValue]! }
}

/// Bytes a weight owns in private memory, 64-byte aligned, freed with the last matrix that refers to them.
public final class StoredBytes: @unchecked Sendable {  // written once, by whoever fills it, before it is shared
    public let pointer: UnsafeMutableRawPointer
    public let count: Int

    public init(count: Int) {
        pointer = .allocate(byteCount: max(count, 1), alignment: 64)
        self.count = count
    }

    deinit { pointer.deallocate() }
}

/// A weight matrix kept in its stored element type (two bytes a value for F16/BF16), read-only, seen through an
/// optional reordering of its rows or columns and cut to a leading block.
///
/// Nested pruning permutes a unit's neurons by importance and keeps the leading `k`: here that is a view (an
/// order and a count), never a copy, so a 7 B model and its permuted form share one copy of the weights.
/// Products widen a panel of rows at a time into a Float scratch buffer (`multiply`); F32 matrices in their
/// stored order are read in place.
public struct StoredMatrix: @unchecked Sendable {  // immutable; the bytes are never written after filling
    public let dtype: DType
    let bytes: StoredBytes
    /// Where row 0 starts in `bytes`.
    let byteOffset: Int
    /// Columns of the stored matrix (its row stride, in elements).
    let rowStride: Int
    /// Stored row of each logical row (nil: row i is stored row i); stored column of each logical column.
    let rowOrder: [Int]?, columnOrder: [Int]?
    /// The logical shape: rows are outputs, columns inputs (Hugging Face's `[out, in]`).
    public let rows: Int, columns: Int

    public var shape: [Int] { [rows, columns] }
    public var count: Int { rows * columns }

    /// A `rows × columns` matrix stored row-major at `byteOffset` in `bytes`.
    public init(dtype: DType, bytes: StoredBytes, byteOffset: Int = 0, rows: Int, columns: Int) {
        precondition(rows >= 0 && columns >= 0 && byteOffset >= 0 && byteOffset + rows * columns * dtype.byteSize <= bytes.count,
                     "a \(rows)×\(columns) \(dtype.rawValue) matrix does not fit in \(bytes.count) bytes at offset \(byteOffset)")
        self.init(dtype: dtype, bytes: bytes, byteOffset: byteOffset, rowStride: columns, rowOrder: nil, columnOrder: nil, rows: rows, columns: columns)
    }

    /// A copy of a Float matrix, stored as F32 (or rounded to a half type).
    public init(_ tensor: Tensor, as dtype: DType = .f32) {
        precondition(tensor.rank == 2, "a stored matrix needs a rank-2 tensor, got shape \(tensor.shape)")
        let bytes = StoredBytes(count: tensor.count * dtype.byteSize)
        tensor.data.withUnsafeBufferPointer { source in
            if tensor.count > 0 { HalfPrecision.narrow(source.baseAddress!, count: tensor.count, to: dtype, into: bytes.pointer) }
        }
        self.init(dtype: dtype, bytes: bytes, rows: tensor.shape[0], columns: tensor.shape[1])
    }

    private init(dtype: DType, bytes: StoredBytes, byteOffset: Int, rowStride: Int, rowOrder: [Int]?, columnOrder: [Int]?, rows: Int, columns: Int) {
        self.dtype = dtype
        self.bytes = bytes
        self.byteOffset = byteOffset
        self.rowStride = rowStride
        self.rowOrder = rowOrder
        self.columnOrder = columnOrder
        self.rows = rows
        self.columns = columns
    }

    /// The same matrix with logical row `i` taken from current row `order[i]` (a permutation of every row).
    public func permutingRows(_ order: [Int]) -> StoredMatrix {
        precondition(order.count == rows && order.allSatisfy { $0 >= 0 && $0 < rows }, "a row order must index all \(rows) rows")
        let composed = rowOrder.map { current in order.map { current[$0] } } ?? order
        return StoredMatrix(dtype: dtype, bytes: bytes, byteOffset: byteOffset, rowStride: rowStride, rowOrder: composed, columnOrder: columnOrder,
                            rows: rows, columns: columns)
    }

    /// The same matrix with logical column `j` taken from current column `order[j]`.
    public func permutingColumns(_ order: [Int]) -> StoredMatrix {
        precondition(order.count == columns && order.allSatisfy { $0 >= 0 && $0 < columns }, "a column order must index all \(columns) columns")
        let composed = columnOrder.map { current in order.map { current[$0] } } ?? order
        return StoredMatrix(dtype: dtype, bytes: bytes, byteOffset: byteOffset, rowStride: rowStride, rowOrder: rowOrder, columnOrder: composed,
                            rows: rows, columns: columns)
    }

    /// The first `rows` rows and `columns` columns, in place.
    public func leading(rows r: Int? = nil, columns c: Int? = nil) -> StoredMatrix {
        let (newRows, newColumns) = (r ?? rows, c ?? columns)
        precondition(newRows >= 0 && newRows <= rows && newColumns >= 0 && newColumns <= columns, "block \(newRows)×\(newColumns) does not fit in \(shape)")
        return StoredMatrix(dtype: dtype, bytes: bytes, byteOffset: byteOffset, rowStride: rowStride,
                            rowOrder: rowOrder.map { Array($0.prefix(newRows)) }, columnOrder: columnOrder.map { Array($0.prefix(newColumns)) },
                            rows: newRows, columns: newColumns)
    }

    /// The start of stored row `r` (a logical row index, through the row order).
    @inline(__always)
    func rowStart(_ r: Int) -> UnsafeRawPointer {
        UnsafeRawPointer(bytes.pointer + byteOffset + (rowOrder?[r] ?? r) * rowStride * dtype.byteSize)
    }

    /// The Float elements of an F32 matrix read in place, when no reordering applies to it.
    var inPlaceFloats: (pointer: UnsafePointer<Float>, leadingDimension: Int)? {
        guard dtype == .f32, rowOrder == nil, columnOrder == nil else { return nil }
        return (UnsafePointer((bytes.pointer + byteOffset).assumingMemoryBound(to: Float.self)), rowStride)
    }

    /// Logical rows `range` widened to Float at `destination` (row-major, `columns` per row).
    public func widen(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) outside \(rows)")
        let work = range.count * columns
        // Two threads pay off only when a panel is large enough to hide the dispatch.
        let parts = work >= 1 << 20 ? min(ProcessInfo.processInfo.activeProcessorCount, 4, range.count) : 1
        let matrix = self
        let target = UnsafeSendable(destination)
        @Sendable func widenPart(_ part: Int) {
            let chunk = (range.count + parts - 1) / parts
            let start = range.lowerBound + part * chunk, end = min(range.upperBound, start + chunk)
            guard start < end else { return }
            for r in start..<end {
                let out = target.pointer + (r - range.lowerBound) * matrix.columns
                if let order = matrix.columnOrder {
                    HalfPrecision.gather(matrix.rowStart(r), matrix.dtype, indices: order, into: out)
                } else {
                    HalfPrecision.widen(matrix.rowStart(r), matrix.dtype, count: matrix.columns, into: out)
                }
            }
        }
        if parts == 1 { widenPart(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: widenPart) }
    }

    /// The whole (logical) matrix as a Float tensor.
    public func widened() -> Tensor {
        var out = Tensor(uninitialized: [rows, columns])
        out.data.withUnsafeMutableBufferPointer { if count > 0 { widen(rows: 0..<rows, into: $0.baseAddress!) } }
        return out
    }

    /// Logical row `r`'s elements in `dtype`'s bytes (exact copies when the types agree) at `destination`.
    public func encode(row r: Int, as target: DType, into destination: UnsafeMutableRawPointer, scratch: UnsafeMutablePointer<Float>) {
        if target == dtype {
            let size = dtype.byteSize
            if let columnOrder {
                let source = rowStart(r)
                if size == 2 {
                    let from = source.assumingMemoryBound(to: UInt16.self), to = destination.assumingMemoryBound(to: UInt16.self)
                    for (j, c) in columnOrder.enumerated() { to[j] = from[c] }
                } else {
                    let from = source.assumingMemoryBound(to: UInt32.self), to = destination.assumingMemoryBound(to: UInt32.self)
                    for (j, c) in columnOrder.enumerated() { to[j] = from[c] }
                }
            } else {
                destination.copyMemory(from: rowStart(r), byteCount: columns * size)
            }
            return
        }
        widen(rows: r..<(r + 1), into: scratch)
        HalfPrecision.narrow(scratch, count: columns, to: target, into: destination)
    }

    // MARK: Products

    /// Float scratch per panel: a layer's FFN matrix at 1 B scale widens in one panel, a 7 B one in three.
    public static let panelBytes = 64 << 20

    /// Calls `body` with consecutive logical rows widened into one Float scratch buffer of at most `bytes`
    /// (at least one row), panel by panel, in order.
    public func forEachWidenedPanel(bytes: Int = panelBytes, _ body: (Range<Int>, UnsafePointer<Float>) -> Void) {
        guard rows > 0 else { return }
        let panel = max(1, min(rows, bytes / max(1, columns * 4)))
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, panel * columns))
        defer { scratch.deallocate() }
        for start in stride(from: 0, to: rows, by: panel) {
            let range = start..<min(rows, start + panel)
            widen(rows: range, into: scratch)
            body(range, scratch)
        }
    }

    /// out[n × rows] = x[n × columns] · selfᵀ.
    public func multiply(_ x: UnsafePointer<Float>, count n: Int, into out: UnsafeMutablePointer<Float>, panelBytes: Int = panelBytes) {
        guard n > 0, rows > 0 else { return }
        if let (w, ld) = inPlaceFloats {
            BLAS.gemm(transposeA: false, transposeB: true, m: n, n: rows, k: columns, a: x, lda: columns, b: w, ldb: ld, c: out, ldc: rows)
            return
        }
        forEachWidenedPanel(bytes: panelBytes) { range, panel in
            BLAS.gemm(transposeA: false, transposeB: true, m: n, n: range.count, k: columns, a: x, lda: columns, b: panel, ldb: columns,
                      c: out + range.lowerBound, ldc: rows)
        }
    }

    /// out[n × columns] = g[n × rows] · self (the gradient of `multiply` with respect to x).
    public func multiplyTransposed(_ g: UnsafePointer<Float>, count n: Int, into out: UnsafeMutablePointer<Float>, panelBytes: Int = panelBytes) {
        guard n > 0, columns > 0 else { return }
        guard rows > 0 else { out.update(repeating: 0, count: n * columns); return }
        if let (w, ld) = inPlaceFloats {
            BLAS.gemm(transposeA: false, transposeB: false, m: n, n: columns, k: rows, a: g, lda: rows, b: w, ldb: ld, c: out, ldc: columns)
            return
        }
        forEachWidenedPanel(bytes: panelBytes) { range, panel in
            BLAS.gemm(transposeA: false, transposeB: false, m: n, n: columns, k: range.count, a: g + range.lowerBound, lda: rows, b: panel,
                      ldb: columns, beta: range.lowerBound == 0 ? 0 : 1, c: out, ldc: columns)
        }
    }
}

/// A pointer handed to threads that each write their own part of it.
struct UnsafeSendable: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    init(_ pointer: UnsafeMutablePointer<Float>) { self.pointer = pointer }
}

/// Conversions between Float and the stored types, eight or sixteen lanes at a time.
public enum HalfPrecision {
    /// `count` values of `dtype` at `source` widened to Float.
    @inline(__always)
    public static func widen(_ source: UnsafeRawPointer, _ dtype: DType, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .f32:
            out.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .bf16:
            var i = 0
            while i + 16 <= count {
                let bits = source.loadUnaligned(fromByteOffset: i * 2, as: SIMD16<UInt16>.self)
                let wide = SIMD16<UInt32>(truncatingIfNeeded: bits) &<< 16
                UnsafeMutableRawPointer(out + i).storeBytes(of: unsafeBitCast(wide, to: SIMD16<Float>.self), as: SIMD16<Float>.self)
                i += 16
            }
            while i < count {
                out[i] = Float(bitPattern: UInt32(source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16)
                i += 1
            }
        case .f16:
            #if arch(arm64) || arch(x86_64)
            var i = 0
            while i + 8 <= count {
                let halves = source.loadUnaligned(fromByteOffset: i * 2, as: SIMD8<Float16>.self)
                UnsafeMutableRawPointer(out + i).storeBytes(of: SIMD8<Float>(halves), as: SIMD8<Float>.self)
                i += 8
            }
            while i < count {
                out[i] = Float(Float16(bitPattern: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
                i += 1
            }
            #else
            for i in 0..<count { out[i] = Float(Float16(bitPattern: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))) }
            #endif
        }
    }

    /// out[j] = source[indices[j]] widened to Float.
    @inline(__always)
    static func gather(_ source: UnsafeRawPointer, _ dtype: DType, indices: [Int], into out: UnsafeMutablePointer<Float>) {
        indices.withUnsafeBufferPointer { index in
            switch dtype {
            case .f32:
                let from = source.assumingMemoryBound(to: Float.self)
                for j in 0..<index.count { out[j] = from[index[j]] }
            case .bf16:
                let from = source.assumingMemoryBound(to: UInt16.self)
                for j in 0..<index.count { out[j] = Float(bitPattern: UInt32(from[index[j]]) << 16) }
            case .f16:
                let from = source.assumingMemoryBound(to: UInt16.self)
                for j in 0..<index.count { out[j] = Float(Float16(bitPattern: from[index[j]])) }
            }
        }
    }

    /// `count` Floats rounded to `dtype` (to nearest even; NaN stays NaN) at `destination`.
    public static func narrow(_ source: UnsafePointer<Float>, count: Int, to dtype: DType, into destination: UnsafeMutableRawPointer) {
        switch dtype {
        case .f32:
            destination.copyMemory(from: source, byteCount: count * 4)
        case .f16:
            let out = destination.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { out[i] = Float16(source[i]).bitPattern.littleEndian }
        case .bf16:
            let out = destination.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { out[i] = bfloat16Bits(source[i]).littleEndian }
        }
    }

    /// A Float's nearest BF16 (ties to even); NaNs stay quiet NaNs.
    @inline(__always)
    public static func bfloat16Bits(_ value: Float) -> UInt16 {
        let raw = value.bitPattern
        if value.isNaN { return UInt16(raw >> 16) | 0x0040 }
        return UInt16((raw &+ 0x7FFF &+ ((raw >> 16) & 1)) >> 16)
    }
}
