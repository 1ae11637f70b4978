import Foundation
import LopCore

/// A PostgreSQL type oid.
public typealias Oid = UInt32

/// Type oids lop binds and decodes (from `pg_type`).
public enum PGType {
    public static let bool: Oid = 16, bytea: Oid = 17, int8: Oid = 20, int2: Oid = 21, int4: Oid = 23, text: Oid = 25
    public static let json: Oid = 114, float4: Oid = 700, float8: Oid = 701, unknown: Oid = 705
    public static let textArray: Oid = 1009, float4Array: Oid = 1021, float8Array: Oid = 1022, int8Array: Oid = 1016
    public static let timestamptz: Oid = 1184, numeric: Oid = 1700, jsonb: Oid = 3802
}

/// A Swift value that can be sent as a bound parameter, in PostgreSQL's text format.
public protocol PostgresEncodable {
    /// The oid the parameter is declared as (0 lets the server infer it).
    static var postgresType: Oid { get }
    /// The value in PostgreSQL's text input format, or nil for NULL.
    var postgresText: String? { get }
}

/// A Swift value that can be read from a result column in PostgreSQL's text format.
public protocol PostgresDecodable {
    /// Builds the value from a non-NULL column; throws `DecodeFailure` saying why it does not fit.
    init(postgresText text: String, type: Oid) throws
    /// The value a NULL decodes to, if the type admits one (only `Optional` does).
    static var postgresNull: Self? { get }
}

extension PostgresDecodable {
    public static var postgresNull: Self? { nil }
}

/// A Swift enum over a text column or SQL enum (job states, model kinds) decodes from its raw value.
extension PostgresDecodable where Self: RawRepresentable, Self.RawValue == String {
    public init(postgresText text: String, type: Oid) throws {
        guard let value = Self(rawValue: text) else { throw DecodeFailure("'\(text)' is not a \(Self.self)") }
        self = value
    }
}

public typealias PostgresCodable = PostgresEncodable & PostgresDecodable

/// Why one value could not be decoded; `Row` adds the column and value.
public struct DecodeFailure: Error {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
}

// MARK: - Optional

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public static var postgresType: Oid { Wrapped.postgresType }
    public var postgresText: String? { self?.postgresText }
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public init(postgresText text: String, type: Oid) throws { self = try Wrapped(postgresText: text, type: type) }
    public static var postgresNull: Self? { .some(nil) }
}

// MARK: - Text and booleans

extension String: PostgresCodable {
    public static var postgresType: Oid { PGType.text }
    public var postgresText: String? { self }
    /// Any column decodes as its text form.
    public init(postgresText text: String, type: Oid) throws { self = text }
}

extension Bool: PostgresCodable {
    public static var postgresType: Oid { PGType.bool }
    public var postgresText: String? { self ? "t" : "f" }
    public init(postgresText text: String, type: Oid) throws {
        switch text {
        case "t": self = true
        case "f": self = false
        default: throw DecodeFailure("not a boolean")
        }
    }
}

// MARK: - Integers

/// Integers decode from any integer column and fail, rather than wrap, when the value does not fit.
public protocol PostgresInteger: FixedWidthInteger, PostgresCodable {}

extension PostgresInteger {
    public var postgresText: String? { String(self) }
    public init(postgresText text: String, type: Oid) throws {
        guard [PGType.int2, PGType.int4, PGType.int8, PGType.numeric, PGType.text].contains(type) else {
            throw DecodeFailure("the column is not an integer")
        }
        guard let wide = Int64(text) else { throw DecodeFailure("not an integer (or beyond 64 bits)") }
        guard let value = Self(exactly: wide) else {
            throw DecodeFailure("does not fit in \(Self.self) (\(Self.min)...\(Self.max))")
        }
        self = value
    }
}

extension Int: PostgresInteger { public static var postgresType: Oid { PGType.int8 } }
extension Int64: PostgresInteger { public static var postgresType: Oid { PGType.int8 } }
extension Int32: PostgresInteger { public static var postgresType: Oid { PGType.int4 } }
extension Int16: PostgresInteger { public static var postgresType: Oid { PGType.int2 } }

// MARK: - Floating point

/// Spells a float the way PostgreSQL's input functions accept it (NaN, ±Infinity).
func postgresFloatText<F: BinaryFloatingPoint & LosslessStringConvertible>(_ value: F) -> String {
    if value.isNaN { return "NaN" }
    if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
    return value.description
}

func parseDouble(_ text: String) -> Double? {
    switch text {
    case "NaN": .nan
    case "Infinity": .infinity
    case "-Infinity": -.infinity
    default: Double(text)
    }
}

extension Double: PostgresCodable {
    public static var postgresType: Oid { PGType.float8 }
    public var postgresText: String? { postgresFloatText(self) }
    public init(postgresText text: String, type: Oid) throws {
        guard let value = parseDouble(text) else { throw DecodeFailure("not a number") }
        self = value
    }
}

extension Float: PostgresCodable {
    public static var postgresType: Oid { PGType.float4 }
    public var postgresText: String? { postgresFloatText(self) }
    public init(postgresText text: String, type: Oid) throws {
        guard let wide = parseDouble(text) else { throw DecodeFailure("not a number") }
        let narrow = Float(wide)
        if narrow.isInfinite && wide.isFinite { throw DecodeFailure("magnitude too large for Float") }
        self = narrow
    }
}

// MARK: - Bytes

extension Data: PostgresCodable {
    public static var postgresType: Oid { PGType.bytea }
    public var postgresText: String? { "\\x" + hexadecimal }
    public init(postgresText text: String, type: Oid) throws {
        guard type == PGType.bytea, text.hasPrefix("\\x"), text.count % 2 == 0 else { throw DecodeFailure("not bytea in hex format") }
        var bytes = [UInt8]()
        bytes.reserveCapacity(text.utf8.count / 2 - 1)
        var iterator = text.utf8.dropFirst(2).makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            guard let h = hexValue(high), let l = hexValue(low) else { throw DecodeFailure("bad hex digit") }
            bytes.append(h << 4 | l)
        }
        self = Data(bytes)
    }
}

private func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case 48...57: c - 48
    case 97...102: c - 87
    case 65...70: c - 55
    default: nil
    }
}
