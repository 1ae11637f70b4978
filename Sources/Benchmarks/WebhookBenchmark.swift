import Foundation
import Logging
import Store
import Webhooks

/// `lop bench webhooks`: events through the outbox and an in-process notifier to the Python receiver on
/// 127.0.0.1 — at a steady rate (enqueue → delivered latency) and all at once (deliveries per second).
public enum WebhookBenchmark {
    public static func run(target: ConnectionTarget, settings: DeliverySettings, events: Int, rate: Double, receiverScript: String) throws -> BenchmarkTable {
        let receiver = Process()
        receiver.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        receiver.arguments = ["python3", receiverScript]
        let output = Pipe()
        receiver.standardOutput = output
        try receiver.run()
        defer { receiver.terminate(); receiver.waitUntilExit() }
        guard let line = String(data: output.fileHandleForReading.availableData, encoding: .utf8)?.split(separator: "\n").first,
              let port = Int(line.trimmingCharacters(in: .whitespaces)) else { throw WebhookError("the receiver (\(receiverScript)) did not start") }

        let pool = ConnectionPool(target: target, size: 4)
        defer { pool.close() }
        let store = WebhookStore(pool: pool)
        var settings = settings
        settings.allowHosts.append("127.0.0.1")
        let endpoint = try store.addEndpoint(url: "http://127.0.0.1:\(port)/ok", events: ["job.completed"]).endpoint.id
        // Only this benchmark's endpoint receives while it runs; the others are paused and restored afterwards.
        let paused: [Int64] = try pool.withConnection { c in
            try c.query("UPDATE lop.webhook_endpoints SET enabled = false WHERE enabled AND id <> \(endpoint) RETURNING id").map { try $0.decode("id") }
        }
        defer {
            _ = try? pool.withConnection { c in
                try c.execute("DELETE FROM lop.webhook_endpoints WHERE id = \(endpoint)")
                try c.execute("UPDATE lop.webhook_endpoints SET enabled = true WHERE id = ANY(\(paused.map { Int($0) }))")
            }
        }
        var logger = Logger(label: "lop.bench")
        logger.logLevel = .error
        let notifier = Notifier(store: store, settings: settings, name: "bench", listenTarget: target, logger: logger)
        let finished = DispatchSemaphore(value: 0)
        Thread { notifier.run(); finished.signal() }.start()
        defer { notifier.stop(); finished.wait() }

        func delivered() throws -> Int {
            try pool.withConnection { c in
                Int(try c.query("SELECT count(*)::int4 AS n FROM lop.webhook_deliveries WHERE endpoint_id = \(endpoint) AND state = 'delivered'")
                    .single().decode("n", as: Int32.self))
            }
        }
        func emit(_ count: Int, on c: Connection) throws {
            for _ in 0..<count { try WebhookStore.emit("job.completed", data: JSONB(text: #"{"job": {"id": 0, "kind": "noop"}}"#), on: c) }
        }

        // Steady: `rate` events per second, one transaction each (as job completions write them).
        let start = Date()
        try pool.withConnection { c in
            for i in 0..<events {
                let due = start.addingTimeInterval(Double(i) / rate)
                if due > Date() { Thread.sleep(until: due) }
                try c.withTransaction { try emit(1, on: $0) }
            }
        }
        let emitSeconds = Date().timeIntervalSince(start)
        while try delivered() < events { Thread.sleep(forTimeInterval: 0.02) }
        let latency = try pool.withConnection { c in
            try c.query("""
                SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, max(ms) AS worst
                FROM (SELECT extract(epoch FROM delivered_at - created_at) * 1000 AS ms FROM lop.webhook_deliveries WHERE endpoint_id = \(endpoint)) t
                """).single()
        }
        let (p50, p99, worst): (Double, Double, Double) = (try latency.decode("p50"), try latency.decode("p99"), try latency.decode("worst"))
        _ = try pool.withConnection { try $0.execute("DELETE FROM lop.webhook_deliveries WHERE endpoint_id = \(endpoint)") }

        // Burst: every event in one transaction, then as fast as the notifier can post them.
        let burstStart = Date()
        try pool.withTransaction { try emit(events, on: $0) }
        while try delivered() < events { Thread.sleep(forTimeInterval: 0.02) }
        let burstSeconds = Date().timeIntervalSince(burstStart)

        var table = BenchmarkTable(title: "Webhooks: \(events) events to a local receiver, \(settings.concurrency) in flight")
        table.add("steady rate offered", Double(events) / emitSeconds, unit: "events/s", reference: "asked \(Int(rate))", ratio: Double(events) / emitSeconds / rate)
        table.add("enqueue → delivered, p50", p50, unit: "ms")
        table.add("enqueue → delivered, p99", p99, unit: "ms", reference: "target 100 ms", ratio: p99 / 100)
        table.add("enqueue → delivered, worst", worst, unit: "ms")
        table.add("burst: deliveries per second", Double(events) / burstSeconds, unit: "deliveries/s", reference: "steady rate", ratio: Double(events) / burstSeconds / rate)
        return table
    }
}
