import COpenBLAS
import Foundation

/// Which OpenBLAS kernel lop runs, and why.
///
/// A DYNAMIC_ARCH OpenBLAS picks its kernel when the library loads. Older builds (Debian 12's 0.3.21) do not
/// know some current CPUs and silently fall back to an SSE3 kernel (`Prescott`) that is 2–3× slower than the
/// AVX2 or AVX-512 one the CPU can run. The library reads `OPENBLAS_CORETYPE` only at load time, so
/// `ensureFit` re-executes the process once with the matching core set, checks that core numerically against a
/// naive product, and goes back to the library's own choice if the check fails. A user's own
/// `OPENBLAS_CORETYPE` is never overridden.
public enum BLASKernel {
    /// What was decided, for `lop doctor`, `lop bench tensor` and the workers' start-up log.
    public struct Report: Codable, Sendable, Equatable {
        /// The core in use (`openblas_get_corename`).
        public var core: String
        /// The core the library chose on its own, before lop's choice.
        public var libraryCore: String
        /// `library`, `user` (OPENBLAS_CORETYPE set by the user) or `lop`.
        public var chosenBy: String
        /// The widest vector ISA the CPU reports: sse, avx, avx2 or avx512.
        public var cpu: String
        /// Whether the numeric check of lop's choice passed (nil when lop chose nothing).
        public var checkPassed: Bool?
        /// Why, in one line.
        public var note: String
        public var threads: Int
        public var config: String

        enum CodingKeys: String, CodingKey {
            case core, libraryCore = "library_core", chosenBy = "chosen_by", cpu, checkPassed = "check_passed", note, threads, config
        }
    }

    /// Vector instruction levels, in order.
    public enum Level: Int, Comparable, Sendable, CustomStringConvertible {
        case sse, avx, avx2, avx512
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var description: String { ["sse", "avx", "avx2", "avx512"][rawValue] }
    }

    /// What `plan` tells start-up to do.
    public enum Plan: Equatable, Sendable {
        /// Run as loaded.
        case keep(chosenBy: String, libraryCore: String, note: String)
        /// Re-execute with OPENBLAS_CORETYPE = core.
        case choose(core: String, libraryCore: String)
        /// lop's choice is loaded: check it numerically.
        case check(core: String, libraryCore: String)
    }

    /// The environment variable through which a re-executed process knows what lop chose.
    static let markerVariable = "LOP_BLAS_CHOICE"
    /// Fault injection for tests: `fallback` makes the library's choice `Prescott` (by a first re-execution),
    /// `wrong-result` plants an error in the numeric check. Comma-separated.
    static let faultVariable = "LOP_BLAS_FAULT"
    static let simulatedFallback = "Prescott"

    /// The vector level of an OpenBLAS core name (kernels of unknown names count as SSE: a fallback).
    public static func level(ofCore name: String) -> Level {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return .avx512
        case "haswell", "zen", "skylake", "excavator", "steamroller": return .avx2
        case "sandybridge", "bulldozer", "piledriver": return .avx
        default: return .sse
        }
    }

    /// The CPU's widest level, from the flags in /proc/cpuinfo (AVX-512 needs F, BW, DQ and VL, as OpenBLAS's
    /// SkylakeX kernel does; AVX2 needs FMA too).
    public static func level(ofFlags flags: Set<String>) -> Level {
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"].allSatisfy(flags.contains) { return .avx512 }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return .avx2 }
        if flags.contains("avx") { return .avx }
        return .sse
    }

    /// The core lop selects for a CPU level.
    public static func core(for level: Level) -> String? {
        switch level {
        case .avx512: return "SkylakeX"
        case .avx2: return "Haswell"
        case .avx, .sse: return nil
        }
    }

    /// The decision, from what the library loaded, the CPU and the environment (a pure function, for tests).
    public static func plan(loadedCore: String, cpu: Level, environment: [String: String]) -> Plan {
        let marker = environment[markerVariable].map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) } ?? []
        if marker.count == 3, marker[0] == "lop" { return .check(core: marker[1], libraryCore: marker[2]) }
        if marker.count == 3, marker[0] == "rejected" {
            return .keep(chosenBy: "library", libraryCore: marker[2],
                         note: "lop's choice \(marker[1]) failed its numeric check; the library's \(marker[2]) is kept")
        }
        let simulated = marker.count == 2 && marker[0] == "simulated"
        if environment["OPENBLAS_CORETYPE"] != nil && !simulated {
            return .keep(chosenBy: "user", libraryCore: loadedCore, note: "OPENBLAS_CORETYPE is set; lop leaves it as it is")
        }
        guard level(ofCore: loadedCore) < .avx2, level(ofCore: loadedCore) < cpu, let better = core(for: cpu) else {
            return .keep(chosenBy: "library", libraryCore: loadedCore, note: "the library's kernel fits this CPU (\(cpu))")
        }
        return .choose(core: better, libraryCore: loadedCore)
    }

    /// C = A·B through sgemm against a naive Double product on a small odd-sized problem; false if any element
    /// differs by more than 1e-4 relative to the problem's scale.
    public static func numericCheck(plantError: Bool = false) -> Bool {
        let (m, n, k) = (37, 29, 53)
        var generator = SeededGenerator(seed: 0xB1A5)
        let a = Tensor.normal([m, k], std: 1, generator: &generator), b = Tensor.normal([k, n], std: 1, generator: &generator)
        var c = [Float](repeating: 0, count: m * n)
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemm(transposeA: false, transposeB: false, m: m, n: n, k: k, a: pa.baseAddress!, lda: k, b: pb.baseAddress!, ldb: n,
                              c: pc.baseAddress!, ldc: n)
                }
            }
        }
        if plantError { c[m * n / 2] += 0.5 }
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k { sum += Double(a.data[i * k + p]) * Double(b.data[p * n + j]) }
                guard abs(Double(c[i * n + j]) - sum) <= 1e-4 * Double(k).squareRoot() * 4 else { return false }
            }
        }
        return true
    }

    /// The core the library runs now.
    public static var loadedCore: String { String(cString: openblas_get_corename()) }

    /// The CPU's level (sse where it cannot be read).
    public static var cpuLevel: Level {
        #if os(Linux)
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return .sse }
        return level(ofFlags: Set(line.split(separator: " ").map(String.init)))
        #else
        return .sse
        #endif
    }

    nonisolated(unsafe) private static var decided: Report?

    /// What `ensureFit` decided (or, in a process that never called it, what the library runs).
    public static var report: Report {
        decided ?? Report(core: loadedCore, libraryCore: loadedCore, chosenBy: "library", cpu: cpuLevel.description, checkPassed: nil,
                          note: "no start-up check in this process", threads: BLAS.threads, config: String(cString: openblas_get_config()))
    }

    /// Makes sure BLAS runs a kernel fit for the CPU; call first thing in `main`, before any thread starts.
    /// May replace the process (execv of /proc/self/exe with the same arguments) once or twice.
    public static func ensureFit() {
        var environment = ProcessInfo.processInfo.environment
        let faults = Set((environment[faultVariable] ?? "").split(separator: ",").map(String.init))
        if faults.contains("fallback"), environment[markerVariable] == nil, environment["OPENBLAS_CORETYPE"] == nil {
            // Test hook: load the SSE3 kernel as if the library had chosen it.
            reexecute(setting: ["OPENBLAS_CORETYPE": simulatedFallback, markerVariable: "simulated:\(simulatedFallback)"])
            environment = ProcessInfo.processInfo.environment
        }
        let cpu = cpuLevel
        let loaded = loadedCore
        let config = String(cString: openblas_get_config())
        func record(_ chosenBy: String, library: String, check: Bool?, note: String) {
            decided = Report(core: loadedCore, libraryCore: library, chosenBy: chosenBy, cpu: cpu.description, checkPassed: check, note: note,
                             threads: BLAS.threads, config: config)
        }
        switch plan(loadedCore: loaded, cpu: cpu, environment: environment) {
        case .keep(let chosenBy, let library, let note):
            // After a rejection the marker says so; otherwise lop checked nothing.
            let rejected = environment[markerVariable]?.hasPrefix("rejected:") == true
            record(chosenBy, library: library, check: rejected ? false : nil, note: note)
        case .choose(let core, let library):
            reexecute(setting: ["OPENBLAS_CORETYPE": core, markerVariable: "lop:\(core):\(library)"])
            record("library", library: library, check: nil, note: "could not re-execute to load \(core); the library's \(library) is kept")
        case .check(let core, let library):
            if loaded.lowercased() == core.lowercased() && numericCheck(plantError: faults.contains("wrong-result")) {
                record("lop", library: library, check: true, note: "the library chose \(library) on this \(cpu) CPU; lop loaded \(core) and checked it")
                return
            }
            // Back to the library's own choice (for a simulated fallback, that is the simulated core).
            let restore: String? = library == simulatedFallback && faults.contains("fallback") ? simulatedFallback : nil
            reexecute(setting: ["OPENBLAS_CORETYPE": restore, markerVariable: "rejected:\(core):\(library)"])
            record("lop", library: library, check: false, note: "\(core) failed its numeric check and re-execution failed")
        }
    }

    /// Replaces the process with itself under a changed environment; returns only if execv fails.
    private static func reexecute(setting changes: [String: String?]) {
        for (name, value) in changes {
            if let value { setenv(name, value, 1) } else { unsetenv(name) }
        }
        let arguments = CommandLine.arguments
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        #if os(Linux)
        execv("/proc/self/exe", &argv)
        #endif
        for pointer in argv { free(pointer) }
    }
}
