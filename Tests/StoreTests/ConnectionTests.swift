import Foundation
import Store
import TestSupport
import Testing

@Suite struct ConnectionTests {
    @Test func transactionsCommitAndRollBack() throws {
        let connection = try Connection(try TestDatabase.create())
        try connection.execute("CREATE TABLE t (n int)")
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try connection.withTransaction { c in
                try c.execute("INSERT INTO t VALUES (\(1))")
                throw Boom()
            }
        }
        try connection.withTransaction { c in
            try c.execute("INSERT INTO t VALUES (\(2))")
            // A nested failure rolls back to its savepoint only.
            #expect(throws: Boom.self) {
                try c.withTransaction { inner in
                    try inner.execute("INSERT INTO t VALUES (\(3))")
                    throw Boom()
                }
            }
        }
        // A server error inside a transaction rolls it back too.
        #expect(throws: StoreError.self) {
            try connection.withTransaction { c in
                try c.execute("INSERT INTO t VALUES (\(4))")
                try c.execute("INSERT INTO t VALUES (\("not a number"))")
            }
        }
        let values = try connection.query("SELECT n FROM t ORDER BY n").map { try $0.decode("n", as: Int.self) }
        #expect(values == [2])
        #expect(!connection.isInTransaction)
    }

    @Test func listenNotifyBetweenTwoConnections() throws {
        let target = try TestDatabase.create()
        let listener = try Connection(target)
        let sender = try Connection(target)
        try listener.listen("lop_jobs")
        #expect(try listener.waitForNotification(timeout: 0.05) == nil)
        try sender.notify("lop_jobs", payload: "job 42 — ✓")
        let note = try listener.waitForNotification(timeout: 5)
        #expect(note?.channel == "lop_jobs")
        #expect(note?.payload == "job 42 — ✓")
        #expect(note?.senderPID == sender.backendPID)
        // Sent inside a rolled-back transaction: never delivered.
        struct Abort: Error {}
        _ = try? sender.withTransaction { c in
            try c.notify("lop_jobs", payload: "never")
            throw Abort()
        }
        #expect(try listener.waitForNotification(timeout: 0.2) == nil)
        // A wait wakes promptly when a notification arrives from another thread mid-wait.
        let started = Date()
        let thread = Thread {
            Thread.sleep(forTimeInterval: 0.2)
            try? Connection(target).notify("lop_jobs", payload: "late")
        }
        thread.start()
        let late = try listener.waitForNotification(timeout: 10)
        #expect(late?.payload == "late")
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(throws: StoreError.self) { try listener.listen("Robert'); DROP") }
    }

    @Test func connectFailureNamesTheTargetButNotThePassword() throws {
        let target = try ConnectionTarget("postgresql://lop:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2")
        let error = #expect(throws: StoreError.self) { try Connection(target) }
        let text = error?.description ?? ""
        #expect(text.contains("host=127.0.0.1"))
        #expect(text.contains("port=1"))
        #expect(text.contains("dbname=nowhere"))
        #expect(!text.contains("s3cret-pw"))
        #expect(!"\(target)".contains("s3cret-pw"))
        #expect(throws: StoreError.self) { try ConnectionTarget("postgresql://[broken") }
    }

    @Test func poolSharesConnectionsAcrossThreads() throws {
        let pool = ConnectionPool(target: try TestDatabase.create(), size: 3, acquireTimeout: 30)
        try pool.withConnection { try $0.execute("CREATE TABLE hits (worker int)") }
        let group = DispatchGroup()
        let failures = LockedValue(0)
        for worker in 0..<8 {
            group.enter()
            Thread {
                defer { group.leave() }
                do {
                    for _ in 0..<20 {
                        try pool.withTransaction { try $0.execute("INSERT INTO hits VALUES (\(worker))") }
                    }
                } catch { failures.withLock { $0 += 1 } }
            }.start()
        }
        group.wait()
        #expect(failures.withLock { $0 } == 0)
        #expect(pool.openConnections <= 3)
        let count = try pool.withConnection { try $0.query("SELECT count(*) AS n FROM hits").single().decode("n", as: Int.self) }
        #expect(count == 160)
    }

    @Test func poolTimesOutWhenExhausted() throws {
        let pool = ConnectionPool(target: try TestDatabase.create(), size: 1, acquireTimeout: 0.2)
        try pool.withConnection { _ in
            let error = #expect(throws: StoreError.self) { try pool.withConnection { _ in } }
            #expect(error?.description.contains("pool size 1") == true)
        }
    }
}

/// Restarts a private server under open connections (not the shared one: other tests use it).
@Suite(.serialized) struct ReconnectTests {
    @Test func reconnectsAfterServerRestart() throws {
        let cluster = try TestCluster.start()
        defer { cluster.stop() }
        let policy = ReconnectPolicy(maxAttempts: 40, initialDelay: 0.05, maxDelay: 0.5)
        let connection = try Connection(cluster.target, reconnect: policy)
        let listener = try Connection(cluster.target, reconnect: policy)
        try listener.listen("after_restart")
        try connection.execute("CREATE TABLE kept (v text)")
        try connection.execute("INSERT INTO kept VALUES (\("before"))")
        let oldPID = connection.backendPID

        try cluster.restart()

        // An idle connection notices the restart before its next statement and reconnects transparently.
        let value = try connection.query("SELECT v FROM kept").single().decode("v", as: String.self)
        #expect(value == "before")
        #expect(connection.reconnects == 1)
        #expect(connection.backendPID != oldPID)
        // LISTEN is re-issued on the new session when the listener next waits. (Notifications sent while it was
        // disconnected are lost: that is why workers also poll.)
        #expect(try listener.waitForNotification(timeout: 0.1) == nil)
        try connection.notify("after_restart", payload: "hello again")
        let note = try listener.waitForNotification(timeout: 10)
        #expect(note?.payload == "hello again")
        #expect(listener.reconnects == 1)

        // Inside a transaction the loss is reported (the transaction is gone), and the next statement recovers.
        #expect(throws: StoreError.self) {
            try connection.withTransaction { c in
                try c.execute("INSERT INTO kept VALUES (\("lost"))")
                try cluster.restart()
                try c.execute("INSERT INTO kept VALUES (\("lost too"))")
            }
        }
        let rows = try connection.query("SELECT v FROM kept ORDER BY v").map { try $0.decode("v", as: String.self) }
        #expect(rows == ["before"])
    }
}
