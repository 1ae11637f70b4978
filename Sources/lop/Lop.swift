import ArgumentParser
import Foundation
import LopConfig
import Logging
import Provenance
import Queue
import Store
import Tensor

@main
struct Lop: ParsableCommand {
    /// Makes sure BLAS runs a kernel fit for this CPU (may re-execute once), then parses the command line.
    static func main() {
        BLASKernel.ensureFit()
        main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "lop",
        abstract: "On-demand structured pruning of multimodal LLMs (LOP), run as a PostgreSQL-backed job queue.",
        discussion: """
            Settings come from Config/lop.yaml (or --config / LOP_CONFIG) and LOP_… environment variables.
            Exit codes: 0 success, 1 failure, 64 usage, 65 bad data (e.g. an edited migration), \
            69 database unavailable, 78 bad configuration.
            """,
        version: LopVersion.current,
        subcommands: [Migrate.self, Database.self, Submit.self, List.self, Status.self, Watch.self, Cancel.self, Retry.self, PruneJobs.self,
                      ImportanceCommand.self, PruneCommand.self, EvalCommand.self, CompareCommand.self, SearchCommand.self, SamplesCommand.self, PredictorCommand.self, PredictCommand.self,
                      WebhooksCommand.self, ModelsCommand.self, FixturesCommand.self, Bench.self, DoctorCommand.self]
    )
}

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file (default: LOP_CONFIG, else ./Config/lop.yaml if present).")
    var config: String?

    @Flag(name: .long, help: "Print results as JSON on standard output.")
    var json = false

    /// Loads the configuration and starts logging at its level (logs go to standard error).
    func load() throws -> LopConfig {
        let config = try LopConfig.load(file: config).config
        LoggingBootstrap.start(level: config.log.level)
        return config
    }
}

enum LoggingBootstrap {
    private static let started = LockedFlag()

    /// Starts swift-log once per process: one line per event on standard error, with its metadata.
    static func start(level: Logger.Level) {
        guard started.set() else { return }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// A flag that is set once, safely from any thread.
final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    /// Sets the flag; true if this call was the one that set it.
    func set() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if value { return false }
        value = true
        return true
    }
}

extension LopConfig {
    /// The pool every command uses to reach the database.
    func makePool(logger: Logger) throws -> ConnectionPool {
        try ConnectionPool(config: database, logger: logger)
    }
}
