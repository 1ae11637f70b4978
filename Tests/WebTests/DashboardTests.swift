import Foundation
@testable import Jobs
import LopConfig
import Queue
import Store
import Testing
import TestSupport
@testable import Web
import Webhooks

let tinyLlamaFolder = TestDatabase.repositoryRoot + "/Fixtures/tiny-llama"

/// A running dashboard on 127.0.0.1 (an OS-chosen port).
final class RunningDashboard: @unchecked Sendable {
    let port: Int
    let task: Task<Void, any Error>

    init(pool: ConnectionPool, token: String?) throws {
        let dashboard = Dashboard(pool: pool, settings: DashboardSettings(host: "127.0.0.1", port: 0, token: token))
        let ready = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var bound = 0
        task = Task { try await dashboard.run { port in bound = port; ready.signal() } }
        guard ready.wait(timeout: .now() + 30) == .success, bound > 0 else { throw RequestError("server", "did not start") }
        port = bound
    }

    var base: String { "http://127.0.0.1:\(port)" }

    /// An HTTP request with curl: the status and the body.
    func request(_ path: String, method: String = "GET", headers: [String: String] = [:], body: String? = nil) throws -> (status: Int, body: String) {
        let out = NSTemporaryDirectory() + "lop-web-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        var argv = ["/usr/bin/curl", "-s", "-g", "-o", out, "-w", "%{http_code}", "-X", method]
        for (k, v) in headers.sorted(by: { $0.key < $1.key }) { argv += ["-H", "\(k): \(v)"] }
        if let body { argv += ["--data-binary", body] }
        argv.append(base + path)
        let result = try TestProcess.run(argv)
        return (Int(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }
}

/// One database filled by real jobs (a sweep, a predictor training, two compress jobs, a discarded job whose
/// error holds a script tag, webhook deliveries for their events, and a job left running), with a dashboard
/// that allows actions and one that is read-only. Built once; the tests only read it, or change what they made.
final class DashboardWorld: @unchecked Sendable {
    static let token = "web-test-token-0123456789"
    nonisolated(unsafe) static var built: DashboardWorld?
    static let lock = NSLock()
    static func shared() throws -> DashboardWorld {
        lock.lock()
        defer { lock.unlock() }
        if let built { return built }
        let world = try DashboardWorld()
        built = world
        return world
    }

    let pool: ConnectionPool
    let queue: JobQueue
    let registry: Registry
    let server: RunningDashboard
    let readOnly: RunningDashboard
    let base: RegisteredModel
    let jobs: [String: Int64]

    init() throws {
        let target = try TestDatabase.createMigrated()
        let pool = ConnectionPool(target: target, size: 4), queue = JobQueue(pool: pool), registry = Registry(pool: pool)
        (self.pool, self.queue, self.registry) = (pool, queue, registry)
        var jobs: [String: Int64] = [:]
        let root = try ArtifactRoot(NSTemporaryDirectory() + "lop-web-artifacts-\(UUID().uuidString.prefix(8))")
        var config = LopConfig()
        config.artifacts.root = root.path
        config.pruning.calibrationSamples = 8
        config.training.evaluationBudgets = [0.35, 0.6]
        _ = try WebhookStore(pool: pool).addEndpoint(url: "http://127.0.0.1:9/hook", events: [])
        base = try BaseRegistration(source: tinyLlamaFolder, name: "a").run(registry: registry, root: root, actor: "test")
        func insert(_ kind: String, _ args: String) throws -> Int64 {
            try pool.withConnection { try $0.query("INSERT INTO lop.jobs (kind, args) VALUES (\(kind), \(args)::jsonb) RETURNING id").single().decode("id") }
        }
        func run(_ ids: [Int64]) throws {
            let worker = Worker(queue: queue, handlers: JobHandlers.all(config: config), options: fastOptions("web-test"), listenTarget: target)
            try runWorkers([worker], timeout: 300) { try ids.allSatisfy { try queue.get($0)?.state.isFinal == true } }
        }
        jobs["sweep"] = try insert("sweep", #"{"model": "a", "budgets": [0.3, 0.5], "samples": 8, "search": {"simulations": 12}}"#)
        try run([jobs["sweep"]!])
        jobs["train"] = try insert("train", #"{"model": "a", "steps": 20, "ensemble": 1, "force": true}"#)
        jobs["compress-0.4"] = try insert("compress", #"{"model": "a", "budget": 0.4, "method": "search", "search": {"simulations": 6}}"#)
        jobs["compress-0.6"] = try insert("compress", #"{"model": "a", "budget": 0.6, "method": "search", "search": {"simulations": 6}}"#)
        jobs["failed"] = try insert("compress", #"{"model": "<script>alert('x')</script>", "budget": 0.5}"#)
        try run([jobs["train"]!, jobs["compress-0.4"]!, jobs["compress-0.6"]!, jobs["failed"]!])
        // A job left running under a worker that is not there (its progress is moved by the live-progress test).
        jobs["running"] = try insert("noop", #"{}"#)
        let claimed = try queue.claim(worker: "web-test-worker", queues: ["default"], kinds: [.noop], limit: 1, leaseSeconds: 3600)
        guard claimed.first?.id == jobs["running"] else { throw RequestError("world", "the running job was not claimed") }
        _ = try queue.progress(job: jobs["running"]!, worker: "web-test-worker", fraction: 0.25, message: "pruning layer 3", stage: "prune")
        jobs["scheduled"] = try insert("noop", #"{}"#)  // left available: the cancel action's target
        self.jobs = jobs
        server = try RunningDashboard(pool: pool, token: Self.token)
        readOnly = try RunningDashboard(pool: pool, token: nil)
    }

    func count(_ sql: SQL) throws -> Int { Int(try pool.withConnection { try $0.query(sql).single().decode(0) as Int64 }) }
}

@Suite(.serialized) struct DashboardTests {
    /// The real jobs finished as expected, so the pages below show what a real queue holds.
    @Test func theWorldHoldsRealJobs() throws {
        let w = try DashboardWorld.shared()
        for name in ["sweep", "train", "compress-0.4", "compress-0.6"] { #expect(try w.queue.get(w.jobs[name]!)?.state == .completed, "\(name)") }
        #expect(try w.queue.get(w.jobs["failed"]!)?.state == .discarded)
        #expect(try w.queue.get(w.jobs["running"]!)?.state == .running)
        #expect(try w.count("SELECT count(*)::bigint FROM lop.webhook_deliveries") >= 5)
        #expect(try w.count("SELECT count(*)::bigint FROM lop.samples") > 10)
    }

    /// Every page and its JSON answer 200 with what the database holds; unknown ids 404; bad ids and filters 400.
    @Test func everyPageAndRouteAnswers() throws {
        let w = try DashboardWorld.shared(), s = w.server
        let pruned = try w.registry.list(kind: .pruned), predictor = try #require(try w.registry.list(kind: .predictor).first)
        #expect(pruned.count == 2)
        let delivery = try #require(try WebhookStore(pool: w.pool).deliveries(limit: 1).first)
        let pages: [(String, [String])] = [
            ("/queue", ["Jobs by state and kind", "#\(w.jobs["running"]!)", "pruning layer 3", "sweep", "compress"]),
            ("/queue?state=completed&kind=compress", ["#\(w.jobs["compress-0.4"]!)", "#\(w.jobs["compress-0.6"]!)"]),
            ("/jobs/\(w.jobs["sweep"]!)", ["Children", "Args", "budgets"]),
            ("/jobs/\(w.jobs["failed"]!)", ["discarded", "Errors"]),
            ("/models", [base(w), "a-pruned:1", "a-pruned:2"]),
            ("/models?sort=loss", ["a-pruned:1"]), ("/models?sort=size", ["a-pruned:2"]),
            ("/models/\(w.base.id)", ["Held-out loss against kept fraction", "data-series=\"samples\"", "data-series=\"front\"", "data-series=\"variants\"", "config.json", "Predictors"]),
            ("/models/\(pruned[0].id)", ["pruning.json", "Lineage", "a:1"]),
            ("/models/\(predictor.id)", ["champion"]),
            ("/samples", ["Samples per base model and budget", predictor.reference, "champion"]),
            ("/webhooks", ["http://127.0.0.1:9/hook", "model.registered", "job.completed"]),
            ("/webhooks/deliveries/\(delivery.id)", [delivery.eventType, "Attempts"]),
        ]
        for (path, expected) in pages {
            let (status, body) = try s.request(path)
            #expect(status == 200, "\(path): \(status)")
            for text in expected { #expect(body.contains(text), "\(path) lacks \(text)") }
            let api = try s.request("/api" + path)
            #expect(api.status == 200 && (try? JSONSerialization.jsonObject(with: Data(api.body.utf8))) != nil, "/api\(path): \(api.status)")
        }
        let queueView = try JSONDecoder().decode(QueueJSON.self, from: Data(try s.request("/api/queue").body.utf8))
        let counted = try w.count("SELECT count(*)::bigint FROM lop.jobs")
        #expect(queueView.counts.reduce(0) { $0 + $1.count } == counted)
        #expect(queueView.running.map(\.id) == [w.jobs["running"]!])
        for (path, status) in [("/jobs/999999", 404), ("/api/jobs/999999", 404), ("/models/999999", 404), ("/api/models/999999", 404),
                               ("/webhooks/deliveries/msg_00000000000000000000000000000000", 404), ("/jobs/abc", 400), ("/api/jobs/-1", 400),
                               ("/models/1e9", 400), ("/queue?state=exploded", 400), ("/api/queue?kind=%3Cscript%3E", 400), ("/queue?queue=A%20B", 400),
                               ("/models?sort=colour", 400), ("/webhooks?state=lost", 400), ("/webhooks/deliveries/../../etc", 404), ("/nowhere", 404)] {
            #expect(try s.request(path).status == status, "\(path)")
        }
        // A very long query string is refused or answered, never a crash.
        let long = try s.request("/queue?kind=" + String(repeating: "x", count: 6000))
        #expect([400, 414, 431].contains(long.status), "long query: \(long.status)")
        #expect(try s.request("/queue").status == 200)
    }

    struct QueueJSON: Decodable {
        struct Count: Decodable { let state: String; let kind: String; let count: Int }
        struct JobJSON: Decodable { let id: Int64; let progress: Double }
        let counts: [Count]
        let running: [JobJSON]
    }

    func base(_ w: DashboardWorld) -> String { w.base.reference }

    /// HTML from outside is inert: the discarded job's error names a model called `<script>…</script>`, and the
    /// page shows it escaped.
    @Test func scriptInAJobErrorIsEscaped() throws {
        let w = try DashboardWorld.shared()
        let job = try #require(try w.queue.get(w.jobs["failed"]!))
        #expect(job.errors.last?.error.contains("<script>") == true)
        for path in ["/jobs/\(job.id)", "/queue"] {
            let body = try w.server.request(path).body
            #expect(!body.contains("<script>alert"), "\(path)")
            #expect(body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "\(path)")
        }
    }

    /// Actions: refused without the token (401), with a wrong one (401), without the CSRF token or from another
    /// origin (403), and always on the read-only server (403) — changing nothing; with both they work and are
    /// recorded.
    @Test func actionsNeedTheTokenAndAreRecorded() throws {
        let w = try DashboardWorld.shared(), s = w.server
        let scheduled = w.jobs["scheduled"]!
        let csrf = try #require(try JSONDecoder().decode([String: String].self, from: Data(s.request("/api/csrf").body.utf8))["csrf"])
        let good = ["Authorization": "Bearer \(DashboardWorld.token)", "X-CSRF-Token": csrf]
        let cancel = "/api/jobs/\(scheduled)/cancel"
        #expect(try s.request(cancel, method: "POST").status == 401)
        #expect(try s.request(cancel, method: "POST", headers: ["Authorization": "Bearer wrong-token-0123456789", "X-CSRF-Token": csrf]).status == 401)
        #expect(try s.request(cancel, method: "POST", headers: ["Authorization": "Bearer \(DashboardWorld.token)"]).status == 403)
        #expect(try s.request(cancel, method: "POST", headers: good.merging(["Origin": "http://evil.example"]) { $1 }).status == 403)
        #expect(try w.readOnly.request(cancel, method: "POST", headers: good).status == 403)
        #expect(try s.request(cancel).status == 404, "actions are POST only")
        #expect(try w.queue.get(scheduled)?.state == .available)
        #expect(try w.count("SELECT count(*)::bigint FROM lop.web_actions") == 0)

        let done = try s.request(cancel, method: "POST", headers: good)
        #expect(done.status == 200 && done.body.contains("cancelled"), "\(done.body)")
        #expect(try w.queue.get(scheduled)?.state == .cancelled)
        let retried = try s.request("/api/jobs/\(scheduled)/retry", method: "POST", headers: good)
        let after = try w.queue.get(scheduled)?.state
        #expect(retried.status == 200 && after == .available, "\(retried.body)")
        #expect(try s.request("/api/jobs/\(scheduled)/retry", method: "POST", headers: good).status == 409, "an available job cannot be retried")
        #expect(try s.request("/api/jobs/999999/cancel", method: "POST", headers: good).status == 404)

        let delivery = try #require(try WebhookStore(pool: w.pool).deliveries(limit: 1).first)
        #expect(try s.request("/api/webhooks/deliveries/\(delivery.id)/redeliver", method: "POST", headers: good).status == 200)
        let pruned = try #require(try w.registry.list(kind: .pruned).first)
        #expect(try s.request("/api/models/\(pruned.id)/alias", method: "POST", headers: good, body: #"{"alias": "Prod!"}"#).status == 400)
        let moved = try s.request("/api/models/\(pruned.id)/alias", method: "POST", headers: good, body: #"{"alias": "production"}"#)
        #expect(moved.status == 200, "\(moved.body)")
        #expect(try w.registry.aliases(name: pruned.name).contains { $0.alias == "production" && $0.modelId == pruned.id })
        #expect(try w.registry.aliasHistory(name: pruned.name).contains { $0.alias == "production" && $0.changedBy == "web" })
        let recorded = try w.pool.withConnection { c in
            try c.query("SELECT action, ok FROM lop.web_actions ORDER BY id").map { "\(try $0.decode("action") as String):\(try $0.decode("ok") as Bool)" }
        }
        #expect(recorded == ["cancel:true", "retry:true", "retry:false", "redeliver:true", "alias:true"])
        // No secret in any answer.
        let secret = try w.pool.withConnection { try $0.query("SELECT secret FROM lop.webhook_endpoints").single().decode("secret") as String }
        for path in ["/webhooks", "/api/webhooks", "/metrics", "/queue", "/api/queue"] {
            let body = try s.request(path).body
            #expect(!body.contains(secret) && !body.contains(DashboardWorld.token), "\(path)")
        }
    }
}
