import Evaluation
import Foundation
import Models
import Pruning
import Search
import Store
import Tensor

/// `lop bench engine`: lop at a real model's size beside PyTorch + transformers on the same file and tokens.
///
/// Writes a random-weight checkpoint of TinyLlama-1.1B's shape (or Llama-2-7B's) and a token file, runs
/// `lop eval` and `scripts/engine_reference.py` on them as child processes one after the other (each with its
/// own peak RSS), then scores a budget-0.5 strategy by nested pruning in this process, as a search does.
public enum EngineBenchmark {
    public struct Options: Sendable {
        public var shape = "tinyllama"
        public var dtype = DType.bf16
        public var directory: String
        public var windows = 8
        public var context = 128
        public var threads = 2
        /// The Python interpreter with torch and transformers (nil: skip the PyTorch column).
        public var python: String?
        /// Strategy evaluations timed (the median is reported).
        public var evaluations = 3
        /// Runs of `lop eval` and of the PyTorch script, alternating (medians are reported).
        public var repeats = 3
        /// The lop executable to run `lop eval` with.
        public var lop: String
        public var repositoryRoot: String

        public init(directory: String, lop: String, repositoryRoot: String) {
            self.directory = directory
            self.lop = lop
            self.repositoryRoot = repositoryRoot
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public static func run(_ o: Options, progress: (String) -> Void) throws -> BenchmarkTable {
        guard let config = ["tinyllama": RandomCheckpoint.tinyLlama, "7b": RandomCheckpoint.llama7B][o.shape] else {
            throw Failure(description: "--shape must be tinyllama or 7b")
        }
        let model = o.directory + "/model", tokens = o.directory + "/tokens.bin"
        let bytes: Int
        if let existing = try? Checkpoint(directory: model), existing.config["num_hidden_layers"]?.intValue == config.layers,
           existing.config["hidden_size"]?.intValue == config.hiddenSize, existing.dtype("model.layers.0.mlp.up_proj.weight") == o.dtype {
            bytes = (try FileManager.default.attributesOfItem(atPath: model + "/" + Checkpoint.singleFile)[.size] as? Int) ?? 0
            progress("reusing \(model)")
        } else {
            progress("writing a random \(o.shape)-shaped \(o.dtype.rawValue) checkpoint to \(model)")
            try RandomCheckpoint.write(config, dtype: o.dtype, seed: 11, to: model)
            bytes = (try FileManager.default.attributesOfItem(atPath: model + "/" + Checkpoint.singleFile)[.size] as? Int) ?? 0
        }
        try RandomCheckpoint.writeTokens(count: o.windows * o.context + 1, vocabulary: config.vocabularySize, seed: 12, to: tokens)
        let tokenCount = o.windows * o.context

        // lop and PyTorch alternate, so both see the same machine; each figure is the median of its runs.
        var lopRuns: [[String: AnyJSON]] = [], torchRuns: [[String: AnyJSON]] = []
        var torchNote = "not run (pass --python with torch and transformers installed)"
        for run in 1...max(1, o.repeats) {
            progress("lop eval (\(run)/\(o.repeats))")
            let lopRun = try runJSON([o.lop, "eval", model, "--data", tokens, "--context", String(o.context), "--json"],
                                     environment: ["LOP_BLAS_THREADS": String(o.threads)])
            guard ["loss", "evaluation_seconds", "load_seconds", "peak_rss_bytes"].allSatisfy({ lopRun[$0]?.number != nil }) else {
                throw Failure(description: "lop eval printed no metrics: \(lopRun)")
            }
            lopRuns.append(lopRun)
            guard let python = o.python else { continue }
            progress("PyTorch + transformers (\(run)/\(o.repeats))")
            let script = o.repositoryRoot + "/scripts/engine_reference.py"
            guard FileManager.default.fileExists(atPath: script) else { throw Failure(description: "\(script) not found: run lop bench engine from the repository root") }
            // A 7 B model in float32 does not fit this machine whole: transformers' modules then run one layer at a time.
            let layerwise = o.shape == "7b" ? ["--layerwise"] : []
            let result = try runJSON([python, script, model, tokens, "--context", String(o.context),
                                      "--windows", String(o.windows), "--threads", String(o.threads)] + layerwise, environment: [:])
            if let error = result["error"]?.string { torchNote = error; continue }
            torchRuns.append(result)
            torchNote = "torch \(result["torch"]?.string ?? "?"), transformers \(result["transformers"]?.string ?? "?"), fp32, \(result["threads"]?.number.map { String(Int($0)) } ?? "?") threads"
                + (result["layerwise"]?.bool == true ? ", one layer at a time from the memory-mapped file" : "")
        }
        let lop = Figures(lopRuns, seconds: "evaluation_seconds"), torch = torchRuns.isEmpty ? nil : Figures(torchRuns, seconds: "forward_seconds")

        let kernel = lopRuns[0]["blas_core"]?.string ?? "?"
        var table = BenchmarkTable(title: "Engine at \(o.shape) shape (\(o.dtype.rawValue), \(String(format: "%.2f", Double(bytes) / 1e9)) GB on disk; "
                                   + "\(o.windows) windows × \(o.context) tokens; BLAS core \(kernel), \(o.threads) threads; medians of \(lopRuns.count) runs each; PyTorch: \(torchNote))")
        let lopRate = Double(tokenCount) / lop.seconds
        if let torch {
            let torchRate = Double(tokenCount) / torch.seconds
            table.add("forward, lop eval", lop.seconds, unit: "s", reference: "PyTorch \(String(format: "%.2f", torch.seconds)) s", ratio: lop.seconds / torch.seconds)
            table.add("forward tokens/s, lop (target ≥ 1.3× PyTorch)", lopRate, unit: "tokens/s", reference: "PyTorch \(String(format: "%.1f", torchRate)) tokens/s", ratio: lopRate / torchRate)
            table.add("loss, lop", lop.loss, unit: "nats", reference: "PyTorch \(String(format: "%.7f", torch.loss)) (|Δ| \(String(format: "%.1e", abs(lop.loss - torch.loss))), target ≤ 1e-4)", ratio: nil)
            table.add("load, lop", lop.load, unit: "s", reference: "PyTorch \(String(format: "%.2f", torch.load)) s", ratio: lop.load / torch.load)
            table.add("peak RSS, lop eval (target ≤ 1.5× file)", lop.peakRSS / 1e9, unit: "GB", reference: "PyTorch \(String(format: "%.2f", torch.peakRSS / 1e9)) GB",
                      ratio: lop.peakRSS / torch.peakRSS)
        } else {
            table.add("forward, lop eval", lop.seconds, unit: "s", reference: "—", ratio: nil)
            table.add("forward tokens/s, lop", lopRate, unit: "tokens/s", reference: "—", ratio: nil)
            table.add("loss, lop", lop.loss, unit: "nats", reference: "—", ratio: nil)
            table.add("load, lop", lop.load, unit: "s", reference: "—", ratio: nil)
        }
        table.add("peak RSS of lop eval ÷ checkpoint size", lop.peakRSS / Double(max(bytes, 1)), unit: "×", reference: "target ≤ 1.5", ratio: nil)

        // A search's unit of work: one budget-0.5 strategy scored on the calibration windows by nested pruning.
        progress("search evaluation: importance, then \(o.evaluations) nested evaluations at budget 0.5")
        BLAS.setThreads(o.threads)
        let rawRate = rawSgemmRate(repeats: 3)
        let loaded = try Model.load(directory: model)
        let ids = try TokenData.read(tokens, vocabularySize: config.vocabularySize).flatMap { $0 }
        let calibration = try Calibration.text(ids, samples: o.windows, context: o.context, name: "random tokens")
        // Where a dense forward pass spends its time: inside sgemm, at what rate.
        BLAS.resetCounters()
        BLAS.profiling.store(true, ordering: .relaxed)
        let forwardStarted = Date()
        _ = try loaded.loss(TokenBatch(windows: Evaluation.windows(ids, context: o.context)))
        let forwardSeconds = Date().timeIntervalSince(forwardStarted)
        BLAS.profiling.store(false, ordering: .relaxed)
        let (blasSeconds, flops) = BLAS.counters
        table.add("dense forward in this process: share inside sgemm", 100 * blasSeconds / forwardSeconds, unit: "%", reference: "whole forward \(String(format: "%.2f", forwardSeconds)) s", ratio: nil)
        table.add("  its sgemm rate", Double(flops) / blasSeconds / 1e9, unit: "GFLOP/s", reference: "raw sgemm 1024³ \(String(format: "%.0f", rawRate)) GFLOP/s", ratio: Double(flops) / blasSeconds / 1e9 / rawRate)
        let importanceStarted = Date()
        let pruner = try Pruner(model: loaded, importance: .lop, calibration: calibration)
        let importanceSeconds = Date().timeIntervalSince(importanceStarted)
        let sizes = try pruner.allocate(.uniform, budget: .fraction(0.5)).sizes
        let evaluator = try StrategyEvaluator(pruner: pruner, calibration: calibration, cache: false)
        var times: [Double] = []
        for _ in 0..<max(1, o.evaluations) {
            let started = Date()
            _ = try evaluator.score(sizes: sizes)
            times.append(Date().timeIntervalSince(started))
        }
        let perEvaluation = times.sorted()[times.count / 2]
        table.add("importance (LOP) on the calibration windows", importanceSeconds, unit: "s", reference: "—", ratio: nil)
        table.add("one search evaluation at budget 0.5 (nested)", perEvaluation, unit: "s", reference: "dense forward in lop eval \(String(format: "%.2f", lop.seconds)) s",
                  ratio: perEvaluation / lop.seconds)
        table.add("projected 300-simulation search (one evaluation each)", 300 * perEvaluation / 60, unit: "min", reference: "—", ratio: nil)
        return table
    }

    /// One side's figures: medians over its runs (the loss is the same in every run).
    struct Figures {
        let seconds, loss, load, peakRSS: Double

        init(_ runs: [[String: AnyJSON]], seconds key: String) {
            func median(_ key: String) -> Double {
                let values = runs.compactMap { $0[key]?.number }.sorted()
                return values.isEmpty ? .nan : values[values.count / 2]
            }
            (seconds, loss, load, peakRSS) = (median(key), median("loss"), median("load_seconds"), median("peak_rss_bytes"))
        }
    }

    /// Runs a child process and parses the last line of its standard output as a JSON object.
    static func runJSON(_ argv: [String], environment: [String: String]) throws -> [String: AnyJSON] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        process.environment = env
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 || text.contains("\"error\""),
              let line = text.split(separator: "\n").last,
              let object = try? JSONDecoder().decode([String: AnyJSON].self, from: Data(line.utf8)) else {
            throw Failure(description: "\(argv.joined(separator: " ")) exited with \(process.terminationStatus): \(text.suffix(500))")
        }
        return object
    }
}
