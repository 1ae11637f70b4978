import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import LopConfig
import Logging
import LopCore
import Queue
import Store
import Testing
import TestSupport
@testable import Webhooks

/// The Python receiver in scripts/webhook_receiver.py, on 127.0.0.1.
final class Receiver: Sendable {
    let process: BackgroundProcess
    let port: Int

    init() throws {
        process = try TestProcess.start(["/usr/bin/env", "python3", TestDatabase.repositoryRoot + "/scripts/webhook_receiver.py"])
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let line = process.output.split(separator: "\n").first, let port = Int(line.trimmingCharacters(in: .whitespaces)) {
                self.port = port
                return
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw WebhookError("the receiver did not start: \(process.output)")
    }

    deinit { process.signal(SIGKILL); process.wait(timeout: 5) }

    func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    struct Request: Decodable {
        let path: String
        let id: String
        let timestamp: String?
        let signature: String?
        let content_type: String?
        let user_agent: String?
        let body: String
        let status: Int
        let received_at: Double
    }

    func requests() throws -> [Request] {
        try JSONDecoder().decode([Request].self, from: Data(contentsOf: URL(string: url("/_log"))!))
    }
}

/// A database with the webhook tables, a receiver and an in-process notifier with a short schedule.
final class DeliveryFixture: @unchecked Sendable {
    let target: ConnectionTarget
    let pool: ConnectionPool
    let store: WebhookStore
    let receiver: Receiver
    var settings = DeliverySettings()
    private var notifier: Notifier?
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    init() throws {
        target = try TestDatabase.createMigrated()
        pool = ConnectionPool(target: target, size: 4)
        store = WebhookStore(pool: pool)
        receiver = try Receiver()
        (settings.timeoutSeconds, settings.retrySchedule, settings.jitter, settings.pollSeconds) = (1, [0, 0.2, 0.2], 0, 0.05)
        settings.allowHosts = ["127.0.0.1"]
    }

    deinit { stopNotifier(); pool.close() }

    /// An endpoint inserted directly (as another tool might), with its secret.
    func endpoint(_ path: String, events: [String] = []) throws -> (id: Int64, secret: WebhookSecret) {
        let (endpoint, secret) = try store.addEndpoint(url: receiver.url(path), events: events)
        return (endpoint.id, secret)
    }

    func startNotifier() {
        let notifier = Notifier(store: store, settings: settings, name: "test-notifier", listenTarget: target, logger: Logger(label: "test"))
        self.notifier = notifier
        let done = finished
        let thread = Thread { notifier.run(); done.signal() }
        thread.start()
        self.thread = thread
    }

    func stopNotifier() {
        guard let notifier else { return }
        notifier.stop()
        finished.wait()
        self.notifier = nil
    }

    func emit(_ type: String, _ data: String = #"{"n": 1}"#) throws -> Int {
        try pool.withTransaction { try WebhookStore.emit(type, data: JSONB(text: data), on: $0) }
    }

    func delivery(_ id: String) throws -> WebhookDelivery {
        try #require(try store.deliveries(limit: 1000).first { $0.id == id })
    }
}

@Suite struct DeliveryTests {
    @Test func aCompletedJobIsDeliveredOnceSignedWithTheEndpointSecret() throws {
        let f = try DeliveryFixture()
        let (endpoint, secret) = try f.endpoint("/ok")
        _ = try f.endpoint("/ok", events: ["model.registered"])  // wants other events: gets nothing
        let queue = JobQueue(pool: f.pool)
        let job = try queue.enqueue(NewJob(kind: .noop)).job
        _ = try queue.claim(worker: "w", queues: ["default"], kinds: [.noop], limit: 1, leaseSeconds: 30)
        // A finalization that rolls back leaves no event behind.
        #expect(throws: (any Error).self) {
            try f.pool.withTransaction { c in
                _ = try c.execute("UPDATE lop.jobs SET state = 'completed', finalized_at = now(), result = '{}' WHERE id = \(job.id)")
                throw WebhookError("rolled back")
            }
        }
        #expect(try f.store.deliveries().isEmpty)
        _ = try queue.complete(job: job.id, worker: "w", result: JSONB(text: #"{"artifact": "/var/a", "metrics": {"loss": 1.5}}"#))
        let deliveries = try f.store.deliveries()
        #expect(deliveries.count == 1 && deliveries[0].endpointId == endpoint && deliveries[0].eventType == "job.completed" && deliveries[0].state == "pending")

        f.startNotifier()
        #expect(try waitUntil { try f.delivery(deliveries[0].id).state == "delivered" })
        Thread.sleep(forTimeInterval: 0.3)
        f.stopNotifier()
        let requests = try f.receiver.requests()
        #expect(requests.count == 1)
        let request = try #require(requests.first)
        #expect(request.id == deliveries[0].id && request.content_type == "application/json")
        #expect(request.user_agent?.hasPrefix("lop-webhooks/\(LopVersion.current)") == true)
        try WebhookVerifier(secrets: [secret]).verify(id: request.id, timestamp: request.timestamp, signature: request.signature, body: Array(request.body.utf8))
        #expect(throws: WebhookError.self) {
            try WebhookVerifier(secrets: [WebhookSecret.generate()]).verify(id: request.id, timestamp: request.timestamp, signature: request.signature, body: Array(request.body.utf8))
        }
        let payload = try #require(try JSONSerialization.jsonObject(with: Data(request.body.utf8)) as? [String: Any])
        let data = try #require(payload["data"] as? [String: Any])
        let links = try #require(data["links"] as? [String: Any])
        #expect(payload["type"] as? String == "job.completed" && payload["timestamp"] is String)
        #expect((data["job"] as? [String: Any])?["id"] as? Int == Int(job.id) && links["artifact"] as? String == "/var/a")
        let attempts = try f.store.attempts(request.id)
        #expect(attempts.count == 1 && attempts[0].statusCode == 200 && attempts[0].error == nil && attempts[0].response == #"{"ok": true}"#)

        // Cancelling and discarding emit their own events.
        let other = try queue.enqueue(NewJob(kind: .noop)).job
        _ = try queue.cancel(job: other.id)
        #expect(try f.store.deliveries().map(\.eventType).sorted() == ["job.cancelled", "job.completed"])
    }

    @Test func failuresAreRetriedWithTheSameIdUntilDelivered() throws {
        let f = try DeliveryFixture()
        f.settings.retrySchedule = [0, 0.2, 0.2, 0.2, 0.2]
        _ = try f.endpoint("/flaky/3")
        #expect(try f.emit("job.completed") == 1)
        let id = try f.store.deliveries()[0].id
        f.startNotifier()
        #expect(try waitUntil { try f.delivery(id).state == "delivered" })
        f.stopNotifier()
        let requests = try f.receiver.requests()
        #expect(requests.map(\.status) == [500, 500, 500, 200])
        #expect(Set(requests.map(\.id)) == [id])
        // Each retry waited for the schedule's delay.
        for (a, b) in zip(requests, requests.dropFirst()) { #expect(b.received_at - a.received_at >= 0.15) }
        let attempts = try f.store.attempts(id)
        #expect(attempts.map(\.attempt) == [1, 2, 3, 4] && attempts.map(\.statusCode) == [500, 500, 500, 200])
        #expect(try f.delivery(id).attempt == 4)
    }

    @Test func eachKindOfFailureIsHandledAsSpecified() throws {
        let f = try DeliveryFixture()
        let closed = try f.store.addEndpoint(url: "http://127.0.0.1:1/closed", events: []).endpoint.id
        let slow = try f.endpoint("/slow/3").id
        let redirect = try f.endpoint("/redirect").id
        let gone = try f.endpoint("/gone").id
        let limited = try f.endpoint("/ratelimit/1").id
        #expect(try f.emit("job.failed") == 5)
        f.startNotifier()
        let ids = Dictionary(uniqueKeysWithValues: try f.store.deliveries().map { ($0.endpointId, $0.id) })
        #expect(try waitUntil { try [closed, slow, redirect, gone].allSatisfy { try f.delivery(ids[$0]!).state == "dead" } && f.delivery(ids[limited]!).state == "delivered" })
        f.stopNotifier()

        // Nothing listens: three attempts (the schedule's length), each a connection error, then dead.
        let refused = try f.store.attempts(ids[closed]!)
        #expect(refused.count == 3 && refused.allSatisfy { $0.statusCode == nil && $0.error?.contains("onnect") == true })
        // Slower than the timeout: timed out each time.
        let timedOut = try f.store.attempts(ids[slow]!)
        #expect(timedOut.count == 3 && timedOut.allSatisfy { $0.error?.lowercased().contains("timeout") == true && $0.durationMs < 2500 })
        // A redirect is a failure and is not followed.
        #expect(try f.store.attempts(ids[redirect]!).map(\.statusCode) == [301, 301, 301])
        let requests = try f.receiver.requests()
        #expect(!requests.contains { $0.path == "/ok" })
        // 410: one attempt, the endpoint is disabled with a reason, and it gets no more events.
        #expect(try f.store.attempts(ids[gone]!).map(\.statusCode) == [410])
        let disabled = try f.store.endpoint(gone)
        #expect(!disabled.enabled && disabled.disabledReason?.contains("410") == true)
        #expect(try f.emit("job.failed") == 4)
        // 429 with Retry-After: 1: the second attempt waited about a second, not the schedule's 0.2 s.
        let limitedRequests = requests.filter { $0.path == "/ratelimit/1" }
        #expect(limitedRequests.map(\.status) == [429, 200])
        #expect(limitedRequests[1].received_at - limitedRequests[0].received_at >= 0.9)
    }

    @Test func privateDestinationsAreRefusedAtDeliveryTimeAfterResolution() throws {
        let f = try DeliveryFixture()
        // Inserted behind lop's back: localhost resolves to a loopback address and is not on the allow-list.
        _ = try f.pool.withConnection { c in
            try c.execute("INSERT INTO lop.webhook_endpoints (url, secret) VALUES (\("http://localhost:\(f.receiver.port)/ok"), \(WebhookSecret.generate().text))")
        }
        #expect(try f.emit("job.completed") == 1)
        let id = try f.store.deliveries()[0].id
        f.startNotifier()
        #expect(try waitUntil { try f.delivery(id).state == "dead" })
        f.stopNotifier()
        let attempts = try f.store.attempts(id)
        #expect(attempts.count == 3 && attempts.allSatisfy { $0.error?.contains("private, loopback or link-local") == true })
        #expect(try f.receiver.requests().isEmpty)
    }

    @Test func redeliverSendsADeadDeliveryAgainAndPingsReachOneEndpoint() throws {
        let f = try DeliveryFixture()
        let (endpoint, _) = try f.endpoint("/ok")
        let (other, _) = try f.endpoint("/ok")
        try f.store.disable(endpoint, reason: "maintenance")
        #expect(try f.emit("job.completed") == 1)  // only the enabled endpoint
        let ping = try f.store.ping(other)
        f.startNotifier()
        #expect(try waitUntil { try f.store.deliveries().allSatisfy { $0.state == "delivered" } })
        try f.store.redeliver(ping)
        #expect(try waitUntil { try f.receiver.requests().filter { $0.id == ping }.count == 2 })
        #expect(try waitUntil { try f.delivery(ping).state == "delivered" })
        f.stopNotifier()
        let pings = try f.receiver.requests().filter { $0.id == ping }
        #expect(pings.allSatisfy { $0.body.contains(#""type": "ping""#) })
        #expect { try f.store.redeliver("msg_nope") } throws: { "\($0)".contains("no webhook delivery") }
        // Under another notifier's live lease a delivery is left alone, and the error says who holds it.
        try f.pool.withConnection { c in
            _ = try c.execute("UPDATE lop.webhook_deliveries SET leased_by = 'elsewhere', lease_expires_at = now() + interval '1 hour' WHERE id = \(ping)")
        }
        #expect { try f.store.redeliver(ping) } throws: { "\($0)".contains("being sent by notifier elsewhere") }
        #expect(try f.delivery(ping).state == "delivered")
        #expect { try f.store.disable(999, reason: "x") } throws: { "\($0)".contains("no webhook endpoint 999") }
        #expect { _ = try f.store.addEndpoint(url: "http://127.0.0.1/x", events: ["job.done"]) } throws: { "\($0)".contains("unknown event") }
        // A rotated secret: deliveries carry both signatures.
        let rotated = try f.store.rotateSecret(other, overlapHours: 1)
        #expect(try f.store.endpoint(other).rotating)
        let claimedSecrets = try f.pool.withConnection { c in
            try c.query("SELECT secret, previous_secret FROM lop.webhook_endpoints WHERE id = \(other)").single()
        }
        #expect(try claimedSecrets.decode("secret", as: String.self) == rotated.text && claimedSecrets.decode("previous_secret", as: String?.self) != nil)
    }
}
