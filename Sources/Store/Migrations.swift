import Crypto
import Foundation
import Logging
import LopCore

/// One numbered migration file, `SQL/NNNN_name.sql`.
public struct Migration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let sql: String
    /// SHA-256 of the file's bytes, hex.
    public let checksum: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
        checksum = sha256Hex(sql)
    }

    /// The file name it came from.
    public var fileName: String { String(format: "%04d_%@.sql", version, name) }
}

/// A migration already recorded in `lop.schema_migrations`.
public struct AppliedMigration: Sendable, Equatable {
    public let version: Int
    public let name: String
    public let checksum: String
    public let appliedAt: Date
}

public enum MigrationError: Error, CustomStringConvertible {
    case unreadableDirectory(String, reason: String)
    case badFileName(String)
    case duplicateVersion(Int, [String])
    case checksumMismatch(version: Int, file: String, applied: String, current: String)
    case unknownApplied(version: Int, name: String)
    case failed(file: String, error: String)

    public var description: String {
        switch self {
        case let .unreadableDirectory(path, reason): "cannot read the migrations directory \(path): \(reason)"
        case let .badFileName(name): "migration file '\(name)' is not named NNNN_lower_case_name.sql"
        case let .duplicateVersion(version, files): "migration version \(version) appears twice: \(files.joined(separator: ", "))"
        case let .checksumMismatch(version, file, applied, current):
            "migration \(version) (\(file)) was changed after it was applied (applied sha256 \(applied.prefix(12))…, file now \(current.prefix(12))…); add a new migration instead of editing an applied one"
        case let .unknownApplied(version, name):
            "the database has migration \(version) (\(name)) that this lop does not know: it is older than the database"
        case let .failed(file, error): "migration \(file) failed: \(error)"
        }
    }
}

/// Applies the numbered migrations of a directory in order, each in its own transaction, under an advisory lock
/// so that many processes may run `lop migrate` at once.
public struct Migrator: Sendable {
    public let migrations: [Migration]
    private let logger: Logger
    /// Advisory lock key held while migrating ("lop" in ASCII).
    static let lockKey: Int64 = 0x6C6F70

    public init(migrations: [Migration], logger: Logger = Logger(label: "lop.migrate")) {
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.logger = logger
    }

    /// Reads `NNNN_name.sql` files; other files (README, dot files) are ignored, a `.sql` with a bad name is an error.
    public static func load(directory: String) throws -> [Migration] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw MigrationError.unreadableDirectory(directory, reason: (error as NSError).localizedDescription)
        }
        var byVersion: [Int: [String]] = [:]
        var migrations: [Migration] = []
        for file in names.sorted() where file.hasSuffix(".sql") {
            let stem = file.dropLast(4)
            guard let underscore = stem.firstIndex(of: "_"), stem.distance(from: stem.startIndex, to: underscore) == 4,
                  let version = Int(stem[..<underscore]), version > 0 else { throw MigrationError.badFileName(file) }
            let name = String(stem[stem.index(after: underscore)...])
            guard !name.isEmpty, name.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }) else {
                throw MigrationError.badFileName(file)
            }
            let path = (directory as NSString).appendingPathComponent(file)
            guard let data = FileManager.default.contents(atPath: path), let sql = String(data: data, encoding: .utf8) else {
                throw MigrationError.unreadableDirectory(path, reason: "unreadable or not UTF-8")
            }
            byVersion[version, default: []].append(file)
            migrations.append(Migration(version: version, name: name, sql: sql))
        }
        if let (version, files) = byVersion.first(where: { $0.value.count > 1 }) {
            throw MigrationError.duplicateVersion(version, files)
        }
        return migrations
    }

    /// The migrations recorded in the database (none if the table does not exist yet).
    public static func applied(on connection: Connection) throws -> [AppliedMigration] {
        let exists = try connection.query("SELECT to_regclass('lop.schema_migrations') IS NOT NULL AS present").single()
        guard try exists.decode("present", as: Bool.self) else { return [] }
        return try connection.query("SELECT version, name, checksum, applied_at FROM lop.schema_migrations ORDER BY version").map {
            AppliedMigration(version: try $0.decode("version"), name: try $0.decode("name"),
                             checksum: try $0.decode("checksum"), appliedAt: try $0.decode("applied_at"))
        }
    }

    /// Applies every pending migration and returns those it applied; refuses edited or unknown applied ones.
    @discardableResult
    public func migrate(_ connection: Connection) throws -> [Migration] {
        try connection.execute("SELECT pg_advisory_lock(\(Self.lockKey))")
        defer { _ = try? connection.execute("SELECT pg_advisory_unlock(\(Self.lockKey))") }
        try connection.executeScript(unsafe: """
            CREATE SCHEMA IF NOT EXISTS lop;
            CREATE TABLE IF NOT EXISTS lop.schema_migrations (
                version    integer PRIMARY KEY CHECK (version > 0),
                name       text NOT NULL,
                checksum   text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """)
        let applied = try Self.applied(on: connection)
        try verify(applied)
        let done = Set(applied.map(\.version))
        var newlyApplied: [Migration] = []
        for migration in migrations where !done.contains(migration.version) {
            do {
                try connection.withTransaction { connection in
                    try connection.executeScript(unsafe: migration.sql)
                    try connection.execute("""
                        INSERT INTO lop.schema_migrations (version, name, checksum)
                        VALUES (\(migration.version), \(migration.name), \(migration.checksum))
                        """)
                }
            } catch let error as StoreError {
                throw MigrationError.failed(file: migration.fileName, error: error.description)
            }
            logger.info("applied migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            newlyApplied.append(migration)
        }
        return newlyApplied
    }

    /// Checks recorded migrations against the files: same checksum, none unknown.
    public func verify(_ applied: [AppliedMigration]) throws {
        let byVersion = Dictionary(uniqueKeysWithValues: migrations.map { ($0.version, $0) })
        for record in applied {
            guard let migration = byVersion[record.version] else {
                throw MigrationError.unknownApplied(version: record.version, name: record.name)
            }
            if migration.checksum != record.checksum {
                throw MigrationError.checksumMismatch(version: record.version, file: migration.fileName,
                                                      applied: record.checksum, current: migration.checksum)
            }
        }
    }
}

extension MigrationError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
