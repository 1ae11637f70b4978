import Evaluation
import Fixtures
import Foundation
import Models
import Pruning
import Tensor
import Testing
import TestSupport

/// The paper's architectures (the transformers-made LLaVA-OneVision and Qwen2.5-VL reference checkpoints)
/// through lop's data path and pruning: questions about image files read as a user's JSONL give the ids and
/// pixels transformers' processor recorded, and a copy pruned to 50 % of its language and vision FFN parameters,
/// written to disk, evaluates as the nested model does.
@Suite struct MultimodalPruningTests {
    static let references = TestDatabase.repositoryRoot + "/Tests/References/models"
    let directory = NSTemporaryDirectory() + "lop-multimodal-pruning-\(UUID().uuidString)"

    struct Case: Decodable {
        struct Array: Decodable { let shape: [Int]; let data: [Float] }
        let name: String; let tokens: [[Int]]; let pixels: Array?; let prompt: String?; let images: [String]?
    }

    /// The reference's one-image cases of `model`, each a question with a short free-text answer, as a JSONL
    /// data file whose prompts mark the image with `<image>` (lop writes the model's own image text there).
    func questionFile(_ model: String) throws -> (path: String, cases: [Case]) {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.references + "/cases.json"))
        let all = try JSONDecoder().decode([String: [String: [Case]]].self, from: data)[model]!["cases"]!
        let cases = all.filter { $0.images?.count == 1 }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let lines = try cases.map { c in
            let prompt = c.prompt!.replacingOccurrences(of: "<|vision_start|><|image_pad|><|vision_end|>", with: DataFile.imageMarker)
            let line = ["image": Self.references + "/" + model + "/" + c.images![0], "prompt": prompt, "answer": " free software"]
            return String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self)
        }
        let path = directory + "/\(model).jsonl"
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: path))
        return (path, cases)
    }

    @Test(arguments: ["llava-onevision", "qwen2.5-vl"])
    func questionsAboutImageFilesGiveTheProcessorsIdsAndPixels(model name: String) throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = try Model.load(directory: Self.references + "/" + name)
        let (path, cases) = try questionFile(name)
        #expect(cases.count == 3)
        guard case .answers(let set) = try DataSpec(parsing: path).evaluationData(for: model) else { Issue.record("not question data"); return }
        #expect(set.items.count == cases.count)
        for (item, c) in zip(set.items, cases) {
            #expect(Array(item.tokens.prefix(c.tokens[0].count)) == c.tokens[0], "\(c.name): the prompt's ids")
            #expect(item.tokens.count > c.tokens[0].count && !item.isAnswer[c.tokens[0].count - 1] && item.isAnswer[c.tokens[0].count])
            // OneVision's reference is [images, tiles, …]; Qwen's [patches, width].
            let image = set.images[item.image!], pixels = c.pixels!
            #expect(image.pixels.shape == (pixels.shape.count == 5 ? Array(pixels.shape.dropFirst()) : pixels.shape), "\(c.name)")
            let worst = zip(image.pixels.data, pixels.data).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst < 1e-5, "\(c.name): pixels differ by \(worst)")
        }
        let score = try Evaluation.answers(model, set)
        #expect(score.questions == 3 && score.loss.isFinite && score.loss > 0)
    }

    /// Language FFNs and vision MLPs at half their parameters: the sliced copy, written and loaded back, computes
    /// what the nested model computes through its leading neurons, and is smaller by exactly the dropped neurons
    /// (and, for OneVision, SigLIP's unused pooling head).
    @Test(arguments: ["llava-onevision", "qwen2.5-vl"])
    func prunedAtHalfLoadsBackAndEqualsNestedEvaluation(model name: String) throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = try Model.load(directory: Self.references + "/" + name)
        let (path, _) = try questionFile(name)
        let spec = try DataSpec(parsing: path)
        let calibration = try spec.calibration(for: model, samples: 3)
        guard case .answers(let set) = try spec.evaluationData(for: model) else { Issue.record("not question data"); return }
        let pruner = try Pruner(model: model, scope: .all, importance: .lop, calibration: calibration)
        let languageLayers = model.language.layers.count
        #expect(pruner.units.count == languageLayers + (name == "qwen2.5-vl" ? 4 : 2), "language FFNs and vision MLPs")
        let (proposed, sizes) = try pruner.allocate(.uniform, budget: .fraction(0.5))
        let folder = directory + "/pruned"
        try pruner.write(budget: .fraction(0.5), allocation: "uniform", proposed: proposed, sizes: sizes, to: folder)
        let loaded = try Model.load(directory: folder)
        #expect(loaded.language.layers.map { $0.gate.shape[0] } == Array(sizes.prefix(languageLayers)))
        let dropped = zip(pruner.units, sizes).reduce(0) { $0 + ($1.0.width - $1.1) * $1.0.parametersPerNeuron }
        var head = 0
        if case .llava(let base) = model, case .llava(let m) = loaded {
            head = base.vision.head.reduce(0) { $0 + $1.weight.count }
            #expect(head > 0 && m.vision.head.isEmpty && !m.config.vision.usesHead && m.config.anyRes != nil)
        }
        if case .qwenVL(let m) = loaded { #expect(m.vision.blocks.map { $0.gate.shape[0] } == Array(sizes.suffix(4))) }
        #expect(loaded.parameterCount == model.parameterCount - dropped - head)
        let batch = set.batch(0..<set.items.count)
        let g = Graph(recording: false)
        let viaNested = try pruner.nested.model.logits(g, batch, options: pruner.options(sizes: sizes)).tensor
        let viaFolder = try loaded.logits(g, batch).tensor
        let scale = viaFolder.data.map(abs).max()!
        #expect(zip(viaNested.data, viaFolder.data).map { abs($0 - $1) }.max()! < 1e-5 * max(1, scale))
        #expect(try Evaluation.answers(loaded, set).loss != Evaluation.answers(model, set).loss)
    }

    /// Qwen2.5-VL's biased SwiGLU vision MLPs re-fit with their down_proj bias as an unpenalised intercept, as
    /// LLaVA's fc2 does: every unit is re-fitted, a vision MLP's re-fit reproduces the dense MLP on the calibration
    /// activations better than the slice, and the written checkpoint computes what the re-fitted nested model
    /// computes in place.
    @Test func qwenVisionMLPsAreRefittedWithTheirBias() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = try Model.load(directory: Self.references + "/qwen2.5-vl")
        let spec = try DataSpec(parsing: try questionFile("qwen2.5-vl").path)
        let calibration = try spec.calibration(for: model, samples: 3)
        guard case .answers(let set) = try spec.evaluationData(for: model) else { Issue.record("not question data"); return }
        let pruner = try Pruner(model: model, scope: .all, importance: .lop, calibration: calibration)
        let reconstruction = try pruner.reconstruction(ridge: 1e-3)
        #expect(pruner.units.indices.allSatisfy(reconstruction.refits))
        let sizes = pruner.units.map { $0.width / 2 }
        let vision = try #require(pruner.units.firstIndex { $0.location?.tower == .vision })
        let refitted = try reconstruction.refitted(unit: vision, keep: sizes[vision])
        #expect(refitted.bias?.shape == [refitted.weight.shape[0]] && refitted.weight.shape[1] == sizes[vision])
        // The re-fit's promise on the calibration activations (a random model's loss says little): its output is
        // nearer the dense MLP's than the slice's. With n = width + 1 features [h; 1] and G over them, the error of
        // a candidate [W′ | b′] (zero on the dropped neurons) is tr(D G Dᵀ) for D = [W | b] − [W′ | b′].
        guard case .qwenVL(let qwen) = pruner.nested.model else { Issue.record("not Qwen2.5-VL"); return }
        let block = qwen.vision.blocks[pruner.units[vision].location!.layer]
        let (w, b) = (block.down.value, block.downBias.value)
        let (out, width, k) = (w.shape[0], w.shape[1], sizes[vision])
        let g = try reconstruction.grams.gram(vision).matrix
        func error(_ weight: (Int, Int) -> Float, _ bias: (Int) -> Float) -> Double {
            var total = 0.0
            for r in 0..<out {
                let d = (0..<width).map { Double(w.data[r * width + $0] - ($0 < k ? weight(r, $0) : 0)) } + [Double(b.data[r] - bias(r))]
                for i in 0...width { for j in 0...width { total += d[i] * g[i * (width + 1) + j] * d[j] } }
            }
            return total
        }
        let slicedError = error({ w.data[$0 * width + $1] }, { b.data[$0] })
        let refitError = error({ refitted.weight.data[$0 * k + $1] }, { refitted.bias!.data[$0] })
        #expect(refitError < 0.9 * slicedError, "re-fitted \(refitError) vs sliced \(slicedError)")
        let folder = directory + "/refitted"
        try pruner.write(budget: .fraction(0.5), allocation: "uniform", proposed: [], sizes: sizes, to: folder, reconstruction: reconstruction)
        let loaded = try Model.load(directory: folder)
        let batch = set.batch(0..<set.items.count)
        let graph = Graph(recording: false)
        let viaNested = try pruner.nested.model.logits(graph, batch, options: pruner.options(sizes: sizes, reconstruction: reconstruction)).tensor
        let viaFolder = try loaded.logits(graph, batch).tensor
        let scale = viaFolder.data.map(abs).max()!
        #expect(zip(viaNested.data, viaFolder.data).map { abs($0 - $1) }.max()! < 1e-5 * max(1, scale))
    }
}
