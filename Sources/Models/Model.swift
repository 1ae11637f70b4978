import Foundation
import Tensor

/// A model lop can load, run, prune and write: a text decoder, a LLaVA-style MLLM (LLaVA, LLaVA-OneVision) or
/// Qwen2.5-VL.
public enum Model {
    case llama(LlamaModel)
    case llava(LlavaModel)
    case qwenVL(QwenVLModel)

    /// Loads a Hugging Face model folder, choosing the architecture from `config.json`. Weight matrices of at
    /// least `storedMinimumElements` stay in their stored type.
    public static func load(directory: String, storedMinimumElements: Int = Checkpoint.defaultStoredMinimumElements) throws -> Model {
        let checkpoint = try Checkpoint(directory: directory, storedMinimumElements: storedMinimumElements)
        let model = try load(config: checkpoint.config, weights: checkpoint)
        let folder = ModelFolder(path: URL(fileURLWithPath: directory).standardizedFileURL.path)
        switch model {
        case .llama(let m): m.folder = folder
        case .llava(let m): m.folder = folder
        case .qwenVL(let m): m.folder = folder
        }
        return model
    }

    public static func load(config: JSON, weights: any WeightSource) throws -> Model {
        switch config["model_type"]?.stringValue {
        case "llava", "llava_onevision": return .llava(try LlavaModel(config: LlavaConfig(json: config), weights: weights))
        case "qwen2_5_vl": return .qwenVL(try QwenVLModel(config: QwenVLConfig(json: config), weights: weights))
        case "llama", "qwen2", "mistral", nil: return .llama(try LlamaModel(config: LlamaConfig(json: config), weights: weights))
        case let other?: throw ModelConfigError(key: "model_type", problem: "\"\(other)\" is not supported (llama, qwen2, mistral, llava, llava_onevision, qwen2_5_vl)")
        }
    }

    public var config: JSON {
        switch self {
        case .llama(let m): return m.config.json
        case .llava(let m): return m.config.json
        case .qwenVL(let m): return m.config.json
        }
    }

    /// The decoder whose FFNs are the main prunable units.
    public var language: LlamaModel {
        switch self {
        case .llama(let m): return m
        case .llava(let m): return m.language
        case .qwenVL(let m): return m.language
        }
    }

    public var parameters: [Parameter] {
        switch self {
        case .llama(let m): return m.parameters
        case .llava(let m): return m.parameters
        case .qwenVL(let m): return m.parameters
        }
    }

    /// Weights by Hugging Face name, as held (stored weights stay stored).
    public var weights: [String: Weight] {
        Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, $0.weight) })
    }

    /// Weights by Hugging Face name widened to Float (a copy of the whole model: for small models and tests).
    public var tensors: [String: Tensor] {
        Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, $0.value) })
    }

    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.weight.count } }

    /// The type the model's files store most of its weights in (F32 for a model built in memory): what a pruned
    /// copy is written in by default, so that it really is smaller.
    public var storageType: DType {
        var elements: [DType: Int] = [:]
        for p in parameters { elements[p.sourceType, default: 0] += p.weight.count }
        return elements.max { ($0.value, $0.key.rawValue) < ($1.value, $1.key.rawValue) }?.key ?? .f32
    }

    /// Bytes the weights occupy in memory as held.
    public var weightBytes: Int { parameters.reduce(0) { $0 + $1.weight.bytes } }

    /// Writes the model as a Hugging Face folder (temporary folder, then renamed), streaming one tensor at a time.
    public func write(to directory: String, dtype: DType = .f32, maxShardBytes: Int? = nil, extraFiles: [String: Data] = [:]) throws {
        try Checkpoint.write(config: config, weights: weights, dtype: dtype, maxShardBytes: maxShardBytes, extraFiles: extraFiles, to: directory)
    }
}

/// Equal-length token rows with their next-token targets (`-100` where no loss is taken) and, for an MLLM,
/// the images whose features the rows' image tokens take, in order.
public struct TokenBatch {
    public let rows: [[Int]]
    public let targets: [Int]
    public let images: ImageBatch?

    public init(rows: [[Int]], targets: [Int], images: ImageBatch? = nil) {
        precondition(targets.count == rows.count * (rows.first?.count ?? 0), "one target per row position")
        self.rows = rows
        self.targets = targets
        self.images = images
    }

    /// Images of one tile each, `[images, channels, size, size]`.
    public init(rows: [[Int]], targets: [Int], images: Tensor) {
        self.init(rows: rows, targets: targets, images: ImageBatch(tiles: images))
    }

    /// Language-modelling rows: each window's tokens predict the next one.
    public init(windows: [[Int]]) {
        self.init(rows: windows.map { Array($0.dropLast()) }, targets: windows.flatMap { Array($0.dropFirst()) })
    }

    /// Positions that count in the loss.
    public var counted: Int { targets.reduce(0) { $1 == -100 ? $0 : $0 + 1 } }
}

extension Model {
    /// Logits `[rows·length, vocabulary]` of a batch.
    public func logits(_ g: Graph, _ batch: TokenBatch, options: ForwardOptions = ForwardOptions()) throws -> Value {
        switch self {
        case .llama(let m):
            guard batch.images == nil else { throw ModelInputError(problem: "a text-only model was given images") }
            return m.logits(g, tokens: batch.rows, options: options)
        case .llava(let m):
            return try m.logits(g, tokens: batch.rows, images: batch.images, options: options)
        case .qwenVL(let m):
            return try m.logits(g, tokens: batch.rows, images: batch.images, options: options)
        }
    }

    /// The model's image side (nil for a text decoder).
    public var imageText: (any ImageTextModel)? {
        switch self {
        case .llama: return nil
        case .llava(let m): return m
        case .qwenVL(let m): return m
        }
    }

    /// Mean cross-entropy over the batch's counted positions (no gradient).
    public func loss(_ batch: TokenBatch, options: ForwardOptions = ForwardOptions()) throws -> Double {
        let g = Graph(recording: false)
        return Double(g.crossEntropy(try logits(g, batch, options: options), targets: batch.targets).tensor.scalar)
    }
}

/// What evaluation, calibration and search ask of a model that reads images (LLaVA, LLaVA-OneVision, Qwen2.5-VL).
public protocol ImageTextModel: AnyObject {
    /// The token whose positions take image features.
    var imageTokenIndex: Int { get }
    /// The text that stands for one image in a prompt, in the model's tokenizer (`<image>`, or Qwen's
    /// `<|vision_start|><|image_pad|><|vision_end|>`); its one image token becomes the image's run.
    func imageText(_ tokenizer: Tokenizer) throws -> String
    /// The image tokens a preprocessed image takes, or an error when it does not fit the vision tower.
    func imageTokens(for image: PreparedImage) throws -> Int
    func imageFeatures(_ g: Graph, images: ImageBatch, options: ForwardOptions) throws -> ImageFeatures
    /// Logits from features computed earlier for `images`.
    func logits(_ g: Graph, tokens: [[Int]], features: ImageFeatures?, images: ImageBatch?, options: ForwardOptions) throws -> Value
}

extension ImageTextModel {
    func token(_ id: Int, of tokenizer: Tokenizer, _ key: String) throws -> String {
        guard let text = tokenizer.token(of: id) else { throw ModelInputError(problem: "\(tokenizer.file): has no token for \(key) \(id)") }
        return text
    }
}

extension LlavaModel: ImageTextModel {
    public var imageTokenIndex: Int { config.imageTokenIndex }
    public func imageText(_ tokenizer: Tokenizer) throws -> String { try token(config.imageTokenIndex, of: tokenizer, "image_token_index") }
    public func imageTokens(for image: PreparedImage) throws -> Int {
        let (c, s) = (config.vision.channels, config.vision.imageSize)
        guard image.grid == nil, Array(image.pixels.shape.dropFirst()) == [c, s, s] else {
            throw ModelInputError(problem: "the preprocessing makes \(Array(image.pixels.shape.dropFirst())) pixel tensors; the vision tower takes [\(c), \(s), \(s)]")
        }
        return try config.imageTokens(for: image.layout)
    }
    public func logits(_ g: Graph, tokens: [[Int]], features: ImageFeatures?, images: ImageBatch?, options: ForwardOptions) throws -> Value {
        try logits(g, tokens: tokens, features: features, options: options)
    }
}

extension QwenVLModel: ImageTextModel {
    public var imageTokenIndex: Int { config.imageTokenIndex }
    public func imageText(_ tokenizer: Tokenizer) throws -> String {
        try token(config.visionStartToken, of: tokenizer, "vision_start_token_id") + token(config.imageTokenIndex, of: tokenizer, "image_token_id")
            + token(config.visionEndToken, of: tokenizer, "vision_end_token_id")
    }
    public func imageTokens(for image: PreparedImage) throws -> Int {
        guard image.grid != nil, image.pixels.shape.count == 2, image.pixels.shape[1] == config.vision.patchWidth else {
            throw ModelInputError(problem: "the preprocessing makes \(image.pixels.shape) pixels; Qwen2.5-VL's encoder takes patches of \(config.vision.patchWidth) values with their grid (Qwen2-VL's image processor)")
        }
        return try config.imageTokens(for: image.layout)
    }
    public func logits(_ g: Graph, tokens: [[Int]], features: ImageFeatures?, images: ImageBatch?, options: ForwardOptions) throws -> Value {
        try logits(g, tokens: tokens, features: features, grids: images?.layouts.map { $0.grid! } ?? [], options: options)
    }
}
