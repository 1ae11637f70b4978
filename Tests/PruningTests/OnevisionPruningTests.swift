import Evaluation
import Fixtures
import Foundation
import Models
import Pruning
import Tensor
import Testing
import TestSupport

/// LLaVA-OneVision (the transformers-made reference checkpoint) through lop's data path and pruning: questions
/// about image files read as a user's JSONL give the ids and pixel tiles transformers' processor recorded, and
/// a pruned copy at 50 % written to disk evaluates as the nested model does.
@Suite struct OnevisionPruningTests {
    static let folder = TestDatabase.repositoryRoot + "/Tests/References/models/llava-onevision"
    let directory = NSTemporaryDirectory() + "lop-onevision-pruning-\(UUID().uuidString)"

    struct Case: Decodable {
        struct Array: Decodable { let shape: [Int]; let data: [Float] }
        let name: String; let tokens: [[Int]]; let pixels: Array?; let prompt: String?; let images: [String]?
    }

    /// The reference's one-image cases, each a question with a short free-text answer, as a JSONL data file.
    func questionFile() throws -> (path: String, cases: [Case]) {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.folder + "/../cases.json"))
        let all = try JSONDecoder().decode([String: [String: [Case]]].self, from: data)["llava-onevision"]!["cases"]!
        let cases = all.filter { $0.images?.count == 1 }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let lines = try cases.map { c in
            let line: [String: String] = ["image": Self.folder + "/" + c.images![0], "prompt": c.prompt!, "answer": " free software"]
            return String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self)
        }
        let path = directory + "/questions.jsonl"
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: path))
        return (path, cases)
    }

    @Test func questionsAboutImageFilesGiveTheProcessorsIdsAndTiles() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = try Model.load(directory: Self.folder)
        let (path, cases) = try questionFile()
        #expect(cases.count == 3)
        guard case .answers(let set) = try DataSpec(parsing: path).evaluationData(for: model) else { Issue.record("not question data"); return }
        #expect(set.items.count == cases.count)
        for (item, c) in zip(set.items, cases) {
            #expect(Array(item.tokens.prefix(c.tokens[0].count)) == c.tokens[0], "\(c.name): the prompt's ids")
            #expect(item.tokens.count > c.tokens[0].count && !item.isAnswer[c.tokens[0].count - 1] && item.isAnswer[c.tokens[0].count])
            let image = set.images[item.image!], pixels = c.pixels!
            #expect(image.pixels.shape == Array(pixels.shape.dropFirst()), "\(c.name)")
            let worst = zip(image.pixels.data, pixels.data).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst < 1e-5, "\(c.name): tiles differ by \(worst)")
        }
        let score = try Evaluation.answers(model, set)
        #expect(score.questions == 3 && score.loss.isFinite && score.loss > 0)
    }

    /// Language FFNs and vision MLPs at half their parameters: the sliced copy, written and loaded back, computes
    /// what the nested model computes through its leading neurons; it is smaller by exactly the dropped neurons
    /// (and the pooling head).
    @Test func prunedAtHalfLoadsBackAndEqualsNestedEvaluation() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = try Model.load(directory: Self.folder)
        let (path, _) = try questionFile()
        let spec = try DataSpec(parsing: path)
        let calibration = try spec.calibration(for: model, samples: 3)
        guard case .answers(let set) = try spec.evaluationData(for: model) else { Issue.record("not question data"); return }
        let pruner = try Pruner(model: model, scope: .all, importance: .lop, calibration: calibration)
        #expect(pruner.units.count == 4, "two language FFNs and two vision MLPs")
        let (proposed, sizes) = try pruner.allocate(.uniform, budget: .fraction(0.5))
        let folder = directory + "/pruned"
        try pruner.write(budget: .fraction(0.5), allocation: "uniform", proposed: proposed, sizes: sizes, to: folder)
        let loaded = try Model.load(directory: folder)
        guard case .llava(let m) = loaded else { Issue.record("not LLaVA-OneVision"); return }
        #expect(m.config.anyRes != nil && m.language.layers.map { $0.gate.shape[0] } == Array(sizes.prefix(2)))
        let dropped = zip(pruner.units, sizes).reduce(0) { $0 + ($1.0.width - $1.1) * $1.0.parametersPerNeuron }
        // SigLIP's pooling head (unused by the MLLM, sized by the base width) is left out of a copy with narrowed vision MLPs.
        guard case .llava(let base) = model else { return }
        let head = base.vision.head.reduce(0) { $0 + $1.weight.count }
        #expect(head > 0 && m.vision.head.isEmpty && !m.config.vision.usesHead)
        #expect(loaded.parameterCount == model.parameterCount - dropped - head)
        let batch = set.batch(0..<set.items.count)
        let g = Graph(recording: false)
        let viaNested = try pruner.nested.model.logits(g, batch, options: pruner.options(sizes: sizes)).tensor
        let viaFolder = try loaded.logits(g, batch).tensor
        let scale = viaFolder.data.map(abs).max()!
        #expect(zip(viaNested.data, viaFolder.data).map { abs($0 - $1) }.max()! < 1e-5 * max(1, scale))
        #expect(try Evaluation.answers(loaded, set).loss != Evaluation.answers(model, set).loss)
    }
}
