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
        let vision = model.imageText
        var marker: String?
        if let vision {
            do { marker = try vision.imageText(tokenizer) } catch { throw EvaluationError("\(error)") }
        }
        // Each image's tiles and the run of image tokens it takes, found once when it is first seen.
        var images: [PreparedImage] = [], runs: [Int] = [], imageIndex: [DataFile.ImageSource: Int] = [:]
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
                    let prepared = try preprocessor.prepare(decoded)
                    do { runs.append(try vision.imageTokens(for: prepared)) } catch {
                        throw EvaluationError("\(at): \(error) (\(preprocessor.file) does not fit config.json)")
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
                    let imageToken = vision.imageTokenIndex
                    guard ids.filter({ $0 == imageToken }).count == 1, let at0 = ids.firstIndex(of: imageToken), at0 < promptIDs.count else {
                        throw EvaluationError("\(at): the prompt's \(DataFile.imageMarker) does not tokenize to one image token (id \(imageToken))")
                    }
                    let run = runs[image!]
                    ids.replaceSubrange(at0...at0, with: Array(repeating: imageToken, count: run))
                    isAnswer.replaceSubrange(at0...at0, with: Array(repeating: false, count: run))
                } else if let vision, ids.contains(vision.imageTokenIndex) {
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
