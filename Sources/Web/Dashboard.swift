import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import LopCore
import Queue
import Store
import Webhooks

/// A request, a setting or an action's input that is not what it must be, naming the field.
public struct RequestError: Error, CustomStringConvertible, Equatable {
    public let field: String
    public let problem: String
    public init(_ field: String, _ problem: String) { (self.field, self.problem) = (field, problem) }
    public var description: String { "\(field): \(problem)" }
}

extension RequestError: LopError {
    public var exitCode: Int32 { ExitStatus.usage }
}

/// `lop serve`'s settings.
public struct DashboardSettings: Sendable {
    public var host: String
    public var port: Int
    /// The bearer token actions need (nil: read-only; every action is refused with 403).
    public var token: String?

    public init(host: String = "127.0.0.1", port: Int = 8080, token: String? = nil) {
        (self.host, self.port, self.token) = (host, port, token)
    }

    /// `HOST:PORT`, `[IPv6]:PORT`, or a bare port (loopback).
    public init(listen: String, token: String?) throws(RequestError) {
        let bad = RequestError("listen", "\"\(listen.prefix(80))\" is not HOST:PORT (for example 127.0.0.1:8080)")
        var host = "127.0.0.1", portText = listen
        if listen.hasPrefix("["), let close = listen.firstIndex(of: "]") {
            host = String(listen[listen.index(after: listen.startIndex)..<close])
            guard listen[close...].hasPrefix("]:") else { throw bad }
            portText = String(listen[listen.index(close, offsetBy: 2)...])
        } else if let colon = listen.lastIndex(of: ":") {
            host = String(listen[..<colon])
            portText = String(listen[listen.index(after: colon)...])
            guard !host.contains(":") else { throw bad }
        }
        guard let port = Int(portText), (0...65535).contains(port), !host.isEmpty, !host.contains(" ") else { throw bad }
        if let token, token.count < 16 {
            throw RequestError("LOP_WEB_TOKEN", "is \(token.count) characters; a token needs at least 16")
        }
        self.init(host: host, port: port, token: token)
    }
}

/// The dashboard: server-rendered pages, the same views as JSON under `/api`, actions that need the bearer
/// token, and `/metrics`, all read from the PostgreSQL the workers share.
public final class Dashboard: Sendable {
    let data: DashboardData
    let settings: DashboardSettings
    /// Required in the `X-CSRF-Token` header of every action; pages carry it, `/api/csrf` hands it out. A
    /// cross-site page can read neither, so it cannot forge an action even where a browser holds the token.
    let csrf: String
    let logger: Logger
    /// Database calls block (libpq): they run here, not on the server's threads.
    let database = DispatchQueue(label: "lop.web.database", attributes: .concurrent)

    public init(pool: ConnectionPool, settings: DashboardSettings, logger: Logger = Logger(label: "lop.web")) {
        data = DashboardData(pool: pool)
        self.settings = settings
        self.logger = logger
        csrf = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.hexadecimal
    }

    /// Serves until cancelled; `onRunning` receives the bound port (useful with port 0).
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = Application(router: router(), configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "lop"),
                              onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) }, logger: logger)
        try await app.runService()
    }

    func db<T: Sendable>(_ body: @escaping @Sendable (DashboardData) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            database.async { [data] in continuation.resume(with: Result { try body(data) }) }
        }
    }

    // MARK: Responses

    static func html(_ body: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                                           HTTPField.Name("Content-Security-Policy")!: "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(value)) ?? Data(#"{"error":"could not encode the answer"}"#.utf8)
        return Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    struct Problem: Encodable { let error: String }

    /// A page or its JSON: the same view either way.
    func answer<V: Encodable>(_ api: Bool, title: String, active: String, _ view: V?, missing: String, render: (V) -> String) -> Response {
        guard let view else {
            return api ? Self.json(Problem(error: missing), status: .notFound) : Self.html(page(title: "Not found", active: active, Pages.notFound(missing)), status: .notFound)
        }
        return api ? Self.json(view) : Self.html(page(title: title, active: active, render(view)))
    }

    func page(title: String, active: String, _ body: String) -> String {
        Pages.layout(title: title, active: active, csrf: csrf, writable: settings.token != nil, body: body)
    }

    func badRequest(_ api: Bool, _ problem: String) -> Response {
        api ? Self.json(Problem(error: problem), status: .badRequest) : Self.html(page(title: "Bad request", active: "", "<h1>Bad request</h1><p>\(HTML.escape(problem))</p>"), status: .badRequest)
    }

    // MARK: Inputs

    static func query(_ request: Request, _ name: String) -> String? {
        request.uri.queryParameters[Substring(name)].map(String.init).flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The job filter of a query string; an unknown state or kind, or a queue that is not a queue name, is refused.
    static func filter(_ request: Request) throws(RequestError) -> DashboardData.JobFilter {
        var f = DashboardData.JobFilter()
        if let s = query(request, "state") {
            guard let state = JobState(rawValue: s) else { throw RequestError("state", "\"\(s.prefix(40))\" is not a job state (\(JobState.allCases.map(\.rawValue).joined(separator: ", ")))") }
            f.state = state
        }
        if let k = query(request, "kind") {
            guard let kind = JobKind(rawValue: k) else { throw RequestError("kind", "\"\(k.prefix(40))\" is not a job kind (\(JobKind.allCases.map(\.rawValue).joined(separator: ", ")))") }
            f.kind = kind
        }
        if let q = query(request, "queue") {
            guard q.range(of: "^[a-z0-9][a-z0-9_-]{0,62}$", options: .regularExpression) != nil else { throw RequestError("queue", "\"\(q.prefix(40))\" is not a queue name") }
            f.queue = q
        }
        return f
    }

    static func id(_ context: BasicRequestContext) throws(RequestError) -> Int64 {
        let text = context.parameters.get("id") ?? ""
        guard let id = Int64(text), id > 0 else { throw RequestError("id", "\"\(text.prefix(40))\" is not an id") }
        return id
    }

    static func deliveryId(_ context: BasicRequestContext) throws(RequestError) -> String {
        let text = context.parameters.get("id") ?? ""
        guard text.range(of: "^msg_[0-9a-f]{32}$", options: .regularExpression) != nil else { throw RequestError("id", "\"\(text.prefix(40))\" is not a delivery id") }
        return text
    }

    // MARK: Routes

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/") { _, _ in Response(status: .seeOther, headers: [.location: "/queue"]) }
        router.get("/api/csrf") { [csrf] _, _ in Self.json(["csrf": csrf]) }
        for api in [false, true] {
            let prefix = api ? "/api" : ""
            /// A page and its JSON twin; a malformed id or query parameter answers 400.
            func view(_ path: String, _ body: @escaping @Sendable (Request, BasicRequestContext) async throws -> Response) {
                router.get(RouterPath(prefix + path)) { request, context in
                    do { return try await body(request, context) } catch let error as RequestError { return self.badRequest(api, error.description) }
                }
            }
            view("/queue") { request, _ in
                let filter = try Self.filter(request)
                let view = try await self.db { try $0.queueView(filter: filter) }
                return self.answer(api, title: "Queue", active: "queue", view, missing: "", render: Pages.queue)
            }
            view("/jobs/:id") { _, context in
                let id = try Self.id(context)
                let view = try await self.db { try $0.jobView(id) }
                return self.answer(api, title: "Job \(id)", active: "queue", view, missing: "no job \(id)", render: Pages.job)
            }
            view("/models") { request, _ in
                let name = Self.query(request, "sort") ?? "budget"
                guard let order = DashboardData.VariantOrder(rawValue: name) else { throw RequestError("sort", "\"\(name.prefix(40))\" is not budget, size or loss") }
                let view = try await self.db { try $0.registryView(order: order) }
                return self.answer(api, title: "Registry", active: "models", view, missing: "") { Pages.registry($0, order: order) }
            }
            view("/models/:id") { _, context in
                let id = try Self.id(context)
                let view = try await self.db { try $0.modelView(id) }
                return self.answer(api, title: "Model \(id)", active: "models", view, missing: "no model \(id)", render: Pages.model)
            }
            view("/samples") { _, _ in
                let view = try await self.db { try $0.samplesView() }
                return self.answer(api, title: "Samples and predictors", active: "samples", view, missing: "", render: Pages.samples)
            }
            view("/webhooks") { request, _ in
                let state = Self.query(request, "state")
                if let state, !["pending", "failed", "delivered", "dead"].contains(state) {
                    throw RequestError("state", "\"\(state.prefix(40))\" is not pending, failed, delivered or dead")
                }
                let view = try await self.db { try $0.webhooksView(state: state) }
                return self.answer(api, title: "Webhooks", active: "webhooks", view, missing: "", render: Pages.webhooks)
            }
            view("/webhooks/deliveries/:id") { _, context in
                let id = try Self.deliveryId(context)
                let view = try await self.db { try $0.deliveryView(id) }
                return self.answer(api, title: "Delivery", active: "webhooks", view, missing: "no delivery \(id)", render: Pages.delivery)
            }
        }
        router.get("/metrics") { _, _ in
            let text = try await self.db { try MetricsExporter(pool: $0.pool).render() }
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        router.post("/api/jobs/:id/cancel") { request, context in
            try await self.action(request, context, "cancel") { data in
                let id = try Self.id(context)
                return ("job \(id)", "\(try data.queue.cancel(job: id).rawValue)")
            }
        }
        router.post("/api/jobs/:id/retry") { request, context in
            try await self.action(request, context, "retry") { data in
                let id = try Self.id(context)
                let job = try data.queue.retry(job: id)
                return ("job \(id)", "now \(job.state.rawValue)")
            }
        }
        router.post("/api/webhooks/deliveries/:id/redeliver") { request, context in
            try await self.action(request, context, "redeliver") { data in
                let id = try Self.deliveryId(context)
                try data.webhooks.redeliver(id)
                return ("delivery \(id)", "scheduled now")
            }
        }
        router.post("/api/models/:id/alias") { request, context in
            let body = try await request.body.collect(upTo: 4096)
            return try await self.action(request, context, "alias") { data in
                let id = try Self.id(context)
                struct Move: Decodable { let alias: String }
                guard let move = try? JSONDecoder().decode(Move.self, from: Data(buffer: body)) else {
                    throw RequestError("body", "must be {\"alias\": NAME}")
                }
                guard ModelReference.isAlias(move.alias) else { throw RequestError("alias", "\"\(move.alias.prefix(40))\" is not an alias (lower case letters, digits, '_' and '-', starting with a letter)") }
                guard let model = try data.registry.model(id: id) else { throw DashboardError.notFound("no model \(id)") }
                try data.pool.withConnection { c in
                    try c.withTransaction { try data.registry.setAlias(name: model.name, alias: move.alias, to: model.id, actor: AliasActor(by: "web", reason: "moved in the dashboard"), on: $0) }
                }
                return ("\(model.name)@\(move.alias)", "now \(model.reference)")
            }
        }
        return router
    }

    enum DashboardError: Error { case notFound(String) }

    /// An action: refused with 403 in read-only mode, 401 without the right bearer token, 403 without the CSRF
    /// token or from another origin; otherwise run, and recorded in `lop.web_actions` with its outcome.
    func action(_ request: Request, _ context: BasicRequestContext, _ name: String,
                _ body: @escaping @Sendable (DashboardData) throws -> (target: String, outcome: String)) async throws -> Response {
        guard let token = settings.token else { return Self.json(Problem(error: "the dashboard is read-only: no LOP_WEB_TOKEN is configured"), status: .forbidden) }
        let given = request.headers[.authorization] ?? ""
        guard Self.constantTimeEqual(given, "Bearer " + token) else {
            return Response(status: .unauthorized, headers: [.wwwAuthenticate: "Bearer realm=\"lop\"", .contentType: "application/json"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"error":"a valid bearer token is required"}"#)))
        }
        guard Self.constantTimeEqual(request.headers[HTTPField.Name("X-CSRF-Token")!] ?? "", csrf) else {
            return Self.json(Problem(error: "the X-CSRF-Token header is missing or wrong (GET /api/csrf)"), status: .forbidden)
        }
        // HTTP/1's Host header arrives as the request's authority.
        if let origin = request.headers[HTTPField.Name("Origin")!], origin != "http://" + (request.head.authority ?? "") {
            return Self.json(Problem(error: "a request from \(origin) is not from this dashboard"), status: .forbidden)
        }
        struct Done: Encodable { let action: String; let target: String; let outcome: String }
        return try await db { data in
            var result: Response
            var record: (target: String, outcome: String, ok: Bool)
            do {
                let (target, outcome) = try body(data)
                result = Self.json(Done(action: name, target: target, outcome: outcome))
                record = (target, outcome, true)
            } catch let error as RequestError {
                return Self.json(Problem(error: error.description), status: .badRequest)
            } catch DashboardError.notFound(let what) {
                return Self.json(Problem(error: what), status: .notFound)
            } catch let error as QueueError {
                if case .noSuchJob = error { return Self.json(Problem(error: "\(error)"), status: .notFound) }
                result = Self.json(Problem(error: "\(error)"), status: .conflict)
                record = (context.parameters.get("id") ?? "?", "\(error)", false)
            } catch {
                result = Self.json(Problem(error: "\(error)"), status: .conflict)
                record = (context.parameters.get("id") ?? "?", "\(error)", false)
            }
            let (target, outcome, ok) = (String(record.target.prefix(200)), String(record.outcome.prefix(1000)), record.ok)
            _ = try data.pool.withConnection { c in
                try c.execute("INSERT INTO lop.web_actions (action, target, outcome, ok) VALUES (\(name), \(target), \(outcome), \(ok))")
            }
            return result
        }
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
