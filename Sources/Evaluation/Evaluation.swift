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

    /// Questions about images, each a token sequence with its answer positions marked.
    public struct AnswerSet {
        public struct Item {
            public let tokens: [Int]
            /// Whether each token is answer text (or the end-of-sequence closing the answer).
            public let isAnswer: [Bool]
            /// The question's kind, for accuracy by kind.
            public let kind: String
            public init(tokens: [Int], isAnswer: [Bool], kind: String) {
                precondition(tokens.count == isAnswer.count, "one answer flag per token")
                self.tokens = tokens
                self.isAnswer = isAnswer
                self.kind = kind
            }
        }
        public let items: [Item]
        /// One image per item, `[items, channels, size, size]`.
        public let images: Tensor
        /// Token that pads shorter rows (after their end, so causal attention never sees it).
        public let padding: Int

        public init(items: [Item], images: Tensor, padding: Int) {
            precondition(images.shape.first == items.count, "one image per item")
            self.items = items
            self.images = images
            self.padding = padding
        }

        /// A batch of items: loss only where the next token is answer text.
        public func batch(_ range: Range<Int>) -> TokenBatch {
            let chosen = items[range]
            let length = chosen.map(\.tokens.count).max()! - 1
            var rows: [[Int]] = [], targets: [Int] = []
            for item in chosen {
                let input = Array(item.tokens.dropLast())
                rows.append(input + Array(repeating: padding, count: length - input.count))
                for t in 0..<length { targets.append(t + 1 < item.tokens.count && item.isAnswer[t + 1] ? item.tokens[t + 1] : -100) }
            }
            let size = images.count / max(images.shape[0], 1)
            let data = Array(images.data[(range.lowerBound * size)..<(range.upperBound * size)])
            return TokenBatch(rows: rows, targets: targets, images: Tensor(shape: [range.count] + images.shape.dropFirst(), data: data))
        }
    }

    public struct AnswerMetrics: Codable, Equatable, Sendable {
        /// Mean loss over answer tokens.
        public let loss: Double
        /// Fraction of questions whose every answer token (and the closing EOS) is the argmax: what greedy
        /// decoding would say.
        public let accuracy: Double
        public let accuracyByKind: [String: Double]
        public let questions: Int
    }

    /// Per row, whether every counted target is its position's argmax (what greedy decoding would say); nil for a
    /// row with nothing counted.
    public static func exactRows(_ logits: Tensor, _ batch: TokenBatch) -> [Bool?] {
        let vocabulary = logits.shape[1], length = batch.rows.first?.count ?? 0
        return batch.rows.indices.map { row in
            var (right, counted) = (true, false)
            for t in 0..<length where batch.targets[row * length + t] != -100 {
                counted = true
                let base = (row * length + t) * vocabulary
                var best = base
                for j in base..<(base + vocabulary) where logits.data[j] > logits.data[best] { best = j }
                if best - base != batch.targets[row * length + t] { right = false }
            }
            return counted ? right : nil
        }
    }

    public static func answers(_ model: Model, _ set: AnswerSet, batchSize: Int = 64, options: ForwardOptions = ForwardOptions()) throws -> AnswerMetrics {
        guard !set.items.isEmpty else { throw EvaluationError("the answer set is empty") }
        var (total, counted, correct) = (0.0, 0, 0)
        var byKind: [String: (right: Int, asked: Int)] = [:]
        for start in stride(from: 0, to: set.items.count, by: batchSize) {
            let range = start..<min(set.items.count, start + batchSize)
            let batch = set.batch(range)
            let g = Graph(recording: false)
            let logits = try model.logits(g, batch, options: options)
            total += Double(g.crossEntropy(logits, targets: batch.targets).tensor.scalar) * Double(batch.counted)
            counted += batch.counted
            let exact = exactRows(logits.tensor, batch)
            for (row, index) in range.enumerated() {
                let right = exact[row] ?? true
                let kind = set.items[index].kind
                byKind[kind, default: (0, 0)].right += right ? 1 : 0
                byKind[kind, default: (0, 0)].asked += 1
                if right { correct += 1 }
            }
        }
        return AnswerMetrics(loss: total / Double(max(counted, 1)), accuracy: Double(correct) / Double(set.items.count),
                             accuracyByKind: byKind.mapValues { Double($0.right) / Double($0.asked) }, questions: set.items.count)
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
    }

    public func evaluate(_ model: Model, options: ForwardOptions = ForwardOptions()) throws -> Metrics {
        switch self {
        case .text(let tokens, let context):
            let m = try Evaluation.text(model, tokens: tokens, context: context, options: options)
            return Metrics(loss: m.loss, perplexity: m.perplexity, accuracy: nil, accuracyByKind: nil, count: m.tokens)
        case .answers(let set):
            let m = try Evaluation.answers(model, set, options: options)
            return Metrics(loss: m.loss, perplexity: nil, accuracy: m.accuracy, accuracyByKind: m.accuracyByKind, count: m.questions)
        }
    }
}

extension EvaluationError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
