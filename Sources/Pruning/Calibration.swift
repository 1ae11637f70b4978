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
        /// For question data: each row's question (the rows of a multiple-choice question's choices share one) and
        /// whether its answer is the right one. Loss counts the right rows only; accuracy compares choices.
        public let questions: [Int]?
        public let correct: [Bool]?

        public init(tokens: TokenBatch, lengths: [Int]? = nil, questions: [Int]? = nil, correct: [Bool]? = nil) {
            let width = tokens.rows.first?.count ?? 0
            precondition(lengths.map { $0.count == tokens.rows.count && $0.allSatisfy { $0 >= 0 && $0 <= width } } ?? true, "one length per row, within it")
            precondition((questions == nil) == (correct == nil) && (questions?.count ?? tokens.rows.count) == tokens.rows.count, "questions and answers per row")
            self.tokens = tokens
            self.lengths = lengths ?? Array(repeating: width, count: tokens.rows.count)
            self.questions = questions
            self.correct = correct
        }

        /// Loss (summed, and positions counted) and answers judged right, out of those asked.
        public func score(_ logits: Tensor) -> (lost: Double, counted: Int, right: Int, asked: Int) {
            let scores = Evaluation.rowScores(logits, tokens)
            let correct = self.correct ?? Array(repeating: true, count: scores.count)
            var (lost, counted) = (0.0, 0)
            for (score, right) in zip(scores, correct) where right {
                lost -= score.logLikelihood
                counted += score.counted
            }
            let judged = Evaluation.answeredRight(scores, questions: questions ?? Array(scores.indices), correct: correct)
                .filter { questions != nil || scores[$0.question].counted > 0 }
            return (lost, counted, judged.filter(\.right).count, judged.count)
        }
    }

    public let name: String
    public let batches: [Batch]
    /// SHA-256 of every row, target, length and image value, and of what the rows were made from (the tokenizer
    /// file, the preprocessing config and the data file) when they came from a user's files.
    public let hash: String
    public var samples: Int { batches.reduce(0) { $0 + $1.lengths.count } }

    public init(name: String, batches: [Batch], provenance: String = "") throws(EvaluationError) {
        guard !batches.isEmpty, batches.allSatisfy({ !$0.tokens.rows.isEmpty }) else { throw EvaluationError("calibration set \"\(name)\" is empty") }
        self.name = name
        self.batches = batches
        var hasher = SHA256()
        // Empty for the fixtures' own sets and token files, whose hashes stay what stored samples recorded.
        if !provenance.isEmpty { hasher.update(data: Data("|from \(provenance)|".utf8)) }
        for batch in batches {
            if let questions = batch.questions, let correct = batch.correct {
                hasher.update(data: Data("|questions \(questions) \(correct)|".utf8))
            }
            for row in batch.tokens.rows { row.withUnsafeBytes { hasher.update(bufferPointer: $0) } }
            batch.tokens.targets.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            batch.lengths.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            let images = batch.tokens.images
            hasher.update(data: Data("|images \(images?.pixels.shape ?? [])|".utf8))
            images?.pixels.data.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            // Tile counts and sizes change the features only when an image is tiled (AnyRes); one-tile sets keep
            // the hashes stored samples recorded.
            if let images, images.isTiled { hasher.update(data: Data("|layouts \(images.layouts.map { [$0.tiles, $0.height, $0.width] + ($0.grid ?? []) })|".utf8)) }
        }
        hash = hasher.finalize().hexadecimal
    }

    /// The first `samples` windows of `context + 1` tokens from a token stream, in batches of `batchSize`.
    public static func text(_ tokens: [Int], samples: Int, context: Int = 128, batchSize: Int = 16, name: String, provenance: String = "") throws(EvaluationError) -> Calibration {
        guard samples > 0, context > 0 else { throw EvaluationError("calibration needs a positive sample count and context") }
        // Only the first `samples` full windows are cut (a token file may be far larger than a calibration set).
        let windows = stride(from: 0, to: tokens.count - context, by: context).prefix(samples).map { Array(tokens[$0...($0 + context)]) }
        guard windows.count == samples else {
            throw EvaluationError("calibration data \"\(name)\" holds \(windows.count) windows of \(context + 1) tokens; \(samples) were asked for")
        }
        let batches = stride(from: 0, to: windows.count, by: batchSize).map { start in
            Batch(tokens: TokenBatch(windows: Array(windows[start..<min(windows.count, start + batchSize)])))
        }
        return try Calibration(name: name, batches: batches, provenance: provenance)
    }

    /// Calibration rows from questions: the first `samples` questions (with all their choices), batches of about
    /// `batchSize` rows that never split a question.
    public static func questions(_ set: Evaluation.AnswerSet, samples: Int, batchSize: Int = 32, name: String, provenance: String) throws(EvaluationError) -> Calibration {
        guard set.questions >= samples else {
            throw EvaluationError("calibration data \"\(name)\" holds \(set.questions) questions; \(samples) were asked for")
        }
        let firstQuestions = Set(set.items.map(\.question).sorted().reduce(into: [Int]()) { if $0.last != $1 { $0.append($1) } }.prefix(samples))
        let kept = Evaluation.AnswerSet(items: set.items.filter { firstQuestions.contains($0.question) }, images: set.images, padding: set.padding)
        let batches = kept.batchRanges(size: batchSize).map { range in
            Batch(tokens: kept.batch(range), lengths: kept.items[range].map { $0.tokens.count - 1 },
                  questions: kept.items[range].map(\.question), correct: kept.items[range].map(\.correct))
        }
        return try Calibration(name: name, batches: batches, provenance: provenance)
    }

    /// Mean loss over every batch's counted positions (the right answers' only, for question data), for the model
    /// run with `options`.
    public func loss(_ model: Model, options: ForwardOptions = ForwardOptions()) throws -> Double {
        var (total, counted) = (0.0, 0)
        for batch in batches where batch.tokens.counted > 0 {
            if batch.questions != nil {
                let s = batch.score(try model.logits(Graph(recording: false), batch.tokens, options: options).tensor)
                (total, counted) = (total + s.lost, counted + s.counted)
                continue
            }
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
