import Evaluation
import Foundation
import LopCore
import Models
import Pruning
import Tensor

/// What the names of `DataSpec` hold: data files read from disk (tokenized and preprocessed with the model's own
/// inputs), the fixtures' own sets generated.
extension DataSpec {
    /// Text as ids: a token file's rows joined, or text documents tokenized with the model's tokenizer (each with
    /// the post-processor's special tokens). The provenance names the tokenizer and the file (empty for token files
    /// and the corpus, whose ids are their own record).
    func textTokens(for model: Model, file: DataFile.Loaded?) throws -> (ids: [Int], provenance: String) {
        let vocabularySize = model.language.config.vocabularySize
        switch (self, file?.contents) {
        case (.file, .tokens(let path)?): return (try TokenData.read(path, vocabularySize: vocabularySize).flatMap { $0 }, "")
        case (.file, .text(let documents)?):
            let inputs = try model.inputs()
            var ids: [Int] = []
            for document in documents { ids += try inputs.tokenizer.encode(document) }
            if let bad = ids.first(where: { $0 >= vocabularySize }) {
                throw EvaluationError("\(inputs.tokenizer.file): gives id \(bad), outside the model's vocabulary of \(vocabularySize)")
            }
            return (ids, Self.provenance(inputs, file: file!))
        case (.file(let path), _): throw EvaluationError("\(path): holds questions, not text")
        case (.corpus, _): return (try TextCorpus().train, "")
        case (.shapes, _): throw EvaluationError("\(self) is image-question data, not text")
        }
    }

    /// What a data file holds, with its digest (nil for the fixtures' named sets).
    func load(options: DataFile.Options) throws -> DataFile.Loaded? {
        guard case .file(let path) = self else { return nil }
        return try DataFile.load(path, options: options)
    }

    /// The tokenizer's, the preprocessor's and the data file's SHA-256.
    static func provenance(_ inputs: ModelInputs, file: DataFile.Loaded) -> String {
        inputs.fingerprint + " data \(file.sha256 ?? "-")"
    }

    /// A data file's questions, tokenized and preprocessed (nil: the file is not question data).
    func questions(for model: Model, file: DataFile.Loaded?, options: DataFile.Options) throws -> (set: Evaluation.AnswerSet, provenance: String)? {
        guard let file, case .questions(let questions) = file.contents else { return nil }
        let set = try Evaluation.AnswerSet.questions(questions, model: model, options: options)
        return (set, Self.provenance(try model.inputs(), file: file))
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
    public func evaluationData(for model: Model, context: Int = Fixtures.textContext, options: DataFile.Options = DataFile.Options()) throws -> EvaluationData {
        if case .shapes = self { return .answers(try shapes(for: model)) }
        let file = try load(options: options)
        if let questions = try questions(for: model, file: file, options: options) { return .answers(questions.set) }
        return .text(try textTokens(for: model, file: file).ids, context: context)
    }

    /// Calibration samples: the first `samples` windows of text, or `samples` questions.
    public func calibration(for model: Model, samples: Int, context: Int = Fixtures.textContext, options: DataFile.Options = DataFile.Options()) throws -> Calibration {
        switch self {
        case .shapes(_, let heldOut):
            let set = try DataSpec.shapes(count: samples, heldOut: heldOut).shapes(for: model)
            let batches = stride(from: 0, to: samples, by: 32).map { start in
                let range = start..<min(samples, start + 32)
                return Calibration.Batch(tokens: set.batch(range), lengths: set.items[range].map { $0.tokens.count - 1 })
            }
            return try Calibration(name: description, batches: batches)
        default:
            let file = try load(options: options)
            if let questions = try questions(for: model, file: file, options: options) {
                return try Calibration.questions(questions.set, samples: samples, name: description, provenance: questions.provenance)
            }
            let text = try textTokens(for: model, file: file)
            return try Calibration.text(text.ids, samples: samples, context: context, name: description, provenance: text.provenance)
        }
    }
}
