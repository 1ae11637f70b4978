import Foundation
import Testing
import Tensor
import TestSupport
@testable import Models

/// Fresh weights with every bias and norm scale non-trivial, so the reference comparison exercises them.
final class VariedInitialization: WeightSource {
    private var generator: SeededGenerator
    init(seed: UInt64) { generator = SeededGenerator(seed: seed) }
    func contains(_ name: String) -> Bool { true }
    func weight(_ name: String, shape: [Int], role: WeightRole, keepStored: Bool) throws -> Weight {
        switch role {
        case .normScale:
            let noise = Tensor.normal(shape, std: 0.2, generator: &generator)
            return .float(Tensor(shape: shape, data: noise.data.map { 1 + $0 }))
        case .bias: return .float(.normal(shape, std: 0.1, generator: &generator))
        case .embedding: return .float(.normal(shape, std: 0.5, generator: &generator))
        case .matrix: return .float(.normal(shape, std: 0.15, generator: &generator))
        }
    }
}

func smallLlama(_ modelType: String = "llama", kvHeads: Int = 2, tied: Bool = false) -> LlamaConfig {
    var c = LlamaConfig(vocabularySize: 37, hiddenSize: 24, intermediateSize: 40, layers: 2, heads: 4, kvHeads: kvHeads,
                        rmsNormEps: 1e-5, ropeTheta: 500, tiedEmbeddings: tied)
    c.modelType = modelType
    c.qkvBias = modelType == "qwen2"
    return c
}

func smallLlava() -> LlavaConfig {
    var text = smallLlama()
    text.vocabularySize = 40
    let vision = VisionConfig(hiddenSize: 16, intermediateSize: 32, layers: 3, heads: 2, imageSize: 8, patchSize: 4, channels: 3)
    return LlavaConfig(text: text, vision: vision, imageTokenIndex: 39, visionFeatureLayer: -2)
}

@Suite struct ModelTests {
    let directory = scratchDirectory()

    @Test(arguments: [("llama", 2, false), ("qwen2", 1, true), ("mistral", 4, false)])
    func decoderLogitsMatchNumPy(modelType: String, kvHeads: Int, tied: Bool) throws {
        let config = smallLlama(modelType, kvHeads: kvHeads, tied: tied)
        let model = try LlamaModel(config: config, weights: VariedInitialization(seed: 11))
        let folder = directory + "/\(modelType)"
        try Model.llama(model).write(to: folder)
        let tokens = [[1, 5, 9, 2, 36, 0, 7], [3, 3, 3, 8, 12, 30, 1]]
        let ours = Model.llama(try LlamaModel(config: LlamaConfig(json: Checkpoint(directory: folder).config), weights: Checkpoint(directory: folder)))
            .language.logits(Graph(recording: false), tokens: tokens).tensor
        #expect(ReferenceLogits.relativeError(ours, try ReferenceLogits.compute(model: folder, tokens: tokens)) < 1e-4)
    }

    @Test func llavaLogitsMatchNumPy() throws {
        let config = smallLlava()
        let model = try LlavaModel(config: config, weights: VariedInitialization(seed: 12))
        let folder = directory + "/llava"
        try Model.llava(model).write(to: folder, dtype: .bf16, maxShardBytes: 20_000)
        guard case .llava(let loaded) = try Model.load(directory: folder) else { Issue.record("not loaded as LLaVA"); return }
        let n = config.featuresPerImage
        let image = config.imageTokenIndex
        // Row 0: text, image run, text; row 1: no image; row 2: image run first.
        let tokens = [[1, 2] + Array(repeating: image, count: n) + [5, 6], Array(0..<(n + 4)), Array(repeating: image, count: n) + [7, 8, 9, 10]]
        var generator = SeededGenerator(seed: 4)
        let images = Tensor.normal([2, 3, 8, 8], std: 1, generator: &generator)
        let ours = try loaded.logits(Graph(recording: false), tokens: tokens, images: images).tensor
        #expect(ReferenceLogits.relativeError(ours, try ReferenceLogits.compute(model: folder, tokens: tokens, images: images)) < 1e-4)
        // The unused last vision layer was written back too, so the folder stays a complete checkpoint.
        #expect(try Checkpoint(directory: folder).contains("vision_tower.vision_model.encoder.layers.2.mlp.fc2.weight"))
    }

    @Test func writeLoadWriteKeepsTensorsAndLogits() throws {
        let config = smallLlava()
        let original = Model.llava(try LlavaModel(config: config, weights: VariedInitialization(seed: 13)))
        let (first, second) = (directory + "/first", directory + "/second")
        try original.write(to: first)
        let loaded = try Model.load(directory: first)
        try loaded.write(to: second)
        #expect(loaded.tensors == original.tensors)
        #expect(try Model.load(directory: second).tensors == original.tensors)
        #expect(FileManager.default.contents(atPath: first + "/model.safetensors") == FileManager.default.contents(atPath: second + "/model.safetensors"))
        let tokens = [Array(repeating: config.imageTokenIndex, count: config.featuresPerImage) + [1, 2]]
        var generator = SeededGenerator(seed: 5)
        let images = Tensor.normal([1, 3, 8, 8], std: 1, generator: &generator)
        guard case .llava(let a) = original, case .llava(let b) = try Model.load(directory: second) else { return }
        #expect(try a.logits(Graph(recording: false), tokens: tokens, images: images).tensor == b.logits(Graph(recording: false), tokens: tokens, images: images).tensor)
    }

    /// Running the leading k neurons in place equals a model whose FFN weights were sliced to k and written
    /// with per-layer widths in config.json.
    @Test func narrowedFFNEqualsASlicedCheckpoint() throws {
        let config = smallLlama()
        let model = try LlamaModel(config: config, weights: VariedInitialization(seed: 14))
        let keep = [13, 40]
        var tensors = Model.llama(model).tensors
        var sliced = config
        sliced.ffnSizes = keep
        for (i, k) in keep.enumerated() {
            let p = "model.layers.\(i).mlp."
            tensors[p + "gate_proj.weight"] = model.layers[i].gate.value.leading(rows: k).materialized()
            tensors[p + "up_proj.weight"] = model.layers[i].up.value.leading(rows: k).materialized()
            tensors[p + "down_proj.weight"] = model.layers[i].down.value.leading(columns: k).materialized()
        }
        let folder = directory + "/sliced"
        try Checkpoint.write(config: sliced.json, tensors: tensors, to: folder)
        let written = try Checkpoint(directory: folder)
        #expect(written.config[ffnSizesKey] == .array([.int(13), .int(40)]))
        #expect(written.config["intermediate_size"] == .int(40))
        let small = try LlamaModel(config: LlamaConfig(json: written.config), weights: written)
        let tokens = [[4, 8, 15, 16, 23, 36]]
        let narrowed = model.logits(Graph(recording: false), tokens: tokens, options: ForwardOptions(ffnKeep: keep)).tensor
        let reference = try ReferenceLogits.compute(model: folder, tokens: tokens)
        #expect(ReferenceLogits.relativeError(small.logits(Graph(recording: false), tokens: tokens).tensor, reference) < 1e-4)
        #expect(ReferenceLogits.relativeError(narrowed, reference) < 1e-4)
    }

    @Test func gradientsReachEveryWeight() throws {
        let model = try LlavaModel(config: smallLlava(), weights: VariedInitialization(seed: 15))
        let g = Graph(recording: true)
        let n = model.config.featuresPerImage
        var generator = SeededGenerator(seed: 6)
        let tokens = [Array(repeating: model.config.imageTokenIndex, count: n) + [1, 2, 3]]
        let logits = try model.logits(g, tokens: tokens, images: .normal([1, 3, 8, 8], std: 1, generator: &generator))
        g.backward(g.crossEntropy(logits, targets: Array(repeating: -100, count: n) + [2, 3, 4]))
        // Everything the forward pass touches gets a gradient: all but the vision layer after the feature layer
        // and the unused post-LayerNorm.
        let untouched = model.parameters.filter { $0.gradient == nil }.map(\.name)
        #expect(untouched.allSatisfy { $0.contains("encoder.layers.2.") || $0.contains("post_layernorm") }, "\(untouched)")
        #expect(untouched.count == 18)
    }

    /// The whole LLaVA graph (three rows, two images, padding) differentiated along a random direction per
    /// weight, against a central difference of the loss: catches a backward that is right op by op but wrong
    /// in how the model wires ops together (broadcast position embeddings, batched non-causal attention, …).
    @Test func llavaGradientsMatchFiniteDifferences() throws {
        let model = try LlavaModel(config: smallLlava(), weights: VariedInitialization(seed: 16))
        let n = model.config.featuresPerImage, image = model.config.imageTokenIndex
        let tokens = [[1] + Array(repeating: image, count: n) + [5, 6, 7], [1, 2, 3, 4, 5, 6] + Array(repeating: 0, count: n - 2),
                      Array(repeating: image, count: n) + [7, 8, 9, 10]]
        let targets = tokens.flatMap { row in row.indices.map { $0 % 3 == 0 ? -100 : (row[$0] * 7 + 3) % 39 } }
        var generator = SeededGenerator(seed: 7)
        let images = Tensor.normal([2, 3, 8, 8], std: 1, generator: &generator)
        func loss() throws -> Double {
            let g = Graph(recording: false)
            return Double(g.crossEntropy(try model.logits(g, tokens: tokens, images: images), targets: targets).tensor.scalar)
        }
        let g = Graph(recording: true)
        g.backward(g.crossEntropy(try model.logits(g, tokens: tokens, images: images), targets: targets))
        let checked = model.parameters.filter { $0.gradient != nil }
        #expect(checked.count == model.parameters.count - 18)
        for parameter in checked {
            // A unit direction: the step stays small enough for the central difference to be near exact.
            let draw = Tensor.normal(parameter.value.shape, std: 1, generator: &generator)
            let length = draw.data.reduce(0) { $0 + $1 * $1 }.squareRoot()
            let direction = Tensor(shape: draw.shape, data: draw.data.map { $0 / length })
            let analytic = zip(parameter.gradient!.data, direction.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let original = parameter.value, h: Float = 1e-2
            parameter.value = Tensor(shape: original.shape, data: zip(original.data, direction.data).map { $0 + h * $1 })
            let plus = try loss()
            parameter.value = Tensor(shape: original.shape, data: zip(original.data, direction.data).map { $0 - h * $1 })
            let minus = try loss()
            parameter.value = original
            let numeric = (plus - minus) / Double(2 * h)
            #expect(abs(analytic - numeric) <= 1e-2 * max(abs(numeric), 0.02), "\(parameter.name): analytic \(analytic), numeric \(numeric)")
        }
    }

    @Test func badConfigsNameTheKey() throws {
        var json = smallLlama().json.objectValue!
        json["num_key_value_heads"] = .int(3)
        #expect(throws: ModelConfigError(key: "num_key_value_heads", problem: "3 does not divide num_attention_heads 4")) { try LlamaConfig(json: .object(json)) }
        json["num_key_value_heads"] = .string("2")
        #expect { try LlamaConfig(json: .object(json)) } throws: { "\($0)".contains("num_key_value_heads: \"2\" is not an integer") }
        json["num_key_value_heads"] = .int(2)
        json[ffnSizesKey] = .array([.int(10)])
        #expect { try LlamaConfig(json: .object(json)) } throws: { "\($0)".contains("one width per layer (2)") }
        json[ffnSizesKey] = .array([.int(10), .int(41)])
        #expect { try LlamaConfig(json: .object(json)) } throws: { "\($0)".contains("41 is not a width in 1...40") }
        json[ffnSizesKey] = nil
        json["rope_scaling"] = .object(["type": .string("linear")])
        #expect { try LlamaConfig(json: .object(json)) } throws: { "\($0)".contains("rope_scaling") }
        var llava = smallLlava().json.objectValue!
        llava["image_token_index"] = .int(99)
        #expect { try LlavaConfig(json: .object(llava)) } throws: { "\($0)".contains("image_token_index: 99 is outside the vocabulary") }
        // A checkpoint whose tensor disagrees with its config names the tensor and both shapes.
        let folder = directory + "/mismatch"
        try Checkpoint.write(config: smallLlama().json, tensors: ["model.embed_tokens.weight": Tensor(zeros: [37, 23])], to: folder)
        #expect { try Model.load(directory: folder) } throws: { "\($0)".contains("\"model.embed_tokens.weight\" has shape [37, 23]; config.json implies [37, 24]") }
    }

    @Test func tokenFilesReadAndValidate() throws {
        let bin = directory + "/ids.bin", wide = directory + "/ids.u32.bin", lines = directory + "/ids.jsonl"
        try TokenData.writeBinary([1, 2, 65535], format: .uint16, to: bin)
        try TokenData.writeBinary([1, 70000], format: .uint32, to: wide)
        try Data("[1, 2]\n{\"tokens\": [3]}\n\n".utf8).write(to: URL(fileURLWithPath: lines))
        #expect(try TokenData.read(bin, vocabularySize: 65536) == [[1, 2, 65535]])
        #expect(try TokenData.read(wide, vocabularySize: 70001) == [[1, 70000]])
        #expect(try TokenData.read(lines, vocabularySize: 4) == [[1, 2], [3]])
        #expect { try TokenData.read(bin, vocabularySize: 100) } throws: { "\($0)".contains("id 65535, outside the vocabulary of 100") }
        try Data("[1, 2]\n[1, \"x\"]\n".utf8).write(to: URL(fileURLWithPath: lines))
        #expect { try TokenData.read(lines, vocabularySize: 4) } throws: { "\($0)".contains("line 2") }
        let tokenizer = ByteTokenizer()
        #expect(tokenizer.decode(tokenizer.encode("héllo") + [ByteTokenizer.eos]) == "héllo")
    }
}
