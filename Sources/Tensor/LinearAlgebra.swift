import COpenBLAS
import Foundation

/// A linear system LAPACK could not solve, with the reason it gave.
public struct LinearAlgebraError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Dense linear algebra in Double through OpenBLAS's LAPACK (nothing hand-written).
public enum LinearAlgebra {
    /// Solves A x = b for a symmetric positive-definite `n × n` matrix A (symmetric, so its layout does not matter)
    /// and `count` right-hand sides b of `n` values each, stored one after another; the solutions come back the
    /// same way (that is LAPACK's column-major B, so nothing is transposed). Cholesky (`dposv`); throws when A is
    /// not positive definite (a ridge term is the caller's remedy) or holds a non-finite value.
    public static func solvePositiveDefinite(_ a: [Double], n: Int, rightHandSides b: [Double], count: Int) throws(LinearAlgebraError) -> [Double] {
        precondition(a.count == n * n && b.count == n * count, "solve: A is \(n)×\(n), \(count) right-hand sides of \(n)")
        guard n > 0, count > 0 else { return b }
        guard a.allSatisfy(\.isFinite), b.allSatisfy(\.isFinite) else { throw LinearAlgebraError("the system has a non-finite entry") }
        var (matrix, x) = (a, b)
        var (order, columns, lda, ldb, info) = (Int32(n), Int32(count), Int32(n), Int32(n), Int32(0))
        var upper = CChar(UInt8(ascii: "U"))
        dposv_(&upper, &order, &columns, &matrix, &lda, &x, &ldb, &info)
        if info > 0 { throw LinearAlgebraError("the matrix is not positive definite (leading minor \(info) of \(n))") }
        if info < 0 { throw LinearAlgebraError("dposv rejected argument \(-info)") }
        return x
    }

    /// G += Rᵀ R for `rows` row-major rows of `width` values (a Gram matrix accumulated in Double, `dsyrk`);
    /// both triangles of G are kept filled.
    public static func accumulateGram(_ g: inout [Double], rows r: [Double], count: Int, width: Int) {
        precondition(g.count == width * width && r.count >= count * width, "gram: \(width)×\(width), \(count) rows")
        guard count > 0 else { return }
        r.withUnsafeBufferPointer { pr in
            g.withUnsafeMutableBufferPointer { pg in
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(width), Int32(count), 1, pr.baseAddress!, Int32(width), 1,
                            pg.baseAddress!, Int32(width))
            }
        }
        for i in 0..<width { for j in 0..<i { g[i * width + j] = g[j * width + i] } }
    }

    /// R Rᵀ (`count × count`, both triangles filled) for `count` row-major rows of `width` values (`dsyrk`): the
    /// Gram matrix of the rows themselves, where `accumulateGram` takes that of the columns.
    public static func rowGram(_ r: [Double], count: Int, width: Int) -> [Double] {
        precondition(r.count >= count * width, "row gram: \(count) rows of \(width)")
        var g = [Double](repeating: 0, count: count * count)
        guard count > 0, width > 0 else { return g }
        r.withUnsafeBufferPointer { pr in
            g.withUnsafeMutableBufferPointer { pg in
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, Int32(count), Int32(width), 1, pr.baseAddress!, Int32(width), 0,
                            pg.baseAddress!, Int32(count))
            }
        }
        for i in 0..<count { for j in 0..<i { g[i * count + j] = g[j * count + i] } }
        return g
    }

    /// C = A · B for row-major A (`m × k`, leading dimension `lda`) and B (`k × n`, leading dimension `ldb`), in
    /// Double; with `transposeB`, B is stored `n × k` and Bᵀ is used.
    public static func multiply(_ a: [Double], _ b: [Double], m: Int, n: Int, k: Int, lda: Int, ldb: Int, transposeB: Bool = false) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        guard m > 0, n > 0, k > 0 else { return c }
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    cblas_dgemm(CblasRowMajor, CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, pa.baseAddress!, Int32(lda),
                                pb.baseAddress!, Int32(ldb), 0, pc.baseAddress!, Int32(n))
                }
            }
        }
        return c
    }
}
