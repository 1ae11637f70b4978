import Foundation
import Evaluation
import Models
import Tensor

/// Metrics of a fixture folder, as its model card states them and as tests recompute them.
public struct FixtureMetrics: Equatable {
    /// Held-out loss: nats per byte (tiny-llama) or per answer token (tiny-llava).
    public var heldOutLoss: Double
    /// Exact-answer accuracy (tiny-llava only).
    public var heldOutAccuracy: Double?
    /// Held-out loss when one layer's FFN keeps only its leading quarter of neurons, per layer.
    public var layerSensitivity: [Double]
    /// Exact-answer accuracy per question kind (tiny-llava only).
    public var accuracyByKind: [String: Double] = [:]
}

extension Fixtures {
    /// Name of the held-out token file in the tiny-llama folder (uint16 ids).
    public static let heldOutFile = "heldout.bin"

    /// Recomputes a fixture folder's metrics from its weights and held-out data.
    public static func metrics(folder: String) throws -> FixtureMetrics {
        let model = try Model.load(directory: folder)
        switch model {
        case .llama(let m):
            let tokens = try TokenData.read(folder + "/" + heldOutFile, format: .uint16, vocabularySize: m.config.vocabularySize)[0]
            let sensitivity = try (0..<m.config.layers).map { i in
                try Evaluation.text(model, tokens: tokens, context: textContext, options: ForwardOptions(ffnKeep: quarterKeep(m.config, layer: i))).loss
            }
            let loss = try Evaluation.text(model, tokens: tokens, context: textContext).loss
            return FixtureMetrics(heldOutLoss: loss, heldOutAccuracy: nil, layerSensitivity: sensitivity)
        case .llava(let m):
            let examples = answerSet(ShapesDataset.generate(count: shapesHeldOutCount, seed: shapesHeldOutSeed), config: m.config)
            let score = try Evaluation.answers(model, examples)
            let sensitivity = try (0..<m.config.text.layers).map { i in
                try Evaluation.answers(model, examples, options: ForwardOptions(ffnKeep: quarterKeep(m.config.text, layer: i))).loss
            }
            return FixtureMetrics(heldOutLoss: score.loss, heldOutAccuracy: score.accuracy, layerSensitivity: sensitivity,
                                  accuracyByKind: score.accuracyByKind)
        case .qwenVL:
            throw CheckpointError(path: folder, problem: "is a Qwen2.5-VL model, not one of lop's fixtures (tiny-llama, tiny-llava)")
        }
    }

    static func quarterKeep(_ config: LlamaConfig, layer: Int) -> [Int] {
        config.ffnSizes.enumerated().map { $0.offset == layer ? $0.element / 4 : $0.element }
    }

    /// Trains a fixture, writes its folder (weights in F16, config, held-out data, model card) and returns the card.
    public static func build(_ name: String, to folder: String, steps: Int? = nil, log: (String) -> Void) throws -> String {
        let started = Date()
        var extra: [String: Data] = [:]
        var lines: [String] = []
        let model: Model
        switch name {
        case "tiny-llama":
            let recipe = Recipe.tinyLlama.with(steps: steps)
            let corpus = try TextCorpus()
            log("corpus: \(corpus.files.count) files, \(corpus.paragraphs.train)/\(corpus.paragraphs.validation)/\(corpus.paragraphs.heldOut) paragraphs, \(corpus.train.count) training bytes")
            model = .llama(try trainTinyLlama(corpus: corpus, recipe: recipe, log: log))
            extra[heldOutFile] = TokenData.encodeBinary(corpus.heldOut, format: .uint16)
            lines = textCardHead(corpus: corpus, recipe: recipe)
        case "tiny-llava":
            let recipe = Recipe.tinyLlava.with(steps: steps)
            model = .llava(try trainTinyLlava(recipe: recipe, log: log))
            lines = shapesCardHead(recipe: recipe)
        default:
            throw CheckpointError(path: folder, problem: "unknown fixture \"\(name)\" (known: \(names.joined(separator: ", ")))")
        }
        let trainingSeconds = Date().timeIntervalSince(started)
        extra.merge(inputFiles(name)) { a, _ in a }
        try model.write(to: folder, dtype: .f16, extraFiles: extra)
        // Metrics come from the written (F16) weights, exactly what tests and users load.
        let metrics = try metrics(folder: folder)
        let card = lines + cardTail(model: try Model.load(directory: folder), metrics: metrics, trainingSeconds: trainingSeconds, name: name)
        let text = card.joined(separator: "\n") + "\n"
        try AtomicFile.write(Data(text.utf8), to: folder + "/MODEL_CARD.md")
        return text
    }

    static func recipeLines(_ r: Recipe) -> [String] {
        [
            "| steps | \(r.steps) |", "| batch | \(r.batch) |", "| peak learning rate | \(r.peakLearningRate) |",
            "| warmup steps | \(r.warmupSteps) (then cosine to 10 %) |", "| AdamW β₁, β₂, ε | 0.9, 0.999, 1e-8 |",
            "| weight decay | \(r.weightDecay) (matrices and embeddings) |", "| gradient clipping | global norm \(r.clipNorm) |",
            "| validation | every \(r.validateEvery) steps; the best weights are kept |", "| seed | \(r.seed) |",
        ] + (r.featurePenalty > 0 ? ["| image-feature penalty | \(r.featurePenalty) × mean square of the projected image features, added to the loss |"] : [])
    }

    static func textCardHead(corpus: TextCorpus, recipe: Recipe) -> [String] {
        let c = tinyLlamaConfig
        return [
            "# tiny-llama", "",
            "A Llama-architecture byte-level language model, small enough to commit, trained by lop's own engine so that",
            "tests, benchmarks and the demo prune a real trained model without any download.", "",
            "## Architecture", "",
            "`LlamaForCausalLM`: \(c.layers) layers, hidden \(c.hiddenSize), FFN \(c.intermediateSize) (SwiGLU), \(c.heads) attention heads over \(c.kvHeads) key/value heads,",
            "RoPE θ = \(Int(c.ropeTheta)), RMSNorm ε = \(c.rmsNormEps), untied LM head. Vocabulary \(c.vocabularySize): the 256 byte values, then",
            "`<bos>` 256, `<eos>` 257, `<pad>` 258, `<image>` 259. Weights stored as F16.", "",
            "## Data", "",
            "English text: the license texts in `\(TextCorpus.defaultDirectory)` (Debian package base-files; \(corpus.files.count) files,",
            "symlinks skipped). Text is split into paragraphs at blank lines, whitespace collapsed, paragraphs under 20",
            "characters and exact duplicates dropped (the GPL family repeats many). A paragraph goes to held-out when the",
            "FNV-1a hash of its text is 0 or 1 mod 20, to validation when 2, else to training; each paragraph ends with",
            "`<eos>`. Near-duplicates across license versions remain, so held-out text is easier than unseen prose.", "",
            "| split | paragraphs | bytes |", "|---|---:|---:|",
            "| train | \(corpus.paragraphs.train) | \(corpus.train.count) |",
            "| validation | \(corpus.paragraphs.validation) | \(corpus.validation.count) |",
            "| held-out (`\(heldOutFile)`, uint16 ids) | \(corpus.paragraphs.heldOut) | \(corpus.heldOut.count) |", "",
            "## Recipe", "",
            "Random windows of \(textContext + 1) bytes from the training text; loss is next-byte cross-entropy.", "",
            "| setting | value |", "|---|---|",
        ] + recipeLines(recipe)
    }

    static func shapesCardHead(recipe: Recipe) -> [String] {
        let c = tinyLlavaConfig
        return [
            "# tiny-llava", "",
            "A LLaVA-architecture multimodal model, small enough to commit, trained by lop's own engine on a synthetic",
            "image-question task that lop generates deterministically.", "",
            "## Architecture", "",
            "`LlavaForConditionalGeneration`, classic tensor names:",
            "- vision tower: CLIP ViT, \(c.vision.imageSize)×\(c.vision.imageSize) RGB images, patch \(c.vision.patchSize) (\(c.vision.patchCount) patches + class token), \(c.vision.layers) pre-LN layers,",
            "  hidden \(c.vision.hiddenSize), MLP \(c.vision.intermediateSize) (quick GELU), \(c.vision.heads) heads; features from the last layer (`vision_feature_layer` −1), class token dropped;",
            "- projector: linear \(c.vision.hiddenSize) → \(c.text.hiddenSize), GELU, linear \(c.text.hiddenSize) → \(c.text.hiddenSize);",
            "- language model: Llama, \(c.text.layers) layers, hidden \(c.text.hiddenSize), FFN \(c.text.intermediateSize) (SwiGLU), \(c.text.heads) heads; byte vocabulary of \(c.text.vocabularySize)",
            "  as tiny-llama's; each image occupies \(c.featuresPerImage) `<image>` tokens (id \(c.imageTokenIndex)). Weights stored as F16.", "",
            "## Data", "",
            "`ShapesDataset` (Sources/Fixtures): one to three shapes (square, circle, triangle) in distinct colours (red, green,",
            "blue, yellow), each centred in its own quadrant on a dark background. One question per image, chosen uniformly",
            "among five kinds: `how many shapes?` (1–3), `what color is the shape at Q?`, `what shape is C?`,",
            "`where is the C shape?` (quadrant), `is there a C K?` (yes/no). Sequence: `<bos>`, the image tokens,",
            "`Q: question A: `, answer, `<eos>`; loss on the answer and `<eos>` only. Training sequences ask \(trainingQuestionsPerImage)",
            "questions about their image in a row (more answers per image seen); evaluation asks one. Training examples come from seed",
            "\(shapesTrainSeed), validation (256) from \(shapesValidationSeed), held-out (\(shapesHeldOutCount)) from \(shapesHeldOutSeed).",
            "Chance accuracy is about 0.33 for count and shape, 0.25 for colour and position, 0.5 for presence.", "",
            "## Recipe", "",
            "| setting | value |", "|---|---|",
        ] + recipeLines(recipe)
    }

    static func cardTail(model: Model, metrics: FixtureMetrics, trainingSeconds: Double, name: String) -> [String] {
        var lines = [
            "", "## Held-out metrics", "",
            "Computed from the committed F16 weights; `swift test` recomputes them (`FixtureTests`).", "",
            "| metric | value |", "|---|---:|",
            "| parameters | \(model.parameterCount) |",
            String(format: "| held-out loss | %.4f |", metrics.heldOutLoss),
        ]
        if let accuracy = metrics.heldOutAccuracy {
            lines.append(String(format: "| held-out accuracy | %.4f |", accuracy))
            for (kind, value) in metrics.accuracyByKind.sorted(by: { $0.key < $1.key }) {
                lines.append(String(format: "| %@%@ | %.4f |", accuracyPrefix, kind, value))
            }
        } else {
            lines.append(String(format: "| held-out bits per byte | %.4f |", metrics.heldOutLoss / log(2)))
        }
        lines.append(String(format: "| uniform-guess loss | %.4f |", log(Double(model.language.config.vocabularySize))))
        lines += [
            "", "## Layer sensitivity", "",
            "Held-out loss when one language-model layer's FFN keeps only its first quarter of neurons (unsorted: no",
            "importance order yet) and every other layer is whole. Layers differ, which is what layer-wise pruning exploits.", "",
            "| layer | loss | increase |", "|---:|---:|---:|",
        ]
        for (i, loss) in metrics.layerSensitivity.enumerated() {
            lines.append(String(format: "| %d | %.4f | %+.4f |", i, loss, loss - metrics.heldOutLoss))
        }
        lines += [
            "", "## Reproduce", "",
            "```", "swift build -c release --product lop", ".build/release/lop fixtures train \(name) --out Fixtures/\(name)", "```", "",
            String(format: "Training took %.0f s on a 2-core machine (OpenBLAS, 2 threads). Results are deterministic for a", trainingSeconds),
            "given thread count up to floating-point summation order.",
        ]
        return lines
    }

    /// Whether recomputed metrics match a card's, allowing for the card's 4 decimals and for summation order
    /// (BLAS thread counts): losses within 0.1 % and accuracy within two held-out answers.
    public static func agree(_ card: FixtureMetrics, _ measured: FixtureMetrics) -> Bool {
        func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= 1e-3 * abs(b) + 1e-4 }
        guard close(card.heldOutLoss, measured.heldOutLoss), card.layerSensitivity.count == measured.layerSensitivity.count,
              zip(card.layerSensitivity, measured.layerSensitivity).allSatisfy(close) else { return false }
        switch (card.heldOutAccuracy, measured.heldOutAccuracy) {
        case (nil, nil): return true
        case let (a?, b?): return abs(a - b) <= 2.0 / Double(shapesHeldOutCount) + 1e-4
        default: return false
        }
    }

    /// Reads the metrics a model card states (the inverse of `cardTail`).
    public static func cardMetrics(_ card: String) -> FixtureMetrics? {
        func value(_ label: String) -> Double? {
            card.split(separator: "\n").first { $0.hasPrefix("| \(label) |") }.flatMap { line in
                Double(line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }[1])
            }
        }
        guard let loss = value("held-out loss") else { return nil }
        var sensitivity: [Double] = []
        while let v = value(String(sensitivity.count)) { sensitivity.append(v) }
        var byKind: [String: Double] = [:]
        for line in card.split(separator: "\n") where line.hasPrefix("| " + accuracyPrefix) {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count == 2, let v = Double(cells[1]) { byKind[String(cells[0].dropFirst(accuracyPrefix.count))] = v }
        }
        return FixtureMetrics(heldOutLoss: loss, heldOutAccuracy: value("held-out accuracy"), layerSensitivity: sensitivity,
                              accuracyByKind: byKind)
    }

    /// Label prefix of the card's per-kind accuracy rows ("| accuracy, how many | 0.9900 |").
    static let accuracyPrefix = "accuracy, "
}
