import Foundation
import Store

/// A receiver of lop's webhooks (a row of `lop.webhook_endpoints`; its secrets are not part of it).
public struct WebhookEndpoint: Sendable, Equatable, Encodable {
    public let id: Int64
    public let url: String
    /// Event types it receives; empty means all.
    public let events: [String]
    public let enabled: Bool
    public let disabledReason: String?
    public let rotating: Bool
    public let createdAt: Date

    enum CodingKeys: String, CodingKey {
        case id, url, events, enabled, disabledReason = "disabled_reason", rotating, createdAt = "created_at"
    }

    static let columns = "id, url, events, enabled, disabled_reason, previous_secret_expires_at > now() AS rotating, created_at"

    init(row: Row) throws {
        id = try row.decode("id")
        url = try row.decode("url")
        events = try row.decode("events")
        enabled = try row.decode("enabled")
        disabledReason = try row.decode("disabled_reason")
        rotating = try row.decode("rotating", as: Bool?.self) ?? false
        createdAt = try row.decode("created_at")
    }
}

/// One event for one endpoint in the outbox, with its attempts so far.
public struct WebhookDelivery: Sendable, Equatable, Encodable {
    public let id: String
    public let endpointId: Int64
    public let eventType: String
    public let state: String
    public let attempt: Int
    public let nextAttemptAt: Date
    public let lastError: String?
    public let createdAt: Date
    public let deliveredAt: Date?

    enum CodingKeys: String, CodingKey {
        case id, endpointId = "endpoint_id", eventType = "event_type", state, attempt, nextAttemptAt = "next_attempt_at"
        case lastError = "last_error", createdAt = "created_at", deliveredAt = "delivered_at"
    }

    static let columns = "id, endpoint_id, event_type, state::text AS state, attempt, next_attempt_at, last_error, created_at, delivered_at"

    init(row: Row) throws {
        id = try row.decode("id")
        endpointId = try row.decode("endpoint_id")
        eventType = try row.decode("event_type")
        state = try row.decode("state")
        attempt = Int(try row.decode("attempt", as: Int32.self))
        nextAttemptAt = try row.decode("next_attempt_at")
        lastError = try row.decode("last_error")
        createdAt = try row.decode("created_at")
        deliveredAt = try row.decode("delivered_at")
    }
}

/// One recorded attempt of a delivery.
public struct WebhookAttempt: Sendable, Equatable, Encodable {
    public let attempt: Int
    public let notifier: String
    public let startedAt: Date
    public let durationMs: Double
    public let statusCode: Int?
    public let response: String?
    public let error: String?

    enum CodingKeys: String, CodingKey {
        case attempt, notifier, startedAt = "started_at", durationMs = "duration_ms", statusCode = "status_code", response, error
    }
}

/// A delivery claimed for posting: the exact body to sign and send, where to, and the secrets to sign with.
public struct ClaimedDelivery: Sendable {
    public let id: String
    public let endpointId: Int64
    public let eventType: String
    public let body: String
    public let attempt: Int
    public let url: String
    public let secrets: [WebhookSecret]
}

/// What an attempt's outcome means for its delivery.
public enum DeliveryDecision: Sendable, Equatable {
    case delivered
    /// Try again after this many seconds.
    case retry(after: Double)
    /// The schedule ran out.
    case dead
    /// The receiver answered 410: the endpoint is disabled and the delivery dead.
    case gone

    /// Standard Webhooks' rules: a 2xx delivers; 410 disables the endpoint; 429 and 503 wait for `Retry-After`
    /// when given; anything else (3xx included, as redirects are not followed) waits for the schedule's next delay,
    /// with jitter, until the schedule runs out. `attempt` counts attempts made, this one included.
    public static func decide(_ outcome: PostOutcome, attempt: Int, settings: DeliverySettings, now: Date = Date(),
                              random: Double = Double.random(in: -1...1)) -> DeliveryDecision {
        if let status = outcome.statusCode {
            if (200..<300).contains(status) { return .delivered }
            if status == 410 { return .gone }
        }
        guard attempt < settings.retrySchedule.count else { return .dead }
        if let status = outcome.statusCode, status == 429 || status == 503, let header = outcome.retryAfter,
           let wait = retryAfterSeconds(header, now: now) {
            return .retry(after: min(wait, 86400))
        }
        return .retry(after: max(0, settings.retrySchedule[attempt] * (1 + settings.jitter * random)))
    }

    /// `Retry-After` as delay-seconds or an HTTP date; nil when it is neither.
    public static func retryAfterSeconds(_ header: String, now: Date) -> Double? {
        let text = header.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(text) { return seconds >= 0 ? Double(seconds) : nil }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text).map { max(0, $0.timeIntervalSince(now)) }
    }
}

/// lop's webhook tables: endpoints, the outbox, and attempts.
public struct WebhookStore: Sendable {
    public let pool: ConnectionPool
    /// Channel NOTIFYed when deliveries become due (see `lop.emit_webhook_event`).
    public static let channel = "lop_webhooks"

    public init(pool: ConnectionPool) {
        self.pool = pool
    }

    // MARK: Endpoints

    /// Adds an endpoint with a fresh secret, returned only here.
    public func addEndpoint(url: String, events: [String]) throws -> (endpoint: WebhookEndpoint, secret: WebhookSecret) {
        if let unknown = events.first(where: { !WebhookEvents.known.contains($0) }) {
            throw WebhookError("unknown event \"\(unknown)\" (known: \(WebhookEvents.known.joined(separator: ", ")))")
        }
        let secret = WebhookSecret.generate()
        let endpoint = try pool.withConnection { c in
            try WebhookEndpoint(row: try c.query("""
                INSERT INTO lop.webhook_endpoints (url, secret, events) VALUES (\(url), \(secret.text), \(events))
                RETURNING \(fragment: SQL(unsafe: WebhookEndpoint.columns))
                """).single())
        }
        return (endpoint, secret)
    }

    public func endpoints() throws -> [WebhookEndpoint] {
        try pool.withConnection { c in
            try c.query("SELECT \(fragment: SQL(unsafe: WebhookEndpoint.columns)) FROM lop.webhook_endpoints ORDER BY id").map(WebhookEndpoint.init)
        }
    }

    public func endpoint(_ id: Int64) throws -> WebhookEndpoint {
        try pool.withConnection { c in
            guard let row = try c.query("SELECT \(fragment: SQL(unsafe: WebhookEndpoint.columns)) FROM lop.webhook_endpoints WHERE id = \(id)").first else {
                throw WebhookError("no webhook endpoint \(id)")
            }
            return try WebhookEndpoint(row: row)
        }
    }

    /// Stops deliveries to an endpoint (its pending ones wait until it is enabled again).
    public func disable(_ id: Int64, reason: String) throws {
        try updateEndpoint(id, "UPDATE lop.webhook_endpoints SET enabled = false, disabled_reason = \(String(reason.prefix(500))) WHERE id = \(id)")
    }

    public func enable(_ id: Int64) throws {
        try updateEndpoint(id, "UPDATE lop.webhook_endpoints SET enabled = true, disabled_reason = NULL WHERE id = \(id)")
        try pool.withConnection { try $0.notify(Self.channel) }
    }

    /// A new secret for the endpoint; the old one keeps signing too for `overlapHours`.
    public func rotateSecret(_ id: Int64, overlapHours: Double) throws -> WebhookSecret {
        let secret = WebhookSecret.generate()
        try updateEndpoint(id, """
            UPDATE lop.webhook_endpoints SET previous_secret = secret, secret = \(secret.text),
                   previous_secret_expires_at = now() + make_interval(secs => \(overlapHours * 3600))
            WHERE id = \(id)
            """)
        return secret
    }

    private func updateEndpoint(_ id: Int64, _ sql: SQL) throws {
        guard try pool.withConnection({ try $0.execute(sql) }) == 1 else { throw WebhookError("no webhook endpoint \(id)") }
    }

    // MARK: The outbox

    /// Writes an event for every endpoint that wants it, on `connection` so that it commits (or not) with the
    /// caller's transaction. Returns the deliveries written.
    @discardableResult
    public static func emit(_ type: String, data: JSONB, on connection: Connection) throws -> Int {
        guard WebhookEvents.known.contains(type) else { throw WebhookError("unknown event \"\(type)\"") }
        return Int(try connection.query("SELECT lop.emit_webhook_event(\(type), \(data)) AS written").single().decode("written", as: Int32.self))
    }

    /// A `ping` delivery to one endpoint (enabled or not: the notifier sends it once the endpoint is enabled).
    public func ping(_ endpointId: Int64) throws -> String {
        try pool.withTransaction { c in
            _ = try endpoint(endpointId)
            let timestamp = ISO8601DateFormatter().string(from: Date())
            let payload = JSONB(text: #"{"type": "ping", "timestamp": "\#(timestamp)", "data": {"endpoint_id": \#(endpointId)}}"#)
            let id: String = try c.query("""
                INSERT INTO lop.webhook_deliveries (endpoint_id, event_type, payload) VALUES (\(endpointId), 'ping', \(payload)) RETURNING id
                """).single().decode("id")
            try c.notify(Self.channel)
            return id
        }
    }

    /// Claims up to `limit` due deliveries of enabled endpoints (SKIP LOCKED, so notifiers never wait on each
    /// other), counting the attempt and leasing each for `leaseSeconds`. A delivery whose previous notifier's lease
    /// ran out gets that lost attempt recorded.
    public func claim(notifier: String, limit: Int, leaseSeconds: Double) throws -> [ClaimedDelivery] {
        try pool.withConnection { c in
            try c.query("""
                WITH due AS (
                    SELECT d.id, d.attempt, d.leased_by, d.lease_expires_at FROM lop.webhook_deliveries d
                    JOIN lop.webhook_endpoints e ON e.id = d.endpoint_id
                    WHERE d.state IN ('pending', 'failed') AND d.next_attempt_at <= now() AND e.enabled
                      AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now())
                    ORDER BY d.next_attempt_at, d.id LIMIT \(limit)
                    FOR UPDATE OF d SKIP LOCKED
                ), lost AS (
                    INSERT INTO lop.webhook_attempts (delivery_id, attempt, notifier, started_at, duration_ms, error)
                    SELECT id, attempt, leased_by, lease_expires_at, 0, 'the notifier stopped before recording an outcome; its lease expired'
                    FROM due WHERE leased_by IS NOT NULL
                )
                UPDATE lop.webhook_deliveries d
                SET attempt = d.attempt + 1, leased_by = \(notifier), lease_expires_at = now() + make_interval(secs => \(leaseSeconds))
                FROM due, lop.webhook_endpoints e
                WHERE d.id = due.id AND e.id = d.endpoint_id
                RETURNING d.id, d.endpoint_id, d.event_type, d.payload::text AS body, d.attempt, e.url, e.secret,
                          CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret
                """).map { row in
                let secrets = try [try row.decode("secret", as: String.self), try row.decode("previous_secret", as: String?.self)]
                    .compactMap { $0 }.map { text throws(WebhookError) in try WebhookSecret(parsing: text) }
                return ClaimedDelivery(id: try row.decode("id"), endpointId: try row.decode("endpoint_id"), eventType: try row.decode("event_type"),
                                       body: try row.decode("body"), attempt: Int(try row.decode("attempt", as: Int32.self)), url: try row.decode("url"),
                                       secrets: secrets)
            }
        }
    }

    /// Records an attempt and applies its decision, in one transaction. A notifier that lost its lease meanwhile
    /// only adds its attempt; the delivery belongs to whoever holds it now.
    public func record(_ delivery: ClaimedDelivery, notifier: String, startedAt: Date, outcome: PostOutcome, decision: DeliveryDecision) throws {
        let error: String? = (outcome.error ?? outcome.statusCode.flatMap { (200..<300).contains($0) ? nil : "HTTP \($0)" }).map { String($0.prefix(2000)) }
        try pool.withTransaction { c in
            _ = try c.execute("""
                INSERT INTO lop.webhook_attempts (delivery_id, attempt, notifier, started_at, duration_ms, status_code, response, error)
                VALUES (\(delivery.id), \(Int32(delivery.attempt)), \(notifier), \(startedAt), \(outcome.seconds * 1000), \(outcome.statusCode.map(Int32.init)),
                        \(outcome.snippet.isEmpty ? nil : String(outcome.snippet.prefix(65536))), \(error))
                """)
            let (state, delay): (String, Double) = switch decision {
            case .delivered: ("delivered", 0)
            case .retry(let after): ("failed", after)
            case .dead, .gone: ("dead", 0)
            }
            let mine = try c.execute("""
                UPDATE lop.webhook_deliveries
                SET state = \(state)::lop.delivery_state, leased_by = NULL, lease_expires_at = NULL,
                    delivered_at = CASE WHEN \(state) = 'delivered' THEN now() END,
                    next_attempt_at = now() + make_interval(secs => \(delay)), last_error = \(error)
                WHERE id = \(delivery.id) AND leased_by = \(notifier) AND attempt = \(Int32(delivery.attempt))
                """)
            if mine == 1, decision == .gone {
                _ = try c.execute("""
                    UPDATE lop.webhook_endpoints SET enabled = false,
                           disabled_reason = 'the receiver answered 410 Gone at ' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
                    WHERE id = \(delivery.endpointId)
                    """)
            }
        }
    }

    /// Deliveries, newest first, optionally of one state or endpoint.
    public func deliveries(state: String? = nil, endpoint: Int64? = nil, limit: Int = 50) throws -> [WebhookDelivery] {
        if let state, !["pending", "failed", "delivered", "dead"].contains(state) {
            throw WebhookError("unknown delivery state \"\(state)\" (pending, failed, delivered, dead)")
        }
        return try pool.withConnection { c in
            try c.query("""
                SELECT \(fragment: SQL(unsafe: WebhookDelivery.columns)) FROM lop.webhook_deliveries
                WHERE (\(state)::text IS NULL OR state::text = \(state)) AND (\(endpoint)::bigint IS NULL OR endpoint_id = \(endpoint))
                ORDER BY created_at DESC, id LIMIT \(limit)
                """).map(WebhookDelivery.init)
        }
    }

    /// One delivery by id (nil: none).
    public func delivery(_ id: String) throws -> WebhookDelivery? {
        try pool.withConnection { c in
            try c.query("SELECT \(fragment: SQL(unsafe: WebhookDelivery.columns)) FROM lop.webhook_deliveries WHERE id = \(id)").map(WebhookDelivery.init).first
        }
    }

    public func attempts(_ deliveryId: String) throws -> [WebhookAttempt] {
        try pool.withConnection { c in
            try c.query("""
                SELECT attempt, notifier, started_at, duration_ms, status_code, response, error FROM lop.webhook_attempts
                WHERE delivery_id = \(deliveryId) ORDER BY id
                """).map { row in
                WebhookAttempt(attempt: Int(try row.decode("attempt", as: Int32.self)), notifier: try row.decode("notifier"),
                               startedAt: try row.decode("started_at"), durationMs: try row.decode("duration_ms"),
                               statusCode: try row.decode("status_code", as: Int32?.self).map(Int.init), response: try row.decode("response"),
                               error: try row.decode("error"))
            }
        }
    }

    /// Sends a delivery again now, whatever its state; its id stays the same, so receivers can deduplicate. A dead
    /// delivery gets one more attempt; any other continues its schedule from where it was.
    public func redeliver(_ id: String) throws {
        let changed = try pool.withConnection { c in
            // Never under a live lease: the notifier holding it would record its outcome over this change.
            let n = try c.execute("""
                UPDATE lop.webhook_deliveries
                SET state = CASE WHEN attempt = 0 THEN 'pending'::lop.delivery_state ELSE 'failed'::lop.delivery_state END,
                    delivered_at = NULL, next_attempt_at = now(), leased_by = NULL, lease_expires_at = NULL
                WHERE id = \(id) AND (lease_expires_at IS NULL OR lease_expires_at < now())
                """)
            if n == 1 { try c.notify(Self.channel) }
            return n
        }
        guard changed == 1 else {
            let leased = try pool.withConnection { c in
                try c.query("SELECT leased_by FROM lop.webhook_deliveries WHERE id = \(id)").first.map { try $0.decode("leased_by", as: String?.self) }
            }
            guard let holder = leased else { throw WebhookError("no webhook delivery \(id)") }
            throw WebhookError("webhook delivery \(id) is being sent by notifier \(holder ?? "?") now; redeliver it once that attempt is recorded")
        }
    }
}
