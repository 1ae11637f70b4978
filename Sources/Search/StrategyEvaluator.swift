import Evaluation
import Foundation
import Models
import Pruning
import Tensor

/// What one strategy scored on the calibration set.
public struct StrategyScore: Sendable, Equatable, Codable {
    /// Mean loss over every counted calibration position.
    public let loss: Double
    /// Fraction of calibration rows whose every counted target is the argmax (exact-match answers).
    public let accuracy: Double

    public init(loss: Double, accuracy: Double) {
        self.loss = loss
        self.accuracy = accuracy
    }
}

/// Scores integer sizes on a calibration set as cheaply as the model allows: the nested model runs the leading
/// neurons only; image features are computed once when no vision unit is pruned; equal sizes are scored once.
/// Not thread-safe: one search uses one evaluator.
public final class StrategyEvaluator {
    public let pruner: Pruner
    public let calibration: Calibration
    public let reusesVisionFeatures: Bool
    public let caches: Bool
    /// Re-fits each pruned FFN for its kept count before scoring (nil: kept weights as they were).
    public let reconstruction: Reconstruction?
    /// Projected image features per calibration batch (nil: computed in every evaluation).
    private var features: [(value: Tensor, counts: [Int])?]
    private var cache: [[Int]: StrategyScore] = [:]

    /// What the evaluator did, for a search's statistics and the benchmark.
    public struct Counters: Sendable, Equatable, Codable {
        /// Full calibration evaluations run, and those answered from the cache (or the preloaded scores) instead.
        public var evaluations = 0
        public var cacheHits = 0
        /// Scores known before the search started (a resumed search's stored samples).
        public var preloaded = 0
        /// Partial evaluations on the screening slice (successive halving).
        public var screenings = 0
        public var evaluationSeconds = 0.0
        public var screeningSeconds = 0.0
        /// Seconds spent computing image features once, up front.
        public var featureSeconds = 0.0
    }
    public private(set) var counters = Counters()

    public init(pruner: Pruner, calibration: Calibration, reuseVisionFeatures: Bool = true, cache: Bool = true,
                reconstruction: Reconstruction? = nil) throws {
        self.pruner = pruner
        self.reconstruction = reconstruction
        self.calibration = calibration
        caches = cache
        features = Array(repeating: nil, count: calibration.batches.count)
        let visionPruned = pruner.units.contains { $0.location?.tower == .vision }
        reusesVisionFeatures = reuseVisionFeatures && !visionPruned
        if reusesVisionFeatures, let m = pruner.nested.model.imageText {
            let start = Date()
            for (i, batch) in calibration.batches.enumerated() {
                guard let images = batch.tokens.images else { continue }
                let computed = try m.imageFeatures(Graph(recording: false), images: images, options: ForwardOptions())
                features[i] = (computed.value.tensor, computed.counts)
            }
            counters.featureSeconds = Date().timeIntervalSince(start)
        }
    }

    /// Adds a score known from elsewhere (a stored sample of the same model, calibration set and sizes).
    public func preload(sizes: [Int], score: StrategyScore) {
        guard cache[sizes] == nil else { return }
        cache[sizes] = score
        counters.preloaded += 1
    }

    /// The score of `sizes` on the whole calibration set, and whether it was computed now (false: looked up).
    public func score(sizes: [Int]) throws -> (score: StrategyScore, computed: Bool) {
        // Preloaded scores are always used (a resumed search must not redo them); computed ones only when caching.
        if let known = cache[sizes] {
            counters.cacheHits += 1
            return (known, false)
        }
        let start = Date()
        let score = try run(sizes: sizes, batches: calibration.batches.indices)
        counters.evaluations += 1
        counters.evaluationSeconds += Date().timeIntervalSince(start)
        if caches { cache[sizes] = score }
        return (score, true)
    }

    /// Loss of `sizes` on the first `batches` calibration batches only (a cheap screen, never cached or stored).
    public func screen(sizes: [Int], batches: Int) throws -> Double {
        let start = Date()
        defer {
            counters.screenings += 1
            counters.screeningSeconds += Date().timeIntervalSince(start)
        }
        return try run(sizes: sizes, batches: 0..<min(batches, calibration.batches.count)).loss
    }

    private func run(sizes: [Int], batches: Range<Int>) throws -> StrategyScore {
        try pruner.nested.check(sizes: sizes)
        let options = try pruner.options(sizes: sizes, reconstruction: reconstruction)
        var (total, counted, right, rows) = (0.0, 0, 0, 0)
        for i in batches {
            let batch = calibration.batches[i].tokens
            guard batch.counted > 0 else { continue }
            let g = Graph(recording: false)
            let logits: Value
            if let features = features[i], let m = pruner.nested.model.imageText {
                logits = try m.logits(g, tokens: batch.rows, features: ImageFeatures(value: g.constant(features.value), counts: features.counts),
                                      images: batch.images, options: options)
            } else {
                logits = try pruner.nested.model.logits(g, batch, options: options)
            }
            if calibration.batches[i].questions != nil {
                // Question data: loss on the right answers; a multiple-choice question is right when its right
                // choice is the most likely.
                let s = calibration.batches[i].score(logits.tensor)
                (total, counted, right, rows) = (total + s.lost, counted + s.counted, right + s.right, rows + s.asked)
                continue
            }
            total += Double(g.crossEntropy(logits, targets: batch.targets).tensor.scalar) * Double(batch.counted)
            counted += batch.counted
            for exact in Evaluation.exactRows(logits.tensor, batch) {
                guard let exact else { continue }
                rows += 1
                if exact { right += 1 }
            }
        }
        return StrategyScore(loss: total / Double(max(counted, 1)), accuracy: Double(right) / Double(max(rows, 1)))
    }
}
