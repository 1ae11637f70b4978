// Matrix products: every one is a (batched) sgemm with transposes passed as BLAS flags, never as copies.

/// C_i = op(A_i) · op(B_i) (+ beta·C) for i in 0..<batch, where a stride of 0 reuses one matrix for every i.
/// With `cStride == 0` all products are summed into one C (used for the gradient of a shared weight).
private func batchedGemm(
    transposeA: Bool, transposeB: Bool, batch: Int,
    a: UnsafePointer<Float>, aRows: Int, aColumns: Int, aStride: Int,
    b: UnsafePointer<Float>, bRows: Int, bColumns: Int, bStride: Int,
    c: UnsafeMutablePointer<Float>, cStride: Int, beta: Float = 0
) {
    let m = transposeA ? aColumns : aRows
    let k = transposeA ? aRows : aColumns
    let n = transposeB ? bRows : bColumns
    for i in 0..<batch {
        let accumulate = cStride == 0 && i > 0
        BLAS.gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
                  a: a + i * aStride, lda: aColumns, b: b + i * bStride, ldb: bColumns,
                  beta: accumulate ? 1 : beta, c: c + i * cStride, ldc: n)
    }
}

extension Graph {
    /// op(a) · op(b) over the last two axes. `a` is `[…, rows, columns]`; `b` is either a matrix shared by every
    /// leading index (a weight) or has the same leading axes as `a`.
    public func matmul(_ a: Value, _ b: Value, transposeA: Bool = false, transposeB: Bool = false) -> Value {
        let (sa, sb) = (a.shape, b.shape)
        precondition(sa.count >= 2 && sb.count >= 2, "matmul needs matrices, got \(sa) and \(sb)")
        let (ra, ca) = (sa[sa.count - 2], sa[sa.count - 1])
        let (rb, cb) = (sb[sb.count - 2], sb[sb.count - 1])
        let batchShape = Array(sa.dropLast(2))
        let batch = batchShape.reduce(1, *)
        let shared = sb.count == 2
        precondition(shared || Array(sb.dropLast(2)) == batchShape, "matmul batch axes differ: \(sa) and \(sb)")
        let m = transposeA ? ca : ra, k = transposeA ? ra : ca
        let kb = transposeB ? cb : rb, n = transposeB ? rb : cb
        precondition(k == kb, "matmul inner sizes differ: \(sa)\(transposeA ? "ᵀ" : "") · \(sb)\(transposeB ? "ᵀ" : "")")

        var out = Tensor(uninitialized: batchShape + [m, n])
        let bStride = shared ? 0 : rb * cb
        a.tensor.data.withUnsafeBufferPointer { pa in
            b.tensor.data.withUnsafeBufferPointer { pb in
                out.data.withUnsafeMutableBufferPointer { pc in
                    if shared && !transposeA {
                        // A shared right-hand matrix: all leading rows in one sgemm.
                        BLAS.gemm(transposeA: false, transposeB: transposeB, m: batch * m, n: n, k: k,
                                  a: pa.baseAddress!, lda: ca, b: pb.baseAddress!, ldb: cb, c: pc.baseAddress!, ldc: n)
                    } else {
                        batchedGemm(transposeA: transposeA, transposeB: transposeB, batch: batch,
                                    a: pa.baseAddress!, aRows: ra, aColumns: ca, aStride: ra * ca,
                                    b: pb.baseAddress!, bRows: rb, bColumns: cb, bStride: bStride,
                                    c: pc.baseAddress!, cStride: m * n)
                    }
                }
            }
        }
        let (at, bt) = (a.tensor, b.tensor)
        return record(out, [a, b]) { g in
            var da = Tensor(zeros: sa), db = Tensor(zeros: sb)
            g.data.withUnsafeBufferPointer { pg in
                at.data.withUnsafeBufferPointer { pa in
                    bt.data.withUnsafeBufferPointer { pb in
                        da.data.withUnsafeMutableBufferPointer { pda in
                            // dA: op(A) = G·op(B)ᵀ, so A = G·op(B)ᵀ or (G·op(B)ᵀ)ᵀ = op(B)·Gᵀ.
                            if transposeA {
                                batchedGemm(transposeA: transposeB, transposeB: true, batch: batch,
                                            a: pb.baseAddress!, aRows: rb, aColumns: cb, aStride: bStride,
                                            b: pg.baseAddress!, bRows: m, bColumns: n, bStride: m * n,
                                            c: pda.baseAddress!, cStride: ra * ca)
                            } else {
                                batchedGemm(transposeA: false, transposeB: !transposeB, batch: batch,
                                            a: pg.baseAddress!, aRows: m, aColumns: n, aStride: m * n,
                                            b: pb.baseAddress!, bRows: rb, bColumns: cb, bStride: bStride,
                                            c: pda.baseAddress!, cStride: ra * ca)
                            }
                        }
                        db.data.withUnsafeMutableBufferPointer { pdb in
                            // dB: op(B) = op(A)ᵀ·G, so B = op(A)ᵀ·G or Gᵀ·op(A); summed over the batch if shared.
                            let cStride = shared ? 0 : rb * cb
                            if transposeB {
                                batchedGemm(transposeA: true, transposeB: transposeA, batch: batch,
                                            a: pg.baseAddress!, aRows: m, aColumns: n, aStride: m * n,
                                            b: pa.baseAddress!, bRows: ra, bColumns: ca, bStride: ra * ca,
                                            c: pdb.baseAddress!, cStride: cStride)
                            } else {
                                batchedGemm(transposeA: !transposeA, transposeB: false, batch: batch,
                                            a: pa.baseAddress!, aRows: ra, aColumns: ca, aStride: ra * ca,
                                            b: pg.baseAddress!, bRows: m, bColumns: n, bStride: m * n,
                                            c: pdb.baseAddress!, cStride: cStride)
                            }
                        }
                    }
                }
            }
            return [da, db]
        }
    }

    /// x · Wᵀ (+ bias) for a weight stored `[out, in]` as Hugging Face stores it; `x` is `[…, in]`.
    public func linear(_ x: Value, _ weight: Value, bias: Value? = nil) -> Value {
        let product = matmul(x, weight, transposeB: true)
        return bias.map { add(product, $0) } ?? product
    }

    /// x · Vᵀ for a leading sub-block V of a weight (nested pruning): `x` is `[…, view.columns]`, the result
    /// `[…, view.rows]`. The block is read in place through its leading dimension; gradients flow to `x` only.
    public func linear(_ x: Value, _ view: MatrixView) -> Value {
        precondition(x.shape.last == view.columns, "linear: input \(x.shape) does not match a view of \(view.columns) columns")
        let rows = x.tensor.leadingCount
        var out = Tensor(uninitialized: Array(x.shape.dropLast()) + [view.rows])
        x.tensor.data.withUnsafeBufferPointer { px in
            view.base.data.withUnsafeBufferPointer { pw in
                out.data.withUnsafeMutableBufferPointer { po in
                    BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: view.rows, k: view.columns,
                              a: px.baseAddress!, lda: view.columns, b: pw.baseAddress!, ldb: view.leadingDimension,
                              c: po.baseAddress!, ldc: view.rows)
                }
            }
        }
        let inputShape = x.shape
        return record(out, [x]) { g in
            var dx = Tensor(zeros: inputShape)
            g.data.withUnsafeBufferPointer { pg in
                view.base.data.withUnsafeBufferPointer { pw in
                    dx.data.withUnsafeMutableBufferPointer { pdx in
                        BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: view.columns, k: view.rows,
                                  a: pg.baseAddress!, lda: view.rows, b: pw.baseAddress!, ldb: view.leadingDimension,
                                  c: pdx.baseAddress!, ldc: view.columns)
                    }
                }
            }
            return [dx]
        }
    }
}

extension Graph {
    /// x · Wᵀ (+ bias) for a model weight `[out, in]`, whether Float or stored: `rows`/`columns` use only W's
    /// leading outputs or inputs (nested pruning; the bias is cut to match). A whole Float weight takes the
    /// recorded path and gets gradients; a narrowed or stored one passes gradients to `x` only (a recording
    /// graph makes a whole stored weight Float first, so training works on any model).
    public func linear(_ x: Value, _ weight: Parameter, bias: Parameter? = nil, rows: Int? = nil, columns: Int? = nil) -> Value {
        let full = (rows ?? weight.shape[0]) == weight.shape[0] && (columns ?? weight.shape[1]) == weight.shape[1]
        if full && (isRecording || weight.stored == nil) {
            return linear(x, parameter(weight), bias: bias.map { parameter($0) })
        }
        let product: Value
        switch weight.weight {
        case .float(let t): product = linear(x, t.leading(rows: rows, columns: columns))
        case .stored(let m): product = linear(x, m.leading(rows: rows, columns: columns))
        }
        guard let bias else { return product }
        let kept = rows ?? weight.shape[0]
        if kept == bias.shape[0] { return add(product, full ? parameter(bias) : constant(bias.value)) }
        return add(product, constant(Tensor(shape: [kept], data: Array(bias.value.data.prefix(kept)))))
    }

    /// x · Wᵀ for a stored matrix: panels of W are widened into a Float scratch buffer for each sgemm.
    public func linear(_ x: Value, _ matrix: StoredMatrix) -> Value {
        precondition(x.shape.last == matrix.columns, "linear: input \(x.shape) does not match a weight of \(matrix.columns) columns")
        let n = x.tensor.leadingCount
        var out = Tensor(uninitialized: Array(x.shape.dropLast()) + [matrix.rows])
        x.tensor.data.withUnsafeBufferPointer { px in
            out.data.withUnsafeMutableBufferPointer { po in matrix.multiply(px.baseAddress!, count: n, into: po.baseAddress!) }
        }
        let inputShape = x.shape
        return record(out, [x]) { g in
            var dx = Tensor(uninitialized: inputShape)
            g.data.withUnsafeBufferPointer { pg in
                dx.data.withUnsafeMutableBufferPointer { pdx in matrix.multiplyTransposed(pg.baseAddress!, count: n, into: pdx.baseAddress!) }
            }
            return [dx]
        }
    }
}
