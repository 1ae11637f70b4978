import Evaluation
import Foundation
import Models
import Pruning
import Tensor

/// What the names of `DataSpec` hold: token files read from disk, the fixtures' own sets generated.
extension DataSpec {
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
