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

/// A ViT vision encoder, CLIP's (`CLIPVisionModel` weights) or SigLIP's (`SiglipVisionModel`): patch embedding
/// (a stride-`patch` convolution, run as one product over flattened patches; biased in SigLIP), CLIP's class
/// token, learned positions, CLIP's pre-LayerNorm, pre-LN blocks with biased attention projections and an
/// `fc1`/`fc2` MLP.
public final class VisionEncoder {
    public struct Layer {
        public let norm1Weight, norm1Bias, q, qBias, k, kBias, v, vBias, out, outBias: Parameter
        public let norm2Weight, norm2Bias, fc1, fc1Bias, fc2, fc2Bias: Parameter
    }

    public let config: VisionConfig
    public let patchEmbedding, positionEmbedding: Parameter
    /// CLIP's class token and pre-LayerNorm (nil for SigLIP).
    public let classEmbedding, preNormWeight, preNormBias: Parameter?
    /// SigLIP's convolution bias (nil for CLIP).
    public let patchBias: Parameter?
    public let layers: [Layer]
    /// The final LayerNorm (`post_layernorm`) and SigLIP's pooling head, kept so written checkpoints stay
    /// complete; an MLLM reads hidden states and uses neither.
    public let postNormWeight, postNormBias: Parameter?
    public let head: [Parameter]
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
        let clip = config.hasClassToken
        classEmbedding = try r.optional("embeddings.class_embedding", [h], .embedding, when: clip)
        patchEmbedding = try r.take("embeddings.patch_embedding.weight", [h, c, p, p], .matrix)
        patchBias = try r.optional("embeddings.patch_embedding.bias", [h], .bias, when: !clip)
        positionEmbedding = try r.take("embeddings.position_embedding.weight", [config.tokenCount, h], .embedding)
        preNormWeight = try r.optional("pre_layrnorm.weight", [h], .normScale, when: clip)  // sic: Hugging Face's spelling
        preNormBias = try r.optional("pre_layrnorm.bias", [h], .bias, when: clip)
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
        let hasPostNorm = !clip || source.contains(prefix + "post_layernorm.weight")
        postNormWeight = try r.optional("post_layernorm.weight", [h], .normScale, when: hasPostNorm)
        postNormBias = try r.optional("post_layernorm.bias", [h], .bias, when: hasPostNorm)
        head = config.usesHead ? try Self.poolingHead(&r, config) : []
        parameters = r.loaded
    }

    /// SigLIP's `head.*`: probe, `nn.MultiheadAttention` in/out projections, LayerNorm and a full-width MLP.
    static func poolingHead(_ r: inout WeightReader, _ config: VisionConfig) throws -> [Parameter] {
        let (h, f) = (config.hiddenSize, config.intermediateSize)
        return [
            try r.take("head.probe", [1, 1, h], .embedding),
            try r.take("head.attention.in_proj_weight", [3 * h, h], .matrix),
            try r.take("head.attention.in_proj_bias", [3 * h], .bias),
            try r.take("head.attention.out_proj.weight", [h, h], .matrix),
            try r.take("head.attention.out_proj.bias", [h], .bias),
            try r.take("head.layernorm.weight", [h], .normScale),
            try r.take("head.layernorm.bias", [h], .bias),
            try r.take("head.mlp.fc1.weight", [f, h], .matrix),
            try r.take("head.mlp.fc1.bias", [f], .bias),
            try r.take("head.mlp.fc2.weight", [h, f], .matrix),
            try r.take("head.mlp.fc2.bias", [h], .bias),
        ]
    }

    /// Hidden states `[tiles, tokens, hidden]` (CLIP: the class token, then the patches) after the first
    /// `layersUsed` layers, for tiles `[tiles, channels, size, size]` (already normalised). `options.visionKeep`
    /// narrows each layer's MLP to its leading neurons.
    public func forward(_ g: Graph, images: Tensor, options: ForwardOptions = ForwardOptions()) -> Value {
        let (h, count) = (config.hiddenSize, images.shape[0])
        precondition(images.shape == [count, config.channels, config.imageSize, config.imageSize],
                     "images have shape \(images.shape), the encoder takes [n, \(config.channels), \(config.imageSize), \(config.imageSize)]")
        let patchWidth = config.channels * config.patchSize * config.patchSize
        let patches = g.constant(Self.patches(images, patchSize: config.patchSize))
        let kernel = g.reshape(g.parameter(patchEmbedding), [h, patchWidth])
        let embedded = g.reshape(g.linear(patches, kernel, bias: patchBias.map { g.parameter($0) }), [count, config.patchCount, h])
        var x = embedded
        if let classEmbedding {
            let cls = g.reshape(g.parameter(classEmbedding), [1, 1, h])
            x = g.concat([g.concat(Array(repeating: cls, count: count), axis: 0), embedded], axis: 1)
        }
        x = g.add(x, g.parameter(positionEmbedding))
        let eps = Float(config.layerNormEps)
        if let preNormWeight, let preNormBias {
            x = g.layerNorm(x, weight: g.parameter(preNormWeight), bias: g.parameter(preNormBias), eps: eps)
        }
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
