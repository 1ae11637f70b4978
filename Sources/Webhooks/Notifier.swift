import Foundation
import Logging
import LopCore
import Store
import Synchronization

/// lop-notifier's loop: claims due deliveries, posts them signed (many in flight, one thread, libcurl multi),
/// records every attempt and applies the retry schedule. It wakes on NOTIFY lop_webhooks and also polls, so
/// retries come due without a notification.
public final class Notifier: Sendable {
    public let store: WebhookStore
    public let settings: DeliverySettings
    public let name: String
    let listenTarget: ConnectionTarget
    let logger: Logger
    private let stopping = Atomic<Bool>(false)

    public init(store: WebhookStore, settings: DeliverySettings, name: String, listenTarget: ConnectionTarget, logger: Logger) {
        (self.store, self.settings, self.name, self.listenTarget, self.logger) = (store, settings, name, listenTarget, logger)
    }

    /// Asks `run` to stop claiming, finish what is in flight, and return.
    public func stop() { stopping.store(true, ordering: .relaxed) }

    public static var userAgent: String { "lop-webhooks/\(LopVersion.current) (+Standard Webhooks v1)" }

    /// A lease outlives a post (and recording it) by a margin; after it a claimed delivery may be taken over by
    /// another notifier.
    var leaseSeconds: Double { 2 * settings.timeoutSeconds + 1 }

    public func run() {
        let poster = HTTPPoster(timeoutSeconds: settings.timeoutSeconds, snippetBytes: settings.responseSnippetBytes, userAgent: Self.userAgent)
        var inFlight: [String: (delivery: ClaimedDelivery, startedAt: Date)] = [:]
        var destinations: [String: (destination: Destination, until: Date)] = [:]
        var listener: Connection?
        var claimDue = true
        var lastClaim = Date.distantPast
        logger.info("notifier started", metadata: ["name": "\(name)", "concurrency": "\(settings.concurrency)"])
        while !stopping.load(ordering: .relaxed) || !inFlight.isEmpty {
            do {
                if listener == nil {
                    let connection = try Connection(listenTarget, reconnect: store.pool.reconnectPolicy, logger: logger)
                    try connection.listen(WebhookStore.channel)
                    listener = connection
                    claimDue = true
                }
                let free = settings.concurrency - inFlight.count
                if !stopping.load(ordering: .relaxed), free > 0, claimDue || Date().timeIntervalSince(lastClaim) >= settings.pollSeconds {
                    let claimed = try store.claim(notifier: name, limit: free, leaseSeconds: leaseSeconds)
                    lastClaim = Date()
                    claimDue = claimed.count == free  // more may be waiting
                    for delivery in claimed {
                        let startedAt = Date()
                        do {
                            let destination = try cachedDestination(delivery.url, &destinations)
                            let timestamp = Int(startedAt.timeIntervalSince1970)
                            let body = Array(delivery.body.utf8)
                            let signature = WebhookSignature.header(id: delivery.id, timestamp: timestamp, body: body, secrets: delivery.secrets)
                            try poster.start(key: delivery.id, destination: destination, headers: [
                                ("content-type", "application/json"), ("webhook-id", delivery.id), ("webhook-timestamp", String(timestamp)),
                                ("webhook-signature", signature),
                            ], body: body)
                            inFlight[delivery.id] = (delivery, startedAt)
                        } catch {
                            // Refused before sending (destination not allowed, no such host): an attempt like any failed one.
                            finish(delivery, startedAt: startedAt, outcome: PostOutcome(snippet: "", error: "\(error)", seconds: 0))
                        }
                    }
                }
                if inFlight.isEmpty {
                    if let note = try listener!.waitForNotification(timeout: claimDue ? 0 : min(settings.pollSeconds, 0.25)), note.channel == WebhookStore.channel {
                        claimDue = true
                    }
                } else {
                    for (key, outcome) in poster.poll(timeout: 0.005) {
                        guard let (delivery, startedAt) = inFlight.removeValue(forKey: key) else { continue }
                        finish(delivery, startedAt: startedAt, outcome: outcome)
                        claimDue = true
                    }
                    while let note = try listener!.waitForNotification(timeout: 0) {
                        if note.channel == WebhookStore.channel { claimDue = true }
                    }
                }
            } catch {
                logger.error("notifier: \(error)")
                if let storeError = error as? StoreError, storeError.isConnectionLoss { listener = nil }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        logger.info("notifier stopped", metadata: ["name": "\(name)"])
    }

    /// Resolves and checks a URL, reusing the answer for a few seconds (every delivery is checked, not every lookup repeated).
    private func cachedDestination(_ url: String, _ cache: inout [String: (destination: Destination, until: Date)]) throws -> Destination {
        if let hit = cache[url], hit.until > Date() { return hit.destination }
        let destination = try Destination.check(url, allowHosts: settings.allowHosts)
        cache[url] = (destination, Date().addingTimeInterval(10))
        return destination
    }

    /// Records an attempt's outcome; a failure to record is logged and the lease lets another notifier retry it.
    private func finish(_ delivery: ClaimedDelivery, startedAt: Date, outcome: PostOutcome) {
        let decision = DeliveryDecision.decide(outcome, attempt: delivery.attempt, settings: settings)
        do {
            try store.record(delivery, notifier: name, startedAt: startedAt, outcome: outcome, decision: decision)
        } catch {
            logger.error("could not record attempt \(delivery.attempt) of \(delivery.id): \(error)")
            return
        }
        let what = outcome.statusCode.map { "HTTP \($0)" } ?? outcome.error ?? "no response"
        let metadata: Logger.Metadata = ["delivery": "\(delivery.id)", "endpoint": "\(delivery.endpointId)", "event": "\(delivery.eventType)",
                                         "attempt": "\(delivery.attempt)"]
        switch decision {
        case .delivered: logger.debug("delivered", metadata: metadata)
        case .retry(let after): logger.info("attempt failed (\(what)); retrying in \(String(format: "%.1f", after)) s", metadata: metadata)
        case .dead: logger.warning("delivery is dead after \(delivery.attempt) attempts (\(what))", metadata: metadata)
        case .gone: logger.warning("the receiver answered 410 Gone; endpoint \(delivery.endpointId) is disabled and the delivery dead", metadata: metadata)
        }
    }
}
