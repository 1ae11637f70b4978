import COpenBLAS
import Foundation
import Tensor

/// A benchmark result table: each row a figure, the reference it is compared to, and their ratio.
public struct BenchmarkTable: Sendable {
    public struct Row: Sendable, Encodable {
        public let name: String
        public let value: Double
        public let unit: String
        public let reference: String
        public let ratio: Double?
    }

    public let title: String
    public private(set) var rows: [Row] = []

    public init(title: String) { self.title = title }

    public mutating func add(_ name: String, _ value: Double, unit: String, reference: String = "", ratio: Double? = nil) {
        rows.append(Row(name: name, value: value, unit: unit, reference: reference, ratio: ratio))
    }

    /// Markdown, so the same text goes to the terminal and into the README.
    public var markdown: String {
        var lines = ["### \(title)", "", "| measurement | value | unit | compared with | ratio |", "|---|---:|---|---|---:|"]
        for row in rows {
            let ratio = row.ratio.map { String(format: "%.2f", $0) } ?? ""
            lines.append("| \(row.name) | \(Self.format(row.value)) | \(row.unit) | \(row.reference) | \(ratio) |")
        }
        return lines.joined(separator: "\n")
    }

    static func format(_ value: Double) -> String {
        if value == 0 { return "0" }
        if abs(value) >= 100 { return String(format: "%.0f", value) }
        if abs(value) >= 1 { return String(format: "%.2f", value) }
        return String(format: "%.3g", value)
    }
}

/// Median wall-clock seconds of `repeats` runs of `body`, after one warm-up run.
public func medianSeconds(repeats: Int, _ body: () -> Void) -> Double {
    body()
    var times: [Double] = []
    for _ in 0..<max(repeats, 1) {
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    times.sort()
    return times[times.count / 2]
}

/// The machine's reference rate: GFLOP/s of a raw 1024³ cblas_sgemm (median of `repeats`).
public func rawSgemmRate(repeats: Int) -> Double {
    let n = 1024
    var generator = SeededGenerator(seed: 1)
    let a = Tensor.normal([n, n], std: 1, generator: &generator), b = Tensor.normal([n, n], std: 1, generator: &generator)
    var c = [Float](repeating: 0, count: n * n)
    let seconds = medianSeconds(repeats: repeats) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a.data, Int32(n), b.data, Int32(n), 0, &c, Int32(n))
    }
    return 2 * pow(Double(n), 3) / seconds / 1e9
}
