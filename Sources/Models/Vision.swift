import Foundation
import LopCore
import Tensor

extension Graph {
    /// An activation by its Hugging Face name.
    public func activation(_ x: Value, _ kind: Activation) -> Value {
        switch kind {
        case .gelu: return geluExact(x)
        case .geluTanh, .geluNew: return geluTanh(x)
        case .quickGelu: return mul(x, sigmoid(scale(x, by: 1.702)))  // CLIP's x·σ(1.702x)
        case .silu: return silu(x)
        case .relu: return relu(x)
        }
    }
}

/// A CLIP/ViT vision encoder (`CLIPVisionModel` weights): patch embedding (a stride-`patch` convolution, run
/// as one product over flattened patches), class token, learned positions, pre-LayerNorm, pre-LN blocks with
/// biased attention projections and an `fc1`/`fc2` MLP.
public final class VisionEncoder {
    public struct Layer {
        public let norm1Weight, norm1Bias, q, qBias, k, kBias, v, vBias, out, outBias: Parameter
        public let norm2Weight, norm2Bias, fc1, fc1Bias, fc2, fc2Bias: Parameter
    }

    public let config: VisionConfig
    public let classEmbedding, patchEmbedding, positionEmbedding, preNormWeight, preNormBias: Parameter
    public let layers: [Layer]
    /// The final LayerNorm (`post_layernorm`), kept so written checkpoints stay complete; LLaVA does not use it.
    public let postNormWeight, postNormBias: Parameter?
    /// Layers a forward pass runs: hidden states after later ones are never used.
    public let layersUsed: Int
    public let parameters: [Parameter]

    /// Loads `prefix + "embeddings.…"` etc. (`vision_model.` for a `CLIPVisionModel` checkpoint). Every layer is
    /// loaded (and written back), but forward passes run only the first `layersUsed` (a LLaVA feature layer before
    /// the last leaves later ones unused).
    public init(config: VisionConfig, weights source: any WeightSource, prefix: String = "vision_model.", layersUsed: Int? = nil) throws {
        self.config = config
        var r = WeightReader(source, prefix: prefix)
        let (h, c, p) = (config.hiddenSize, config.channels, config.patchSize)
        classEmbedding = try r.take("embeddings.class_embedding", [h], .embedding)
        patchEmbedding = try r.take("embeddings.patch_embedding.weight", [h, c, p, p], .matrix)
        positionEmbedding = try r.take("embeddings.position_embedding.weight", [config.patchCount + 1, h], .embedding)
        preNormWeight = try r.take("pre_layrnorm.weight", [h], .normScale)  // sic: Hugging Face's spelling
        preNormBias = try r.take("pre_layrnorm.bias", [h], .bias)
        var layers: [Layer] = []
        self.layersUsed = layersUsed ?? config.layers
        for i in 0..<config.layers {
            let l = "encoder.layers.\(i)."
            let f = config.ffnSizes[i]
            layers.append(Layer(
                norm1Weight: try r.take(l + "layer_norm1.weight", [h], .normScale),
                norm1Bias: try r.take(l + "layer_norm1.bias", [h], .bias),
                q: try r.take(l + "self_attn.q_proj.weight", [h, h], .matrix, stored: true),
                qBias: try r.take(l + "self_attn.q_proj.bias", [h], .bias),
                k: try r.take(l + "self_attn.k_proj.weight", [h, h], .matrix, stored: true),
                kBias: try r.take(l + "self_attn.k_proj.bias", [h], .bias),
                v: try r.take(l + "self_attn.v_proj.weight", [h, h], .matrix, stored: true),
                vBias: try r.take(l + "self_attn.v_proj.bias", [h], .bias),
                out: try r.take(l + "self_attn.out_proj.weight", [h, h], .matrix, stored: true),
                outBias: try r.take(l + "self_attn.out_proj.bias", [h], .bias),
                norm2Weight: try r.take(l + "layer_norm2.weight", [h], .normScale),
                norm2Bias: try r.take(l + "layer_norm2.bias", [h], .bias),
                fc1: try r.take(l + "mlp.fc1.weight", [f, h], .matrix, stored: true),
                fc1Bias: try r.take(l + "mlp.fc1.bias", [f], .bias),
                fc2: try r.take(l + "mlp.fc2.weight", [h, f], .matrix, stored: true),
                fc2Bias: try r.take(l + "mlp.fc2.bias", [h], .bias)))
        }
        self.layers = layers
        let hasPostNorm = source.contains(prefix + "post_layernorm.weight")
        postNormWeight = try r.optional("post_layernorm.weight", [h], .normScale, when: hasPostNorm)
        postNormBias = try r.optional("post_layernorm.bias", [h], .bias, when: hasPostNorm)
        parameters = r.loaded
    }

    /// Hidden states `[images, 1 + patches, hidden]` after the first `layersUsed` layers, for images `[images, channels,
    /// size, size]` (already normalised). `options.visionKeep` narrows each layer's MLP to its leading neurons.
    public func forward(_ g: Graph, images: Tensor, options: ForwardOptions = ForwardOptions()) -> Value {
        let (h, count) = (config.hiddenSize, images.shape[0])
        precondition(images.shape == [count, config.channels, config.imageSize, config.imageSize],
                     "images have shape \(images.shape), the encoder takes [n, \(config.channels), \(config.imageSize), \(config.imageSize)]")
        let patchWidth = config.channels * config.patchSize * config.patchSize
        let patches = g.constant(Self.patches(images, patchSize: config.patchSize))
        let kernel = g.reshape(g.parameter(patchEmbedding), [h, patchWidth])
        let embedded = g.reshape(g.linear(patches, kernel), [count, config.patchCount, h])
        let cls = g.reshape(g.parameter(classEmbedding), [1, 1, h])
        var x = g.concat([g.concat(Array(repeating: cls, count: count), axis: 0), embedded], axis: 1)
        x = g.add(x, g.parameter(positionEmbedding))
        let eps = Float(config.layerNormEps)
        x = g.layerNorm(x, weight: g.parameter(preNormWeight), bias: g.parameter(preNormBias), eps: eps)
        for (i, layer) in layers.prefix(layersUsed).enumerated() {
            let a = g.layerNorm(x, weight: g.parameter(layer.norm1Weight), bias: g.parameter(layer.norm1Bias), eps: eps)
            let q = g.linear(a, layer.q, bias: layer.qBias)
            let k = g.linear(a, layer.k, bias: layer.kBias)
            let v = g.linear(a, layer.v, bias: layer.vBias)
            let attended = g.attention(q, k, v, heads: config.heads, kvHeads: config.heads, causal: false)
            x = g.add(x, g.linear(attended, layer.out, bias: layer.outBias))
            let m = g.layerNorm(x, weight: g.parameter(layer.norm2Weight), bias: g.parameter(layer.norm2Bias), eps: eps)
            let width = layer.fc1.shape[0]
            let keep = options.visionKeep?[i] ?? width
            precondition(keep >= 0 && keep <= width, "vision layer \(i) keeps \(keep) of \(width) MLP neurons")
            let hidden = g.activation(g.linear(m, layer.fc1, bias: layer.fc1Bias, rows: keep), config.activation)
            if let output = options.visionOutput?[i] {
                precondition(output.weight.shape == [layer.fc2.shape[0], keep], "vision layer \(i): a replacement fc2 must be [\(layer.fc2.shape[0]), \(keep)]")
                x = g.add(x, g.add(g.linear(hidden, output.weight.leading(rows: nil, columns: nil)), g.constant(output.bias)))
            } else {
                x = g.add(x, g.linear(hidden, layer.fc2, bias: layer.fc2Bias, columns: keep))
            }
            options.observe?(FFNObservation(tower: .vision, layer: i, input: m.tensor, hidden: hidden.tensor))
        }
        return x
    }

    /// `[images·patches, channels·patch·patch]`: each patch flattened channel-major, as the convolution
    /// kernel `[hidden, channels, patch, patch]` is laid out; patches in row-major grid order.
    static func patches(_ images: Tensor, patchSize p: Int) -> Tensor {
        let (count, channels, size) = (images.shape[0], images.shape[1], images.shape[2])
        let side = size / p
        let width = channels * p * p
        var out = [Float](repeating: 0, count: count * side * side * width)
        for n in 0..<count {
            for py in 0..<side {
                for px in 0..<side {
                    let row = ((n * side + py) * side + px) * width
                    for c in 0..<channels {
                        for y in 0..<p {
                            let source = ((n * channels + c) * size + py * p + y) * size + px * p
                            let target = row + (c * p + y) * p
                            for x in 0..<p { out[target + x] = images.data[source + x] }
                        }
                    }
                }
            }
        }
        return Tensor(shape: [count * side * side, width], data: out)
    }
}

/// Where a LLaVA checkpoint's tensors are: the Hub's classic names, transformers 4.52's class names, or what
/// transformers 5 writes. A checkpoint's layout is told from its tensor names; a written copy keeps it (every
/// parameter keeps the name it was read under).
public struct LlavaLayout: Sendable, Equatable {
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

    /// The tensors whose presence identifies a layout.
    var markers: [String] { [vision + "embeddings.patch_embedding.weight", projector + "linear_1.weight", language.body + "embed_tokens.weight"] }

    /// The layout of `source`'s names, or an error listing what each layout expects.
    static func detect(_ source: any WeightSource) throws -> LlavaLayout {
        if let found = all.first(where: { $0.markers.allSatisfy(source.contains) }) { return found }
        let expected = all.map { "\($0.name): \($0.markers.joined(separator: ", "))" }.joined(separator: "; ")
        throw ModelConfigError(key: "(tensor names)", problem: "the checkpoint matches no LLaVA layout lop reads; expected one of: \(expected)")
    }
}

/// A LLaVA-style MLLM (`LlavaForConditionalGeneration` weights, any `LlavaLayout`): vision encoder → two-layer MLP
/// projector → Llama decoder, with each image's features written over a run of image tokens in the text.
public final class LlavaModel {
    public let config: LlavaConfig
    public let layout: LlavaLayout
    public let vision: VisionEncoder
    public let projector1, projector2: Parameter
    /// nil when the config says `multimodal_projector_bias: false`.
    public let projector1Bias, projector2Bias: Parameter?
    public let language: LlamaModel
    public var parameters: [Parameter] { vision.parameters + [projector1, projector1Bias, projector2, projector2Bias].compactMap { $0 } + language.parameters }
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
        language = try LlamaModel(config: config.text, weights: source, names: layout.language)
    }

    /// Projected image features `[images, featuresPerImage, textHidden]`.
    public func imageFeatures(_ g: Graph, images: Tensor, options: ForwardOptions = ForwardOptions()) -> Value {
        precondition(options.visionKeep.map { $0.count == vision.layersUsed } ?? true, "visionKeep needs one entry per vision layer run")
        let states = vision.forward(g, images: images, options: options)
        let selected = config.visionFeatureSelect == "full" ? states : g.slice(states, axis: 1, 1..<states.shape[1])
        let hidden = g.activation(g.linear(selected, projector1, bias: projector1Bias), config.projectorActivation)
        return g.linear(hidden, projector2, bias: projector2Bias)
    }

    /// Text embeddings with each row's run of image tokens replaced by that row's image features. Rows with
    /// `features` index nil have no image; a row with an image holds exactly one contiguous run of
    /// `featuresPerImage` image tokens.
    public func embed(_ g: Graph, tokens: [[Int]], features: Value?, imageOfRow: [Int?]) throws -> Value {
        let text = language.embed(g, tokens: tokens)
        let (length, n) = (tokens.first?.count ?? 0, config.featuresPerImage)
        var rows: [Value] = []
        for (b, row) in tokens.enumerated() {
            let positions = row.indices.filter { row[$0] == config.imageTokenIndex }
            let textRow = g.slice(text, axis: 0, b..<(b + 1))
            guard let image = imageOfRow[b], let features else {
                guard positions.isEmpty else { throw ModelInputError(problem: "row \(b) has image tokens but no image") }
                rows.append(textRow)
                continue
            }
            guard let start = positions.first, positions.count == n, positions.last == start + n - 1 else {
                throw ModelInputError(problem: "row \(b) must hold one run of \(n) image tokens (id \(config.imageTokenIndex)), found \(positions.count)")
            }
            let imageRow = g.slice(features, axis: 0, image..<(image + 1))
            var parts: [Value] = []
            if start > 0 { parts.append(g.slice(textRow, axis: 1, 0..<start)) }
            parts.append(imageRow)
            if start + n < length { parts.append(g.slice(textRow, axis: 1, (start + n)..<length)) }
            rows.append(parts.count == 1 ? parts[0] : g.concat(parts, axis: 1))
        }
        return rows.count == 1 ? rows[0] : g.concat(rows, axis: 0)
    }

    /// Logits `[batch·length, vocabulary]`. `images` holds one image per row that has one, in row order.
    public func logits(_ g: Graph, tokens: [[Int]], images: Tensor?, options: ForwardOptions = ForwardOptions()) throws -> Value {
        let features = images.map { imageFeatures(g, images: $0, options: options) }
        return try logits(g, tokens: tokens, features: features, options: options)
    }

    /// Logits from image features computed earlier (a search that prunes only the language model computes
    /// them once).
    public func logits(_ g: Graph, tokens: [[Int]], features: Value?, options: ForwardOptions = ForwardOptions()) throws -> Value {
        var next = 0
        let imageOfRow: [Int?] = tokens.map { row in
            guard row.contains(config.imageTokenIndex) else { return nil }
            defer { next += 1 }
            return next
        }
        guard next == (features?.shape[0] ?? 0) else {
            throw ModelInputError(problem: "\(next) rows hold image tokens but \(features?.shape[0] ?? 0) images were given")
        }
        return language.logits(g, embeddings: try embed(g, tokens: tokens, features: features, imageOfRow: imageOfRow), options: options)
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
