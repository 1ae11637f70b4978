import ArgumentParser
import Bootstrap
import Foundation
import LopConfig
import Logging
import Store

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending migrations from the migrations directory (SQL/ by default), in order.",
        discussion: "Safe to run from many processes at once; re-running is a no-op; an edited applied migration is refused.")

    @OptionGroup var options: GlobalOptions

    func run() throws {
        try runReportingErrors {
            let (migrator, pool) = try options.migratorAndPool(label: "lop.migrate")
            let applied = try pool.withConnection { try migrator.migrate($0) }
            if options.json {
                try printJSON(MigrateReport(applied: applied.map { MigrationInfo($0) }, known: migrator.migrations.count))
            } else if applied.isEmpty {
                print("Database is up to date (\(migrator.migrations.count) migrations).")
            } else {
                for migration in applied { print("applied \(migration.fileName)") }
                print("Database is up to date (\(migrator.migrations.count) migrations).")
            }
        }
    }
}

struct Database: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db", abstract: "Inspect the database.", subcommands: [Check.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Connect, and print the server version and the applied and pending migrations.",
            discussion: "Exits 65 if an applied migration differs from its file, 69 if the database cannot be reached.")

        @OptionGroup var options: GlobalOptions

        func run() throws {
            try runReportingErrors {
                let (migrator, pool) = try options.migratorAndPool(label: "lop.db")
                let (version, applied) = try pool.withConnection { ($0.serverVersion, try Migrator.applied(on: $0)) }
                let done = Set(applied.map(\.version))
                let pending = migrator.migrations.filter { !done.contains($0.version) }
                let report = CheckReport(
                    database: "\(pool.target)", serverVersion: version,
                    applied: applied.map { MigrationInfo(version: $0.version, name: $0.name, checksum: $0.checksum, appliedAt: $0.appliedAt) },
                    pending: pending.map { MigrationInfo($0) })
                if options.json {
                    try printJSON(report)
                } else {
                    print("database:   \(report.database)")
                    print("server:     PostgreSQL \(version)")
                    print("migrations: \(applied.count) applied, \(pending.count) pending")
                    for m in report.applied { print("  \(String(format: "%04d", m.version)) \(m.name)  applied \(m.appliedAt.map { "\($0)" } ?? "")") }
                    for m in report.pending { print("  \(String(format: "%04d", m.version)) \(m.name)  PENDING") }
                }
                try migrator.verify(applied)
            }
        }
    }
}

extension GlobalOptions {
    /// The migrations of the configured directory and a pool for the configured database.
    func migratorAndPool(label: String) throws -> (Migrator, ConnectionPool) {
        let config = try load()
        let logger = Logger(label: label)
        let migrator = Migrator(migrations: try Migrator.load(directory: config.database.migrations), logger: logger)
        return (migrator, try config.makePool(logger: logger))
    }
}

struct MigrationInfo: Encodable {
    let version: Int
    let name: String
    let checksum: String
    var appliedAt: Date? = nil

    init(version: Int, name: String, checksum: String, appliedAt: Date?) {
        self.version = version
        self.name = name
        self.checksum = checksum
        self.appliedAt = appliedAt
    }

    init(_ migration: Migration) {
        self.init(version: migration.version, name: migration.name, checksum: migration.checksum, appliedAt: nil)
    }
}

struct MigrateReport: Encodable {
    let applied: [MigrationInfo]
    let known: Int
}

struct CheckReport: Encodable {
    let database: String
    let serverVersion: String
    let applied: [MigrationInfo]
    let pending: [MigrationInfo]
}
