import Foundation
import LopCore
import Models

/// One prunable FFN: its neurons are kept or dropped together with their gate/up rows and down column
/// (or fc1 row, fc1 bias and fc2 column in a vision MLP).
public struct PrunableUnit: Sendable, Equatable, Codable {
    /// e.g. `language.layers.3.mlp`, `vision.layers.1.mlp`.
    public let name: String
    /// Neurons in the unpruned model.
    public let width: Int
    /// Weights (and biases) that go with each neuron.
    public let parametersPerNeuron: Int

    public init(name: String, width: Int, parametersPerNeuron: Int) {
        precondition(width > 0 && parametersPerNeuron > 0, "unit \(name) needs positive sizes")
        self.name = name
        self.width = width
        self.parametersPerNeuron = parametersPerNeuron
    }
}

/// Per-unit limits on what a strategy may keep.
public struct KeepBounds: Sendable, Equatable {
    public var minimumRatio: Double
    public var maximumRatio: Double
    /// Kept neuron counts are multiples of this (hardware-friendly sizes); a unit's full width is always allowed.
    public var alignment: Int

    public init(minimumRatio: Double = 0.1, maximumRatio: Double = 1.0, alignment: Int = 1) {
        self.minimumRatio = minimumRatio
        self.maximumRatio = maximumRatio
        self.alignment = alignment
    }

    /// The kept counts allowed for a unit, ascending.
    func allowed(_ unit: PrunableUnit) -> [Int] {
        let low = Int((minimumRatio * Double(unit.width)).rounded(.up)), high = Int((maximumRatio * Double(unit.width)).rounded(.down))
        var counts = Array(stride(from: ((max(low, 1) + alignment - 1) / alignment) * alignment, through: high, by: alignment))
        if high == unit.width && counts.last != unit.width { counts.append(unit.width) }
        return counts
    }
}

/// Turns proposed keep ratios into integer neuron counts that meet a budget exactly: every count is allowed by
/// the bounds, the kept parameters never exceed the budget, and they fall short of it by less than one
/// alignment step of the unit with the most parameters per neuron.
public enum Projection {
    public static func project(ratios: [Double], units: [PrunableUnit], budget: Budget, bounds: KeepBounds = KeepBounds()) throws(BudgetError) -> [Int] {
        guard !units.isEmpty else { throw BudgetError("the model has no prunable FFN units") }
        guard ratios.count == units.count else { throw BudgetError("strategy has \(ratios.count) ratios for \(units.count) units") }
        if let bad = ratios.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
            throw BudgetError("ratio \(ratios[bad]) for \(units[bad].name) is not a finite non-negative number")
        }
        guard bounds.alignment >= 1, bounds.minimumRatio >= 0, bounds.minimumRatio <= bounds.maximumRatio, bounds.maximumRatio <= 1 else {
            throw BudgetError("bounds [\(bounds.minimumRatio), \(bounds.maximumRatio)] with alignment \(bounds.alignment) are not valid")
        }
        let target = try budget.allowedParameters(units)
        let allowed = units.map { bounds.allowed($0) }
        if let empty = allowed.firstIndex(where: \.isEmpty) {
            throw BudgetError("\(units[empty].name) (\(units[empty].width) neurons) has no count in [\(bounds.minimumRatio), \(bounds.maximumRatio)] aligned to \(bounds.alignment)")
        }
        let weights = units.map { Double($0.parametersPerNeuron) }
        let least = zip(allowed, weights).reduce(0.0) { $0 + Double($1.0.first!) * $1.1 }
        let most = zip(allowed, weights).reduce(0.0) { $0 + Double($1.0.last!) * $1.1 }
        guard target >= least else {
            throw BudgetError("the budget allows \(Int(target)) parameters but the bounds keep at least \(Int(least))")
        }
        if target >= most { return allowed.map { $0.last! } }

        // Continuous: shift every ratio by one λ (bisection; the kept total grows with λ) so the clamped
        // counts meet the target.
        func counts(_ shift: Double) -> [Double] {
            units.indices.map { i in
                min(max((ratios[i] + shift) * Double(units[i].width), Double(allowed[i].first!)), Double(allowed[i].last!))
            }
        }
        func total(_ c: [Double]) -> Double { zip(c, weights).reduce(0) { $0 + $1.0 * $1.1 } }
        var (low, high) = (-1.0 - (ratios.max() ?? 0), 1.0)
        for _ in 0..<100 {
            let middle = (low + high) / 2
            if total(counts(middle)) > target { high = middle } else { low = middle }
        }
        let continuous = counts(low)

        // Integer: round each down to an allowed count, then raise the units furthest below their continuous
        // count, one allowed step at a time, while the budget holds.
        var index = continuous.indices.map { i in allowed[i].lastIndex { Double($0) <= continuous[i] + 1e-9 } ?? 0 }
        var kept = zip(index.indices, weights).reduce(0.0) { $0 + Double(allowed[$1.0][index[$1.0]]) * $1.1 }
        while true {
            let candidates = units.indices.filter { i in
                index[i] + 1 < allowed[i].count && kept + Double(allowed[i][index[i] + 1] - allowed[i][index[i]]) * weights[i] <= target + 1e-6
            }
            guard let i = candidates.max(by: { continuous[$0] - Double(allowed[$0][index[$0]]) < continuous[$1] - Double(allowed[$1][index[$1]]) }) else { break }
            kept += Double(allowed[i][index[i] + 1] - allowed[i][index[i]]) * weights[i]
            index[i] += 1
        }
        return units.indices.map { allowed[$0][index[$0]] }
    }

    /// Kept parameters of integer counts.
    public static func keptParameters(_ counts: [Int], units: [PrunableUnit]) -> Int {
        zip(counts, units).reduce(0) { $0 + $1.0 * $1.1.parametersPerNeuron }
    }

    /// Every parameter the units own (what a fraction budget is a fraction of).
    public static func prunableParameters(_ units: [PrunableUnit]) -> Int {
        units.reduce(0) { $0 + $1.width * $1.parametersPerNeuron }
    }

    /// The fraction of the units' parameters that integer counts keep.
    public static func keptFraction(_ counts: [Int], units: [PrunableUnit]) -> Double {
        Double(keptParameters(counts, units: units)) / Double(prunableParameters(units))
    }
}

extension Budget {
    /// What this budget allows, in parameters of `units`.
    func allowedParameters(_ units: [PrunableUnit]) throws(BudgetError) -> Double {
        try validate()
        switch self {
        case .fraction(let f): return f * Double(Projection.prunableParameters(units))
        case .parameters(let n): return Double(n)
        case .flopsPerToken(let n): return Double(n) / 2
        case .bytes(let n, let size): return Double(n) / Double(size)
        }
    }

    /// The fraction of the units' parameters this budget keeps (a uniform allocation's ratio).
    public func fraction(of units: [PrunableUnit]) throws(BudgetError) -> Double {
        try allowedParameters(units) / Double(Projection.prunableParameters(units))
    }
}

