import ArgumentParser
import Bootstrap
import Foundation
import LopConfig
import Logging
import Store
import Webhooks

struct WebhooksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhooks",
        abstract: "Webhook endpoints and deliveries (Standard Webhooks; lop-notifier posts them).",
        subcommands: [WebhooksAdd.self, WebhooksList.self, WebhooksDisable.self, WebhooksEnable.self, WebhooksRotateSecret.self,
                      WebhooksDeliveries.self, WebhooksRedeliver.self, WebhooksTest.self])
}

/// The configuration and the webhook tables, for every subcommand.
private func webhookStore(_ options: GlobalOptions) throws -> (LopConfig, WebhookStore) {
    let config = try options.load()
    return (config, WebhookStore(pool: try config.makePool(logger: Logger(label: "lop.cli"))))
}

struct WebhooksAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add an endpoint; prints its signing secret (shown only this once).")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "The receiver's http(s) URL.")
    var url: String

    @Option(help: "Comma-separated event types (default: all): \(WebhookEvents.known.joined(separator: ", ")).")
    var events: String?

    func run() throws {
        try runReportingErrors {
            let (config, store) = try webhookStore(options)
            // Refuse private destinations now rather than at the first delivery.
            _ = try Destination.check(url, allowHosts: config.webhooks.allowHosts)
            let list = events?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } ?? []
            let (endpoint, secret) = try store.addEndpoint(url: url, events: list)
            if options.json {
                struct Added: Encodable { let endpoint: WebhookEndpoint; let secret: String }
                return try printJSON(Added(endpoint: endpoint, secret: secret.text))
            }
            print("endpoint \(endpoint.id): \(endpoint.url) (\(endpoint.events.isEmpty ? "all events" : endpoint.events.joined(separator: ", ")))")
            print("secret: \(secret.text)")
            print("Keep the secret: it verifies lop's signatures and is not shown again (lop webhooks rotate-secret makes a new one).")
        }
    }
}

struct WebhooksList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Endpoints, with their delivery counts by state.")

    @OptionGroup var options: GlobalOptions

    func run() throws {
        try runReportingErrors {
            let (_, store) = try webhookStore(options)
            let endpoints = try store.endpoints()
            if options.json { return try printJSON(endpoints) }
            guard !endpoints.isEmpty else { return print("no webhook endpoints (lop webhooks add URL)") }
            print("ID  ENABLED  EVENTS                URL")
            for e in endpoints {
                let events = e.events.isEmpty ? "all" : e.events.joined(separator: ",")
                print(String(format: "%-3lld %-8@ %-21@ %@", e.id, e.enabled ? "yes" : "no", events, e.url)
                      + (e.rotating ? "  (rotating secret)" : "") + (e.disabledReason.map { "  — \($0)" } ?? ""))
            }
        }
    }
}

struct WebhooksDisable: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "disable", abstract: "Stop deliveries to an endpoint (they wait until it is enabled).")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Endpoint id.")
    var id: Int64

    @Option(help: "Why (shown by list).")
    var reason = "disabled by lop webhooks disable"

    func run() throws {
        try runReportingErrors {
            try webhookStore(options).1.disable(id, reason: reason)
            print("endpoint \(id) disabled")
        }
    }
}

struct WebhooksEnable: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enable", abstract: "Resume deliveries to an endpoint.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Endpoint id.")
    var id: Int64

    func run() throws {
        try runReportingErrors {
            try webhookStore(options).1.enable(id)
            print("endpoint \(id) enabled")
        }
    }
}

struct WebhooksRotateSecret: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-secret",
        abstract: "A new signing secret; deliveries carry signatures with both for webhooks.rotation_overlap_hours.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Endpoint id.")
    var id: Int64

    func run() throws {
        try runReportingErrors {
            let (config, store) = try webhookStore(options)
            let secret = try store.rotateSecret(id, overlapHours: config.webhooks.rotationOverlapHours)
            if options.json {
                struct Rotated: Encodable { let id: Int64; let secret: String }
                return try printJSON(Rotated(id: id, secret: secret.text))
            }
            print("secret: \(secret.text)")
            print(String(format: "The old secret keeps signing too for %.1f hours.", config.webhooks.rotationOverlapHours))
        }
    }
}

struct WebhooksDeliveries: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "deliveries", abstract: "The outbox, newest first, with each delivery's attempts.")

    @OptionGroup var options: GlobalOptions

    @Option(help: "pending, failed, delivered or dead.")
    var state: String?

    @Option(help: "Only this endpoint's.")
    var endpoint: Int64?

    @Option(help: "At most this many.")
    var limit = 50

    func validate() throws {
        guard (1...100_000).contains(limit) else { throw ValidationError("--limit must be between 1 and 100000") }
    }

    func run() throws {
        try runReportingErrors {
            let (_, store) = try webhookStore(options)
            let deliveries = try store.deliveries(state: state, endpoint: endpoint, limit: limit)
            if options.json {
                struct Listed: Encodable { let delivery: WebhookDelivery; let attempts: [WebhookAttempt] }
                return try printJSON(try deliveries.map { Listed(delivery: $0, attempts: try store.attempts($0.id)) })
            }
            guard !deliveries.isEmpty else { return print("no deliveries") }
            let time = ISO8601DateFormatter()
            print("ID                                    ENDPOINT  EVENT               STATE      ATTEMPTS  CREATED               LAST ERROR")
            for d in deliveries {
                print([d.id.padding(toLength: 36, withPad: " ", startingAt: 0), String(format: "%8lld", d.endpointId),
                       d.eventType.padding(toLength: 18, withPad: " ", startingAt: 0), d.state.padding(toLength: 9, withPad: " ", startingAt: 0),
                       String(format: "%8d", d.attempt), time.string(from: d.createdAt), d.lastError ?? ""].joined(separator: "  "))
            }
        }
    }
}

struct WebhooksRedeliver: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redeliver", abstract: "Send a delivery again now, with the same webhook-id (a dead one gets one more attempt).")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Delivery id (msg_…).")
    var id: String

    func run() throws {
        try runReportingErrors {
            try webhookStore(options).1.redeliver(id)
            print("\(id) is due now")
        }
    }
}

struct WebhooksTest: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "test", abstract: "Queue a ping event for one endpoint.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "Endpoint id.")
    var id: Int64

    func run() throws {
        try runReportingErrors {
            let delivery = try webhookStore(options).1.ping(id)
            print("ping \(delivery) queued for endpoint \(id) (lop-notifier sends it; lop webhooks deliveries shows the outcome)")
        }
    }
}
