import ArgumentParser
import Bootstrap
import Foundation
import LopConfig
import Logging
import LopCore
import Jobs
import Queue
import Search
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
                      ImportanceCommand.self, PruneCommand.self, EvalCommand.self, TokenizeCommand.self, ExportCommand.self, CompareCommand.self, SearchCommand.self, SamplesCommand.self, PredictorCommand.self, PredictCommand.self,
                      WebhooksCommand.self, ModelsCommand.self, FixturesCommand.self, Bench.self, DoctorCommand.self, ServeCommand.self]
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
        let config = try Executable.configuration(file: config)
        _ = try SearchSettings(config.search)  // the search's own checks of its section, before any work
        return config
    }
}
