import Foundation
import Testing
import Tensor
import TestSupport
@testable import Models

/// Models run from their stored F16/BF16 weights: the same logits as the widened (all-Float) path, two bytes a
/// value in memory, and files that change under lop reported, never faulted on.
@Suite struct StoredWeightsTests {
    let directory = scratchDirectory()

    /// Logits of `model` on `tokens` (and images), in a no-gradient graph.
    func logits(_ model: Model, _ tokens: [[Int]], images: Tensor? = nil) throws -> Tensor {
        try model.logits(Graph(recording: false), TokenBatch(rows: tokens, targets: Array(repeating: -100, count: tokens.count * tokens[0].count), images: images.map { ImageBatch(tiles: $0) })).tensor
    }

    /// The same model with every weight widened to Float (the engine's path before weights stayed stored).
    func widened(_ model: Model) -> Model {
        for parameter in model.parameters { parameter.makeTrainable() }
        return model
    }

    func expectClose(_ a: Tensor, _ b: Tensor, relative: Float = 1e-5) {
        #expect(a.shape == b.shape)
        let scale = max(b.data.map { abs($0) }.max() ?? 1, 1e-6)
        #expect(a.maxAbsDifference(b) <= relative * scale, "largest difference \(a.maxAbsDifference(b)) of scale \(scale)")
    }

    @Test func smallMatricesAreWidenedAtLoad() throws {
        let fixture = try Model.load(directory: TestDatabase.repositoryRoot + "/Fixtures/tiny-llama")
        #expect(fixture.parameters.allSatisfy { $0.stored == nil })
        #expect(fixture.storageType == .f16)  // widened, but still known to come from F16
        let config = LlamaConfig(vocabularySize: 300, hiddenSize: 512, intermediateSize: 512, layers: 1, heads: 8, kvHeads: 2)
        let folder = directory + "/threshold"
        try RandomCheckpoint.write(config, dtype: .bf16, seed: 7, to: folder)
        // q is 512 × 512 = 256 K elements, the threshold: kept; k is 128 × 512: widened.
        let layer = try Model.load(directory: folder).language.layers[0]
        #expect(layer.q.stored?.dtype == .bf16 && layer.gate.stored != nil && layer.k.stored == nil)
    }

    @Test func fixturesFromStoredWeightsMatchTheWidenedPath() throws {
        let llamaFolder = TestDatabase.repositoryRoot + "/Fixtures/tiny-llama"
        let stored = try Model.load(directory: llamaFolder, storedMinimumElements: 0)
        #expect(stored.language.layers[0].gate.stored?.dtype == .f16)
        let tokens = [Array(0..<40).map { ($0 * 37) % 256 }, Array(0..<40).map { ($0 * 11 + 3) % 256 }]
        expectClose(try logits(stored, tokens), try logits(widened(try Model.load(directory: llamaFolder)), tokens))

        let llavaFolder = TestDatabase.repositoryRoot + "/Fixtures/tiny-llava"
        let llava = try Model.load(directory: llavaFolder, storedMinimumElements: 0)
        guard case .llava(let m) = llava else { Issue.record("tiny-llava is not a LLaVA model"); return }
        #expect(m.vision.layers[0].fc1.stored != nil && m.projector1.stored != nil)
        let c = m.config
        let row = [1, 2] + Array(repeating: c.imageTokenIndex, count: c.featuresPerImage) + [3, 4, 5]
        var generator = SeededGenerator(seed: 9)
        let images = Tensor.normal([1, c.vision.channels, c.vision.imageSize, c.vision.imageSize], std: 1, generator: &generator)
        expectClose(try logits(llava, [row], images: images), try logits(widened(try Model.load(directory: llavaFolder)), [row], images: images))
    }

    @Test(arguments: [DType.bf16, .f16, .f32])
    func randomModelFromStoredWeightsMatchesTheWidenedPath(dtype: DType) throws {
        let config = LlamaConfig(vocabularySize: 300, hiddenSize: 64, intermediateSize: 176, layers: 2, heads: 4, kvHeads: 2)
        let folder = directory + "/random-\(dtype.rawValue)"
        let bytes = try RandomCheckpoint.write(config, dtype: dtype, seed: 3, to: folder)
        let stored = try Model.load(directory: folder, storedMinimumElements: 0)
        // Two bytes a value for half types: everything but the small Float norm scales stays in the stored type.
        let norms = (2 * config.layers + 1) * config.hiddenSize
        #expect(stored.weightBytes == bytes - norms * dtype.byteSize + norms * 4)
        let tokens = [Array(0..<33).map { ($0 * 97) % 300 }]
        expectClose(try logits(stored, tokens), try logits(widened(try Model.load(directory: folder)), tokens))
    }

    /// `torch_dtype` says what the weights are: in the committed fixtures, and in whatever lop writes.
    @Test func configsNameTheTypeTheWeightsAreStoredIn() throws {
        for name in ["tiny-llama", "tiny-llava"] {
            let checkpoint = try Checkpoint(directory: TestDatabase.repositoryRoot + "/Fixtures/" + name)
            #expect(checkpoint.config["torch_dtype"]?.stringValue == "float16" && checkpoint.dtype("lm_head.weight") ?? checkpoint.dtype("language_model.lm_head.weight") == .f16, "\(name)")
        }
        let model = try Model.load(directory: TestDatabase.repositoryRoot + "/Fixtures/tiny-llama")
        for dtype in DType.allCases {
            let folder = directory + "/named-\(dtype.rawValue)"
            try model.write(to: folder, dtype: dtype)
            let written = try Checkpoint(directory: folder)
            #expect(written.config["torch_dtype"]?.stringValue == dtype.torchName && written.dtype("model.layers.0.mlp.up_proj.weight") == dtype)
        }
    }

    @Test func aFileTruncatedAfterOpeningIsAnErrorNamingItAndLoadedWeightsStayValid() throws {
        let config = LlamaConfig(vocabularySize: 100, hiddenSize: 32, intermediateSize: 64, layers: 1, heads: 2, kvHeads: 1)
        let folder = directory + "/truncated"
        try RandomCheckpoint.write(config, dtype: .bf16, seed: 4, to: folder)
        let loaded = try Model.load(directory: folder, storedMinimumElements: 0)
        let before = try logits(loaded, [[1, 2, 3, 4]])
        let opened = try Checkpoint(directory: folder)
        let path = folder + "/" + Checkpoint.singleFile
        let size = try #require(FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(truncate(path, off_t(size / 2)) == 0)
        // The tensors past the new end: an error naming the file and the tensor, not a SIGBUS.
        var failure: SafeTensorsError?
        for name in opened.names {
            do { _ = try opened.tensor(name) } catch let error as SafeTensorsError { failure = error; break }
        }
        let error = try #require(failure)
        #expect(error.file == path && error.tensor != nil && error.problem.contains("truncated"), "\(error)")
        #expect(throws: (any Error).self) { try Model.load(directory: folder) }
        // What was read before the file changed is lop's own memory: the model still computes the same.
        #expect(try logits(loaded, [[1, 2, 3, 4]]) == before)
    }
}
