import Foundation
import LopCore

/// A row of `lop.samples`: one strategy a search evaluated, with where it came from.
public struct Sample: Sendable, Equatable, Codable {
    public var id: Int64?
    public var model: String
    public var modelHash: String
    public var calibrationHash: String
    public var units: [String]
    public var importance: String
    public var budget: Budget
    public var keptFraction: Double
    public var strategy: [Double]
    public var sizes: [Int]
    public var reward: Double
    public var loss: Double
    /// Task metrics beyond the loss, as a JSON object.
    public var metrics: [String: Double]
    public var depth: Int
    public var searchKey: String
    public var jobId: Int64?
    public var createdAt: Date?
    /// How the evaluated model's kept weights were set: none or least-squares (samples of one setting train
    /// that setting's predictor). Rows always have it; JSON written before it existed decodes as nil, i.e. none.
    public var reconstruction: String?
    /// What `reward` measured: loss or accuracy (nil in JSON written before it existed: loss).
    public var rewardKind: String?

    public init(model: String, modelHash: String, calibrationHash: String, units: [String], importance: String, budget: Budget, keptFraction: Double, strategy: [Double], sizes: [Int], reward: Double,
                loss: Double, metrics: [String: Double], depth: Int, searchKey: String, jobId: Int64?, reconstruction: String = "none",
                rewardKind: String = "loss") {
        self.model = model
        self.modelHash = modelHash
        self.calibrationHash = calibrationHash
        self.units = units
        self.importance = importance
        self.budget = budget
        self.keptFraction = keptFraction
        self.strategy = strategy
        self.sizes = sizes
        self.reward = reward
        self.loss = loss
        self.metrics = metrics
        self.depth = depth
        self.searchKey = searchKey
        self.jobId = jobId
        self.reconstruction = reconstruction
        self.rewardKind = rewardKind
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case id, model, modelHash = "model_hash", calibrationHash = "calibration_hash", units, importance, budget
        case keptFraction = "kept_fraction", strategy, sizes, reward, loss
        case metrics, depth, searchKey = "search_key", jobId = "job_id", createdAt = "created_at", reconstruction
        case rewardKind = "reward_kind"
    }

    static let columns = """
        id, model, model_hash, calibration_hash, units, importance, budget, budget_kind, budget_value, kept_fraction, strategy,
        sizes::int8[] AS sizes, reward, loss, metrics, depth, search_key, job_id, created_at, reconstruction, reward_kind
        """

    init(row: Row) throws {
        id = try row.decode("id")
        model = try row.decode("model")
        modelHash = try row.decode("model_hash")
        calibrationHash = try row.decode("calibration_hash")
        units = try row.decode("units")
        importance = try row.decode("importance")
        let text: String = try row.decode("budget")
        do { budget = try Budget(parsing: text) } catch { throw StoreError.unexpected("sample \(id ?? 0): budget \"\(text)\": \(error)") }
        keptFraction = try row.decode("kept_fraction")
        strategy = try row.decode("strategy")
        sizes = try row.decode("sizes")
        reward = try row.decode("reward")
        loss = try row.decode("loss")
        metrics = try row.decode("metrics", as: JSONB.self).decode([String: Double].self)
        depth = try row.decode("depth")
        searchKey = try row.decode("search_key")
        jobId = try row.decode("job_id")
        createdAt = try row.decode("created_at")
        reconstruction = try row.decode("reconstruction")
        rewardKind = try row.decode("reward_kind")
    }

    /// The budget's kind and value, as the table keeps them beside its text (for ordering and SQL queries).
    public var budgetKind: String { budget.kind }
    public var budgetValue: Double { budget.value }
}

/// Reads and writes `lop.samples`.
public struct SampleStore: Sendable {
    public let pool: ConnectionPool

    public init(pool: ConnectionPool) {
        self.pool = pool
    }

    /// Inserts samples in one statement; a strategy its search already stored is skipped. Returns how many were new.
    @discardableResult
    public func insert(_ samples: [Sample]) throws -> Int {
        guard !samples.isEmpty else { return 0 }
        let rows = try JSONB(encoding: samples.map(InsertRow.init))
        return try pool.withConnection { c in
            try c.execute("""
                INSERT INTO lop.samples (model, model_hash, calibration_hash, units, importance, budget, budget_kind, budget_value,
                                         kept_fraction, strategy, sizes, reward, loss, metrics, depth, search_key, job_id, reconstruction, reward_kind)
                SELECT r.model, r.model_hash, r.calibration_hash, ARRAY(SELECT jsonb_array_elements_text(r.units)), r.importance,
                       r.budget, r.budget_kind, r.budget_value, r.kept_fraction,
                       ARRAY(SELECT x::float8 FROM jsonb_array_elements_text(r.strategy) AS x),
                       ARRAY(SELECT x::integer FROM jsonb_array_elements_text(r.sizes) AS x),
                       r.reward, r.loss, r.metrics, r.depth, r.search_key, r.job_id, r.reconstruction, r.reward_kind
                FROM jsonb_to_recordset(\(rows)) AS r(model text, model_hash text, calibration_hash text, units jsonb, importance text,
                     budget text, budget_kind text, budget_value float8, kept_fraction float8, strategy jsonb, sizes jsonb,
                     reward float8, loss float8, metrics jsonb, depth integer, search_key text, job_id bigint,
                     reconstruction text, reward_kind text)
                ON CONFLICT ON CONSTRAINT samples_once_per_search DO NOTHING
                """)
        }
    }

    /// The samples one search stored (a resumed search starts from them), oldest first.
    public func samples(searchKey: String) throws -> [Sample] {
        try pool.withConnection { c in
            try c.query("SELECT \(fragment: SQL(unsafe: Sample.columns)) FROM lop.samples WHERE search_key = \(searchKey) ORDER BY id")
                .map { try Sample(row: $0) }
        }
    }

    /// Samples of a model, by its hash (a prefix of at least 8 characters) or by the name its jobs gave it,
    /// oldest first; optionally only one calibration set's.
    public func samples(model: String, calibrationHash: String? = nil, limit: Int? = nil) throws -> [Sample] {
        let hashPrefix = model.count >= 8 && model.allSatisfy(\.isHexDigit) ? model.lowercased() + "%" : nil
        return try pool.withConnection { c in
            try c.query("""
                SELECT \(fragment: SQL(unsafe: Sample.columns)) FROM lop.samples
                WHERE (model = \(model) OR model_hash LIKE \(hashPrefix))
                  AND (\(calibrationHash)::text IS NULL OR calibration_hash = \(calibrationHash))
                ORDER BY id LIMIT \(limit)
                """).map { try Sample(row: $0) }
        }
    }

    /// Per budget, the sample with the lowest loss, for one model (hash) and calibration set. Budgets are told
    /// apart by kind, value and canonical text (which keeps a byte budget's width per weight).
    public func best(modelHash: String, calibrationHash: String) throws -> [Sample] {
        try pool.withConnection { c in
            try c.query("""
                SELECT DISTINCT ON (budget_kind, budget_value, budget) \(fragment: SQL(unsafe: Sample.columns)) FROM lop.samples
                WHERE model_hash = \(modelHash) AND calibration_hash = \(calibrationHash)
                ORDER BY budget_kind, budget_value, budget, loss, id
                """).map { try Sample(row: $0) }
        }
    }

    /// The JSON shape `insert` unpacks with jsonb_to_recordset.
    private struct InsertRow: Encodable {
        let model, model_hash, calibration_hash: String
        let units: [String]
        let importance, budget, budget_kind: String
        let budget_value, kept_fraction: Double
        let strategy: [Double]
        let sizes: [Int]
        let reward, loss: Double
        let metrics: [String: Double]
        let depth: Int
        let search_key: String
        let job_id: Int64?
        let reconstruction, reward_kind: String

        init(_ s: Sample) {
            (model, model_hash, calibration_hash, units, importance) = (s.model, s.modelHash, s.calibrationHash, s.units, s.importance)
            (budget, budget_kind, budget_value, kept_fraction) = (s.budget.description, s.budgetKind, s.budgetValue, s.keptFraction)
            (strategy, sizes, reward, loss, metrics, depth, search_key, job_id) = (s.strategy, s.sizes, s.reward, s.loss, s.metrics, s.depth, s.searchKey, s.jobId)
            reconstruction = s.reconstruction ?? "none"
            reward_kind = s.rewardKind ?? "loss"
        }
    }
}
