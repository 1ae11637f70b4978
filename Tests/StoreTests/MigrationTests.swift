import Foundation
import Store
import TestSupport
import Testing

@Suite struct MigrationTests {
    /// A scratch migrations directory with the given files.
    func directory(_ files: [String: String]) throws -> String {
        let dir = NSTemporaryDirectory() + "lop-sql-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8) }
        return dir
    }

    @Test func applyReapplyAndRefuseEdits() throws {
        let connection = try Connection(try TestDatabase.create())
        let dir = try directory([
            "0001_init.sql": "CREATE SCHEMA IF NOT EXISTS lop;",
            "0002_things.sql": "CREATE TABLE lop.things (id int PRIMARY KEY); INSERT INTO lop.things VALUES (1);",
            "README.md": "not a migration",
        ])
        let first = try Migrator(migrations: try Migrator.load(directory: dir)).migrate(connection)
        #expect(first.map(\.version) == [1, 2])
        let applied = try Migrator.applied(on: connection)
        #expect(applied.map(\.version) == [1, 2])
        #expect(applied[1].checksum == first[1].checksum)
        #expect(abs(applied[0].appliedAt.timeIntervalSinceNow) < 60)

        // Re-running is a no-op.
        let again = try Migrator(migrations: try Migrator.load(directory: dir)).migrate(connection)
        #expect(again.isEmpty)
        #expect(try connection.query("SELECT count(*) AS n FROM lop.things").single().decode("n", as: Int.self) == 1)

        // A new file is applied alone.
        try "ALTER TABLE lop.things ADD COLUMN name text;".write(toFile: dir + "/0003_names.sql", atomically: true, encoding: .utf8)
        #expect(try Migrator(migrations: try Migrator.load(directory: dir)).migrate(connection).map(\.version) == [3])

        // Editing an applied migration is refused, and nothing runs.
        try "CREATE TABLE lop.things (id bigint PRIMARY KEY);".write(toFile: dir + "/0002_things.sql", atomically: true, encoding: .utf8)
        try "CREATE TABLE lop.more (id int);".write(toFile: dir + "/0004_more.sql", atomically: true, encoding: .utf8)
        let error = #expect(throws: MigrationError.self) { try Migrator(migrations: try Migrator.load(directory: dir)).migrate(connection) }
        #expect(error?.description.contains("migration 2 (0002_things.sql) was changed after it was applied") == true)
        #expect(try connection.query("SELECT to_regclass('lop.more') IS NULL AS absent").single().decode("absent", as: Bool.self))
    }

    @Test func failedMigrationLeavesNoTrace() throws {
        let connection = try Connection(try TestDatabase.create())
        let dir = try directory([
            "0001_init.sql": "CREATE SCHEMA IF NOT EXISTS lop;",
            "0002_broken.sql": "CREATE TABLE lop.half (id int); SELECT no_such_function();",
        ])
        let error = #expect(throws: MigrationError.self) { try Migrator(migrations: try Migrator.load(directory: dir)).migrate(connection) }
        #expect(error?.description.contains("0002_broken.sql") == true)
        #expect(try Migrator.applied(on: connection).map(\.version) == [1])
        #expect(try connection.query("SELECT to_regclass('lop.half') IS NULL AS absent").single().decode("absent", as: Bool.self))
    }

    @Test func unknownAppliedMigrationIsRefused() throws {
        let connection = try Connection(try TestDatabase.create())
        let newer = try directory(["0001_init.sql": "SELECT 1;", "0002_next.sql": "SELECT 2;"])
        try Migrator(migrations: try Migrator.load(directory: newer)).migrate(connection)
        let older = try directory(["0001_init.sql": "SELECT 1;"])
        let error = #expect(throws: MigrationError.self) { try Migrator(migrations: try Migrator.load(directory: older)).migrate(connection) }
        #expect(error?.description.contains("older than the database") == true)
    }

    @Test(arguments: ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "abcd_x.sql", "0000_zero.sql"])
    func badFileNamesAreRejected(name: String) throws {
        let dir = try directory([name: "SELECT 1;"])
        #expect(throws: MigrationError.self) { try Migrator.load(directory: dir) }
    }

    @Test func duplicateVersionsAreRejected() throws {
        let dir = try directory(["0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"])
        let error = #expect(throws: MigrationError.self) { try Migrator.load(directory: dir) }
        #expect(error?.description.contains("appears twice") == true)
    }

    @Test func concurrentMigratorsApplyOnce() throws {
        let target = try TestDatabase.create()
        let dir = try directory(["0001_init.sql": "CREATE SCHEMA IF NOT EXISTS lop; CREATE TABLE lop.once (id int);"])
        let migrations = try Migrator.load(directory: dir)
        let group = DispatchGroup()
        let applied = LockedValue(0)
        let failures = LockedValue<[String]>([])
        for _ in 0..<4 {
            group.enter()
            Thread {
                defer { group.leave() }
                do {
                    let count = try Migrator(migrations: migrations).migrate(try Connection(target)).count
                    applied.withLock { $0 += count }
                } catch { failures.withLock { $0.append("\(error)") } }
            }.start()
        }
        group.wait()
        #expect(failures.withLock { $0 } == [])
        #expect(applied.withLock { $0 } == 1)
    }

    @Test func shippedMigrationsApply() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let connection = try Connection(try TestDatabase.create())
        let migrations = try Migrator.load(directory: root + "/SQL")
        #expect(!migrations.isEmpty)
        #expect(try Migrator(migrations: migrations).migrate(connection).count == migrations.count)
        #expect(try Migrator(migrations: migrations).migrate(connection).isEmpty)
    }
}
