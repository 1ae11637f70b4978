import CLibPQ
import Foundation
import Logging

/// How a connection whose server went away tries again: exponential backoff with jitter, then an error.
public struct ReconnectPolicy: Sendable, Equatable {
    /// Attempts before giving up; 0 turns reconnecting off.
    public var maxAttempts: Int
    public var initialDelay: Double
    public var maxDelay: Double

    public init(maxAttempts: Int = 10, initialDelay: Double = 0.05, maxDelay: Double = 5) {
        self.maxAttempts = maxAttempts
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
    }

    /// Seconds to wait before attempt `n` (0-based): doubling from `initialDelay`, capped, ±20 % jitter.
    public func delay(beforeAttempt n: Int) -> Double {
        let base = min(initialDelay * pow(2, Double(min(n, 30))), maxDelay)
        return base * Double.random(in: 0.8...1.2)
    }
}

/// A message received through LISTEN.
public struct Notification: Sendable, Equatable {
    public let channel: String
    public let payload: String
    /// Backend process id of the session that sent it.
    public let senderPID: Int32
}

/// One libpq connection. Not thread-safe: use it from one thread at a time (the pool hands it out that way).
///
/// Statements go through `PQexecParams` with bound parameters only. Outside a transaction, a connection whose
/// server went away reconnects (with backoff) before its next statement and re-issues its LISTENs; inside one,
/// the loss is reported, because the transaction is gone.
public final class Connection {
    public let target: ConnectionTarget
    public let reconnectPolicy: ReconnectPolicy
    private var handle: OpaquePointer
    private var listening: Set<String> = []
    private var transactionDepth = 0
    private var logger: Logger
    /// How many times this connection has re-established itself.
    public private(set) var reconnects = 0

    /// Opens a connection (one attempt) and prepares the session (UTC, ISO dates, UTF-8).
    public init(
        _ target: ConnectionTarget,
        connectTimeoutSeconds: Int = 10,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        applicationName: String = "lop",
        logger: Logger = Logger(label: "lop.store")
    ) throws {
        self.target = target
        self.reconnectPolicy = reconnect
        self.logger = logger
        self.logger[metadataKey: "db"] = "\(target)"
        // Our defaults come first so that the target's own keywords override them.
        let parameters = [("connect_timeout", String(connectTimeoutSeconds)), ("application_name", applicationName),
                          ("client_encoding", "UTF8")] + target.parameters
        let keywords = parameters.map { strdup($0.0) }
        let values = parameters.map { strdup($0.1) }
        defer { (keywords + values).forEach { free($0) } }
        let keywordArray = keywords.map { UnsafePointer($0) } + [nil]
        let valueArray = values.map { UnsafePointer($0) } + [nil]
        guard let handle = PQconnectdbParams(keywordArray, valueArray, 0) else {
            throw StoreError.connectFailed(target: "\(target)", reason: "out of memory")
        }
        self.handle = handle
        // On a throw from here on, deinit runs and finishes the handle.
        guard PQstatus(handle) == CONNECTION_OK else {
            throw StoreError.connectFailed(target: "\(target)", reason: Self.message(handle))
        }
        try setUpSession()
    }

    deinit { PQfinish(handle) }

    /// The server's version string, e.g. "15.18".
    public var serverVersion: String {
        PQparameterStatus(handle, "server_version").map { String(cString: $0) } ?? "unknown"
    }

    /// Backend process id of this session (for tests and diagnostics).
    public var backendPID: Int32 { PQbackendPID(handle) }

    public var isInTransaction: Bool { transactionDepth > 0 }

    // MARK: Statements

    /// Runs one statement with bound parameters and returns all its rows.
    @discardableResult
    public func query(_ sql: SQL) throws -> Rows {
        try ensureConnected()
        let values = sql.values.map { $0.map { strdup($0) } ?? nil }
        defer { values.forEach { free($0) } }
        let pointers = values.map { UnsafePointer($0) }
        let result = sql.types.withUnsafeBufferPointer { types in
            pointers.withUnsafeBufferPointer { params in
                PQexecParams(handle, sql.text, Int32(sql.values.count), types.baseAddress, params.baseAddress, nil, nil, 0)
            }
        }
        return try consume(result, statement: sql.text)
    }

    /// Runs one statement and returns the number of rows it affected.
    @discardableResult
    public func execute(_ sql: SQL) throws -> Int {
        try query(sql).affected
    }

    /// Runs trusted SQL text that may hold several statements and no parameters (migrations, LISTEN).
    /// Never build `text` from values: this is the one door that does not bind them.
    public func executeScript(unsafe text: String) throws {
        try ensureConnected()
        _ = try consume(PQexec(handle, text), statement: "(script)")
    }

    // MARK: Transactions

    /// Runs `body` in a transaction (a savepoint when nested): committed if it returns, rolled back if it throws.
    @discardableResult
    public func withTransaction<T>(_ body: (Connection) throws -> T) throws -> T {
        let savepoint = transactionDepth == 0 ? nil : "lop_savepoint_\(transactionDepth)"
        try executeScript(unsafe: savepoint.map { "SAVEPOINT \($0)" } ?? "BEGIN")
        transactionDepth += 1
        let value: T
        do {
            value = try body(self)
        } catch {
            transactionDepth -= 1
            if PQstatus(handle) == CONNECTION_OK {
                do { try executeScript(unsafe: savepoint.map { "ROLLBACK TO SAVEPOINT \($0)" } ?? "ROLLBACK") } catch let rollbackError {
                    logger.warning("rollback failed", metadata: ["error": "\(rollbackError)"])
                }
            }
            throw error
        }
        transactionDepth -= 1
        try executeScript(unsafe: savepoint.map { "RELEASE SAVEPOINT \($0)" } ?? "COMMIT")
        return value
    }

    // MARK: LISTEN / NOTIFY

    /// Subscribes to a channel; the subscription survives reconnects.
    public func listen(_ channel: String) throws {
        try executeScript(unsafe: "LISTEN \(try SQL.quoteIdentifier(channel))")
        listening.insert(channel)
    }

    public func unlisten(_ channel: String) throws {
        try executeScript(unsafe: "UNLISTEN \(try SQL.quoteIdentifier(channel))")
        listening.remove(channel)
    }

    /// Sends a notification (delivered when the surrounding transaction, if any, commits).
    public func notify(_ channel: String, payload: String = "") throws {
        try execute("SELECT pg_notify(\(channel), \(payload))")
    }

    /// Waits up to `timeout` seconds for a notification on a channel this connection listens to.
    public func waitForNotification(timeout: Double) throws -> Notification? {
        try ensureConnected()
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            guard PQconsumeInput(handle) == 1 else {
                throw StoreError.connectionLost(target: "\(target)", reason: Self.message(handle))
            }
            if let raw = PQnotifies(handle) {
                defer { PQfreemem(raw) }
                let n = raw.pointee
                return Notification(channel: String(cString: n.relname), payload: String(cString: n.extra), senderPID: n.be_pid)
            }
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { return nil }
            var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(min(remaining * 1000, 60_000).rounded(.up)))
            if ready < 0 && errno != EINTR {
                throw StoreError.connectionLost(target: "\(target)", reason: "poll failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    // MARK: Connection health

    /// Makes sure the connection can take a statement: reconnects if the server went away while it was idle.
    private func ensureConnected() throws {
        if PQstatus(handle) == CONNECTION_OK && (transactionDepth > 0 || !serverClosedWhileIdle()) { return }
        guard transactionDepth == 0 else {
            throw StoreError.connectionLost(target: "\(target)", reason: "\(Self.message(handle)); the open transaction was lost")
        }
        try reconnect()
    }

    /// Reads whatever the server sent since the last statement (a termination notice, then end of file) without
    /// blocking, so that a restarted server is noticed before a statement is sent rather than after.
    private func serverClosedWhileIdle() -> Bool {
        var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
        for _ in 0..<8 {
            guard poll(&descriptor, 1, 0) > 0 else { break }
            if PQconsumeInput(handle) == 0 || PQstatus(handle) != CONNECTION_OK { return true }
        }
        return PQstatus(handle) != CONNECTION_OK
    }

    private func reconnect() throws {
        guard reconnectPolicy.maxAttempts > 0 else {
            throw StoreError.connectionLost(target: "\(target)", reason: Self.message(handle))
        }
        var lastReason = Self.message(handle)
        for attempt in 0..<reconnectPolicy.maxAttempts {
            if attempt > 0 { Thread.sleep(forTimeInterval: reconnectPolicy.delay(beforeAttempt: attempt - 1)) }
            PQreset(handle)
            if PQstatus(handle) == CONNECTION_OK {
                try setUpSession()
                for channel in listening.sorted() { try executeScript(unsafe: "LISTEN \(try SQL.quoteIdentifier(channel))") }
                reconnects += 1
                logger.notice("reconnected to PostgreSQL", metadata: ["attempts": "\(attempt + 1)"])
                return
            }
            lastReason = Self.message(handle)
            logger.warning("reconnect failed", metadata: ["attempt": "\(attempt + 1)", "error": "\(lastReason)"])
        }
        throw StoreError.connectFailed(target: "\(target)", reason: "\(lastReason) (gave up after \(reconnectPolicy.maxAttempts) attempts)")
    }

    /// Session settings the value decoders rely on; NOTICEs ("already exists, skipping") are not worth printing.
    private func setUpSession() throws {
        _ = try consume(PQexec(handle, "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, MDY'; SET client_min_messages = warning"), statement: "(session set-up)")
    }

    // MARK: Results

    private func consume(_ result: OpaquePointer?, statement: String) throws -> Rows {
        guard let result else {
            throw StoreError.connectionLost(target: "\(target)", reason: Self.message(handle))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK:
            let rowCount = Int(PQntuples(result))
            let columnCount = Int(PQnfields(result))
            let columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
            let types = (0..<columnCount).map { PQftype(result, Int32($0)) }
            var cells: [[String?]] = []
            cells.reserveCapacity(rowCount)
            for row in 0..<Int32(rowCount) {
                cells.append((0..<Int32(columnCount)).map { column in
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                })
            }
            let affected = Int(String(cString: PQcmdTuples(result))) ?? rowCount
            return Rows(columns: columns, types: types, cells: cells, affected: affected)
        default:
            if PQstatus(handle) != CONNECTION_OK {
                throw StoreError.connectionLost(target: "\(target)", reason: Self.message(handle))
            }
            func field(_ code: Character) -> String? {
                PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) }
            }
            let error = ServerError(
                sqlState: field("C") ?? "XX000", message: field("M") ?? Self.message(handle),
                detail: field("D"), hint: field("H"), constraint: field("n"), table: field("t"), column: field("c"))
            logger.debug("statement failed", metadata: ["sqlstate": "\(error.sqlState)", "statement": "\(statement)"])
            throw StoreError.server(error)
        }
    }

    private static func message(_ handle: OpaquePointer) -> String {
        let text = PQerrorMessage(handle).map { String(cString: $0) } ?? ""
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? "connection is not open" : trimmed.replacingOccurrences(of: "\n", with: "; ")
    }
}
