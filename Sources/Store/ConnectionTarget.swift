import CLibPQ
import Foundation

/// Where to connect: the keyword/value pairs of a libpq URL or keyword string, parsed and checked by libpq.
/// Its description names host, port, database and user, never the password.
public struct ConnectionTarget: Sendable, CustomStringConvertible, Equatable {
    /// Keyword/value pairs in libpq's order (`host`, `port`, `dbname`, …), only those that are set.
    public private(set) var parameters: [(String, String)]

    public static func == (a: ConnectionTarget, b: ConnectionTarget) -> Bool {
        a.parameters.map { "\($0.0)=\($0.1)" } == b.parameters.map { "\($0.0)=\($0.1)" }
    }

    /// Parses `postgresql://…` URLs and `key=value …` strings; errors say what libpq disliked (without the text).
    public init(_ connectionString: String) throws {
        var errorMessage: UnsafeMutablePointer<CChar>? = nil
        guard let options = PQconninfoParse(connectionString, &errorMessage) else {
            let reason = errorMessage.map { String(cString: $0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? "out of memory"
            if let errorMessage { PQfreemem(errorMessage) }
            throw StoreError.connectFailed(target: "(unparsable connection string)", reason: reason)
        }
        defer { PQconninfoFree(options) }
        var pairs: [(String, String)] = []
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val { pairs.append((String(cString: keyword), String(cString: value))) }
            option += 1
        }
        parameters = pairs
    }

    /// The value of one libpq keyword, if set.
    public subscript(keyword: String) -> String? {
        parameters.first { $0.0 == keyword }?.1
    }

    /// A copy with one keyword set (e.g. another `dbname` for a test database).
    public func with(_ keyword: String, _ value: String) -> ConnectionTarget {
        var copy = self
        if let index = copy.parameters.firstIndex(where: { $0.0 == keyword }) {
            copy.parameters[index].1 = value
        } else {
            copy.parameters.append((keyword, value))
        }
        return copy
    }

    /// `host=… port=… dbname=… user=…` with libpq's defaults shown where unset; no password.
    public var description: String {
        let host = self["host"] ?? self["hostaddr"] ?? "(default socket)"
        let port = self["port"] ?? "5432"
        let database = self["dbname"] ?? self["user"] ?? "(default)"
        var text = "host=\(host) port=\(port) dbname=\(database)"
        if let user = self["user"] { text += " user=\(user)" }
        return text
    }
}
