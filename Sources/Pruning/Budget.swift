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

/// How much of the prunable units a variant may keep.
public enum Budget: Sendable, Equatable {
    /// Fraction of the units' parameters kept, in (0, 1] (parameter-weighted: larger units count more).
    case fraction(Double)
    /// Absolute number of the units' parameters kept.
    case parameters(Int)
    /// Multiply-adds per token through the units, counted as 2 FLOPs per weight.
    case flopsPerToken(Int)
    /// Bytes of the units' weights at the given bytes per weight (2 for F16/BF16, 4 for F32).
    case bytes(Int, bytesPerWeight: Int)

    /// What this budget allows, in parameters of `units`.
    func allowedParameters(_ units: [PrunableUnit]) throws(BudgetError) -> Double {
        switch self {
        case .fraction(let f):
            guard f.isFinite, f > 0, f <= 1 else { throw BudgetError("budget fraction \(f) is outside (0, 1]") }
            return f * Double(Projection.prunableParameters(units))
        case .parameters(let n):
            guard n > 0 else { throw BudgetError("budget of \(n) parameters is not positive") }
            return Double(n)
        case .flopsPerToken(let n):
            guard n > 0 else { throw BudgetError("budget of \(n) FLOPs per token is not positive") }
            return Double(n) / 2
        case .bytes(let n, let size):
            guard n > 0, size > 0 else { throw BudgetError("budget of \(n) bytes at \(size) bytes per weight is not positive") }
            return Double(n) / Double(size)
        }
    }
}

/// A budget or strategy that cannot be met, with the reason.
public struct BudgetError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
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
    /// Reads a budget as users write it: `0.5` or `50%` (fraction kept), `params:1200000`, `flops:2400000`,
    /// `bytes:2400000` (F16 weights) or `bytes:4800000@4` (F32).
    public init(parsing text: String) throws(BudgetError) {
        let t = text.trimmingCharacters(in: .whitespaces)
        func integer(_ s: Substring) throws(BudgetError) -> Int {
            guard let n = Int(s.replacingOccurrences(of: "_", with: "")), n > 0 else { throw BudgetError("budget \"\(text)\": \"\(s)\" is not a positive integer") }
            return n
        }
        if let colon = t.firstIndex(of: ":") {
            let kind = t[..<colon], rest = t[t.index(after: colon)...]
            switch kind {
            case "params", "parameters": self = .parameters(try integer(rest))
            case "flops": self = .flopsPerToken(try integer(rest))
            case "bytes":
                let parts = rest.split(separator: "@", omittingEmptySubsequences: false)
                guard parts.count <= 2 else { throw BudgetError("budget \"\(text)\" is not bytes:N or bytes:N@SIZE") }
                self = .bytes(try integer(parts[0]), bytesPerWeight: parts.count == 2 ? try integer(parts[1]) : 2)
            default: throw BudgetError("budget \"\(text)\": unknown kind \"\(kind)\" (params, flops, bytes; or a fraction)")
            }
        } else {
            let percent = t.hasSuffix("%")
            guard let x = Double(percent ? String(t.dropLast()) : t) else {
                throw BudgetError("budget \"\(text)\" is neither a fraction (0.5, 50%) nor KIND:VALUE")
            }
            self = .fraction(percent ? x / 100 : x)
        }
        // Validity (range, sign) is checked here too, so a bad budget fails where it was typed.
        _ = try allowedParameters([PrunableUnit(name: "check", width: 1, parametersPerNeuron: 1)])
    }

    /// `fraction`, `parameters`, `flops_per_token` or `bytes`, as stored in records and samples.
    public var kind: String {
        switch self {
        case .fraction: return "fraction"
        case .parameters: return "parameters"
        case .flopsPerToken: return "flops_per_token"
        case .bytes: return "bytes"
        }
    }

    public var value: Double {
        switch self {
        case .fraction(let f): return f
        case .parameters(let n), .flopsPerToken(let n), .bytes(let n, _): return Double(n)
        }
    }

    /// One string per distinct budget: kind, exact value and, for bytes, the bytes per weight. "0.5" and "50%"
    /// agree; "bytes:N" and "bytes:N@4" do not. Request keys and the predictor's grouping of samples use it.
    public var identity: String {
        if case .bytes(let n, let size) = self { return "bytes \(n)@\(size)" }
        return "\(kind) \(value)"
    }

    /// The fraction of the units' parameters this budget keeps (a uniform allocation's ratio).
    public func fraction(of units: [PrunableUnit]) throws(BudgetError) -> Double {
        try allowedParameters(units) / Double(Projection.prunableParameters(units))
    }
}

extension Budget: CustomStringConvertible {
    /// The canonical text: `Budget(parsing:)` reads it back to the same budget.
    public var description: String {
        switch self {
        case .fraction(let f):
            let short = String(format: "%g", f)
            return Double(short) == f ? short : "\(f)"
        case .parameters(let n): return "params:\(n)"
        case .flopsPerToken(let n): return "flops:\(n)"
        case .bytes(let n, let size): return size == 2 ? "bytes:\(n)" : "bytes:\(n)@\(size)"
        }
    }
}

/// One canonical form everywhere a budget is stored (job args and results, samples, registry rows): its text.
/// Decoding also takes what users write in job args: a fraction as a number, or `{"kind", "value"}`.
extension Budget: Codable {
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    public init(from decoder: any Decoder) throws {
        func fail(_ reason: String, at path: [any CodingKey] = decoder.codingPath) -> DecodingError {
            .dataCorrupted(.init(codingPath: path, debugDescription: reason))
        }
        let text: String
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            text = s
        } else if let x = try? c.decode(Double.self) {
            text = "\(x)"
        } else if let object = try? decoder.container(keyedBy: Key.self) {
            guard object.allKeys.count == 2, let kind = try? object.decode(String.self, forKey: Key("kind")),
                  let x = try? object.decode(Double.self, forKey: Key("value")) else {
                throw fail("must be {\"kind\": ..., \"value\": ...}")
            }
            let prefixes = ["fraction": "", "parameters": "params:", "flops_per_token": "flops:", "bytes": "bytes:"]
            guard let prefix = prefixes[kind] else {
                throw fail("must be fraction, parameters, flops_per_token or bytes", at: decoder.codingPath + [Key("kind")])
            }
            text = prefix + (kind == "fraction" ? "\(x)" : (x == x.rounded() && x < 1e18 ? String(Int64(x)) : "\(x)"))
        } else {
            throw fail("must be a budget: \"0.5\", \"params:N\", a number or {\"kind\", \"value\"}")
        }
        do { self = try Budget(parsing: text) } catch { throw fail(error.description) }
    }

    private struct Key: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { stringValue = name }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

extension BudgetError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
