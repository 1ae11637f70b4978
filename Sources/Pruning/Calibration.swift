import Crypto
import Evaluation
import Foundation
import Models
import LopCore
import Tensor

/// The data importance scores and allocations are computed on: token batches (text, or text with images),
/// each row's real length (positions after it are padding), and a hash of all of it.
public struct Calibration {
    public struct Batch {
        public let tokens: TokenBatch
        /// Real tokens per row; positions at and after it are padding and never counted.
        public let lengths: [Int]

        public init(tokens: TokenBatch, lengths: [Int]? = nil) {
            let width = tokens.rows.first?.count ?? 0
            precondition(lengths.map { $0.count == tokens.rows.count && $0.allSatisfy { $0 >= 0 && $0 <= width } } ?? true, "one length per row, within it")
            self.tokens = tokens
            self.lengths = lengths ?? Array(repeating: width, count: tokens.rows.count)
        }
    }

    public let name: String
    public let batches: [Batch]
    /// SHA-256 of every row, target, length and image value.
    public let hash: String
    public var samples: Int { batches.reduce(0) { $0 + $1.lengths.count } }

    public init(name: String, batches: [Batch]) throws(EvaluationError) {
        guard !batches.isEmpty, batches.allSatisfy({ !$0.tokens.rows.isEmpty }) else { throw EvaluationError("calibration set \"\(name)\" is empty") }
        self.name = name
        self.batches = batches
        var hasher = SHA256()
        for batch in batches {
            for row in batch.tokens.rows { row.withUnsafeBytes { hasher.update(bufferPointer: $0) } }
            batch.tokens.targets.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            batch.lengths.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            hasher.update(data: Data("|images \(batch.tokens.images?.shape ?? [])|".utf8))
            batch.tokens.images?.data.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        }
        hash = hasher.finalize().hexadecimal
    }

    /// The first `samples` windows of `context + 1` tokens from a token stream, in batches of `batchSize`.
    public static func text(_ tokens: [Int], samples: Int, context: Int = 128, batchSize: Int = 16, name: String) throws(EvaluationError) -> Calibration {
        guard samples > 0, context > 0 else { throw EvaluationError("calibration needs a positive sample count and context") }
        // Only the first `samples` full windows are cut (a token file may be far larger than a calibration set).
        let windows = stride(from: 0, to: tokens.count - context, by: context).prefix(samples).map { Array(tokens[$0...($0 + context)]) }
        guard windows.count == samples else {
            throw EvaluationError("calibration data \"\(name)\" holds \(windows.count) windows of \(context + 1) tokens; \(samples) were asked for")
        }
        let batches = stride(from: 0, to: windows.count, by: batchSize).map { start in
            Batch(tokens: TokenBatch(windows: Array(windows[start..<min(windows.count, start + batchSize)])))
        }
        return try Calibration(name: name, batches: batches)
    }

    /// Mean loss over every batch's counted positions, for the model run with `options`.
    public func loss(_ model: Model, options: ForwardOptions = ForwardOptions()) throws -> Double {
        var (total, counted) = (0.0, 0)
        for batch in batches where batch.tokens.counted > 0 {
            total += try model.loss(batch.tokens, options: options) * Double(batch.tokens.counted)
            counted += batch.tokens.counted
        }
        return total / Double(max(counted, 1))
    }
}

extension Calibration {
    /// Tokens the set counts (every row up to its real length).
    public var tokens: Int { batches.reduce(0) { $0 + $1.lengths.reduce(0, +) } }

    /// One pass over the batches through `model` with `options`: each FFN observation of one of `units` reaches
    /// `body` with the unit's index and, for a language unit, each row's real length (image positions all count).
    func observeFFNs(_ model: Model, units: [PrunableUnit], options: ForwardOptions = ForwardOptions(),
                     _ body: (_ unit: Int, _ seen: FFNObservation, _ lengths: [Int]?) -> Void) throws {
        let index = Dictionary(uniqueKeysWithValues: units.enumerated().compactMap { i, u in u.location.map { ("\($0.tower)\($0.layer)", i) } })
        try withoutActuallyEscaping(body) { body in
            for batch in batches {
                var pass = options
                pass.observe = { seen in
                    guard let u = index["\(seen.tower)\(seen.layer)"] else { return }
                    body(u, seen, seen.tower == .language ? batch.lengths : nil)
                }
                _ = try model.loss(batch.tokens, options: pass)
            }
        }
    }
}
