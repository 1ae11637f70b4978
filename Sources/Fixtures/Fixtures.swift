import Foundation
import Evaluation
import Models
import Tensor

/// The recipes that train lop's two committed fixture models, and the evaluations their model cards report.
public enum Fixtures {
    public static let names = ["tiny-llama", "tiny-llava"]

    /// Hyperparameters of one training run (all of them: a card lists them so the run can be repeated).
    public struct Recipe: Sendable {
        public var steps: Int
        public var batch: Int
        public var peakLearningRate: Float
        public var warmupSteps: Int
        public var weightDecay: Float
        public var clipNorm: Float
        public var validateEvery: Int
        public var seed: UInt64
        /// tiny-llava: weight of the mean square of the projected image features, added to the loss. Without it
        /// Adam grows the vision tower's residual stream (the language model's RMSNorm hides the scale from the
        /// loss) until the features are a near-constant vector hundreds of times the token embeddings' size, and
        /// the language model never learns to read them: it answers from the question alone.
        public var featurePenalty: Float = 0

        /// The recipe with another step count (warm-up shortened to fit, validation at least once).
        public func with(steps: Int?) -> Recipe {
            guard let steps else { return self }
            var r = self
            r.steps = steps
            r.warmupSteps = min(warmupSteps, steps / 10)
            r.validateEvery = min(validateEvery, steps)
            return r
        }

        public static let tinyLlama = Recipe(steps: 1200, batch: 16, peakLearningRate: 3e-3, warmupSteps: 60, weightDecay: 0.05,
                                             clipNorm: 1, validateEvery: 100, seed: 1)
        /// A lower peak rate than tiny-llama's: at 3e-3 the model settles on answers from the question alone.
        public static let tinyLlava = Recipe(steps: 4000, batch: 16, peakLearningRate: 1e-3, warmupSteps: 100, weightDecay: 0.01,
                                             clipNorm: 1, validateEvery: 250, seed: 2, featurePenalty: 0.1)
    }

    /// Context length of `tiny-llama`'s training windows and evaluation.
    public static let textContext = 128

    public static var tinyLlamaConfig: LlamaConfig {
        LlamaConfig(vocabularySize: ByteTokenizer.vocabularySize, hiddenSize: 128, intermediateSize: 384, layers: 6, heads: 4,
                    kvHeads: 2, rmsNormEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, maxPositions: 512)
    }

    public static var tinyLlavaConfig: LlavaConfig {
        let text = LlamaConfig(vocabularySize: ByteTokenizer.vocabularySize, hiddenSize: 96, intermediateSize: 256, layers: 4, heads: 4,
                               kvHeads: 4, rmsNormEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, maxPositions: 256)
        let vision = VisionConfig(hiddenSize: 64, intermediateSize: 128, layers: 2, heads: 4, imageSize: ShapesDataset.imageSize,
                                  patchSize: 6, channels: 3, layerNormEps: 1e-5, activation: .quickGelu)
        return LlavaConfig(text: text, vision: vision, imageTokenIndex: ByteTokenizer.image, visionFeatureLayer: -1)
    }

    // MARK: Training

    /// AdamW with warmup + cosine, gradient clipping, and the weights of the best validation score kept.
    static func train(parameters: [Parameter], recipe: Recipe, log: (String) -> Void,
                      validate: () throws -> Double, step: (Graph, Int) throws -> Value) throws -> (trainLoss: Double, validation: Double) {
        let optimizer = AdamW(parameters: parameters, weightDecay: recipe.weightDecay)
        let schedule = WarmupCosineSchedule(peak: recipe.peakLearningRate, warmupSteps: recipe.warmupSteps, totalSteps: recipe.steps)
        var best = (score: Double.infinity, weights: parameters.map(\.value))
        var recent: [Double] = []
        let start = Date()
        for s in 0..<recipe.steps {
            let g = Graph(recording: true)
            let loss = try step(g, s)
            g.backward(loss)
            _ = clipGradientNorm(parameters, maxNorm: recipe.clipNorm)
            optimizer.update(learningRate: schedule.rate(at: s))
            optimizer.zeroGradients()
            recent.append(Double(loss.tensor.scalar))
            if recent.count > 50 { recent.removeFirst() }
            if (s + 1) % recipe.validateEvery == 0 || s + 1 == recipe.steps {
                let score = try validate()
                if score < best.score { best = (score, parameters.map(\.value)) }
                let mean = recent.reduce(0, +) / Double(recent.count)
                log(String(format: "step %5d/%d  train loss %.4f  validation %.4f  best %.4f  %.0fs", s + 1, recipe.steps, mean, score,
                           best.score, Date().timeIntervalSince(start)))
            }
        }
        for (parameter, value) in zip(parameters, best.weights) { parameter.value = value }
        return (recent.reduce(0, +) / Double(max(recent.count, 1)), best.score)
    }

    // MARK: tiny-llama

    public static func trainTinyLlama(corpus: TextCorpus, recipe: Recipe = .tinyLlama, log: (String) -> Void) throws -> LlamaModel {
        let config = tinyLlamaConfig
        let model = try LlamaModel(config: config, weights: RandomInitialization(seed: recipe.seed, layers: config.layers))
        var generator = SeededGenerator(seed: recipe.seed &+ 100)
        let tokens = corpus.train
        _ = try train(parameters: model.parameters, recipe: recipe, log: log, validate: { try Evaluation.text(.llama(model), tokens: corpus.validation, context: textContext).loss }) { g, _ in
            let batch = (0..<recipe.batch).map { _ -> [Int] in
                let start = Int.random(in: 0..<(tokens.count - textContext - 1), using: &generator)
                return Array(tokens[start...(start + textContext)])
            }
            let logits = model.logits(g, tokens: batch.map { Array($0.dropLast()) })
            return g.crossEntropy(logits, targets: batch.flatMap { Array($0.dropFirst()) })
        }
        return model
    }

    // MARK: tiny-llava

    /// Examples as an evaluation answer set (one question each: the first).
    public static func answerSet(_ examples: [ShapesDataset.Example], config: LlavaConfig) -> Evaluation.AnswerSet {
        let items = examples.map { example in
            let (tokens, isAnswer) = ShapesDataset.sequence(example, imageTokens: config.featuresPerImage)
            return Evaluation.AnswerSet.Item(tokens: tokens, isAnswer: isAnswer, kind: example.kind)
        }
        let images = Tensor(shape: [examples.count] + examples[0].image.shape, data: examples.flatMap(\.image.data))
        return Evaluation.AnswerSet(items: items, images: images, padding: ByteTokenizer.pad)
    }

    /// Seeds of the three disjoint example streams.
    public static let shapesTrainSeed: UInt64 = 1000, shapesValidationSeed: UInt64 = 2000, shapesHeldOutSeed: UInt64 = 3000
    public static let shapesHeldOutCount = DataSpec.shapesHeldOutCount
    /// Training sequences ask several questions about one image: more answer tokens per image seen.
    public static let trainingQuestionsPerImage = 4

    public static func trainTinyLlava(recipe: Recipe = .tinyLlava, log: (String) -> Void) throws -> LlavaModel {
        let config = tinyLlavaConfig
        let model = try LlavaModel(config: config, weights: RandomInitialization(seed: recipe.seed, layers: config.text.layers))
        let validation = answerSet(ShapesDataset.generate(count: 256, seed: shapesValidationSeed), config: config)
        var generator = SeededGenerator(seed: shapesTrainSeed)
        _ = try train(parameters: model.parameters, recipe: recipe, log: log, validate: {
            let score = try Evaluation.answers(.llava(model), validation)
            log(String(format: "  validation accuracy %.3f: ", score.accuracy)
                + score.accuracyByKind.sorted { $0.key < $1.key }.map { String(format: "%@ %.2f", $0.key, $0.value) }.joined(separator: ", "))
            return score.loss
        }) { g, _ in
            let examples = (0..<recipe.batch).map { _ in ShapesDataset.example(&generator, questions: trainingQuestionsPerImage) }
            let set = answerSet(examples, config: config)
            let batch = set.batch(0..<examples.count)
            let features = try model.imageFeatures(g, images: batch.images!)
            let loss = g.crossEntropy(try model.logits(g, tokens: batch.rows, features: features), targets: batch.targets)
            guard recipe.featurePenalty > 0 else { return loss }
            return g.add(loss, g.scale(g.mean(g.mul(features.value, features.value)), by: recipe.featurePenalty))
        }
        return model
    }
}
