import Foundation
import Queue
import Store
import Testing
import TestSupport
@testable import Webhooks

/// Real `lop` and `lop-notifier` processes: adding endpoints from the CLI, and a notifier killed mid-delivery.
@Suite(.serialized) struct NotifierProcessTests {
    var binaries: String { URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path }

    func environment(_ target: ConnectionTarget, allow: String = "127.0.0.1", timeout: String = "2") -> [String: String] {
        ["LOP_CONFIG": TestDatabase.repositoryRoot + "/Config/lop.yaml",
         "LOP_DATABASE_URL": target.parameters.map { "\($0.0)=\($0.1)" }.joined(separator: " "),
         "LOP_WEBHOOKS_ALLOW_HOSTS": allow, "LOP_WEBHOOKS_TIMEOUT_SECONDS": timeout, "LOP_WEBHOOKS_POLL_SECONDS": "0.1",
         "LOP_WEBHOOKS_RETRY_SCHEDULE": "0,0.2,0.2"]
    }

    @Test func theCLIAddsEndpointsOnlyForAllowedDestinationsAndShowsTheSecretOnce() throws {
        let target = try TestDatabase.createMigrated()
        let lop = binaries + "/lop"
        let refused = try TestProcess.run([lop, "webhooks", "add", "http://127.0.0.1:9/hook"], environment: environment(target, allow: ""))
        #expect(refused.status == 65 && refused.output.contains("private, loopback or link-local"))
        let scheme = try TestProcess.run([lop, "webhooks", "add", "gopher://example.com/"], environment: environment(target))
        #expect(scheme.status == 65 && scheme.output.contains("only http and https"))
        let added = try TestProcess.run([lop, "webhooks", "add", "http://127.0.0.1:9/hook", "--events", "job.completed,job.failed"],
                                        environment: environment(target), separateStandardError: true)
        #expect(added.status == 0)
        let secret = try #require(added.output.split(separator: "\n").first { $0.hasPrefix("secret: ") }).dropFirst("secret: ".count)
        #expect(throws: Never.self) { try WebhookSecret(parsing: String(secret)) }
        let listed = try TestProcess.run([lop, "webhooks", "list"], environment: environment(target), separateStandardError: true)
        #expect(listed.status == 0 && listed.output.contains("http://127.0.0.1:9/hook") && listed.output.contains("job.completed,job.failed"))
        #expect(!listed.output.contains(secret))
        let json = try TestProcess.run([lop, "webhooks", "list", "--json"], environment: environment(target), separateStandardError: true)
        #expect(json.status == 0 && !json.output.contains(secret) && !json.output.contains("whsec_"))
        let test = try TestProcess.run([lop, "webhooks", "test", "1"], environment: environment(target), separateStandardError: true)
        #expect(test.status == 0 && test.output.contains("ping msg_"))
        let deliveries = try TestProcess.run([lop, "webhooks", "deliveries", "--state", "pending"], environment: environment(target), separateStandardError: true)
        #expect(deliveries.status == 0 && deliveries.output.contains("ping"))
        let badState = try TestProcess.run([lop, "webhooks", "deliveries", "--state", "lost"], environment: environment(target))
        #expect(badState.status == 65 && badState.output.contains("unknown delivery state"))
        let badEvent = try TestProcess.run([lop, "webhooks", "add", "http://127.0.0.1:9/x", "--events", "job.done"], environment: environment(target))
        #expect(badEvent.status == 65 && badEvent.output.contains("unknown event \"job.done\""))
    }

    @Test func aNotifierKilledMidDeliveryIsReplacedAndTheReceiverSeesOneEvent() throws {
        let target = try TestDatabase.createMigrated()
        let receiver = try Receiver()
        let pool = ConnectionPool(target: target, size: 2)
        defer { pool.close() }
        let store = WebhookStore(pool: pool)
        _ = try store.addEndpoint(url: receiver.url("/slowfirst/30"), events: [])
        _ = try pool.withTransaction { try WebhookStore.emit("job.completed", data: JSONB(text: "{}"), on: $0) }
        let id = try store.deliveries()[0].id

        let first = try TestProcess.start([binaries + "/lop-notifier", "--name", "first"], environment: environment(target))
        #expect(try waitUntil { try receiver.requests().count == 1 })
        first.signal(SIGKILL)
        #expect(first.wait(timeout: 10) == 128 + SIGKILL)
        // The killed notifier's lease (2 × 2 s timeout + 1 s) runs out; a second one takes the delivery over.
        let second = try TestProcess.start([binaries + "/lop-notifier", "--name", "second"], environment: environment(target))
        #expect(try waitUntil { try store.deliveries()[0].state == "delivered" })
        second.signal(SIGTERM)
        #expect(second.wait(timeout: 20) == 0)

        let requests = try receiver.requests()
        #expect(requests.count == 2 && Set(requests.map(\.id)) == [id])
        let attempts = try store.attempts(id)
        #expect(attempts.count == 2)
        #expect(attempts[0].notifier == "first" && attempts[0].error?.contains("lease expired") == true)
        #expect(attempts[1].notifier == "second" && attempts[1].statusCode == 200)
        #expect(!second.output.contains(String(try pool.withConnection { try $0.query("SELECT secret FROM lop.webhook_endpoints").single().decode("secret", as: String.self) }.dropFirst(6))))
    }
}
