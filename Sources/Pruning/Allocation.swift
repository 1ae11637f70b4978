import Evaluation
import Foundation
import LopCore
import Models
import Tensor

/// How a budget is shared among units. Every method proposes ratios that then go through the same exact
/// projection, so comparisons between them are fair.
public enum AllocationMethod: String, Codable, Sendable, CaseIterable {
    /// Every unit keeps the budget's fraction.
    case uniform
    /// Outlier-weighted layerwise ratios (OWL): units with more activation outliers keep more.
    case owl
    /// ECoFLaP-style: a zeroth-order (forward-only) estimate of each unit's importance to the loss; the keep
    /// budget above a floor is handed out in proportion to it.
    case ecoflap
}

public struct AllocationSettings: Sendable, Equatable {
    /// OWL's spread λ: ratios lie in [1 − S − λ, 1 − S + λ] before projection.
    public var owlLambda: Double = 0.08
    /// OWL's outlier threshold M: a weight is an outlier when its activation-weighted score exceeds M× its
    /// unit's mean.
    public var owlThreshold: Double = 5
    /// ECoFLaP: random perturbation directions averaged (two forward passes each).
    public var ecoflapPerturbations: Int = 8
    /// ECoFLaP: perturbation size, relative to each unit's weight RMS.
    public var ecoflapEpsilon: Double = 1e-3
    public var seed: UInt64 = 0
    public init() {}
}

public enum Allocation {
    /// Proposed keep ratios, one per unit (not yet projected onto the budget).
    /// `unitScores` gives ECoFLaP's zeroth-order scores when they are already known (they depend on the model
    /// and calibration set only, not on the budget).
    public static func ratios(_ method: AllocationMethod, nested: NestedModel, statistics: ActivationStatistics?, calibration: Calibration?,
                              budget: Budget, bounds: KeepBounds, settings: AllocationSettings = AllocationSettings(),
                              unitScores: [Double]? = nil) throws -> [Double] {
        let fraction = try budget.fraction(of: nested.units)
        switch method {
        case .uniform:
            return Array(repeating: fraction, count: nested.units.count)
        case .owl:
            guard let statistics else { throw BudgetError("OWL needs activation statistics from calibration data") }
            let outliers = owlOutlierRatios(nested.model, statistics: statistics, threshold: settings.owlThreshold)
            guard let low = outliers.min(), let high = outliers.max(), high > low else { return Array(repeating: fraction, count: nested.units.count) }
            return outliers.map { fraction - settings.owlLambda + 2 * settings.owlLambda * ($0 - low) / (high - low) }
        case .ecoflap:
            guard let calibration else { throw BudgetError("ECoFLaP needs calibration data") }
            let scores = try unitScores ?? zerothOrderScores(nested, calibration: calibration, settings: settings)
            let weights = nested.units.map { Double($0.width * $0.parametersPerNeuron) }
            let mean = zip(scores, weights).reduce(0) { $0 + $1.0 * $1.1 } / weights.reduce(0, +)
            guard mean > 0 else { return Array(repeating: fraction, count: nested.units.count) }
            let floor = min(bounds.minimumRatio, fraction)
            return scores.map { floor + (fraction - floor) * $0 / mean }
        }
    }

    /// Per unit, the share of its weights whose activation-weighted score `|W_ij|·‖x_j‖` exceeds `threshold`×
    /// the unit's mean score (input-side matrices scaled by input-channel norms, output-side by neuron norms).
    public static func owlOutlierRatios(_ model: Model, statistics: ActivationStatistics, threshold: Double) -> [Double] {
        statistics.units.indices.map { u in
            let weights = UnitWeights(model, statistics.units[u])
            var scores: [Float] = []
            for (parameter, axis) in weights.all where parameter.shape.count == 2 {
                let t = parameter.value, columns = t.shape[1]
                // Rows are neurons (axis 0): columns are input channels. Columns are neurons (axis 1): scale by them.
                let norms = axis == 0 ? statistics.inputNorms[u] : statistics.hiddenNorms[u]
                for i in 0..<t.count { scores.append(abs(t.data[i]) * norms[i % columns]) }
            }
            let mean = scores.reduce(0.0) { $0 + Double($1) } / Double(max(scores.count, 1))
            let limit = Float(threshold * mean)
            return Double(scores.reduce(0) { $1 > limit ? $0 + 1 : $0 }) / Double(max(scores.count, 1))
        }
    }

    /// ECoFLaP-style unit scores: the loss gradient estimated from forward passes only (SPSA: ĝ = mean over
    /// random directions z of `(L(w + εz) − L(w − εz)) / 2ε · z`), then per unit the mean of `|w ⊙ ĝ|` over its
    /// weights — a first-order estimate of the loss change from removing them.
    public static func zerothOrderScores(_ nested: NestedModel, calibration: Calibration, settings: AllocationSettings) throws -> [Double] {
        guard settings.ecoflapPerturbations > 0, settings.ecoflapEpsilon > 0 else { throw BudgetError("ECoFLaP needs positive perturbations and epsilon") }
        let parameters = nested.units.map { UnitWeights(nested.model, $0).all.map(\.parameter).filter { $0.shape.count == 2 } }
        // Perturbing needs Float copies of every unit weight; the stored forms are put back afterwards.
        let held = parameters.map { $0.map(\.weight) }
        let originals = parameters.map { $0.map(\.value) }
        let scales = originals.map { unit in
            unit.map { t in Float((t.data.reduce(0.0) { $0 + Double($1 * $1) } / Double(max(t.count, 1))).squareRoot() * settings.ecoflapEpsilon) }
        }
        var estimate = originals.map { $0.map { [Double](repeating: 0, count: $0.count) } }
        var generator = SeededGenerator(seed: settings.seed &+ 0xEC0F)
        defer { for (unit, values) in zip(parameters, held) { for (p, w) in zip(unit, values) { p.weight = w } } }
        for _ in 0..<settings.ecoflapPerturbations {
            let directions = originals.map { $0.map { Tensor.normal($0.shape, std: 1, generator: &generator) } }
            func shifted(_ sign: Float) throws -> Double {
                for u in parameters.indices {
                    for (k, p) in parameters[u].enumerated() {
                        let (o, d, s) = (originals[u][k], directions[u][k], sign * scales[u][k])
                        p.value = Tensor(shape: o.shape, data: zip(o.data, d.data).map { $0 + s * $1 })
                    }
                }
                return try calibration.loss(nested.model)
            }
            let difference = try shifted(1) - shifted(-1)
            for u in parameters.indices {
                for k in parameters[u].indices {
                    // d/dw along z, divided by that tensor's ε so every tensor's estimate is in loss per unit weight.
                    let factor = difference / (2 * Double(scales[u][k])) / Double(settings.ecoflapPerturbations)
                    let d = directions[u][k].data
                    for i in d.indices { estimate[u][k][i] += factor * Double(d[i]) }
                }
            }
        }
        return parameters.indices.map { u in
            var (sum, count) = (0.0, 0)
            for k in parameters[u].indices {
                for (w, g) in zip(originals[u][k].data, estimate[u][k]) { sum += abs(Double(w) * g) }
                count += originals[u][k].count
            }
            return sum / Double(max(count, 1))
        }
    }
}
