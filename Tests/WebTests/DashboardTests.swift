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

/// Servers the tests started, stopped when the test process exits (the shared world outlives every test).
nonisolated(unsafe) var startedServers: [pid_t] = []
let stopServersAtExit: Void = { atexit { for pid in startedServers { kill(pid, SIGTERM) } } }()

/// A real `lop serve` process on 127.0.0.1 (an OS-chosen port) over the test database.
final class RunningDashboard: @unchecked Sendable {
    let port: Int
    let process: BackgroundProcess

    init(target: ConnectionTarget, token: String?) throws {
        let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        var environment = ["LOP_CONFIG": TestDatabase.repositoryRoot + "/Config/lop.yaml",
                           "LOP_DATABASE_URL": target.parameters.map { "\($0.0)=\($0.1)" }.joined(separator: " ")]
        if let token { environment["LOP_WEB_TOKEN"] = token }
        process = try TestProcess.start([binaries + "/lop", "serve", "--listen", "127.0.0.1:0"], environment: environment)
        _ = stopServersAtExit
        startedServers.append(process.pid)
        let deadline = Date().addingTimeInterval(60)
        var found: Int?
        while found == nil, Date() < deadline {
            let log = (try? String(contentsOfFile: process.logPath, encoding: .utf8)) ?? ""
            if let line = log.split(separator: "\n").first(where: { $0.hasPrefix("lop dashboard on http://127.0.0.1:") }),
               let port = Int(line.dropFirst("lop dashboard on http://127.0.0.1:".count).prefix { $0.isNumber }) {
                found = port
            } else {
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        guard let found else { throw RequestError("server", "lop serve did not start: \((try? String(contentsOfFile: process.logPath, encoding: .utf8)) ?? "")") }
        port = found
    }

    var base: String { "http://127.0.0.1:\(port)" }

    /// An HTTP request with curl: the status and the body.
    func request(_ path: String, method: String = "GET", headers: [String: String] = [:], body: String? = nil) throws -> (status: Int, body: String) {
        let out = NSTemporaryDirectory() + "lop-web-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        var argv = ["/usr/bin/curl", "-s", "-g", "--max-time", "60", "-o", out, "-w", "%{http_code}", "-X", method]
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
        server = try RunningDashboard(target: target, token: Self.token)
        readOnly = try RunningDashboard(target: target, token: nil)
    }

    func count(_ sql: SQL) throws -> Int { Int(try pool.withConnection { try $0.query(sql).single().decode(0) as Int64 }) }
}

/// The dashboard's suites share one world and one pair of servers, so they run one test at a time.
@Suite(.serialized) struct WebTests {}

extension WebTests {
@Suite struct DashboardTests {
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
            ("/models/\(w.base.id)", ["Loss against kept fraction", "data-series=\"samples\"", "data-series=\"front\"", "data-series=\"variants\"", "config.json", "Predictors"]),
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

}

extension WebTests {
/// The pages in a real browser (Debian's headless Chromium): the rendered DOM holds the progress bars, table rows
/// and chart points the database says, a running job's bar moves without a reload, and each page is saved as a
/// screenshot (into `LOP_SCREENSHOTS` when set: the README's come from there).
@Suite struct BrowserTests {
    static let chromium = "/usr/bin/chromium-headless-shell"
    /// A browser that hangs fails its test after two minutes instead of holding up the run.
    static let bounded = ["/usr/bin/timeout", "120", chromium]
    static let screenshots = ProcessInfo.processInfo.environment["LOP_SCREENSHOTS"] ?? NSTemporaryDirectory() + "lop-screenshots"

    /// The DOM after the page's scripts ran for `virtualMilliseconds` of virtual time.
    static func dom(_ url: String, virtualMilliseconds: Int = 1000) throws -> String {
        let result = try TestProcess.run(bounded + ["--no-sandbox", "--disable-gpu", "--headless", "--virtual-time-budget=\(virtualMilliseconds)", "--dump-dom", url],
                                         separateStandardError: true)
        #expect(result.status == 0, "chromium: \(result.output.suffix(300))")
        return result.output
    }

    static func screenshot(_ url: String, _ name: String, height: Int = 1000) throws {
        try FileManager.default.createDirectory(atPath: screenshots, withIntermediateDirectories: true)
        let path = screenshots + "/" + name + ".png"
        try? FileManager.default.removeItem(atPath: path)
        _ = try TestProcess.run(bounded + ["--no-sandbox", "--disable-gpu", "--headless", "--hide-scrollbars", "--window-size=1280,\(height)",
                                 "--screenshot=\(path)", url], separateStandardError: true)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(bytes.count > 5000 && bytes.prefix(4) == Data([0x89, 0x50, 0x4E, 0x47]), "\(name): not a PNG")
    }

    static func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

    @Test func pagesRenderWhatTheDatabaseHolds() throws {
        let w = try DashboardWorld.shared(), s = w.server
        let running = w.jobs["running"]!
        let queue = try Self.dom(s.base + "/queue")
        #expect(queue.contains("data-job=\"\(running)\" data-seen=\"25.0\"><span style=\"width: 25%;\"") || queue.contains("data-job=\"\(running)\" data-seen=\"25.0\"><span style=\"width:25.0%\""),
                "the running job's bar is a quarter full")
        let jobRows = Self.count("<tr><td><a href=\"/jobs/", in: queue.components(separatedBy: "id=\"jobs\"").last ?? "")
        #expect(jobRows == (try w.count("SELECT count(*)::bigint FROM lop.jobs")))
        let models = try Self.dom(s.base + "/models")
        #expect(Self.count("<tr><td><a href=\"/models/", in: models) == (try w.count("SELECT count(*)::bigint FROM lop.models WHERE kind = 'pruned'")))
        let model = try Self.dom(s.base + "/models/\(w.base.id)")
        let samples = try w.count("SELECT count(*)::bigint FROM lop.samples WHERE model_hash = \(w.base.contentHash)")
        #expect(samples > 10 && Self.count("data-series=\"samples\"", in: model) == samples, "one dot per sample")
        #expect(Self.count("data-series=\"variants\"", in: model) == 2 && Self.count("data-series=\"base\"", in: model) == 1)
        #expect(Self.count("data-series=\"front\"", in: model) == (try w.count("SELECT count(DISTINCT budget)::bigint FROM lop.samples WHERE model_hash = \(w.base.contentHash)")))
        #expect(Self.count("data-series=\"predicted\"", in: model) == 2, "the champion's curve at its two evaluation budgets")
        let pruned = try #require(try w.registry.list(kind: .pruned).first)
        for (path, name) in [("/queue", "queue"), ("/jobs/\(w.jobs["sweep"]!)", "job"), ("/models", "registry"), ("/models/\(w.base.id)", "model"),
                             ("/models/\(pruned.id)", "variant"), ("/samples", "samples"), ("/webhooks", "webhooks")] {
            try Self.screenshot(s.base + path, name, height: name == "model" ? 1300 : 900)
        }
    }

    /// A running job's bar follows its progress while the page stays loaded: the page polls the API, and every
    /// width it showed is kept in the bar's `data-seen`.
    @Test func aRunningJobsBarMovesWithoutAReload() throws {
        let w = try DashboardWorld.shared()
        let job = w.jobs["running"]!
        let stop = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        Thread {
            // 1 % a second: slow enough that a browser slow to start (seen: 37 s on a loaded machine) still finds
            // the job moving, fast enough that its polls see several widths (the page shows tenths of a percent).
            var p = 0.26
            while stop.wait(timeout: .now() + 0.02) == .timedOut, p < 0.99 {
                _ = try? w.queue.progress(job: job, worker: "web-test-worker", fraction: p, message: "pruning", stage: "prune")
                p += 0.0002
            }
            done.signal()
        }.start()
        let dom = try Self.dom(w.server.base + "/queue", virtualMilliseconds: 120_000)
        stop.signal()
        done.wait()
        _ = try w.queue.progress(job: job, worker: "web-test-worker", fraction: 0.25, message: "pruning layer 3", stage: "prune")
        let marker = "class=\"bar\" data-job=\"\(job)\" data-seen=\""
        let seen = try #require(dom.components(separatedBy: marker).dropFirst().first?.split(separator: "\"").first).split(separator: ",").compactMap { Double($0) }
        #expect(seen.count >= 3, "widths seen: \(seen)")
        #expect((seen.first ?? 0) >= 25 && seen == seen.sorted() && Set(seen).count == seen.count, "widths seen: \(seen)")
    }
}

}

extension WebTests {
/// `/metrics` read by prometheus_client's own parser (from PyPI, in `.venv-check`): the job, delivery and sample
/// counts equal the database's.
@Suite struct MetricsTests {
    @Test func metricsParseAndCountWhatTheDatabaseHolds() throws {
        let w = try DashboardWorld.shared()
        let (status, text) = try w.server.request("/metrics")
        #expect(status == 200)
        let file = NSTemporaryDirectory() + "lop-metrics-\(UUID().uuidString).txt"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
        let script = """
        import json, sys
        from prometheus_client.parser import text_string_to_metric_families
        out = {}
        for family in text_string_to_metric_families(open(sys.argv[1]).read()):
            for s in family.samples:
                key = s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
                out[key] = s.value
        print(json.dumps(out))
        """
        let python = TestDatabase.repositoryRoot + "/.venv-check/bin/python"
        let result = try TestProcess.run([python, "-c", script, file], separateStandardError: true)
        #expect(result.status == 0, "\(result.output)")
        let values = try JSONDecoder().decode([String: Double].self, from: Data(result.output.utf8))
        let jobs = try w.pool.withConnection { c in
            try c.query("SELECT state::text AS s, kind, count(*)::bigint AS n FROM lop.jobs GROUP BY 1, 2").map {
                ("lop_jobs{kind=\(try $0.decode("kind") as String),state=\(try $0.decode("s") as String)}", Double(try $0.decode("n") as Int64))
            }
        }
        #expect(!jobs.isEmpty)
        for (key, n) in jobs { #expect(values[key] == n, "\(key): \(values[key] ?? -1) vs \(n)") }
        #expect(values.keys.filter { $0.hasPrefix("lop_jobs{") }.count == jobs.count)
        let deliveries = try w.pool.withConnection { c in
            try c.query("SELECT state::text AS s, count(*)::bigint AS n FROM lop.webhook_deliveries GROUP BY 1").map { ("lop_webhook_deliveries{state=\(try $0.decode("s") as String)}", Double(try $0.decode("n") as Int64)) }
        }
        for (key, n) in deliveries { #expect(values[key] == n, "\(key)") }
        #expect(values["lop_samples{}"] == Double(try w.count("SELECT count(*)::bigint FROM lop.samples")))
        #expect(values["lop_worker_running_jobs{worker=web-test-worker}"] == 1)
        let finished = try w.count("SELECT count(*)::bigint FROM lop.jobs WHERE finalized_at > now() - interval '1 day' AND attempted_at IS NOT NULL AND kind = 'compress'")
        #expect(values["lop_job_duration_seconds_count{kind=compress}"] == Double(finished))
    }
}
}

/// `lop serve`'s settings from its flag and the environment; bad ones name the setting.
@Test func listenAddressesAndTokensAreChecked() throws {
    #expect(try DashboardSettings(listen: "127.0.0.1:8080", token: nil).host == "127.0.0.1")
    #expect(try DashboardSettings(listen: "9000", token: nil).port == 9000)
    let v6 = try DashboardSettings(listen: "[::1]:8081", token: "0123456789abcdef")
    #expect(v6.host == "::1" && v6.port == 8081 && v6.token == "0123456789abcdef")
    for bad in ["", "localhost", "127.0.0.1:", ":8080", "127.0.0.1:70000", "::1:80", "[::1]8080", "a b:80"] {
        #expect(throws: RequestError.self, "\(bad)") { _ = try DashboardSettings(listen: bad, token: nil) }
    }
    #expect { _ = try DashboardSettings(listen: "127.0.0.1:8080", token: "short") } throws: { "\($0)".contains("LOP_WEB_TOKEN") }
}
