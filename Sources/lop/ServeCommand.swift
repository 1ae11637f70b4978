import ArgumentParser
import Foundation
import Logging
import LopConfig
import Store
import Web

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "The web dashboard, its JSON API (/api/…) and Prometheus metrics (/metrics), over lop's database.",
        discussion: """
        Pages: /queue (filters state, kind, queue), /jobs/ID, /models (sort budget, size, loss), /models/ID, /samples,
        /webhooks, /webhooks/deliveries/ID. Actions (cancel, retry, redeliver, alias moves) are POSTs under /api that
        need `Authorization: Bearer $LOP_WEB_TOKEN` and the X-CSRF-Token of /api/csrf; without LOP_WEB_TOKEN in the
        environment the dashboard is read-only. It listens on loopback unless told otherwise.
        """)

    @OptionGroup var options: GlobalOptions

    @Option(help: "HOST:PORT to listen on.")
    var listen = "127.0.0.1:8080"

    func run() throws {
        try runReportingErrors {
            let config = try options.load()
            let logger = Logger(label: "lop.web")
            let pool = try config.makePool(logger: logger)
            let settings = try DashboardSettings(listen: listen, token: ProcessInfo.processInfo.environment["LOP_WEB_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
            if !["127.0.0.1", "localhost", "::1"].contains(settings.host) {
                logger.warning("listening on \(settings.host), not loopback: anyone who can reach it reads the queue and the registry", metadata: ["listen": "\(listen)"])
            }
            let dashboard = Dashboard(pool: pool, settings: settings, logger: logger)
            let finished = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var failure: (any Error)?
            Task {
                do {
                    try await dashboard.run { port in
                        FileHandle.standardOutput.write(Data("lop dashboard on http://\(settings.host):\(port)/ (\(settings.token == nil ? "read-only: set LOP_WEB_TOKEN to allow actions" : "actions need the bearer token"))\n".utf8))
                    }
                } catch { failure = error }
                finished.signal()
            }
            finished.wait()
            if let failure { throw failure }
        }
    }
}
