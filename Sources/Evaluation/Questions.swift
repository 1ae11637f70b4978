import Foundation
import Models
import Tensor

extension Evaluation.AnswerSet {
    /// Questions from a data file, tokenized with the model's own tokenizer and images preprocessed as its
    /// `preprocessor_config.json` says. The rule for answers is fixed: the row is `ids(prompt + answer)`, and the
    /// positions after `len(ids(prompt))` are scored; a free-text answer is closed by the end-of-sequence token (so
    /// exact match is what greedy decoding would say, then stop), a choice is not (choices are compared by their
    /// summed log-likelihood). The prompt's one `<image>` becomes the model's run of image tokens.
    public static func questions(_ questions: [DataFile.Question], model: Model, options: DataFile.Options = DataFile.Options()) throws -> Evaluation.AnswerSet {
        guard !questions.isEmpty else { throw EvaluationError("the question set is empty") }
        let inputs = try model.inputs()
        let tokenizer = inputs.tokenizer
        var vision: LlavaModel?
        if case .llava(let m) = model { vision = m }
        var marker: String?
        if let vision {
            guard let content = tokenizer.token(of: vision.config.imageTokenIndex) else {
                throw EvaluationError("\(tokenizer.file): has no token for image_token_index \(vision.config.imageTokenIndex)")
            }
            marker = content
        }
        var images: [PreparedImage] = [], imageIndex: [DataFile.ImageSource: Int] = [:]
        var items: [Evaluation.AnswerSet.Item] = []
        for (q, question) in questions.enumerated() {
            let at = question.location
            var image: Int?
            if let source = question.image {
                guard let vision, let preprocessor = inputs.images else { throw EvaluationError("\(at): asks about an image; the model has no vision tower") }
                if let known = imageIndex[source] {
                    image = known
                } else {
                    let decoded: RGBImage
                    switch source {
                    case .file(let path): decoded = try ImageFile.decode(file: path, maximumPixels: options.maximumPixels)
                    case .embedded(let data, let location): decoded = try ImageFile.decode(data, name: location, maximumPixels: options.maximumPixels)
                    }
                    let prepared = preprocessor.prepare(decoded)
                    let size = vision.config.vision.imageSize
                    guard Array(prepared.pixels.shape.dropFirst()) == [vision.config.vision.channels, size, size] else {
                        throw EvaluationError("\(preprocessor.file): makes \(Array(prepared.pixels.shape.dropFirst())) pixel tensors; the vision tower takes [\(vision.config.vision.channels), \(size), \(size)]")
                    }
                    guard (preprocessor.pinpoints == nil) == (vision.config.anyRes == nil) else {
                        throw EvaluationError("\(preprocessor.file): " + (vision.config.anyRes == nil ? "tiles images (image_grid_pinpoints), but the model takes one tile per image" : "makes one tile per image, but the model tiles images (AnyRes)"))
                    }
                    do { _ = try vision.config.imageTokens(for: prepared.layout) } catch {
                        throw EvaluationError("\(at): \(error) (\(preprocessor.file) and config.json disagree on the tiling)")
                    }
                    imageIndex[source] = images.count
                    image = images.count
                    images.append(prepared)
                }
            }
            let markers = question.prompt.components(separatedBy: DataFile.imageMarker).count - 1
            guard markers == (image == nil ? 0 : 1) else {
                throw EvaluationError("\(at): the prompt holds \(markers) \(DataFile.imageMarker) markers; " + (image == nil ? "a question without an image holds none" : "a question with an image holds one"))
            }
            let prompt = marker.map { question.prompt.replacingOccurrences(of: DataFile.imageMarker, with: $0) } ?? question.prompt
            let candidates: [(text: String, correct: Bool)]
            switch question.answer {
            case .text(let answer): candidates = [(answer, true)]
            case .choice(let options, let correct): candidates = options.enumerated().map { ($0.element, $0.offset == correct) }
            }
            let promptIDs = try tokenizer.encode(prompt)
            for candidate in candidates {
                var ids = try tokenizer.encode(prompt + candidate.text)
                if candidates.count == 1, let eos = inputs.eos { ids.append(eos) }
                guard ids.count > promptIDs.count else { throw EvaluationError("\(at): the answer \"\(candidate.text)\" adds no tokens after the prompt") }
                var isAnswer = ids.indices.map { $0 >= promptIDs.count }
                if let vision, image != nil {
                    let imageToken = vision.config.imageTokenIndex
                    guard ids.filter({ $0 == imageToken }).count == 1, let at0 = ids.firstIndex(of: imageToken), at0 < promptIDs.count else {
                        throw EvaluationError("\(at): the prompt's \(DataFile.imageMarker) does not tokenize to one image token (id \(imageToken))")
                    }
                    let run = try vision.config.imageTokens(for: images[image!].layout)
                    ids.replaceSubrange(at0...at0, with: Array(repeating: imageToken, count: run))
                    isAnswer.replaceSubrange(at0...at0, with: Array(repeating: false, count: run))
                } else if let vision, ids.contains(vision.config.imageTokenIndex) {
                    throw EvaluationError("\(at): the text holds the image token but the question has no image")
                }
                guard ids.count <= model.language.config.maxPositions else {
                    throw EvaluationError("\(at): \(ids.count) tokens exceed the model's \(model.language.config.maxPositions) positions")
                }
                items.append(Item(tokens: ids, isAnswer: isAnswer, kind: question.category ?? "", image: image, question: q, correct: candidate.correct))
            }
        }
        return Evaluation.AnswerSet(items: items, images: images, padding: 0)
    }
}
