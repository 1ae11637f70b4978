import Foundation
import LopCore
import Models
import Tensor

/// How good a model (or a pruned view of one) is on held-out data: language-modelling loss and perplexity on
/// token data, answer loss and exact-match accuracy on image questions.
public enum Evaluation {
    public struct TextMetrics: Codable, Equatable, Sendable {
        /// Mean next-token loss, nats per token.
        public let loss: Double
        public var perplexity: Double { exp(loss) }
        public let tokens: Int
    }

    /// Windows of `context + 1` tokens, back to back (each window's last token starts the next), the final
    /// shorter one kept when it holds at least one prediction.
    public static func windows(_ tokens: [Int], context: Int) -> [[Int]] {
        stride(from: 0, to: tokens.count - 1, by: context).map { start in
            Array(tokens[start..<min(tokens.count, start + context + 1)])
        }.filter { $0.count >= 2 }
    }

    /// Mean next-token loss over the windows of `tokens`, batched by equal length in a fixed order (so sums
    /// repeat exactly from run to run).
    public static func text(_ model: Model, tokens: [Int], context: Int = 128, batchSize: Int = 16,
                            options: ForwardOptions = ForwardOptions()) throws -> TextMetrics {
        var (total, counted) = (0.0, 0)
        for (_, group) in Dictionary(grouping: windows(tokens, context: context), by: \.count).sorted(by: { $0.key > $1.key }) {
            for start in stride(from: 0, to: group.count, by: batchSize) {
                let batch = TokenBatch(windows: Array(group[start..<min(group.count, start + batchSize)]))
                total += try model.loss(batch, options: options) * Double(batch.counted)
                counted += batch.counted
            }
        }
        guard counted > 0 else { throw EvaluationError("token data of \(tokens.count) tokens holds nothing to predict") }
        return TextMetrics(loss: total / Double(counted), tokens: counted)
    }

    /// Questions (about images, or text only), each a token sequence with its answer positions marked; a
    /// multiple-choice question is one item per choice, scored by likelihood.
    public struct AnswerSet {
        public struct Item {
            public let tokens: [Int]
            /// Whether each token is answer text (or the end-of-sequence closing the answer).
            public let isAnswer: [Bool]
            /// The question's kind or category, for accuracy by kind ("" when the data names none).
            public let kind: String
            /// Index into `images` (nil: no image).
            public fileprivate(set) var image: Int?
            /// Items of one question (its choices) share this number and sit next to each other.
            public fileprivate(set) var question: Int
            /// Whether this item's answer is the right one (always, for a question with one item).
            public let correct: Bool

            public init(tokens: [Int], isAnswer: [Bool], kind: String, image: Int? = nil, question: Int = -1, correct: Bool = true) {
                precondition(tokens.count == isAnswer.count, "one answer flag per token")
                (self.tokens, self.isAnswer, self.kind, self.image, self.question, self.correct) = (tokens, isAnswer, kind, image, question, correct)
            }
        }
        public let items: [Item]
        /// Images, each its tiles `[tiles, channels, height, width]` and original size, referenced by items.
        public let images: [PreparedImage]
        /// Token that pads shorter rows (after their end, so causal attention never sees it).
        public let padding: Int

        /// One image per item, `[items, channels, size, size]`, each item its own question.
        public init(items: [Item], images: Tensor, padding: Int) {
            precondition(images.shape.first == items.count, "one image per item")
            let size = images.count / max(items.count, 1)
            self.items = items.enumerated().map { i, item in
                var item = item
                item.image = i
                item.question = i
                return item
            }
            let tile = Array(images.shape.dropFirst())
            self.images = (0..<items.count).map {
                PreparedImage(pixels: Tensor(shape: [1] + tile, data: Array(images.data[($0 * size)..<(($0 + 1) * size)])), height: tile[1], width: tile[2])
            }
            self.padding = padding
        }

        public init(items: [Item], images: [PreparedImage], padding: Int) {
            precondition(items.allSatisfy { $0.image.map { images.indices.contains($0) } ?? true }, "items refer to images that exist")
            precondition(zip(items, items.dropFirst()).allSatisfy { $0.question <= $1.question }, "a question's items sit together")
            (self.items, self.images, self.padding) = (items, images, padding)
        }

        /// Questions asked.
        public var questions: Int { Set(items.map(\.question)).count }

        /// Ranges of about `size` items that never split a question's choices.
        public func batchRanges(size: Int) -> [Range<Int>] {
            var ranges: [Range<Int>] = [], start = 0
            while start < items.count {
                var end = min(items.count, start + max(size, 1))
                while end < items.count, end > start, items[end].question == items[end - 1].question { end += 1 }
                ranges.append(start..<end)
                start = end
            }
            return ranges
        }

        /// A batch of items: loss only where the next token is answer text; the images of the rows that hold one,
        /// in row order.
        public func batch(_ range: Range<Int>) -> TokenBatch {
            let chosen = items[range]
            let length = chosen.map(\.tokens.count).max()! - 1
            var rows: [[Int]] = [], targets: [Int] = []
            for item in chosen {
                let input = Array(item.tokens.dropLast())
                rows.append(input + Array(repeating: padding, count: length - input.count))
                for t in 0..<length { targets.append(t + 1 < item.tokens.count && item.isAnswer[t + 1] ? item.tokens[t + 1] : -100) }
            }
            let pictures = chosen.compactMap { $0.image.map { images[$0] } }
            return TokenBatch(rows: rows, targets: targets, images: pictures.isEmpty ? nil : ImageBatch(pictures))
        }
    }

    public struct AnswerMetrics: Codable, Equatable, Sendable {
        /// Mean loss over the right answers' tokens.
        public let loss: Double
        /// Fraction of questions answered right: a multiple-choice question when its right choice is the most
        /// likely; any other when every answer token (and the closing EOS) is the argmax, as greedy decoding says.
        public let accuracy: Double
        public let accuracyByKind: [String: Double]
        public let questions: Int
        /// Exact match over the questions that are not multiple choice (nil: there are none).
        public let exactMatch: Double?
    }

    /// What one row scored: the summed log-likelihood of its counted targets, how many there were, and whether
    /// every one is its position's argmax.
    public struct RowScore: Sendable, Equatable {
        public let logLikelihood: Double
        public let counted: Int
        public let exact: Bool
    }

    /// Per row, the score of its counted targets under `logits` `[rows·length, vocabulary]`.
    public static func rowScores(_ logits: Tensor, _ batch: TokenBatch) -> [RowScore] {
        let vocabulary = logits.shape[1], length = batch.rows.first?.count ?? 0
        return logits.data.withUnsafeBufferPointer { data in
            batch.rows.indices.map { row in
                var (sum, counted, exact) = (0.0, 0, true)
                for t in 0..<length where batch.targets[row * length + t] != -100 {
                    let target = batch.targets[row * length + t], base = (row * length + t) * vocabulary
                    let best = argmax(data, base, vocabulary)
                    let top = data[base + best]
                    var total = 0.0
                    for j in 0..<vocabulary { total += exp(Double(data[base + j] - top)) }
                    sum += Double(data[base + target] - top) - log(total)
                    counted += 1
                    if best != target { exact = false }
                }
                return RowScore(logLikelihood: sum, counted: counted, exact: exact)
            }
        }
    }

    /// The index of the largest of `count` logits from `base` (the first on ties).
    static func argmax(_ data: UnsafeBufferPointer<Float>, _ base: Int, _ count: Int) -> Int {
        var (best, top) = (0, data[base])
        for j in 1..<count where data[base + j] > top { (best, top) = (j, data[base + j]) }
        return best
    }

    /// Per row, whether every counted target is its position's argmax (what greedy decoding would say); nil for a
    /// row with nothing counted. Only the argmax is needed here: a search scores text strategies with it on every
    /// position, so no softmax is computed.
    public static func exactRows(_ logits: Tensor, _ batch: TokenBatch) -> [Bool?] {
        let vocabulary = logits.shape[1], length = batch.rows.first?.count ?? 0
        return logits.data.withUnsafeBufferPointer { data in
            batch.rows.indices.map { row in
                var (right, counted) = (true, false)
                for t in 0..<length where batch.targets[row * length + t] != -100 {
                    counted = true
                    if argmax(data, (row * length + t) * vocabulary, vocabulary) != batch.targets[row * length + t] { right = false }
                }
                return counted ? right : nil
            }
        }
    }

    /// Per question (items of one `question` number, in order), whether it was answered right: the most likely
    /// choice is a right one, or a single item's answer is exact.
    public static func answeredRight(_ scores: [RowScore], questions: [Int], correct: [Bool]) -> [(question: Int, right: Bool, multipleChoice: Bool)] {
        var out: [(Int, Bool, Bool)] = [], start = 0
        while start < scores.count {
            var end = start + 1
            while end < scores.count, questions[end] == questions[start] { end += 1 }
            if end - start == 1 {
                out.append((questions[start], scores[start].exact && correct[start], false))
            } else {
                let best = (start..<end).max { scores[$0].logLikelihood < scores[$1].logLikelihood || (scores[$0].logLikelihood == scores[$1].logLikelihood && $0 > $1) }!
                out.append((questions[start], correct[best], true))
            }
            start = end
        }
        return out
    }

    public static func answers(_ model: Model, _ set: AnswerSet, batchSize: Int = 64, options: ForwardOptions = ForwardOptions()) throws -> AnswerMetrics {
        guard !set.items.isEmpty else { throw EvaluationError("the answer set is empty") }
        var scores: [RowScore] = []
        for range in set.batchRanges(size: batchSize) {
            let batch = set.batch(range)
            let g = Graph(recording: false)
            scores += rowScores(try model.logits(g, batch, options: options).tensor, batch)
        }
        var (lost, counted) = (0.0, 0)
        for (item, score) in zip(set.items, scores) where item.correct {
            lost -= score.logLikelihood
            counted += score.counted
        }
        let judged = answeredRight(scores, questions: set.items.map(\.question), correct: set.items.map(\.correct))
        let kindOf = Dictionary(set.items.map { ($0.question, $0.kind) }, uniquingKeysWith: { a, _ in a })
        var byKind: [String: (right: Int, asked: Int)] = [:]
        for j in judged { byKind[kindOf[j.question]!, default: (0, 0)].right += j.right ? 1 : 0; byKind[kindOf[j.question]!, default: (0, 0)].asked += 1 }
        let free = judged.filter { !$0.multipleChoice }
        let kinds = byKind.keys.contains("") ? [:] : byKind.mapValues { Double($0.right) / Double($0.asked) }
        return AnswerMetrics(loss: lost / Double(max(counted, 1)), accuracy: Double(judged.filter(\.right).count) / Double(judged.count),
                             accuracyByKind: kinds, questions: judged.count,
                             exactMatch: free.isEmpty ? nil : Double(free.filter(\.right).count) / Double(free.count))
    }
}

/// Evaluation data that cannot be used, with the reason.
public struct EvaluationError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Held-out data of either kind, evaluated the same way by every caller.
public enum EvaluationData {
    case text([Int], context: Int)
    case answers(Evaluation.AnswerSet)

    public struct Metrics: Codable, Equatable, Sendable {
        /// Mean loss: per token (text) or per answer token (questions).
        public let loss: Double
        public let perplexity: Double?
        public let accuracy: Double?
        public let accuracyByKind: [String: Double]?
        /// Tokens predicted (text) or questions asked.
        public let count: Int
        /// Exact match over questions that are not multiple choice (nil for text, or when all are).
        public var exactMatch: Double? = nil
    }

    public func evaluate(_ model: Model, options: ForwardOptions = ForwardOptions()) throws -> Metrics {
        switch self {
        case .text(let tokens, let context):
            let m = try Evaluation.text(model, tokens: tokens, context: context, options: options)
            return Metrics(loss: m.loss, perplexity: m.perplexity, accuracy: nil, accuracyByKind: nil, count: m.tokens)
        case .answers(let set):
            let m = try Evaluation.answers(model, set, options: options)
            return Metrics(loss: m.loss, perplexity: nil, accuracy: m.accuracy, accuracyByKind: m.accuracyByKind, count: m.questions,
                           exactMatch: m.exactMatch)
        }
    }
}

extension EvaluationError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
