/// A statement whose values can only enter as bound parameters: every interpolated value becomes `$n`.
///
///     try connection.query("SELECT id FROM lop.jobs WHERE kind = \(kind) AND priority <= \(limit)")
///
/// Names (schemas, tables, channels) are interpolated with `\(identifier: name)`, which checks and quotes them.
public struct SQL: ExpressibleByStringInterpolation, Sendable, CustomStringConvertible {
    /// The statement text with `$1…$n` placeholders.
    public private(set) var text: String
    /// Parameter types, in placeholder order.
    public private(set) var types: [Oid]
    /// Parameter values in text format, nil for NULL, in placeholder order.
    public private(set) var values: [String?]

    public init(stringLiteral value: String) {
        text = value
        types = []
        values = []
    }

    /// Trusted SQL text built at run time (a type name, a generated fragment). Never put values in it: bind them.
    public init(unsafe text: String) {
        self.text = text
        types = []
        values = []
    }

    public init(stringInterpolation: StringInterpolation) {
        text = stringInterpolation.text
        types = stringInterpolation.types
        values = stringInterpolation.values
    }

    /// The statement text only: bound values are not shown, so this is safe to log.
    public var description: String { text }

    public struct StringInterpolation: StringInterpolationProtocol, Sendable {
        var text = ""
        var types: [Oid] = []
        var values: [String?] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            text.reserveCapacity(literalCapacity + interpolationCount * 3)
        }

        public mutating func appendLiteral(_ literal: String) { text += literal }

        /// Binds a value as the next parameter.
        public mutating func appendInterpolation<T: PostgresEncodable>(_ value: T) {
            types.append(T.postgresType)
            values.append(value.postgresText)
            text += "$\(values.count)"
        }

        /// Binds an optional value; nil becomes NULL.
        public mutating func appendInterpolation<T: PostgresEncodable>(_ value: T?) {
            types.append(T.postgresType)
            values.append(value?.postgresText)
            text += "$\(values.count)"
        }

        /// Appends a checked, double-quoted SQL name.
        public mutating func appendInterpolation(identifier: String) throws {
            text += try SQL.quoteIdentifier(identifier)
        }

        /// Appends another statement fragment, renumbering its parameters.
        public mutating func appendInterpolation(fragment: SQL) {
            let offset = values.count
            var renumbered = ""
            var scalars = fragment.text.unicodeScalars.makeIterator()
            var pending: Unicode.Scalar? = scalars.next()
            while let scalar = pending {
                pending = scalars.next()
                guard scalar == "$", let next = pending, ("0"..."9").contains(next) else {
                    renumbered.unicodeScalars.append(scalar)
                    continue
                }
                var number = 0
                while let digit = pending, ("0"..."9").contains(digit) {
                    number = number * 10 + Int(digit.value - 48)
                    pending = scalars.next()
                }
                renumbered += "$\(number + offset)"
            }
            text += renumbered
            types += fragment.types
            values += fragment.values
        }
    }

    /// A plain lower-case SQL name (what lop uses for schemas, databases and channels), double-quoted.
    public static func quoteIdentifier(_ name: String) throws -> String {
        let valid = !name.isEmpty && name.utf8.count <= 63 && name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_"
        } && !("0"..."9").contains(name.unicodeScalars.first!)
        guard valid else { throw StoreError.invalidIdentifier(name) }
        return "\"\(name)\""
    }
}
