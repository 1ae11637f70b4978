import ArgumentParser
import Bootstrap
import Dispatch
import Foundation
import LopConfig
import LopCore
import Logging
import Store
import Webhooks

/// `lop-notifier`: posts lop's webhooks from the outbox until SIGTERM or SIGINT.
@main
struct LopNotifier: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lop-notifier",
        abstract: "Deliver lop's webhooks (Standard Webhooks, signed) from the outbox in PostgreSQL.",
        discussion: """
            Settings come from the webhooks section of Config/lop.yaml (or --config / LOP_CONFIG) and LOP_WEBHOOKS_…
            variables. Run as many notifiers as you like: they share the outbox without waiting on each other.
            SIGTERM or SIGINT: stop claiming, finish the posts in flight, exit. Exit codes: 0 after a clean shutdown,
            69 database unreachable, 78 bad configuration.
            """)

    @Option(name: .long, help: "Configuration file.")
    var config: String?

    @Option(name: .long, help: "Deliveries in flight at once (default: webhooks.concurrency).")
    var concurrency: Int?

    @Option(name: .long, help: "Name recorded with each attempt (default: host-pid).")
    var name: String?

    func validate() throws {
        if let concurrency, !(1...1024).contains(concurrency) { throw ValidationError("--concurrency must be between 1 and 1024") }
    }

    func run() throws {
        let settings = Executable.loadConfig(file: config, program: "lop-notifier")
        let logger = Logger(label: "lop.notifier")
        var webhooks = DeliverySettings(settings.webhooks)
        if let concurrency { webhooks.concurrency = concurrency }
        let pool: ConnectionPool
        do { pool = try ConnectionPool(config: settings.database, minimumSize: 1, logger: logger) } catch {
            Executable.fail("lop-notifier", error, code: ExitStatus.configError)
        }
        do { _ = try pool.withConnection { try $0.query("SELECT 1 FROM lop.webhook_deliveries LIMIT 1") } } catch {
            Executable.fail("lop-notifier", "\(error) (is the database migrated? run `lop migrate`)", code: ExitStatus.unavailable)
        }
        let notifier = Notifier(store: WebhookStore(pool: pool), settings: webhooks,
                                name: name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())", listenTarget: pool.target, logger: logger)
        let sources = Executable.onShutdownSignals(logger: logger) { notifier.stop() }
        notifier.run()
        sources.forEach { $0.cancel() }
    }
}
