import Foundation
import LopCore
import Tensor

/// Qwen2.5-VL's vision encoder config (`qwen2_5_vl_vision`), read from transformers 5.24's
/// `configuration_qwen2_5_vl.py`.
public struct QwenVisionConfig: Equatable, Sendable {
    public var depth: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    /// Each block's MLP width (all `intermediateSize` unless pruned).
    public var ffnSizes: [Int]
    public var heads: Int
    public var channels: Int
    /// Pixels per patch side (14 in the released models).
    public var patchSize: Int
    /// Patches merged into one language-model token per side (2).
    public var mergeSize: Int
    /// Frames per patch (2; an image is repeated to fill them).
    public var temporalPatchSize: Int
    /// Window side in pixels for windowed attention (112).
    public var windowSize: Int
    /// Blocks that attend over the whole image instead of windows.
    public var fullAttentionBlocks: [Int]
    /// The merger's output width: the language model's hidden size.
    public var outHiddenSize: Int
    public var activation: Activation
    /// θ of the axial 2-D rotary embedding.
    public var ropeTheta: Double

    public var headDim: Int { hiddenSize / heads }
    /// `channels · temporalPatchSize · patchSize²`: one flattened patch.
    public var patchWidth: Int { channels * temporalPatchSize * patchSize * patchSize }
    /// Merged units per window side.
    public var windowUnits: Int { windowSize / mergeSize / patchSize }

    init(fields f: ConfigFields) throws(ModelConfigError) {
        _ = try f.string("model_type", default: "qwen2_5_vl_vision", allowed: ["qwen2_5_vl_vision", "qwen2_5_vl"])
        depth = try f.int(f.members["depth"] == nil && f.members["num_hidden_layers"] != nil ? "num_hidden_layers" : "depth")
        hiddenSize = try f.int("hidden_size")
        intermediateSize = try f.int("intermediate_size")
        heads = try f.int(f.members["num_heads"] == nil && f.members["num_attention_heads"] != nil ? "num_attention_heads" : "num_heads")
        guard hiddenSize % heads == 0, (hiddenSize / heads) % 4 == 0 else {
            throw ModelConfigError(key: f.key("num_heads"), problem: "\(heads) heads of \(hiddenSize) leave no head size divisible by 4 (the axial rotary embedding rotates height and width pairs)")
        }
        // The Hub's configs spell it in_chans, transformers 5 in_channels.
        channels = try f.int(f.members["in_chans"] != nil ? "in_chans" : "in_channels", default: 3)
        patchSize = try f.int("patch_size")
        if let spatial = f.members["spatial_patch_size"], spatial != .null, spatial.intValue != patchSize {
            throw ModelConfigError(key: f.key("spatial_patch_size"), problem: "\(spatial.serialized()) disagrees with patch_size \(patchSize)")
        }
        mergeSize = try f.int("spatial_merge_size", default: 2)
        temporalPatchSize = try f.int("temporal_patch_size", default: 2)
        windowSize = try f.int("window_size")
        guard windowSize % (patchSize * mergeSize) == 0 else {
            throw ModelConfigError(key: f.key("window_size"), problem: "\(windowSize) is not a whole number of merged patches (\(patchSize * mergeSize) px)")
        }
        outHiddenSize = try f.int("out_hidden_size")
        activation = Activation(rawValue: try f.string("hidden_act", default: "silu", allowed: Activation.allCases.map(\.rawValue)))!
        var blocks: [Int] = []
        guard let items = f.members["fullatt_block_indexes"]?.arrayValue else {
            throw ModelConfigError(key: f.key("fullatt_block_indexes"), problem: "is missing (the blocks with full attention)")
        }
        for item in items {
            guard let b = item.intValue, b >= 0, b < depth else {
                throw ModelConfigError(key: f.key("fullatt_block_indexes"), problem: "\(item.serialized()) is not a block index in 0..<\(depth)")
            }
            blocks.append(b)
        }
        fullAttentionBlocks = blocks
        ropeTheta = 10000
        if let rope = f.members["rope_parameters"], rope != .null {
            let p = try ConfigFields(rope, path: f.key("rope_parameters"))
            _ = try p.string("rope_type", default: "axial", allowed: ["axial"])
            ropeTheta = try p.double("rope_theta", default: 10000)
            try p.rejectUnknown(understood: ["rope_type", "rope_theta"], harmless: [])
        }
        ffnSizes = try f.layerWidths(ffnSizesKey, layers: depth, full: intermediateSize)
        try f.rejectUnknown(understood: ["model_type", "depth", "num_hidden_layers", "hidden_size", "intermediate_size", "num_heads", "num_attention_heads",
                                         "in_chans", "in_channels", "patch_size", "spatial_patch_size", "spatial_merge_size", "temporal_patch_size",
                                         "window_size", "out_hidden_size", "hidden_act", "fullatt_block_indexes", "rope_parameters", ffnSizesKey],
                            harmless: ConfigFields.commonHarmless.union(["initializer_range", "tokens_per_second", "embed_dim", "num_channels"]))
    }

    var json: JSON {
        var members: [String: JSON] = [
            "model_type": .string("qwen2_5_vl_vision"), "depth": .int(depth), "hidden_size": .int(hiddenSize),
            "intermediate_size": .int(intermediateSize), "num_heads": .int(heads), "in_channels": .int(channels),
            "patch_size": .int(patchSize), "spatial_merge_size": .int(mergeSize), "temporal_patch_size": .int(temporalPatchSize),
            "window_size": .int(windowSize), "out_hidden_size": .int(outHiddenSize), "hidden_act": .string(activation.rawValue),
            "fullatt_block_indexes": .array(fullAttentionBlocks.map { JSON.int($0) }),
            "rope_parameters": .object(["rope_type": .string("axial"), "rope_theta": .double(ropeTheta)]),
        ]
        if Set(ffnSizes).count == 1 { members["intermediate_size"] = .int(ffnSizes[0]) } else { members[ffnSizesKey] = .array(ffnSizes.map { JSON.int($0) }) }
        return .object(members)
    }
}

/// `Qwen2_5_VLForConditionalGeneration`'s config: the vision encoder, the Qwen2 text model with M-RoPE, and the
/// image token. Read in transformers 5's form (`text_config`) or the Hub's (text settings at the top level, as
/// Qwen/Qwen2.5-VL-7B-Instruct has them); written in transformers 5's.
public struct QwenVLConfig: Equatable, Sendable {
    public var text: LlamaConfig
    public var vision: QwenVisionConfig
    public var imageTokenIndex: Int
    public var videoTokenIndex: Int
    public var visionStartToken: Int
    public var visionEndToken: Int

    /// Top-level keys of the VL config itself; in the Hub's form every other key belongs to the text model.
    static let own: Set<String> = ["model_type", "text_config", "vision_config", "image_token_id", "video_token_id", "vision_start_token_id",
                                   "vision_end_token_id", "vision_token_id", "tie_word_embeddings", "architectures", "transformers_version",
                                   "torch_dtype", "dtype", "_name_or_path"]

    public init(json: JSON) throws(ModelConfigError) {
        let f = try ConfigFields(json)
        _ = try f.string("model_type", allowed: ["qwen2_5_vl"])
        if f.members["text_config"] != nil {
            text = try LlamaConfig(fields: f.child("text_config"))
            guard text.modelType == "qwen2_5_vl_text" else {
                throw ModelConfigError(key: "text_config.model_type", problem: "\"\(text.modelType)\" is not Qwen2.5-VL's text model (qwen2_5_vl_text)")
            }
        } else {
            // The Hub's form: the text model's keys sit beside the VL keys.
            var members = f.members.filter { !Self.own.contains($0.key) }
            members["model_type"] = .string("qwen2_5_vl_text")
            if let tied = f.members["tie_word_embeddings"] { members["tie_word_embeddings"] = tied }
            text = try LlamaConfig(fields: ConfigFields(.object(members)))
        }
        vision = try QwenVisionConfig(fields: f.child("vision_config"))
        guard vision.outHiddenSize == text.hiddenSize else {
            throw ModelConfigError(key: "vision_config.out_hidden_size", problem: "\(vision.outHiddenSize) differs from the text model's hidden_size \(text.hiddenSize)")
        }
        let vocabulary = text.vocabularySize
        func token(_ key: String, _ fallback: Int) throws(ModelConfigError) -> Int {
            let id = try f.int(key, default: fallback, minimum: 0)
            guard id < vocabulary else { throw ModelConfigError(key: key, problem: "\(id) is outside the vocabulary of \(vocabulary)") }
            return id
        }
        imageTokenIndex = try token("image_token_id", 151655)
        videoTokenIndex = try token("video_token_id", 151656)
        visionStartToken = try token("vision_start_token_id", 151652)
        visionEndToken = try token("vision_end_token_id", 151653)
        if try f.bool("tie_word_embeddings", default: text.tiedEmbeddings) != text.tiedEmbeddings {
            throw ModelConfigError(key: "tie_word_embeddings", problem: "disagrees with text_config.tie_word_embeddings")
        }
        if f.members["text_config"] != nil {
            try f.rejectUnknown(understood: Self.own, harmless: ConfigFields.commonHarmless.union(["pad_token_id", "vocab_size"]))
        }
    }

    public var json: JSON {
        var members: [String: JSON] = [
            "architectures": .array([.string("Qwen2_5_VLForConditionalGeneration")]),
            "model_type": .string("qwen2_5_vl"),
            "text_config": text.json,
            "vision_config": vision.json,
            "image_token_id": .int(imageTokenIndex),
            "video_token_id": .int(videoTokenIndex),
            "vision_start_token_id": .int(visionStartToken),
            "vision_end_token_id": .int(visionEndToken),
        ]
        if text.tiedEmbeddings { members["tie_word_embeddings"] = .bool(true) }
        return .object(members)
    }

    /// Image tokens of an image: its merged patches.
    public func imageTokens(for image: ImageBatch.Layout) throws(ModelInputError) -> Int {
        guard let grid = image.grid, grid.count == 3 else { throw ModelInputError(problem: "Qwen2.5-VL takes images as patch grids, not tiles") }
        let m = vision.mergeSize
        guard grid[1] % m == 0, grid[2] % m == 0, grid[0] >= 1 else {
            throw ModelInputError(problem: "a patch grid of \(grid) does not merge in \(m)×\(m) blocks")
        }
        return grid.reduce(1, *) / (m * m)
    }
}

/// Qwen2.5-VL's vision encoder (`Qwen2_5_VisionTransformerPretrainedModel`, `visual.*`): a linear patch embedding
/// of flattened 3-D patches, pre-RMSNorm blocks with a fused biased q/k/v projection, an axial 2-D rotary
/// embedding (the first half of every head's pairs follow the patch's row, the second its column), attention
/// inside windows of `windowSize` pixels except in the full-attention blocks, and a biased SwiGLU MLP; then the
/// merger: RMSNorm, 2×2 patches concatenated, a GELU MLP to the language model's width.
public final class QwenVisionEncoder {
    public struct Block {
        public let norm1, qkv, qkvBias, proj, projBias, norm2: Parameter
        public let gate, gateBias, up, upBias, down, downBias: Parameter
    }

    public let config: QwenVisionConfig
    public let patchEmbedding: Parameter
    public let blocks: [Block]
    public let mergerNorm, merger1, merger1Bias, merger2, merger2Bias: Parameter
    public let parameters: [Parameter]

    public init(config: QwenVisionConfig, weights source: any WeightSource, prefix: String) throws {
        self.config = config
        var r = WeightReader(source, prefix: prefix)
        let (h, c, t, p) = (config.hiddenSize, config.channels, config.temporalPatchSize, config.patchSize)
        patchEmbedding = try r.take("patch_embed.proj.weight", [h, c, t, p, p], .matrix)
        var blocks: [Block] = []
        for i in 0..<config.depth {
            let b = "blocks.\(i)."
            let f = config.ffnSizes[i]
            blocks.append(Block(
                norm1: try r.take(b + "norm1.weight", [h], .normScale),
                qkv: try r.take(b + "attn.qkv.weight", [3 * h, h], .matrix, stored: true),
                qkvBias: try r.take(b + "attn.qkv.bias", [3 * h], .bias),
                proj: try r.take(b + "attn.proj.weight", [h, h], .matrix, stored: true),
                projBias: try r.take(b + "attn.proj.bias", [h], .bias),
                norm2: try r.take(b + "norm2.weight", [h], .normScale),
                gate: try r.take(b + "mlp.gate_proj.weight", [f, h], .matrix, stored: true),
                gateBias: try r.take(b + "mlp.gate_proj.bias", [f], .bias),
                up: try r.take(b + "mlp.up_proj.weight", [f, h], .matrix, stored: true),
                upBias: try r.take(b + "mlp.up_proj.bias", [f], .bias),
                down: try r.take(b + "mlp.down_proj.weight", [h, f], .matrix, stored: true),
                downBias: try r.take(b + "mlp.down_proj.bias", [h], .bias)))
        }
        self.blocks = blocks
        let merged = h * config.mergeSize * config.mergeSize
        mergerNorm = try r.take("merger.ln_q.weight", [h], .normScale)
        merger1 = try r.take("merger.mlp.0.weight", [merged, merged], .matrix, stored: true)
        merger1Bias = try r.take("merger.mlp.0.bias", [merged], .bias)
        merger2 = try r.take("merger.mlp.2.weight", [config.outHiddenSize, merged], .matrix, stored: true)
        merger2Bias = try r.take("merger.mlp.2.bias", [config.outHiddenSize], .bias)
        parameters = r.loaded
    }

    /// transformers' `get_vision_window_index` for one image grid (t, h, w patches): the merged units in window
    /// order (windows row-major, units row-major inside each; the last windows may be partial), and each
    /// window's unit count.
    static func windows(grid: [Int], merge: Int, windowUnits: Int) -> (order: [Int], sizes: [Int]) {
        let (t, rows, cols) = (grid[0], grid[1] / merge, grid[2] / merge)
        var order: [Int] = [], sizes: [Int] = []
        for frame in 0..<t {
            for wy in stride(from: 0, to: rows, by: windowUnits) {
                for wx in stride(from: 0, to: cols, by: windowUnits) {
                    var count = 0
                    for y in wy..<min(wy + windowUnits, rows) {
                        for x in wx..<min(wx + windowUnits, cols) {
                            order.append((frame * rows + y) * cols + x)
                            count += 1
                        }
                    }
                    sizes.append(count)
                }
            }
        }
        return (order, sizes)
    }

    /// Merged features `[images' units, outHiddenSize]` in the processor's order, for patches
    /// `[all patches, patchWidth]` (the processor's block-major order) of images with the given grids.
    public func forward(_ g: Graph, patches: Tensor, grids: [[Int]], options: ForwardOptions = ForwardOptions()) -> Value {
        let c = config, h = c.hiddenSize, m = c.mergeSize, unit = m * m
        precondition(patches.shape == [grids.reduce(0) { $0 + $1.reduce(1, *) }, c.patchWidth], "patches \(patches.shape) do not fit grids \(grids)")
        // Window order of the merged units, window and image boundaries (in patches), and each patch's (row, column).
        var order: [Int] = [], windowSegments: [Range<Int>] = [], imageSegments: [Range<Int>] = []
        var rowOf: [Int] = [], columnOf: [Int] = []
        var unitBase = 0, patchBase = 0
        for grid in grids {
            let (w, sizes) = Self.windows(grid: grid, merge: m, windowUnits: c.windowUnits)
            order += w.map { $0 + unitBase }
            var start = patchBase
            for size in sizes where size > 0 {
                windowSegments.append(start..<(start + size * unit))
                start += size * unit
            }
            let count = grid.reduce(1, *)
            imageSegments.append(patchBase..<(patchBase + count))
            for _ in 0..<grid[0] {
                for by in 0..<(grid[1] / m) { for bx in 0..<(grid[2] / m) { for my in 0..<m { for mx in 0..<m {
                    rowOf.append(by * m + my)
                    columnOf.append(bx * m + mx)
                } } } }
            }
            unitBase += count / unit
            patchBase += count
        }
        let patchOrder = order.flatMap { u in (0..<unit).map { u * unit + $0 } }
        // Rotary angles per patch in window order: pairs [0, d/4) follow the row, [d/4, d/2) the column.
        let quarter = c.headDim / 4, half = c.headDim / 2
        let frequencies = (0..<quarter).map { 1 / pow(c.ropeTheta, Double(2 * $0) / Double(half)) }
        var cosines = [Float](repeating: 0, count: patchOrder.count * half), sines = cosines
        for (i, p) in patchOrder.enumerated() {
            for j in 0..<half {
                let angle = Double(j < quarter ? rowOf[p] : columnOf[p]) * frequencies[j % quarter]
                cosines[i * half + j] = Float(cos(angle))
                sines[i * half + j] = Float(sin(angle))
            }
        }
        let kernel = g.reshape(g.parameter(patchEmbedding), [h, c.patchWidth])
        var x = g.embedding(g.linear(g.constant(patches), kernel), ids: patchOrder)
        // Window order keeps each image's patches together, so an image is one range in it as in the input.
        for (i, block) in blocks.enumerated() {
            let a = g.rmsNorm(x, weight: g.parameter(block.norm1), eps: 1e-6)
            let qkv = g.linear(a, block.qkv, bias: block.qkvBias)
            let rotate = { (v: Value) in g.reshape(g.rotate(g.reshape(v, [1, patchOrder.count, h]), heads: c.heads, cosines: cosines, sines: sines), [patchOrder.count, h]) }
            let (q, k, v) = (rotate(g.slice(qkv, axis: 1, 0..<h)), rotate(g.slice(qkv, axis: 1, h..<(2 * h))), g.slice(qkv, axis: 1, (2 * h)..<(3 * h)))
            let segments = c.fullAttentionBlocks.contains(i) ? imageSegments : windowSegments
            var attended: [Value] = []
            for s in segments {
                let part = { (t: Value) in g.reshape(g.slice(t, axis: 0, s), [1, s.count, h]) }
                attended.append(g.reshape(g.attention(part(q), part(k), part(v), heads: c.heads, kvHeads: c.heads, causal: false), [s.count, h]))
            }
            x = g.add(x, g.linear(attended.count == 1 ? attended[0] : g.concat(attended, axis: 0), block.proj, bias: block.projBias))
            let n = g.rmsNorm(x, weight: g.parameter(block.norm2), eps: 1e-6)
            let width = block.gate.shape[0]
            let keep = options.visionKeep?[i] ?? width
            precondition(keep >= 0 && keep <= width, "vision block \(i) keeps \(keep) of \(width) MLP neurons")
            let hidden = g.mul(g.activation(g.linear(n, block.gate, bias: block.gateBias, rows: keep), c.activation),
                               g.linear(n, block.up, bias: block.upBias, rows: keep))
            options.observe?(FFNObservation(tower: .vision, layer: i, input: g.reshape(n, [1, n.shape[0], h]).tensor,
                                            hidden: g.reshape(hidden, [1, hidden.shape[0], keep]).tensor))
            if let output = options.visionOutput?[i] {
                precondition(output.weight.shape == [block.down.shape[0], keep], "vision block \(i): a replacement down_proj must be [\(block.down.shape[0]), \(keep)]")
                x = g.add(x, g.add(g.linear(hidden, output.weight.leading(rows: nil, columns: nil)), g.constant(output.bias)))
            } else {
                x = g.add(x, g.linear(hidden, block.down, bias: block.downBias, columns: keep))
            }
        }
        let merged = g.reshape(g.rmsNorm(x, weight: g.parameter(mergerNorm), eps: 1e-6), [patchOrder.count / unit, h * unit])
        let out = g.linear(g.geluExact(g.linear(merged, merger1, bias: merger1Bias)), merger2, bias: merger2Bias)
        // Back to the processor's order of merged units.
        var inverse = [Int](repeating: 0, count: order.count)
        for (i, u) in order.enumerated() { inverse[u] = i }
        return g.embedding(out, ids: inverse)
    }
}

/// Where a Qwen2.5-VL checkpoint's tensors are: the Hub's names (what transformers 5 also saves), or the class
/// names transformers 4.52–4.57 used.
public struct QwenVLLayout: TensorLayout {
    static let architecture = "Qwen2.5-VL"
    public let name: String
    public let vision: String
    public let language: LlamaModel.Names

    public static let all = [
        QwenVLLayout(name: "Hub (visual.*, model.*, lm_head.*)", vision: "visual.", language: .causalLM),
        QwenVLLayout(name: "transformers 4.52 (model.visual.*, model.language_model.*, lm_head.*)", vision: "model.visual.",
                     language: .init(body: "model.language_model.", head: "lm_head.weight")),
    ]

    var markers: [String] { [vision + "patch_embed.proj.weight", language.body + "embed_tokens.weight"] }
}

/// Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`): the vision encoder's merged features fill the text's
/// `<|image_pad|>` tokens, and the Qwen2 decoder rotates every token by its (temporal, height, width) position.
public final class QwenVLModel {
    public let config: QwenVLConfig
    public let layout: QwenVLLayout
    public let vision: QwenVisionEncoder
    public let language: LlamaModel
    public var parameters: [Parameter] { vision.parameters + language.parameters }
    public internal(set) var folder: ModelFolder?

    public init(config: QwenVLConfig, weights source: any WeightSource, layout: QwenVLLayout? = nil) throws {
        self.config = config
        let layout = try layout ?? QwenVLLayout.detect(source)
        self.layout = layout
        vision = try QwenVisionEncoder(config: config.vision, weights: source, prefix: layout.vision)
        language = try LlamaModel(config: config.text, weights: source, names: layout.language)
    }

    /// Merged image features `[all image tokens, hidden]` and each image's count.
    public func imageFeatures(_ g: Graph, images: ImageBatch, options: ForwardOptions = ForwardOptions()) throws -> ImageFeatures {
        let counts = try images.layouts.map { layout throws(ModelInputError) in try config.imageTokens(for: layout) }
        let grids = images.layouts.map { $0.grid! }
        guard images.pixels.shape.count == 2, images.pixels.shape[1] == config.vision.patchWidth else {
            throw ModelInputError(problem: "patches of shape \(images.pixels.shape); the vision encoder takes [n, \(config.vision.patchWidth)]")
        }
        return ImageFeatures(value: vision.forward(g, patches: images.pixels, grids: grids, options: options), counts: counts)
    }

    /// transformers' `get_rope_index`: text tokens count up on all three axes; a run of image tokens is one image,
    /// whose merged cell (t, y, x) sits at (start + t, start + y, start + x); the text after it starts at
    /// start + max(rows, columns).
    public func positions(tokens: [[Int]], grids: [[Int]]) throws -> MultimodalPositions {
        var axes = [[[Int]]](repeating: [], count: 3), image = 0
        let m = config.vision.mergeSize
        for (b, row) in tokens.enumerated() {
            var (t, y, x) = ([Int](), [Int](), [Int]())
            var current = 0, i = 0
            while i < row.count {
                guard row[i] == config.imageTokenIndex else {
                    t.append(current); y.append(current); x.append(current)
                    current += 1
                    i += 1
                    continue
                }
                guard image < grids.count else { throw ModelInputError(problem: "row \(b) has more image runs than the \(grids.count) images given") }
                let grid = grids[image]
                let (frames, rows, cols) = (grid[0], grid[1] / m, grid[2] / m)
                var end = i
                while end < row.count, row[end] == config.imageTokenIndex { end += 1 }
                guard end - i == frames * rows * cols else {
                    throw ModelInputError(problem: "row \(b): a run of \(end - i) image tokens, but image \(image)'s grid \(grid) merges to \(frames * rows * cols)")
                }
                for f in 0..<frames { for r in 0..<rows { for c in 0..<cols {
                    t.append(current + f); y.append(current + r); x.append(current + c)
                } } }
                current += max(rows, cols)
                image += 1
                i = end
            }
            axes[0].append(t); axes[1].append(y); axes[2].append(x)
        }
        guard image == grids.count else { throw ModelInputError(problem: "\(grids.count) images were given but the rows hold \(image) image runs") }
        return MultimodalPositions(axes: axes)
    }

    public func logits(_ g: Graph, tokens: [[Int]], images: ImageBatch?, options: ForwardOptions = ForwardOptions()) throws -> Value {
        try logits(g, tokens: tokens, features: try images.map { try imageFeatures(g, images: $0, options: options) }, grids: images?.layouts.map { $0.grid! } ?? [], options: options)
    }

    /// Logits from image features computed earlier, with the images' grids (for the positions).
    public func logits(_ g: Graph, tokens: [[Int]], features: ImageFeatures?, grids: [[Int]], options: ForwardOptions = ForwardOptions()) throws -> Value {
        let embeddings = try ImageFeatures.fill(g, text: language.embed(g, tokens: tokens), tokens: tokens, imageToken: config.imageTokenIndex, features: features)
        return language.logits(g, embeddings: embeddings, positions: try positions(tokens: tokens, grids: grids), options: options)
    }
}
