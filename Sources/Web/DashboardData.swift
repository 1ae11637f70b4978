import Foundation
import LopCore
import Queue
import Store
import Webhooks

/// What the dashboard's pages and API show, read from the same PostgreSQL the workers use. Every view is a
/// plain Encodable value: the JSON API returns it as it is, and the HTML pages render it.
struct DashboardData {
    let pool: ConnectionPool
    var queue: JobQueue { JobQueue(pool: pool) }
    var registry: Registry { Registry(pool: pool) }
    var webhooks: WebhookStore { WebhookStore(pool: pool) }

    // MARK: Queue

    struct Count: Encodable, Equatable {
        let state: String
        let kind: String
        let count: Int
    }

    struct QueueView: Encodable {
        let counts: [Count]
        let running: [Job]
        let failed: [Job]
        let jobs: [Job]
        let filter: JobFilter
    }

    /// Filters of the job list, checked against the known states and kinds (anything else is a 400).
    struct JobFilter: Encodable, Equatable {
        var state: JobState?
        var kind: JobKind?
        var queue: String?
    }

    func queueView(filter: JobFilter) throws -> QueueView {
        let counts = try pool.withConnection { c in
            try c.query("SELECT state::text AS state, kind, count(*)::bigint AS n FROM lop.jobs GROUP BY 1, 2 ORDER BY 1, 2").map {
                Count(state: try $0.decode("state"), kind: try $0.decode("kind"), count: Int(try $0.decode("n") as Int64))
            }
        }
        return QueueView(counts: counts, running: try queue.list(state: .running, limit: 100),
                         failed: try queue.list(state: .discarded, limit: 50) + queue.list(state: .retryable, limit: 50),
                         jobs: try queue.list(state: filter.state, kind: filter.kind, queue: filter.queue, limit: 100), filter: filter)
    }

    struct JobView: Encodable {
        let job: Job
        let children: [Job]
    }

    func jobView(_ id: Int64) throws -> JobView? {
        guard let job = try queue.get(id) else { return nil }
        return JobView(job: job, children: try queue.children(of: id))
    }

    // MARK: Registry

    struct BaseEntry: Encodable {
        let base: RegisteredModel
        let variants: [RegisteredModel]
    }

    /// Variant order for the registry table: by budget, size or held-out loss.
    enum VariantOrder: String, Encodable, CaseIterable { case budget, size, loss }

    func registryView(order: VariantOrder) throws -> [BaseEntry] {
        let all = try registry.list()
        // Each variant's sort key, taken once (the loss is read from its metrics document).
        func key(_ m: RegisteredModel) -> Double {
            switch order {
            case .budget: return Self.budgetValue(m.budget)
            case .size: return Double(m.sizeBytes)
            case .loss: return Self.heldOutLoss(m) ?? .infinity
            }
        }
        return all.filter { $0.kind == .base }.map { base in
            let variants = all.filter { $0.kind == .pruned && $0.baseModelId == base.id }.map { (key($0), $0) }
            return BaseEntry(base: base, variants: variants.sorted { ($0.0, $0.1.id) < ($1.0, $1.1.id) }.map(\.1))
        }
    }

    /// A budget as one number to sort by (a fraction, or its count of parameters, FLOPs or bytes).
    static func budgetValue(_ budget: Budget?) -> Double {
        switch budget {
        case .fraction(let f)?: return f
        case .parameters(let n)?, .flopsPerToken(let n)?: return Double(n)
        case .bytes(let n, _)?: return Double(n)
        case nil: return 0
        }
    }

    /// `metrics.held_out.loss` of a registered model (base or pruned).
    static func heldOutLoss(_ model: RegisteredModel) -> Double? {
        struct Metrics: Decodable {
            struct HeldOut: Decodable { let loss: Double }
            let held_out: HeldOut?
        }
        return (try? model.metrics.decode(Metrics.self))?.held_out?.loss
    }

    /// A predictor's `metrics.held_out_loss`: its predicted strategies' losses by budget.
    static func predictedLosses(_ model: RegisteredModel) -> [String: Double] {
        struct Metrics: Decodable { let held_out_loss: [String: Double]? }
        return (try? model.metrics.decode(Metrics.self))?.held_out_loss ?? [:]
    }

    struct Point: Encodable, Equatable {
        let keptFraction: Double
        let loss: Double
        let label: String
    }

    /// Held-out loss (samples: their search's loss) against kept fraction, for one base model.
    struct Chart: Encodable {
        let samples: [Point]
        /// The lowest loss at each budget.
        let front: [Point]
        /// Samples whose every unit keeps the same fraction (the uniform baseline the searches score).
        let uniform: [Point]
        let variants: [Point]
        /// The champion predictor's losses at its evaluation budgets.
        let predicted: [Point]
        let base: Double?
    }

    struct ModelView: Encodable {
        let model: RegisteredModel
        let base: RegisteredModel?
        let aliases: [ModelAlias]
        let aliasHistory: [AliasChange]
        let evaluations: [ModelEvaluation]
        let lineageSamples: Int
        /// For a base model.
        let chart: Chart?
        let predictors: [RegisteredModel]
    }

    func modelView(_ id: Int64) throws -> ModelView? {
        guard let model = try registry.model(id: id) else { return nil }
        let base = try model.baseModelId.flatMap { try registry.model(id: $0) }
        var chart: Chart?
        var predictors: [RegisteredModel] = []
        if model.kind == .base {
            predictors = try registry.list(kind: .predictor, baseModelId: model.id)
            chart = try self.chart(model, predictors: predictors)
        }
        return ModelView(model: model, base: base, aliases: try registry.aliases(name: model.name), aliasHistory: try registry.aliasHistory(name: model.name),
                         evaluations: try registry.evaluations(modelId: model.id), lineageSamples: try registry.lineageSamples(model.id).count,
                         chart: chart, predictors: predictors)
    }

    func chart(_ base: RegisteredModel, predictors: [RegisteredModel]) throws -> Chart {
        let rows = try pool.withConnection { c in
            try c.query("""
                SELECT kept_fraction, loss, budget, strategy FROM lop.samples WHERE model_hash = \(base.contentHash)
                ORDER BY id DESC LIMIT 5000
                """).map { row -> (Double, Double, String, [Double]) in
                (try row.decode("kept_fraction"), try row.decode("loss"), try row.decode("budget"), try row.decode("strategy"))
            }
        }
        let samples = rows.map { Point(keptFraction: $0.0, loss: $0.1, label: "sample at \($0.2)") }
        var best: [String: (Double, Double)] = [:]
        for (fraction, loss, budget, _) in rows where loss < (best[budget]?.1 ?? .infinity) { best[budget] = (fraction, loss) }
        let front = best.map { Point(keptFraction: $0.value.0, loss: $0.value.1, label: "best at \($0.key)") }.sorted { $0.keptFraction < $1.keptFraction }
        let uniform = rows.filter { r in r.3.allSatisfy { abs($0 - (r.3.first ?? 0)) < 1e-12 } }
            .map { Point(keptFraction: $0.0, loss: $0.1, label: "uniform at \($0.2)") }
        let variants = try registry.list(kind: .pruned, baseModelId: base.id).compactMap { v -> Point? in
            guard case .fraction(let kept)? = v.budget, let loss = Self.heldOutLoss(v) else { return nil }
            return Point(keptFraction: kept, loss: loss, label: v.reference)
        }
        var predicted: [Point] = []
        if let name = predictors.first?.name, let champion = try registry.aliases(name: name).first(where: { $0.alias == "champion" }),
           let predictor = try registry.model(id: champion.modelId) {
            predicted = Self.predictedLosses(predictor).compactMap { key, loss in Double(key).map { Point(keptFraction: $0, loss: loss, label: "\(predictor.reference) at \(key)") } }
                .sorted { $0.keptFraction < $1.keptFraction }
        }
        return Chart(samples: samples, front: front, uniform: uniform, variants: variants, predicted: predicted, base: Self.heldOutLoss(base))
    }

    // MARK: Samples and predictors

    struct SampleCount: Encodable, Equatable {
        let model: String
        let modelHash: String
        let budget: String
        let count: Int
        let bestLoss: Double
    }

    struct SamplesView: Encodable {
        let counts: [SampleCount]
        let predictors: [RegisteredModel]
        let promotions: [AliasChange]
    }

    func samplesView() throws -> SamplesView {
        let counts = try pool.withConnection { c in
            try c.query("""
                SELECT model, model_hash, budget, count(*)::bigint AS n, min(loss) AS best FROM lop.samples
                GROUP BY 1, 2, 3 ORDER BY 1, 2, min(budget_value)
                """).map {
                SampleCount(model: try $0.decode("model"), modelHash: try $0.decode("model_hash"), budget: try $0.decode("budget"),
                            count: Int(try $0.decode("n") as Int64), bestLoss: try $0.decode("best"))
            }
        }
        let predictors = try registry.list(kind: .predictor)
        var promotions: [AliasChange] = []
        for name in Set(predictors.map(\.name)).sorted() { promotions += try registry.aliasHistory(name: name) }
        return SamplesView(counts: counts, predictors: predictors, promotions: promotions)
    }

    // MARK: Webhooks

    struct WebhooksView: Encodable {
        let endpoints: [WebhookEndpoint]
        let deliveries: [WebhookDelivery]
    }

    func webhooksView(state: String?) throws -> WebhooksView {
        WebhooksView(endpoints: try webhooks.endpoints(), deliveries: try webhooks.deliveries(state: state, limit: 100))
    }

    struct DeliveryView: Encodable {
        let delivery: WebhookDelivery
        let attempts: [WebhookAttempt]
    }

    func deliveryView(_ id: String) throws -> DeliveryView? {
        guard let delivery = try webhooks.delivery(id) else { return nil }
        return DeliveryView(delivery: delivery, attempts: try webhooks.attempts(id))
    }
}
