import Foundation

// A budget is the vocabulary of every layer that stores or compares one (job args and results, samples, registry
// rows, the predictor's grouping), so it lives here; Pruning turns it into kept parameters.

/// How much of the prunable units a variant may keep.
public enum Budget: Sendable, Hashable {
    /// Fraction of the units' parameters kept, in (0, 1] (parameter-weighted: larger units count more).
    case fraction(Double)
    /// Absolute number of the units' parameters kept.
    case parameters(Int)
    /// Multiply-adds per token through the units, counted as 2 FLOPs per weight.
    case flopsPerToken(Int)
    /// Bytes of the units' weights at the given bytes per weight (2 for F16/BF16, 4 for F32).
    case bytes(Int, bytesPerWeight: Int)
}

/// A budget or strategy that cannot be met, with the reason.
public struct BudgetError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}


extension BudgetError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
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
        try validate()
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

    /// Throws when the value cannot be a budget (a fraction outside (0, 1], a count that is not positive).
    public func validate() throws(BudgetError) {
        switch self {
        case .fraction(let f):
            guard f.isFinite, f > 0, f <= 1 else { throw BudgetError("budget fraction \(f) is outside (0, 1]") }
        case .parameters(let n):
            guard n > 0 else { throw BudgetError("budget of \(n) parameters is not positive") }
        case .flopsPerToken(let n):
            guard n > 0 else { throw BudgetError("budget of \(n) FLOPs per token is not positive") }
        case .bytes(let n, let size):
            guard n > 0, size > 0 else { throw BudgetError("budget of \(n) bytes at \(size) bytes per weight is not positive") }
        }
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
