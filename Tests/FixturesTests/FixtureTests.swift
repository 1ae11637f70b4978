import Foundation
import Testing
import Tensor
import TestSupport
@testable import Fixtures
@testable import Models

let fixturesRoot = TestDatabase.repositoryRoot + "/Fixtures"

@Suite struct FixtureTests {
    static let committed = ["tiny-llama", "tiny-llava"]

    /// The committed side files are what `lop fixtures train` (and `lop fixtures inputs`) write, and the byte
    /// tokenizer file tokenizes as the fixtures' byte tokenizer.
    @Test(arguments: committed)
    func inputSideFilesAreTheBuildersAndTokenizeAsBytes(name: String) throws {
        let folder = fixturesRoot + "/" + name
        for (file, data) in Fixtures.inputFiles(name) {
            #expect(FileManager.default.contents(atPath: folder + "/" + file) == data, "\(name)/\(file) differs from what the builder writes")
        }
        #expect(FileManager.default.fileExists(atPath: folder + "/preprocessor_config.json") == (name == "tiny-llava"))
        let model = try Model.load(directory: folder)
        let inputs = try model.inputs()
        let text = "Q: what color is the shape at top left? A: red — naïve 東京 🦊"
        #expect(try inputs.tokenizer.encode(text, addSpecialTokens: false) == ByteTokenizer().encode(text))
        #expect(try inputs.tokenizer.encode(text) == [ByteTokenizer.bos] + ByteTokenizer().encode(text))
        #expect(try inputs.tokenizer.encode("<image>x</s>", addSpecialTokens: false) == [ByteTokenizer.image, 120, ByteTokenizer.eos])
        #expect(inputs.eos == ByteTokenizer.eos && inputs.tokenizer.decode(ByteTokenizer().encode(text)) == text)
    }

    @Test(arguments: committed)
    func heldOutMetricsMatchTheModelCard(name: String) throws {
        let folder = fixturesRoot + "/" + name
        let card = try String(contentsOfFile: folder + "/MODEL_CARD.md", encoding: .utf8)
        let stated = try #require(Fixtures.cardMetrics(card))
        let measured = try Fixtures.metrics(folder: folder)
        #expect(Fixtures.agree(stated, measured), "card \(stated), measured \(measured)")
        // Clearly better than chance, and layers differ in how much pruning them hurts.
        if let accuracy = measured.heldOutAccuracy {
            #expect(accuracy > 0.6, "chance is about 0.33")
        } else {
            #expect(measured.heldOutLoss < 0.5 * log(Double(ByteTokenizer.vocabularySize)))
        }
        let increases = measured.layerSensitivity.map { $0 - measured.heldOutLoss }
        #expect(increases.max()! - increases.min()! > 0.02, "\(increases)")
    }

    @Test func tinyLlamaLogitsMatchNumPy() throws {
        let folder = fixturesRoot + "/tiny-llama"
        let model = try Model.load(directory: folder)
        let heldOut = try TokenData.read(folder + "/" + Fixtures.heldOutFile, vocabularySize: ByteTokenizer.vocabularySize)[0]
        let tokens = [Array(heldOut[0..<48]), Array(heldOut[1000..<1048])]
        let ours = model.language.logits(Graph(recording: false), tokens: tokens).tensor
        #expect(ReferenceLogits.relativeError(ours, try ReferenceLogits.compute(model: folder, tokens: tokens)) < 1e-4)
    }

    @Test func tinyLlavaLogitsMatchNumPy() throws {
        let folder = fixturesRoot + "/tiny-llava"
        guard case .llava(let model) = try Model.load(directory: folder) else { Issue.record("not a LLaVA folder"); return }
        let examples = ShapesDataset.generate(count: 2, seed: Fixtures.shapesHeldOutSeed)
        let batch = Fixtures.answerSet(examples, config: model.config).batch(0..<2)
        let ours = try model.logits(Graph(recording: false), tokens: batch.rows, images: batch.images).tensor
        #expect(ReferenceLogits.relativeError(ours, try ReferenceLogits.compute(model: folder, tokens: batch.rows, images: batch.images?.pixels)) < 1e-4)
    }

    @Test func tinyLlavaAnswersFromTheImage() throws {
        // The kinds that can only be answered by reading the image are far above chance (a model blind to its
        // images answers from the question alone: about 0.33 for count and shape, 0.25 for colour and position).
        let card = try String(contentsOfFile: fixturesRoot + "/tiny-llava/MODEL_CARD.md", encoding: .utf8)
        let byKind = try #require(Fixtures.cardMetrics(card)).accuracyByKind
        let measured = try Fixtures.metrics(folder: fixturesRoot + "/tiny-llava").accuracyByKind
        #expect(Set(byKind.keys) == Set(measured.keys) && byKind.count == 5)
        for (kind, accuracy) in measured { #expect(abs(accuracy - (byKind[kind] ?? -1)) < 0.02, "\(kind)") }
        for kind in ["how many", "what color", "what shape", "where is"] { #expect((measured[kind] ?? 0) > 0.6, "\(kind)") }
    }

    @Test func recipeWritesAFolderItsCardDescribes() throws {
        // A few training steps by the fixture's own recipe, written as the recipe writes it (F16).
        let folder = NSTemporaryDirectory() + "lop-tiny-llava-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = try Fixtures.build("tiny-llava", to: folder, steps: 5) { _ in }
        let card = try String(contentsOfFile: folder + "/MODEL_CARD.md", encoding: .utf8)
        #expect(card.contains("image-feature penalty"))
        #expect(Fixtures.agree(try #require(Fixtures.cardMetrics(card)), try Fixtures.metrics(folder: folder)))
    }

    @Test func shapesDatasetIsDeterministicAndConsistent() {
        let a = ShapesDataset.generate(count: 300, seed: 9), b = ShapesDataset.generate(count: 300, seed: 9)
        #expect(a.map(\.question) == b.map(\.question) && a.map(\.image) == b.map(\.image))
        #expect(ShapesDataset.generate(count: 300, seed: 10).map(\.question) != a.map(\.question))
        for example in a {
            if example.question == "how many shapes?" { #expect(example.answer == String(example.shapes.count)) }
            #expect(Set(example.shapes.map(\.quadrant)).count == example.shapes.count)
            // Every shape's colour is drawn at its quadrant's centre.
            for shape in example.shapes {
                let half = ShapesDataset.imageSize / 2
                let (x, y) = ((shape.quadrant % 2) * half + half / 2, (shape.quadrant / 2) * half + half / 2)
                let red = example.image.data[(0 * ShapesDataset.imageSize + y) * ShapesDataset.imageSize + x]
                #expect(abs(red - (ShapesDataset.rgb[shape.color][0] - 0.5) / 0.5) < 1e-6)
            }
        }
        let kinds = Set(a.map { $0.question.split(separator: " ").prefix(2).joined(separator: " ") })
        #expect(kinds.count == 5)
    }

    @Test func cardsParseBackTheirOwnMetrics() {
        let metrics = FixtureMetrics(heldOutLoss: 1.2345, heldOutAccuracy: 0.875, layerSensitivity: [1.3, 1.25],
                                     accuracyByKind: ["how many": 0.5, "what color": 1])
        let card = Fixtures.cardTail(model: .llama(try! LlamaModel(config: LlamaConfig(vocabularySize: 8, hiddenSize: 4, intermediateSize: 4, layers: 1, heads: 1, kvHeads: 1),
                                                                   weights: RandomInitialization(seed: 1, layers: 1))),
                                     metrics: metrics, trainingSeconds: 1, name: "x").joined(separator: "\n")
        #expect(Fixtures.cardMetrics(card) == metrics)
        #expect(Fixtures.agree(metrics, metrics))
        var off = metrics
        off.heldOutLoss += 0.01
        #expect(!Fixtures.agree(off, metrics))
    }
}
