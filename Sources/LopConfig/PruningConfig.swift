import Foundation

extension LopConfig {
    /// Defaults of importance scoring, budgets' bounds and the allocation baselines (CLI flags and job
    /// arguments override them).
    public struct Pruning: Sendable, Equatable {
        /// lop, magnitude or wanda.
        public var importance = "lop"
        /// Calibration samples (text windows or image questions) for importance and allocation.
        public var calibrationSamples = 32
        /// Tokens per calibration text window.
        public var calibrationContext = 128
        /// Per-unit keep-ratio bounds, and the multiple kept neuron counts are rounded to.
        public var minimumRatio = 0.1
        public var maximumRatio = 1.0
        public var alignment = 1
        /// OWL: ratio spread λ and outlier threshold M.
        public var owlLambda = 0.08
        public var owlThreshold = 5.0
        /// ECoFLaP: random directions, and the perturbation relative to each weight tensor's RMS.
        public var ecoflapPerturbations = 8
        public var ecoflapEpsilon = 1e-3
        /// How kept weights are set: none (as they were) or least-squares (down-projections re-fitted on the
        /// calibration activations), and the re-fit's ridge relative to the Gram matrix's mean diagonal.
        public var reconstruction = "least-squares"
        public var reconstructionRidge = 0.001
        /// The most memory reconstruction holds at once (Gram matrices being accumulated; loaded ones, shared
        /// products and re-fits kept for reuse), in MiB.
        public var reconstructionMemoryMiB = 4096
        public var reconstructionMemory: Int { reconstructionMemoryMiB << 20 }
        public init() {}
    }
}

extension TableReader {
    mutating func readPruning(into p: inout LopConfig.Pruning) throws {
        let source = self.source
        if let v = try string("importance") {
            guard ["lop", "magnitude", "wanda"].contains(v.0) else {
                throw ConfigError.invalidValue(key: keyPath("importance"), reason: "'\(v.0)' is not lop, magnitude or wanda", source: source)
            }
            p.importance = v.0
        }
        if let v = try int("calibration_samples", in: 1...100_000) { p.calibrationSamples = v }
        if let v = try int("calibration_context", in: 2...1_000_000) { p.calibrationContext = v }
        if let v = try double("minimum_ratio", in: 0...1) { p.minimumRatio = v }
        if let v = try double("maximum_ratio", in: 0...1) { p.maximumRatio = v }
        if let v = try int("alignment", in: 1...65536) { p.alignment = v }
        if let v = try double("owl_lambda", in: 0...0.5) { p.owlLambda = v }
        if let v = try double("owl_threshold", in: 1...1000) { p.owlThreshold = v }
        if let v = try int("ecoflap_perturbations", in: 1...10_000) { p.ecoflapPerturbations = v }
        if let v = try double("ecoflap_epsilon", in: 1e-6...1) { p.ecoflapEpsilon = v }
        if let v = try string("reconstruction") {
            guard ["none", "least-squares"].contains(v.0) else {
                throw ConfigError.invalidValue(key: keyPath("reconstruction"), reason: "'\(v.0)' is not none or least-squares", source: source)
            }
            p.reconstruction = v.0
        }
        if let v = try double("reconstruction_ridge", in: 0...1000) { p.reconstructionRidge = v }
        if let v = try int("reconstruction_memory_mib", in: 64...(1 << 24)) { p.reconstructionMemoryMiB = v }
        if p.minimumRatio > p.maximumRatio || p.maximumRatio == 0 {
            throw ConfigError.invalidValue(key: keyPath("minimum_ratio"), reason: "must not exceed maximum_ratio, which must be positive", source: source)
        }
    }
}
