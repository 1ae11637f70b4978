import COpenBLAS
import Foundation
import Synchronization

/// The one door to matrix multiplication: every product in lop goes through `BLAS.gemm` (OpenBLAS sgemm),
/// or `BLAS.matrixVector` (sgemv) where one vector at a time is all there is (incremental decoding).
public enum BLAS {
    /// Sets OpenBLAS's thread count (0 means one per core) and keeps freed tensor memory in the process:
    /// a forward pass allocates and frees megabyte-sized buffers per op, and returning them to the kernel
    /// each time (glibc's default for large blocks) costs a page fault per page on every reuse.
    public static func setThreads(_ count: Int) {
        let n = count > 0 ? count : ProcessInfo.processInfo.activeProcessorCount
        openblas_set_num_threads(Int32(n))
        #if os(Linux)
        _ = mallopt(M_MMAP_THRESHOLD, 512 << 20)
        _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        #endif
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// Time and work spent inside sgemm, counted only while `profiling` is on (benchmarks turn it on).
    public static let profiling = Atomic<Bool>(false)
    static let nanoseconds = Atomic<Int>(0)
    static let flops = Atomic<Int>(0)

    /// Seconds and floating-point operations spent in sgemm since the last reset.
    public static var counters: (seconds: Double, flops: Int) {
        (Double(nanoseconds.load(ordering: .relaxed)) / 1e9, flops.load(ordering: .relaxed))
    }

    public static func resetCounters() {
        nanoseconds.store(0, ordering: .relaxed)
        flops.store(0, ordering: .relaxed)
    }

    /// C[m×n] = alpha · op(A) · op(B) + beta · C, row-major, with leading dimensions (so sub-blocks need no copy).
    @inline(__always)
    static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        guard m > 0 && n > 0 else { return }
        guard k > 0 else {
            // An empty inner dimension: C = beta · C (C may be uninitialised when beta is 0).
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : c[i * ldc + j] * beta } }
            return
        }
        let profiled = profiling.load(ordering: .relaxed)
        let start = profiled ? DispatchTime.now().uptimeNanoseconds : 0
        cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        if profiled {
            nanoseconds.add(Int(DispatchTime.now().uptimeNanoseconds - start), ordering: .relaxed)
            flops.add(2 * m * n * k, ordering: .relaxed)
        }
    }

    /// y = W · x (+ y with `accumulate`) for a row-major matrix W of `[rows, columns]`.
    public static func matrixVector(_ w: Tensor, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        precondition(w.rank == 2, "matrixVector needs a matrix, got \(w.shape)")
        let (rows, columns) = (w.shape[0], w.shape[1])
        guard rows > 0 else { return }
        guard columns > 0 else {
            if !accumulate { y.update(repeating: 0, count: rows) }
            return
        }
        w.data.withUnsafeBufferPointer { pw in
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(columns), 1, pw.baseAddress!, Int32(columns), x, 1, accumulate ? 1 : 0, y, 1)
        }
    }
}

/// The process's memory high-water mark, as the kernel counts it.
public enum ProcessMemory {
    /// Peak resident set size in bytes (`VmHWM` of /proc/self/status; `ru_maxrss` elsewhere).
    public static var peakResidentBytes: Int {
        #if os(Linux)
        if let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") {
            return kilobytes * 1024
        }
        #endif
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
        #else
        getrusage(RUSAGE_SELF, &usage)
        return usage.ru_maxrss
        #endif
    }
}
