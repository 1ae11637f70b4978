import LopCore
/// Everything that can go wrong talking to PostgreSQL. Descriptions name the place (target, column, constraint)
/// and never a password; server-side details that may hold row values sit in `debugDescription`.
public enum StoreError: Error, CustomStringConvertible, CustomDebugStringConvertible {
    /// Opening a connection failed; `target` is the redacted connection description.
    case connectFailed(target: String, reason: String)
    /// The server went away during or before a statement; the statement may or may not have run.
    case connectionLost(target: String, reason: String)
    /// The server rejected a statement.
    case server(ServerError)
    /// A value could not be turned into the requested Swift type.
    case decode(column: String, index: Int, value: String?, swiftType: String, pgType: UInt32, reason: String)
    /// A row has no column of that name.
    case noSuchColumn(String, available: [String])
    /// No free pooled connection within the acquire timeout.
    case poolTimeout(seconds: Double, size: Int)
    /// A channel or identifier that is not a plain lower-case SQL name.
    case invalidIdentifier(String)
    /// A statement returned something other than what the caller expected (e.g. no row).
    case unexpected(String)

    public var description: String {
        switch self {
        case let .connectFailed(target, reason): "cannot connect to PostgreSQL at \(target): \(reason)"
        case let .connectionLost(target, reason): "lost the connection to PostgreSQL at \(target): \(reason)"
        case let .server(error): error.description
        case let .decode(column, index, value, swiftType, pgType, reason):
            "cannot decode column '\(column)' (#\(index), type oid \(pgType)) value \(value.map { "'\(Self.clip($0))'" } ?? "NULL") as \(swiftType): \(reason)"
        case let .noSuchColumn(name, available): "no column '\(name)' in the result (columns: \(available.joined(separator: ", ")))"
        case let .poolTimeout(seconds, size): "no free database connection after \(seconds) s (pool size \(size))"
        case let .invalidIdentifier(name): "'\(Self.clip(name))' is not a valid SQL name (lower-case letters, digits, '_', at most 63 characters)"
        case let .unexpected(what): what
        }
    }

    public var debugDescription: String {
        if case let .server(error) = self { return error.debugDescription }
        return description
    }

    /// True when the failure came from losing the server, so the work may be retried on a new connection.
    public var isConnectionLoss: Bool {
        switch self {
        case .connectionLost, .connectFailed: true
        default: false
        }
    }

    static func clip(_ text: String, to limit: Int = 80) -> String {
        text.count <= limit ? text : String(text.prefix(limit)) + "…"
    }
}

/// A statement the server rejected, with the fields PostgreSQL reports.
public struct ServerError: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public let sqlState: String
    public let message: String
    public let detail: String?
    public let hint: String?
    public let constraint: String?
    public let table: String?
    public let column: String?

    public var description: String {
        var text = "PostgreSQL error \(sqlState): \(message)"
        if let constraint { text += " (constraint \(constraint))" }
        if let hint { text += "; hint: \(hint)" }
        return text
    }

    public var debugDescription: String {
        description + (detail.map { "; detail: \($0)" } ?? "")
    }

    public var isUniqueViolation: Bool { sqlState == "23505" }
    public var isCheckViolation: Bool { sqlState == "23514" }
    public var isNotNullViolation: Bool { sqlState == "23502" }
    public var isForeignKeyViolation: Bool { sqlState == "23503" }
}

extension StoreError: LopError {
    public var exitCode: Int32 { isConnectionLoss ? ExitStatus.unavailable : ExitStatus.failure }
}
