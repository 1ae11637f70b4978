import Foundation

// MARK: - Timestamps

extension Date: PostgresCodable {
    public static var postgresType: Oid { PGType.timestamptz }

    /// ISO form in UTC with microseconds, the precision of `timestamptz`.
    public var postgresText: String? {
        let micros = (timeIntervalSince1970 * 1_000_000).rounded()
        var seconds = time_t((micros / 1_000_000).rounded(.down))
        let fraction = Int(micros - Double(seconds) * 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d.%06d+00",
                      Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), fraction)
    }

    /// Reads `timestamptz` as the session prints it (lop sets TimeZone=UTC and DateStyle=ISO on every connection).
    public init(postgresText text: String, type: Oid) throws {
        guard type == PGType.timestamptz else { throw DecodeFailure("the column is not timestamptz") }
        let utf8 = Array(text.utf8)
        func number(_ range: Range<Int>) throws -> Int {
            guard range.upperBound <= utf8.count else { throw DecodeFailure("not an ISO timestamp") }
            var value = 0
            for c in utf8[range] {
                guard c >= 48 && c <= 57 else { throw DecodeFailure("not an ISO timestamp") }
                value = value * 10 + Int(c - 48)
            }
            return value
        }
        // YYYY-MM-DD HH:MM:SS[.ffffff]+00 — other years, BC dates and infinities are out of lop's range.
        guard utf8.count >= 22, utf8[4] == 45, utf8[7] == 45, utf8[10] == 32, utf8[13] == 58, utf8[16] == 58 else {
            throw DecodeFailure("not a UTC ISO timestamp with a four-digit year")
        }
        var parts = tm()
        parts.tm_year = Int32(try number(0..<4) - 1900)
        parts.tm_mon = Int32(try number(5..<7) - 1)
        parts.tm_mday = Int32(try number(8..<10))
        parts.tm_hour = Int32(try number(11..<13))
        parts.tm_min = Int32(try number(14..<16))
        parts.tm_sec = Int32(try number(17..<19))
        var index = 19
        var micros = 0
        if utf8[index] == 46 {
            var digits = 0
            index += 1
            while index < utf8.count, utf8[index] >= 48, utf8[index] <= 57 {
                if digits < 6 { micros = micros * 10 + Int(utf8[index] - 48); digits += 1 }
                index += 1
            }
            while digits < 6 { micros *= 10; digits += 1 }
        }
        guard Array(utf8[index...]) == Array("+00".utf8) else { throw DecodeFailure("not in UTC (+00)") }
        let seconds = timegm(&parts)
        self = Date(timeIntervalSince1970: Double(seconds) + Double(micros) / 1_000_000)
    }
}

// MARK: - JSON

/// A `jsonb` value kept as its JSON text; encode and decode Swift values through `Codable`.
public struct JSONB: PostgresCodable, Sendable, Equatable, CustomStringConvertible {
    public var text: String
    public init(text: String) { self.text = text }

    /// Encodes a value with sorted keys, so equal values give equal text.
    public init<T: Encodable>(encoding value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        text = String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Decodes the JSON text as `T`.
    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(text.utf8))
    }

    /// The value as Foundation objects (dictionaries, arrays, numbers, strings, NSNull).
    public func object() throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
    }

    public static var postgresType: Oid { PGType.jsonb }
    public var postgresText: String? { text }
    public init(postgresText text: String, type: Oid) throws {
        guard type == PGType.jsonb || type == PGType.json else { throw DecodeFailure("the column is not json or jsonb") }
        self.text = text
    }
    public var description: String { text }
}

/// Inside other JSON, a JSONB value is its JSON value (not a string holding it).
extension JSONB: Codable {
    public init(from decoder: any Decoder) throws {
        try self.init(encoding: try AnyJSON(from: decoder))
    }

    public func encode(to encoder: any Encoder) throws {
        try JSONDecoder().decode(AnyJSON.self, from: Data(text.utf8)).encode(to: encoder)
    }
}

/// Any JSON value, for passing through (job args, search overrides, other programs' output); `JSONB` is its
/// column form. Files lop reads strictly go through Models' `JSON` parser instead.
public enum AnyJSON: Codable, Sendable, Equatable {
    case null, bool(Bool), number(Double), string(String), array([AnyJSON]), object([String: AnyJSON])

    public var number: Double? { if case .number(let x) = self { x } else { nil } }
    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([AnyJSON].self) { self = .array(a) }
        else { self = .object(try c.decode([String: AnyJSON].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case let .bool(b): try c.encode(b)
        case let .number(n): if n == n.rounded() && abs(n) < 1e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case let .string(s): try c.encode(s)
        case let .array(a): try c.encode(a)
        case let .object(o): try c.encode(o)
        }
    }
}

// MARK: - One-dimensional arrays

/// Splits PostgreSQL's text form of a one-dimensional array into its elements (nil for NULL).
func parseArray(_ text: String) throws -> [String?] {
    let chars = Array(text.unicodeScalars)
    guard chars.first == "{", chars.last == "}" else {
        throw DecodeFailure(chars.first == "[" ? "arrays with explicit bounds are not supported" : "not an array")
    }
    var elements: [String?] = []
    var index = 1
    let end = chars.count - 1
    if end == 1 { return [] }
    while index <= end {
        var element = ""
        var quoted = false
        if chars[index] == "{" { throw DecodeFailure("multi-dimensional arrays are not supported") }
        if chars[index] == "\"" {
            quoted = true
            index += 1
            while index < end, chars[index] != "\"" {
                if chars[index] == "\\" { index += 1 }
                guard index < end else { throw DecodeFailure("unterminated quoted element") }
                element.unicodeScalars.append(chars[index])
                index += 1
            }
            index += 1
        } else {
            while index < end, chars[index] != "," {
                element.unicodeScalars.append(chars[index])
                index += 1
            }
        }
        elements.append(!quoted && element == "NULL" ? nil : element)
        guard index == end || chars[index] == "," else { throw DecodeFailure("malformed array") }
        index += 1
    }
    return elements
}

/// Arrays of these element types encode and decode as one-dimensional PostgreSQL arrays.
public protocol PostgresArrayElement: PostgresCodable {
    static var postgresArrayType: Oid { get }
}

extension Double: PostgresArrayElement { public static var postgresArrayType: Oid { PGType.float8Array } }
extension Float: PostgresArrayElement { public static var postgresArrayType: Oid { PGType.float4Array } }
extension Int: PostgresArrayElement { public static var postgresArrayType: Oid { PGType.int8Array } }
extension String: PostgresArrayElement { public static var postgresArrayType: Oid { PGType.textArray } }

extension Array: PostgresEncodable where Element: PostgresArrayElement {
    public static var postgresType: Oid { Element.postgresArrayType }
    public var postgresText: String? {
        let items = map { element -> String in
            guard let text = element.postgresText else { return "NULL" }
            let escaped = text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            return "\"\(escaped)\""
        }
        return "{" + items.joined(separator: ",") + "}"
    }
}

extension Array: PostgresDecodable where Element: PostgresArrayElement {
    public init(postgresText text: String, type: Oid) throws {
        let elementType: Oid = switch type {
        case PGType.float8Array: PGType.float8
        case PGType.float4Array: PGType.float4
        case PGType.int8Array: PGType.int8
        case PGType.textArray: PGType.text
        default: throw DecodeFailure("the column is not an array lop decodes")
        }
        self = try parseArray(text).enumerated().map { position, item in
            guard let item else { throw DecodeFailure("element \(position + 1) is NULL") }
            do { return try Element(postgresText: item, type: elementType) } catch let failure as DecodeFailure {
                throw DecodeFailure("element \(position + 1): \(failure.reason)")
            }
        }
    }
}
