import Foundation
import Store

/// Reads a job's args into its handler's `Arguments` type. Every failure becomes an `ArgumentError` naming the
/// field (`search.simulations`, `budgets[2]`) and the expected form, so a job submitted by SQL with a typo is
/// discarded with a message a person can act on.
public enum JobArguments {
    /// Decodes `args` (a JSON object) as `T`. `kind` names the job in "is not an argument of KIND".
    public static func decode<T: Decodable>(_ type: T.Type, from args: JSONB, kind: JobKind) throws -> T {
        guard case .object? = try? args.decode(AnyJSON.self) else { throw ArgumentError("args", "must be a JSON object") }
        let decoder = JSONDecoder()
        decoder.userInfo[kindKey] = kind.rawValue
        do {
            return try decoder.decode(T.self, from: Data(args.text.utf8))
        } catch let error as ArgumentError {
            throw error
        } catch let error as DecodingError {
            throw argumentError(error)
        }
    }

    static let kindKey = CodingUserInfoKey(rawValue: "lop.jobKind")!

    /// A field path as users write it: `search.simulations`, `budgets[0]`.
    public static func path(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue, key.stringValue.hasPrefix("Index") || key.stringValue == "\(index)" {
                text += "[\(index)]"
            } else {
                text += (text.isEmpty ? "" : ".") + key.stringValue
            }
        }
        return text.isEmpty ? "args" : text
    }

    static func argumentError(_ error: DecodingError) -> ArgumentError {
        switch error {
        case .keyNotFound(let key, let context):
            return ArgumentError(path(context.codingPath + [key]), "is required")
        case .valueNotFound(_, let context):
            return ArgumentError(path(context.codingPath), "is required")
        case .typeMismatch(let type, let context):
            return ArgumentError(path(context.codingPath), "must be \(expected(type))")
        case .dataCorrupted(let context):
            // JSONDecoder's own wording for a fractional or huge number read as an integer.
            let reason = context.debugDescription.hasPrefix("Parsed JSON number") ? "must be an integer" : context.debugDescription
            return ArgumentError(path(context.codingPath), reason)
        @unknown default:
            return ArgumentError("args", "\(error)")
        }
    }

    /// The form a type expects, in words.
    static func expected(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is Int.Type, is Int64.Type, is Int32.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is [Any].Type: return "a list"
        case is [String: Any].Type: return "an object"
        default: return "\(type)"
        }
    }
}

/// Any key of a JSON object (to list the keys a type does not know).
struct AnyCodingKey: CodingKey {
    let stringValue: String
    let intValue: Int?
    init(stringValue: String) { (self.stringValue, intValue) = (stringValue, nil) }
    init?(intValue: Int) { (stringValue, self.intValue) = ("\(intValue)", intValue) }
}

extension Decoder {
    /// Fails on the first key of this object that `Keys` does not list: a misspelt argument is an error,
    /// never ignored.
    public func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_ keys: Keys.Type) throws {
        try rejectUnknownKeys(Keys.allCases.map(\.stringValue))
    }

    /// Fails on the first key of this object outside `names`.
    public func rejectUnknownKeys(_ names: [String]) throws {
        let known = Set(names)
        let present = try container(keyedBy: AnyCodingKey.self).allKeys.map(\.stringValue)
        if let extra = present.filter({ !known.contains($0) }).sorted().first {
            let kind = userInfo[JobArguments.kindKey] as? String
            let prefix = codingPath.isEmpty ? "" : JobArguments.path(codingPath) + "."
            throw ArgumentError(prefix + extra, codingPath.isEmpty && kind != nil ? "is not an argument of \(kind!)" : "is not a known key")
        }
    }
}

extension KeyedDecodingContainer {
    /// An argument error for a key of this object.
    public func invalid(_ key: Key, _ reason: String) -> ArgumentError {
        ArgumentError(JobArguments.path(codingPath + [key]), reason)
    }

    /// A non-empty string, or nil when absent or null.
    public func string(_ key: Key) throws -> String? {
        guard let s = try decodeIfPresent(String.self, forKey: key) else { return nil }
        guard !s.isEmpty else { throw invalid(key, "must be a non-empty string") }
        return s
    }

    /// An integer in `range`, or nil when absent or null.
    public func integer(_ key: Key, in range: ClosedRange<Int>) throws -> Int? {
        let message = "must be an integer in \(range.lowerBound)...\(range.upperBound)"
        let x: Double?
        do { x = try decodeIfPresent(Double.self, forKey: key) } catch DecodingError.typeMismatch { throw invalid(key, message) }
        guard let x else { return nil }
        guard x == x.rounded(), x >= Double(range.lowerBound), x <= Double(range.upperBound) else { throw invalid(key, message) }
        return Int(x)
    }

    /// Decodes a value whose own checks throw a reason (a `BudgetError`, a reference's parse error): the reason
    /// becomes an argument error for this key.
    public func parsed<T>(_ key: Key, _ parse: (String) throws -> T) throws -> T? {
        guard let text = try string(key) else { return nil }
        do { return try parse(text) } catch let error as ArgumentError { throw error } catch { throw invalid(key, "\(error)") }
    }
}
