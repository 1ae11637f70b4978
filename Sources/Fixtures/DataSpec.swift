import Evaluation
import Foundation
import Models
import Tensor

/// Data as named on the command line and in job arguments: a token file, or one of the fixtures' own sets.
public enum DataSpec: Equatable, Sendable, CustomStringConvertible {
    /// A token file: `.bin` (uint16), `.u32.bin` (uint32) or `.jsonl` (one row of ids per line).
    case tokens(path: String)
    /// tiny-llama's training text (the corpus it was trained on; calibration, never evaluation).
    case corpus
    /// Image questions of `ShapesDataset`: the held-out stream (evaluation) or the training stream (calibration).
    case shapes(count: Int, heldOut: Bool)

    /// `corpus`, `shapes[:N]` (held out), `shapes-train[:N]`, or a path.
    public init(parsing text: String) throws(EvaluationError) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        func count(_ fallback: Int) throws(EvaluationError) -> Int {
            guard parts.count == 2 else { return fallback }
            guard let n = Int(parts[1]), n > 0 else { throw EvaluationError("data \"\(text)\": \"\(parts[1])\" is not a positive count") }
            return n
        }
        switch parts.first ?? "" {
        case "corpus": self = .corpus
        case "shapes": self = .shapes(count: try count(Fixtures.shapesHeldOutCount), heldOut: true)
        case "shapes-train": self = .shapes(count: try count(128), heldOut: false)
        case "": throw EvaluationError("no data was named")
        default: self = .tokens(path: text)
        }
    }

    public var description: String {
        switch self {
        case .tokens(let path): return path
        case .corpus: return "corpus"
        case .shapes(let n, let heldOut): return (heldOut ? "shapes:" : "shapes-train:") + "\(n)"
        }
    }

    /// Tokens of a text source, checked against the model's vocabulary (rows of a JSONL file are joined).
    func textTokens(vocabularySize: Int) throws -> [Int] {
        switch self {
        case .tokens(let path): return try TokenData.read(path, vocabularySize: vocabularySize).flatMap { $0 }
        case .corpus: return try TextCorpus().train
        case .shapes: throw EvaluationError("\(self) is image-question data, not text")
        }
    }

    func shapes(for model: Model) throws -> Evaluation.AnswerSet {
        guard case .shapes(let count, let heldOut) = self else { throw EvaluationError("\(self) is not image-question data") }
        guard case .llava(let m) = model else { throw EvaluationError("\(self) asks questions about images; the model has no vision tower") }
        guard m.config.vision.imageSize == ShapesDataset.imageSize, m.config.text.vocabularySize >= ByteTokenizer.vocabularySize else {
            throw EvaluationError("\(self) needs a byte-vocabulary model with \(ShapesDataset.imageSize)-pixel images (tiny-llava)")
        }
        let examples = ShapesDataset.generate(count: count, seed: heldOut ? Fixtures.shapesHeldOutSeed : Fixtures.shapesTrainSeed)
        return Fixtures.answerSet(examples, config: m.config)
    }

    /// Held-out data for `lop eval` and reports.
    public func evaluationData(for model: Model, context: Int = Fixtures.textContext) throws -> EvaluationData {
        if case .shapes = self { return .answers(try shapes(for: model)) }
        return .text(try textTokens(vocabularySize: model.language.config.vocabularySize), context: context)
    }

    /// Calibration samples: the first `samples` windows of text, or `samples` image questions.
    public func calibration(for model: Model, samples: Int, context: Int = Fixtures.textContext) throws -> Calibration {
        switch self {
        case .shapes(_, let heldOut):
            let set = try DataSpec.shapes(count: samples, heldOut: heldOut).shapes(for: model)
            let batches = stride(from: 0, to: samples, by: 32).map { start in
                let range = start..<min(samples, start + 32)
                return Calibration.Batch(tokens: set.batch(range), lengths: set.items[range].map { $0.tokens.count - 1 })
            }
            return try Calibration(name: description, batches: batches)
        default:
            return try Calibration.text(try textTokens(vocabularySize: model.language.config.vocabularySize), samples: samples,
                                        context: context, name: description)
        }
    }
}
