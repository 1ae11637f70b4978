import Foundation

extension LopConfig {
    /// How compress jobs choose a strategy.
    public struct Compress: Sendable, Equatable {
        /// `auto` uses the predicted strategy unless the budget lies outside the kept fractions the predictor was
        /// trained on, or the ensemble's largest per-unit standard deviation of a ratio exceeds this; then it searches.
        public var maxSpread = 0.05
        /// The method of a compress request that names none: predict, search or auto.
        public var method = "auto"
        public init() {}
    }

    /// The train job: re-training each base model's predictor on every sample so far, and promotion.
    public struct Training: Sendable, Equatable {
        /// When lop-worker enqueues a train job for every base model with new samples (cron, UTC); "" never.
        public var schedule = "0 3 * * *"
        /// Budgets (fractions kept) on which the challenger and the champion are both evaluated on held-out data.
        public var evaluationBudgets: [Double] = [0.3, 0.5, 0.7]
        /// The challenger takes the champion alias when its mean held-out loss is lower by at least this fraction.
        public var promotionMargin = 0.002
        /// Training steps and ensemble members of each challenger.
        public var steps = 1500
        public var ensemble = 3
        public init() {}
    }
}

extension TableReader {
    mutating func readCompress(into compress: inout LopConfig.Compress) throws {
        if let v = try double("max_spread", in: 0...1) { compress.maxSpread = v }
        if let (v, _) = try string("method") {
            guard ["predict", "search", "auto"].contains(v) else {
                throw ConfigError.invalidValue(key: keyPath("method"), reason: "'\(v)' is not predict, search or auto", source: source)
            }
            compress.method = v
        }
    }

    mutating func readTraining(into training: inout LopConfig.Training) throws {
        if let (v, _) = try string("schedule") { training.schedule = v.trimmingCharacters(in: .whitespaces) }
        if let v = try doubleList("evaluation_budgets", in: 0.01...1) {
            guard !v.isEmpty && v.count <= 50 else {
                throw ConfigError.invalidValue(key: keyPath("evaluation_budgets"), reason: "needs between 1 and 50 budgets", source: source)
            }
            training.evaluationBudgets = v
        }
        if let v = try double("promotion_margin", in: 0...1) { training.promotionMargin = v }
        if let v = try int("steps", in: 1...1_000_000) { training.steps = v }
        if let v = try int("ensemble", in: 1...32) { training.ensemble = v }
    }
}
