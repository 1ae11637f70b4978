import CCurl
import CLibPQ
import COpenBLAS
import Testing

/// The system-library shims link and call into the real C libraries.
@Suite struct ShimTests {
    @Test func sgemmMatchesNaiveProduct() {
        // A (2×3) · B (3×2), row-major, compared with a hand-written triple loop.
        let a: [Float] = [1, 2, 3, 4, 5, 6]
        let b: [Float] = [7, 8, 9, 10, 11, 12]
        var c = [Float](repeating: 0, count: 4)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 3, 1, a, 3, b, 2, 0, &c, 2)
        var expected = [Float](repeating: 0, count: 4)
        for i in 0..<2 { for j in 0..<2 { for k in 0..<3 { expected[i * 2 + j] += a[i * 3 + k] * b[k * 2 + j] } } }
        #expect(c == expected)
        // The thread count round-trips through the library (this process's setting is restored after).
        let before = openblas_get_num_threads()
        openblas_set_num_threads(1)
        #expect(openblas_get_num_threads() == 1)
        openblas_set_num_threads(2)
        #expect(openblas_get_num_threads() == 2)
        openblas_set_num_threads(before)
    }

    @Test func curlReportsItsVersion() {
        let version = String(cString: curl_version())
        #expect(version.hasPrefix("libcurl/"))
        let info = curl_version_info(CURLVERSION_TENTH)!.pointee
        #expect(info.features & CURL_VERSION_SSL != 0 || info.features & CURL_VERSION_LIBZ != 0)
    }

    @Test func libpqIsThreadSafe() {
        // lop shares one process between many connections on many threads.
        #expect(PQisthreadsafe() == 1)
        #expect(PQlibVersion() >= 100000)
    }
}
