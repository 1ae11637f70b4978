import Foundation
import LopCore
import Tensor

/// How one architecture's checkpoints name their tensors, told apart by which marker tensors a checkpoint holds;
/// a written copy keeps the layout it was read in (every parameter keeps the name it was read under).
protocol TensorLayout: Sendable, Equatable {
    /// Every layout lop reads, in the order they are tried.
    static var all: [Self] { get }
    /// The architecture, for errors.
    static var architecture: String { get }
    var name: String { get }
    /// The tensors whose presence identifies the layout.
    var markers: [String] { get }
}

extension TensorLayout {
    /// The layout of `source`'s names, or an error listing what each layout expects.
    static func detect(_ source: any WeightSource) throws -> Self {
        if let found = all.first(where: { $0.markers.allSatisfy(source.contains) }) { return found }
        let expected = all.map { "\($0.name): \($0.markers.joined(separator: ", "))" }.joined(separator: "; ")
        throw ModelConfigError(key: "(tensor names)", problem: "the checkpoint matches no \(architecture) layout lop reads; expected one of: \(expected)")
    }
}

/// Where a LLaVA checkpoint's tensors are: the Hub's classic names, transformers 4.52's class names, or what
/// transformers 5 writes.
public struct LlavaLayout: TensorLayout {
    static let architecture = "LLaVA"
    public let name: String
    /// Before `embeddings.`, `encoder.layers.N.`, `pre_layrnorm.`.
    public let vision: String
    /// Before `linear_1.`, `linear_2.`.
    public let projector: String
    public let language: LlamaModel.Names

    public static let all = [
        LlavaLayout(name: "Hub (language_model.model.*, vision_tower.vision_model.*)", vision: "vision_tower.vision_model.", projector: "multi_modal_projector.",
                    language: .init(body: "language_model.model.", head: "language_model.lm_head.weight")),
        LlavaLayout(name: "transformers 5 (language_model.model.*, vision_tower.*)", vision: "vision_tower.", projector: "multi_modal_projector.",
                    language: .init(body: "language_model.model.", head: "language_model.lm_head.weight")),
        LlavaLayout(name: "transformers 4.52 (model.language_model.*, lm_head.*)", vision: "model.vision_tower.vision_model.",
                    projector: "model.multi_modal_projector.", language: .init(body: "model.language_model.", head: "lm_head.weight")),
    ]

    /// LLaVA-OneVision's `image_newline`, beside the projector.
    public var newline: String { String(projector.dropLast("multi_modal_projector.".count)) + "image_newline" }

    var markers: [String] { [vision + "embeddings.patch_embedding.weight", projector + "linear_1.weight", language.body + "embed_tokens.weight"] }
}

/// A LLaVA-style MLLM (`LlavaForConditionalGeneration` or `LlavaOnevisionForConditionalGeneration` weights, any
/// `LlavaLayout`): vision encoder → two-layer MLP projector → Llama/Qwen2 decoder, with the image features
/// written over the text's image tokens in order, as transformers' `masked_scatter` does.
public final class LlavaModel {
    public let config: LlavaConfig
    public let layout: LlavaLayout
    public let vision: VisionEncoder
    public let projector1, projector2: Parameter
    /// nil when the config says `multimodal_projector_bias: false`.
    public let projector1Bias, projector2Bias: Parameter?
    /// LLaVA-OneVision's learned end-of-row feature (nil for LLaVA).
    public let imageNewline: Parameter?
    public let language: LlamaModel
    public var parameters: [Parameter] {
        vision.parameters + [projector1, projector1Bias, projector2, projector2Bias, imageNewline].compactMap { $0 } + language.parameters
    }
    /// Where it was loaded from (nil: built in memory).
    public internal(set) var folder: ModelFolder?

    /// Loads a checkpoint in `layout` (nil: told from the tensor names; a source that holds every name, such as a
    /// random initialisation, gets the Hub layout).
    public init(config: LlavaConfig, weights source: any WeightSource, layout: LlavaLayout? = nil) throws {
        self.config = config
        let layout = try layout ?? LlavaLayout.detect(source)
        self.layout = layout
        vision = try VisionEncoder(config: config.vision, weights: source, prefix: layout.vision, layersUsed: config.visionLayersUsed)
        var r = WeightReader(source, prefix: layout.projector)
        let (v, t) = (config.vision.hiddenSize, config.text.hiddenSize)
        projector1 = try r.take("linear_1.weight", [t, v], .matrix, stored: true)
        projector1Bias = try r.optional("linear_1.bias", [t], .bias, when: config.projectorBias)
        projector2 = try r.take("linear_2.weight", [t, t], .matrix, stored: true)
        projector2Bias = try r.optional("linear_2.bias", [t], .bias, when: config.projectorBias)
        var n = WeightReader(source, prefix: "")
        imageNewline = try n.optional(layout.newline, [t], .embedding, when: config.anyRes != nil)
        language = try LlamaModel(config: config.text, weights: source, names: layout.language)
    }

    /// Projected image features `[all features, textHidden]`, image after image in the batch's order, and how
    /// many each image has (its image tokens in the text).
    public func imageFeatures(_ g: Graph, images: ImageBatch, options: ForwardOptions = ForwardOptions()) throws -> ImageFeatures {
        precondition(options.visionKeep.map { $0.count == vision.layersUsed } ?? true, "visionKeep needs one entry per vision layer run")
        let counts = try images.layouts.map { layout throws(ModelInputError) in try config.imageTokens(for: layout) }
        let states = vision.forward(g, images: images.pixels, options: options)
        let selected = config.visionFeatureSelect == "full" ? states : g.slice(states, axis: 1, 1..<states.shape[1])
        let hidden = g.activation(g.linear(selected, projector1, bias: projector1Bias), config.projectorActivation)
        let projected = g.linear(hidden, projector2, bias: projector2Bias)
        let perTile = config.featuresPerImage, t = config.text.hiddenSize
        let flat = g.reshape(projected, [images.pixels.shape[0] * perTile, t])
        guard let anyRes = config.anyRes, let imageNewline else { return ImageFeatures(value: flat, counts: counts) }
        // Every packed feature is a mix of rows of `flat`, or the newline appended as its last row.
        let newlineRow = flat.shape[0]
        var mixes: [[(index: Int, weight: Float)]] = []
        var tile = 0
        for layout in images.layouts {
            let base = tile * perTile
            mixes += (0..<perTile).map { [(base + $0, 1)] }
            if layout.tiles > 1 {
                let grid = base + perTile
                for packed in anyRes.packing(height: layout.height, width: layout.width, side: config.vision.patchesPerSide) {
                    switch packed {
                    case .newline: mixes.append([(newlineRow, 1)])
                    case .mix(let terms): mixes.append(terms.map { (grid + $0.index, $0.weight) })
                    }
                }
            } else {
                mixes.append([(newlineRow, 1)])
            }
            tile += layout.tiles
        }
        let table = g.concat([flat, g.reshape(g.parameter(imageNewline), [1, t])], axis: 0)
        return ImageFeatures(value: g.mixRows(table, mixes), counts: counts)
    }

    /// Text embeddings with the image tokens replaced by image features (`ImageFeatures.fill`).
    public func embed(_ g: Graph, tokens: [[Int]], features: ImageFeatures?) throws -> Value {
        try ImageFeatures.fill(g, text: language.embed(g, tokens: tokens), tokens: tokens, imageToken: config.imageTokenIndex, features: features)
    }

    /// Logits `[batch·length, vocabulary]`. `images` holds the images of the rows that have image tokens, in order.
    public func logits(_ g: Graph, tokens: [[Int]], images: ImageBatch?, options: ForwardOptions = ForwardOptions()) throws -> Value {
        let features = try images.map { try imageFeatures(g, images: $0, options: options) }
        return try logits(g, tokens: tokens, features: features, options: options)
    }

    /// The same for images of one tile each, `[images, channels, size, size]`.
    public func logits(_ g: Graph, tokens: [[Int]], images: Tensor, options: ForwardOptions = ForwardOptions()) throws -> Value {
        try logits(g, tokens: tokens, images: ImageBatch(tiles: images), options: options)
    }

    /// Logits from image features computed earlier (a search that prunes only the language model computes
    /// them once).
    public func logits(_ g: Graph, tokens: [[Int]], features: ImageFeatures?, options: ForwardOptions = ForwardOptions()) throws -> Value {
        language.logits(g, embeddings: try embed(g, tokens: tokens, features: features), options: options)
    }
}

/// Token rows or images that do not fit the model.
public struct ModelInputError: Error, CustomStringConvertible {
    public let problem: String
    public var description: String { problem }
}

extension ModelInputError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
