import Foundation
import Logging

/// A fixed-size pool of connections shared by the threads of one process.
///
/// Connections open lazily up to `size`; a caller waits up to `acquireTimeout` seconds for a free one.
/// All mutable state is guarded by `condition`, which is why the class can be `@unchecked Sendable`.
public final class ConnectionPool: @unchecked Sendable {
    public let target: ConnectionTarget
    public let size: Int
    public let acquireTimeout: Double
    private let connectTimeoutSeconds: Int
    /// The reconnect policy its connections use.
    public let reconnectPolicy: ReconnectPolicy
    private let logger: Logger
    private let condition = NSCondition()
    private var idle: [Connection] = []
    private var open = 0
    private var closed = false

    public init(
        target: ConnectionTarget, size: Int, acquireTimeout: Double = 30, connectTimeoutSeconds: Int = 10,
        reconnect: ReconnectPolicy = ReconnectPolicy(), logger: Logger = Logger(label: "lop.store")
    ) {
        precondition(size > 0, "pool size must be positive")
        self.target = target
        self.size = size
        self.acquireTimeout = acquireTimeout
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.reconnectPolicy = reconnect
        self.logger = logger
    }

    deinit { close() }

    /// Runs `body` with a connection of its own; the connection goes back to the pool afterwards.
    @discardableResult
    public func withConnection<T>(_ body: (Connection) throws -> T) throws -> T {
        let connection = try acquire()
        defer { release(connection) }
        return try body(connection)
    }

    /// Runs `body` in a transaction on a pooled connection.
    @discardableResult
    public func withTransaction<T>(_ body: (Connection) throws -> T) throws -> T {
        try withConnection { try $0.withTransaction(body) }
    }

    /// Closes idle connections and refuses new work; connections in use close when they are returned.
    public func close() {
        condition.lock()
        closed = true
        open -= idle.count
        idle.removeAll()
        condition.broadcast()
        condition.unlock()
    }

    /// Connections currently open (idle or in use).
    public var openConnections: Int {
        condition.lock()
        defer { condition.unlock() }
        return open
    }

    private func acquire() throws -> Connection {
        let deadline = Date().addingTimeInterval(acquireTimeout)
        condition.lock()
        while true {
            if closed {
                condition.unlock()
                throw StoreError.unexpected("the connection pool is closed")
            }
            if let connection = idle.popLast() {
                condition.unlock()
                return connection
            }
            if open < size {
                open += 1
                condition.unlock()
                do {
                    return try Connection(target, connectTimeoutSeconds: connectTimeoutSeconds, reconnect: reconnectPolicy, logger: logger)
                } catch {
                    condition.lock()
                    open -= 1
                    condition.signal()
                    condition.unlock()
                    throw error
                }
            }
            if !condition.wait(until: deadline) {
                condition.unlock()
                throw StoreError.poolTimeout(seconds: acquireTimeout, size: size)
            }
        }
    }

    private func release(_ connection: Connection) {
        condition.lock()
        defer { condition.unlock() }
        if closed || connection.isInTransaction {
            // A connection left inside a transaction (a bug in the caller) is dropped, never reused.
            open -= 1
        } else {
            idle.append(connection)
        }
        condition.signal()
    }
}
