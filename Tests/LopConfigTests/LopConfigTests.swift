import Foundation
import Testing
@testable import LopConfig

@Suite struct LopConfigTests {
    /// A scratch directory holding one config file.
    private func write(_ yaml: String) throws -> (dir: String, file: String) {
        let dir = NSTemporaryDirectory() + "lop-config-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let file = dir + "/lop.yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        return (dir, file)
    }

    /// The repository root, found from this source file's path.
    private var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    @Test func shippedFileEqualsCompiledDefaults() throws {
        let root = repositoryRoot
        let (fromFile, file) = try LopConfig.load(file: nil, environment: [:], currentDirectory: root)
        #expect(file != nil, "Config/lop.yaml was not found under \(root)")
        var expected = LopConfig()
        // Compiled relative paths resolve against the current directory, the file's against Config/: both land in the root.
        expected.database.migrations = root + "/SQL"
        expected.artifacts.root = root + "/var/artifacts"
        var normalized = fromFile
        normalized.database.migrations = URL(fileURLWithPath: fromFile.database.migrations).standardized.path
        normalized.artifacts.root = URL(fileURLWithPath: fromFile.artifacts.root).standardized.path
        // The search section holds what the file says; SearchTests checks it equals the search's own defaults.
        #expect(!normalized.search.entries.isEmpty)
        normalized.search = expected.search
        #expect(normalized == expected)
    }

    @Test func environmentOverridesFile() throws {
        let (_, file) = try write("database:\n  pool_size: 3\n  url: \"postgresql://a/b\"\n")
        let env = ["LOP_DATABASE_POOL_SIZE": "9", "LOP_LOG_LEVEL": "debug", "LOP_DATABASE_RECONNECT_MAX_ATTEMPTS": "2"]
        let (config, _) = try LopConfig.load(file: file, environment: env, currentDirectory: "/")
        #expect(config.database.poolSize == 9)
        #expect(config.database.url == "postgresql://a/b")
        #expect(config.log.level == .debug)
        #expect(config.database.reconnect.maxAttempts == 2)
    }

    @Test func relativePathsResolveAgainstTheFile() throws {
        let (dir, file) = try write("database:\n  migrations: \"sql\"\nartifacts:\n  root: \"/abs/art\"\n")
        let (config, _) = try LopConfig.load(file: file, environment: [:], currentDirectory: "/elsewhere")
        #expect(config.database.migrations == dir + "/sql")
        #expect(config.artifacts.root == "/abs/art")
    }

    @Test(arguments: [
        ("database:\n  pool_sise: 3\n", ConfigError.unknownKey(key: "database.pool_sise", file: "F")),
        ("databse:\n  url: \"x\"\n", ConfigError.unknownKey(key: "databse", file: "F")),
        ("database:\n  pool_size: \"4\"\n", ConfigError.wrongType(key: "database.pool_size", expected: "an integer", found: "a string '4'", source: "F")),
        ("database:\n  url: 5\n", ConfigError.wrongType(key: "database.url", expected: "a string", found: "an integer '5'", source: "F")),
        ("database: 7\n", ConfigError.wrongType(key: "database", expected: "a mapping", found: "an integer '7'", source: "F")),
        ("database:\n  pool_size: 0\n", ConfigError.invalidValue(key: "database.pool_size", reason: "0 is outside 1...1024", source: "F")),
        ("log:\n  level: loud\n", ConfigError.invalidValue(key: "log.level", reason: "'loud' is not one of trace, debug, info, notice, warning, error, critical", source: "F")),
        ("database:\n  acquire_timeout_seconds: [1]\n", ConfigError.wrongType(key: "database.acquire_timeout_seconds", expected: "a number", found: "a list", source: "F")),
    ])
    func badFilesNameTheKey(yaml: String, expected: ConfigError) throws {
        let (_, file) = try write(yaml)
        let error = #expect(throws: ConfigError.self) { try LopConfig.load(file: file, environment: [:], currentDirectory: "/") }
        #expect(error?.description == expected.description.replacingOccurrences(of: " F", with: " \(file)"))
    }

    @Test func badEnvironmentNamesTheVariable() throws {
        let error = #expect(throws: ConfigError.self) {
            try LopConfig.load(file: nil, environment: ["LOP_DATABASE_POOL_SIZE": "many"], currentDirectory: "/nonexistent")
        }
        #expect(error?.description.contains("LOP_DATABASE_POOL_SIZE") == true)
        #expect(error?.description.contains("'many'") == true)
    }

    @Test func syntaxErrorsAndMissingFilesAreReported() throws {
        let (_, file) = try write("database: [unclosed\n")
        #expect(throws: ConfigError.self) { try LopConfig.load(file: file, environment: [:], currentDirectory: "/") }
        let missing = #expect(throws: ConfigError.self) { try LopConfig.load(file: "/nonexistent/lop.yaml", environment: [:], currentDirectory: "/") }
        #expect(missing?.description.contains("/nonexistent/lop.yaml") == true)
    }

    @Test func queueSectionWithPeriodicJobsAndRetryOverrides() throws {
        let (_, file) = try write("""
            queue:
              queues: ["default", "gpu"]
              retry_by_kind:
                search: {base_seconds: 5.0, cap_seconds: 60.0}
              periodic:
                - {name: nightly-train, cron: "0 3 * * *", kind: train, args: {model: tiny-llama, margin: 0.01}}
            """)
        let (config, _) = try LopConfig.load(file: file, environment: ["LOP_QUEUE_CONCURRENCY": "7"], currentDirectory: "/")
        #expect(config.queue.queues == ["default", "gpu"])
        #expect(config.queue.concurrency == 7)
        #expect(config.queue.retryByKind["search"]?.baseSeconds == 5 && config.queue.retryByKind["search"]?.exponent == 4)
        #expect(config.queue.periodic == [LopConfig.Periodic(name: "nightly-train", cron: "0 3 * * *", kind: "train",
                                                              args: "{\"margin\":0.01,\"model\":\"tiny-llama\"}")])
        let fromEnvironment = try LopConfig.load(file: nil, environment: ["LOP_QUEUE_QUEUES": "a, b"], currentDirectory: "/nonexistent").config
        #expect(fromEnvironment.queue.queues == ["a", "b"])
    }

    @Test(arguments: [
        ("queue:\n  retry_by_kind:\n    mining: {base_seconds: 1.0}\n", "'mining' is not a job kind"),
        ("queue:\n  periodic:\n    - {name: x, cron: \"* * * * *\"}\n", "queue.periodic[0].kind"),
        ("queue:\n  periodic:\n    - {name: x, cron: \"* * * * *\", kind: noop, colour: red}\n", "queue.periodic[0].colour"),
        ("queue:\n  heartbeat_seconds: 60.0\n", "shorter than lease_seconds"),
        ("queue:\n  queues: [\"Bad Name\"]\n", "queue.queues"),
    ])
    func badQueueSettingsNameTheKey(yaml: String, expected: String) throws {
        let (_, file) = try write(yaml)
        let error = #expect(throws: ConfigError.self) { try LopConfig.load(file: file, environment: [:], currentDirectory: "/") }
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
    }

    @Test func webhooksSectionFromFileAndEnvironment() throws {
        let (_, file) = try write("webhooks:\n  retry_schedule: [0, 1.5, 60]\n  allow_hosts: [\"127.0.0.1\", \"Receiver.Local\"]\n  concurrency: 4\n")
        let config = try LopConfig.load(file: file, environment: ["LOP_WEBHOOKS_TIMEOUT_SECONDS": "2.5"], currentDirectory: "/").config
        #expect(config.webhooks.retrySchedule == [0, 1.5, 60] && config.webhooks.allowHosts == ["127.0.0.1", "receiver.local"])
        #expect(config.webhooks.concurrency == 4 && config.webhooks.timeoutSeconds == 2.5)
        let fromEnvironment = try LopConfig.load(file: nil, environment: ["LOP_WEBHOOKS_RETRY_SCHEDULE": "0, 0.2"], currentDirectory: "/nonexistent").config
        #expect(fromEnvironment.webhooks.retrySchedule == [0, 0.2])
    }

    @Test(arguments: [
        ("webhooks:\n  retry_schedule: []\n", "between 1 and 100 delays"),
        ("webhooks:\n  retry_schedule: [0, soon]\n", "webhooks.retry_schedule"),
        ("webhooks:\n  retry_schedule: [0, -5]\n", "-5 is outside"),
        ("webhooks:\n  retry_schedule: 5\n", "a list of numbers"),
        ("webhooks:\n  allow_hosts: [1]\n", "a list of strings"),
        ("webhooks:\n  timeout_seconds: 0\n", "webhooks.timeout_seconds"),
        ("webhooks:\n  secret: x\n", "webhooks.secret"),
    ])
    func badWebhookSettingsNameTheKey(yaml: String, expected: String) throws {
        let (_, file) = try write(yaml)
        let error = #expect(throws: ConfigError.self) { try LopConfig.load(file: file, environment: [:], currentDirectory: "/") }
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
    }

    @Test func compressAndTrainingSectionsFromFileAndEnvironment() throws {
        let (_, file) = try write("compress:\n  max_spread: 0.1\n  method: search\ntraining:\n  evaluation_budgets: [0.4, 0.6]\n  steps: 200\n")
        let config = try LopConfig.load(file: file, environment: ["LOP_TRAINING_SCHEDULE": "", "LOP_TRAINING_PROMOTION_MARGIN": "0.01"],
                                        currentDirectory: "/").config
        #expect(config.compress.maxSpread == 0.1 && config.compress.method == "search")
        #expect(config.training.evaluationBudgets == [0.4, 0.6] && config.training.steps == 200 && config.training.ensemble == 3)
        #expect(config.training.schedule == "" && config.training.promotionMargin == 0.01)
        #expect(LopConfig().training.schedule == "0 3 * * *")
    }

    @Test(arguments: [
        ("compress:\n  method: guess\n", "'guess' is not predict, search or auto"),
        ("compress:\n  max_spread: 2\n", "compress.max_spread"),
        ("training:\n  evaluation_budgets: []\n", "between 1 and 50 budgets"),
        ("training:\n  evaluation_budgets: [0.5, 1.5]\n", "1.5 is outside"),
        ("training:\n  ensemble: 0\n", "training.ensemble"),
        ("training:\n  champion: x\n", "training.champion"),
    ])
    func badCompressAndTrainingSettingsNameTheKey(yaml: String, expected: String) throws {
        let (_, file) = try write(yaml)
        let error = #expect(throws: ConfigError.self) { try LopConfig.load(file: file, environment: [:], currentDirectory: "/") }
        #expect(error?.description.contains(expected) == true, "\(error?.description ?? "")")
    }
}
