import Foundation
import Store

/// A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory, listening only on a Unix
/// socket there, run as the `postgres` user when the tests run as root (PostgreSQL refuses root).
public final class TestCluster: Sendable {
    public let directory: String
    public let port = 5432
    /// Superuser connection to the `postgres` database of this cluster.
    public let target: ConnectionTarget

    private var dataDirectory: String { directory + "/data" }
    private var socketDirectory: String { directory + "/socket" }
    private var logFile: String { directory + "/server.log" }

    /// Creates and starts a new cluster (a few seconds).
    public static func start() throws -> TestCluster {
        let cluster = try TestCluster()
        try cluster.initialize()
        try cluster.pgctl(["start", "-w", "-t", "60"])
        return cluster
    }

    private init() throws {
        // Short path: a Unix socket path must fit in 107 bytes.
        var template = Array("/tmp/lop-pg-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw TestClusterError("mkdtemp failed") }
        directory = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        target = try ConnectionTarget("host=\(directory)/socket port=\(port) user=postgres dbname=postgres")
    }

    private func initialize() throws {
        try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
        if geteuid() == 0 { try Self.run("/bin/chown", ["-R", "postgres:postgres", directory]) }
        try Self.run(try Self.binary("initdb"), ["-D", dataDirectory, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
                     asPostgres: true)
    }

    /// `pg_ctl restart`: every open connection loses its server.
    public func restart() throws { try pgctl(["restart", "-w", "-t", "60", "-m", "fast"]) }

    /// Stops the server (immediately) and deletes its files.
    public func stop() {
        try? pgctl(["stop", "-m", "immediate", "-w", "-t", "30"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func pgctl(_ arguments: [String]) throws {
        let options = "-k \(socketDirectory) -p \(port) -c listen_addresses='' -c fsync=off -c max_connections=200"
        try Self.run(try Self.binary("pg_ctl"), arguments + ["-D", dataDirectory, "-l", logFile, "-o", options], asPostgres: true)
    }

    /// `LOP_PG_BIN`, then the newest `/usr/lib/postgresql/*/bin`, then `PATH`.
    static func binary(_ name: String) throws -> String {
        var candidates: [String] = []
        if let dir = ProcessInfo.processInfo.environment["LOP_PG_BIN"] { candidates.append(dir) }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        candidates += versions.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin" }
        candidates += (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        for dir in candidates where FileManager.default.isExecutableFile(atPath: dir + "/" + name) { return dir + "/" + name }
        throw TestClusterError("PostgreSQL's \(name) was not found (install postgresql, or set LOP_PG_BIN)")
    }

    static func run(_ executable: String, _ arguments: [String], asPostgres: Bool = false) throws {
        let argv = (asPostgres && geteuid() == 0) ? ["/usr/sbin/runuser", "-u", "postgres", "--", executable] + arguments
                                                  : [executable] + arguments
        let result = try TestProcess.run(argv)
        guard result.status == 0 else {
            throw TestClusterError("\((executable as NSString).lastPathComponent) \(arguments.first ?? "") failed (exit \(result.status)): \(result.output)")
        }
    }
}

/// A program running in the background for a test; killed (SIGKILL) when dropped if still running.
public final class BackgroundProcess: @unchecked Sendable {
    public let pid: pid_t
    public let logPath: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    init(pid: pid_t, logPath: String) {
        self.pid = pid
        self.logPath = logPath
    }

    deinit {
        if exitStatus == nil { kill(pid, SIGKILL); var s: Int32 = 0; waitpid(pid, &s, 0) }
    }

    /// Sends a signal (SIGKILL for "the machine died", SIGTERM for a graceful stop).
    public func signal(_ number: Int32) { kill(pid, number) }

    /// Waits for the exit (up to `timeout` seconds); returns the exit code (128 + signal if killed), nil on timeout.
    @discardableResult
    public func wait(timeout: Double = 60) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            lock.lock()
            if let exitStatus { lock.unlock(); return exitStatus }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                exitStatus = code
                lock.unlock()
                return code
            }
            lock.unlock()
            Thread.sleep(forTimeInterval: 0.05)
        }
        return nil
    }

    /// What it has written to stdout and stderr so far.
    public var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}

/// Runs programs for tests with posix_spawn and waitpid. (Foundation's Process can miss the exit of a child
/// whose own children, like the PostgreSQL server that pg_ctl starts, outlive it.)
public enum TestProcess {
    /// Starts `argv` in the background, output to a log file.
    public static func start(_ argv: [String], environment: [String: String] = [:]) throws -> BackgroundProcess {
        let logPath = NSTemporaryDirectory() + "lop-bg-\(UUID().uuidString).log"
        return BackgroundProcess(pid: try spawn(argv, environment: environment, outputPath: logPath, separateStandardError: false), logPath: logPath)
    }

    /// Runs `argv` to completion with `environment` added to this process's; returns its exit status and
    /// its standard output and error together (or stdout alone when `separateStandardError`).
    public static func run(_ argv: [String], environment: [String: String] = [:], separateStandardError: Bool = false) throws -> (status: Int32, output: String) {
        let outputPath = NSTemporaryDirectory() + "lop-cmd-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let pid = try spawn(argv, environment: environment, outputPath: outputPath, separateStandardError: separateStandardError)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // Exit code if it exited, 128 + signal if it was killed (as shells report it).
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, output)
    }

    /// posix_spawn with stdin from /dev/null and stdout (and stderr, unless separate: then discarded) to a file.
    private static func spawn(_ argv: [String], environment: [String: String], outputPath: String, separateStandardError: Bool) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if separateStandardError {
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { $1 }
        let cEnvironment = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { (cArguments + cEnvironment).forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, cEnvironment)
        guard spawned == 0 else { throw TestClusterError("cannot start \(argv[0]): \(String(cString: strerror(spawned)))") }
        return pid
    }
}

public struct TestClusterError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The server shared by all tests of a process: `LOP_TEST_DATABASE_URL` if set, else a cluster started once.
/// Each test gets a database of its own from `TestDatabase.create()`.
public enum TestDatabase {
    private static let shared: Result<ConnectionTarget, any Error> = Result {
        if let url = ProcessInfo.processInfo.environment["LOP_TEST_DATABASE_URL"], !url.isEmpty {
            return try ConnectionTarget(url)
        }
        let cluster = try TestCluster.start()
        ownedClusterDirectory.withLock { $0 = cluster.directory }
        atexit {
            if let directory = TestDatabase.ownedClusterDirectory.withLock({ $0 }) {
                let dataDirectory = directory + "/data"
                try? TestCluster.run(try TestCluster.binary("pg_ctl"), ["stop", "-D", dataDirectory, "-m", "immediate"], asPostgres: true)
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
        return cluster.target
    }

    static let ownedClusterDirectory = LockedValue<String?>(nil)

    /// The shared server's maintenance connection target.
    public static func server() throws -> ConnectionTarget { try shared.get() }

    /// The repository root (for SQL/ and Config/).
    public static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// A fresh database with all of lop's migrations applied.
    public static func createMigrated() throws -> ConnectionTarget {
        let target = try create()
        let connection = try Connection(target)
        try Migrator(migrations: try Migrator.load(directory: repositoryRoot + "/SQL")).migrate(connection)
        return target
    }

    /// A fresh, empty database on the shared server; its target connects to it.
    public static func create() throws -> ConnectionTarget {
        let server = try server()
        let name = "lop_test_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        let admin = try Connection(server)
        try admin.executeScript(unsafe: "CREATE DATABASE \(try SQL.quoteIdentifier(String(name)))")
        return server.with("dbname", String(name))
    }
}

/// A value behind a lock, for the few globals the test helper keeps.
public final class LockedValue<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    public init(_ value: Value) { self.value = value }
    public func withLock<T>(_ body: (inout Value) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` seconds pass; returns whether it held.
public func waitUntil(timeout: Double = 60, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.05)
    }
    return try condition()
}
