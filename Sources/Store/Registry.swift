import Foundation
import LopCore

/// What a registered model is: a model as given, a pruned variant of one, or a predictor trained for one.
public enum ModelKind: String, Sendable, Codable, CaseIterable, PostgresDecodable {
    case base, pruned, predictor
}

/// One registered file: its SHA-256 and size.
public struct FileDigest: Sendable, Codable, Equatable {
    public let sha256: String
    public let bytes: Int64

    public init(sha256: String, bytes: Int64) {
        self.sha256 = sha256
        self.bytes = bytes
    }
}

/// A registry error that names the model, alias or rule concerned.
public struct RegistryError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A model as jobs and the CLI name it: `name` (the latest version), `name@alias` or `name:version`.
public struct ModelReference: Sendable, Equatable, CustomStringConvertible {
    public enum Selector: Sendable, Equatable {
        case latest
        case alias(String)
        case version(Int)
    }

    public let name: String
    public let selector: Selector

    public init(name: String, selector: Selector = .latest) {
        self.name = name
        self.selector = selector
    }

    public init(parsing text: String) throws(RegistryError) {
        let name: Substring
        if let at = text.firstIndex(of: "@") {
            name = text[..<at]
            let alias = String(text[text.index(after: at)...])
            guard Self.isAlias(alias) else { throw RegistryError("\"\(text)\": \"\(alias)\" is not an alias (lower-case letters, digits, '-', '_'; at most 40)") }
            selector = .alias(alias)
        } else if let colon = text.firstIndex(of: ":") {
            name = text[..<colon]
            guard let version = Int(text[text.index(after: colon)...]), version >= 1 else {
                throw RegistryError("\"\(text)\": the version after ':' must be a positive integer")
            }
            selector = .version(version)
        } else {
            name = Substring(text)
            selector = .latest
        }
        guard Self.isName(String(name)) else {
            throw RegistryError("\"\(text)\": \"\(name)\" is not a model name (letters, digits, '.', '-', '_'; at most 100; starting with a letter or digit)")
        }
        self.name = String(name)
    }

    public var description: String {
        switch selector {
        case .latest: name
        case .alias(let alias): "\(name)@\(alias)"
        case .version(let version): "\(name):\(version)"
        }
    }

    /// The registry's name rule (the same as the table's CHECK).
    public static func isName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= 100 else { return false }
        func alphanumeric(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) }
        return alphanumeric(first) && name.unicodeScalars.allSatisfy { alphanumeric($0) || $0 == "." || $0 == "-" || $0 == "_" }
    }

    public static func isAlias(_ alias: String) -> Bool {
        guard let first = alias.unicodeScalars.first, alias.unicodeScalars.count <= 40, ("a"..."z").contains(first) else { return false }
        return alias.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" }
    }
}

/// A row of `lop.models`.
public struct RegisteredModel: Sendable, Equatable, Encodable {
    public let id: Int64
    public let name: String
    public let version: Int
    public let kind: ModelKind
    public let baseModelId: Int64?
    public let predictorId: Int64?
    public let sourceJobId: Int64?
    /// Relative to the artifact root.
    public let artifactPath: String
    public let files: [String: FileDigest]
    public let sizeBytes: Int64
    public let parameters: Int64
    public let contentHash: String
    public let evalData: String?
    public let calibration: String?
    /// A pruned model's budget.
    public let budget: Budget?
    public let strategy: [Double]?
    public let sizes: [Int]?
    public let method: String?
    public let requestKey: String?
    public let metrics: JSONB
    public let lineage: JSONB
    public let createdAt: Date

    /// `name:version`, which always names this row.
    public var reference: String { "\(name):\(version)" }

    enum CodingKeys: String, CodingKey {
        case id, name, version, kind, baseModelId = "base_model_id", predictorId = "predictor_id", sourceJobId = "source_job_id"
        case artifactPath = "artifact_path", files, sizeBytes = "size_bytes", parameters, contentHash = "content_hash"
        case evalData = "eval_data", calibration, budget, strategy, sizes, method
        case requestKey = "request_key", metrics, lineage, createdAt = "created_at"
    }

    static let columns = """
        id, name, version, kind::text AS kind, base_model_id, predictor_id, source_job_id, artifact_path, files, size_bytes, parameters,
        content_hash, eval_data, calibration, budget, budget_kind, budget_value, strategy, sizes::int8[] AS sizes, method, request_key,
        metrics, lineage, created_at
        """

    init(row: Row) throws {
        id = try row.decode("id")
        name = try row.decode("name")
        version = Int(try row.decode("version", as: Int32.self))
        kind = try row.decode("kind")
        baseModelId = try row.decode("base_model_id")
        predictorId = try row.decode("predictor_id")
        sourceJobId = try row.decode("source_job_id")
        artifactPath = try row.decode("artifact_path")
        files = try row.decode("files", as: JSONB.self).decode([String: FileDigest].self)
        sizeBytes = try row.decode("size_bytes")
        parameters = try row.decode("parameters")
        contentHash = try row.decode("content_hash")
        evalData = try row.decode("eval_data")
        calibration = try row.decode("calibration")
        let budgetText: String? = try row.decode("budget")
        do { budget = try budgetText.map { try Budget(parsing: $0) } } catch {
            throw StoreError.unexpected("model \(id): budget \"\(budgetText ?? "")\": \(error)")
        }
        strategy = try row.decode("strategy")
        sizes = try row.decode("sizes")
        method = try row.decode("method")
        requestKey = try row.decode("request_key")
        metrics = try row.decode("metrics")
        lineage = try row.decode("lineage")
        createdAt = try row.decode("created_at")
    }
}

/// What registering a model needs; the version and id are assigned by the registry.
public struct NewModel: Sendable {
    public var name: String
    public var kind: ModelKind
    public var baseModelId: Int64?
    public var predictorId: Int64?
    public var sourceJobId: Int64?
    public var artifactPath: String
    public var files: [String: FileDigest]
    public var parameters: Int64
    public var contentHash: String
    public var evalData: String?
    public var calibration: String?
    public var budget: Budget?
    public var strategy: [Double]?
    public var sizes: [Int]?
    public var method: String?
    public var requestKey: String?
    public var metrics = JSONB(text: "{}")
    public var lineage = JSONB(text: "{}")

    public init(name: String, kind: ModelKind, artifactPath: String, files: [String: FileDigest], parameters: Int64, contentHash: String) {
        self.name = name
        self.kind = kind
        self.artifactPath = artifactPath
        self.files = files
        self.parameters = parameters
        self.contentHash = contentHash
    }
}

/// One alias and the model it points at.
public struct ModelAlias: Sendable, Equatable, Encodable {
    public let name: String
    public let alias: String
    public let modelId: Int64
    public let version: Int
    public let updatedAt: Date

    enum CodingKeys: String, CodingKey { case name, alias, modelId = "model_id", version, updatedAt = "updated_at" }
}

/// One recorded alias change: set, moved or removed, by whom and why.
public struct AliasChange: Sendable, Equatable, Encodable {
    public let id: Int64
    public let name: String
    public let alias: String
    /// nil when the alias was removed.
    public let modelId: Int64?
    public let previousModelId: Int64?
    public let changedBy: String
    public let jobId: Int64?
    public let reason: String?
    public let changedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, name, alias, modelId = "model_id", previousModelId = "previous_model_id", changedBy = "changed_by", jobId = "job_id"
        case reason, changedAt = "changed_at"
    }
}

/// Who changes an alias, recorded with the change: a person or process, the job if any, and why.
public struct AliasActor: Sendable {
    public let by: String
    public let jobId: Int64?
    public let reason: String?

    public init(by: String, jobId: Int64? = nil, reason: String? = nil) {
        self.by = by
        self.jobId = jobId
        self.reason = reason
    }
}

/// The `lop.models` repository: registration with per-name versions, lookup by reference, aliases with their
/// history, deletion that keeps lineage intact, and lineage queries.
public struct Registry: Sendable {
    public let pool: ConnectionPool

    public init(pool: ConnectionPool) {
        self.pool = pool
    }

    private func on<T>(_ connection: Connection?, _ body: (Connection) throws -> T) throws -> T {
        if let connection { return try body(connection) }
        return try pool.withConnection(body)
    }

    private func models(_ condition: SQL, on c: Connection) throws -> [RegisteredModel] {
        try c.query("SELECT \(fragment: SQL(unsafe: RegisteredModel.columns)) FROM lop.models WHERE \(fragment: condition) ORDER BY name, version")
            .map { try RegisteredModel(row: $0) }
    }

    public func model(id: Int64, on connection: Connection? = nil) throws -> RegisteredModel? {
        try on(connection) { try models("id = \(id)", on: $0).first }
    }

    /// The model a compress request with this identity registered, if any.
    public func model(requestKey: String, on connection: Connection? = nil) throws -> RegisteredModel? {
        try on(connection) { try models("request_key = \(requestKey)", on: $0).first }
    }

    /// The model a reference names, or an error saying what does not exist.
    public func resolve(_ reference: ModelReference, on connection: Connection? = nil) throws -> RegisteredModel {
        try on(connection) { c in
            let found: RegisteredModel?
            switch reference.selector {
            case .latest:
                found = try c.query("""
                    SELECT \(fragment: SQL(unsafe: RegisteredModel.columns)) FROM lop.models WHERE name = \(reference.name) ORDER BY version DESC LIMIT 1
                    """).first.map(RegisteredModel.init)
            case .version(let version):
                found = try models("name = \(reference.name) AND version = \(version)", on: c).first
            case .alias(let alias):
                found = try models("id = (SELECT model_id FROM lop.model_aliases WHERE name = \(reference.name) AND alias = \(alias))", on: c).first
            }
            if let found { return found }
            let known = try c.query("SELECT count(*) AS n FROM lop.models WHERE name = \(reference.name)").single().decode("n", as: Int64.self)
            if known == 0 { throw RegistryError("no model named \"\(reference.name)\" is registered") }
            switch reference.selector {
            case .alias(let alias):
                let aliases = try self.aliases(name: reference.name, on: c).map(\.alias)
                throw RegistryError("\"\(reference.name)\" has no alias \"\(alias)\"" + (aliases.isEmpty ? " (it has none)" : " (it has \(aliases.joined(separator: ", ")))"))
            case .version(let version):
                throw RegistryError("\"\(reference.name)\" has no version \(version)")
            case .latest:
                throw RegistryError("\"\(reference.name)\" has no versions")
            }
        }
    }

    /// Every model, or those of one name or kind, by name and version.
    public func list(name: String? = nil, kind: ModelKind? = nil, baseModelId: Int64? = nil) throws -> [RegisteredModel] {
        try pool.withConnection { c in
            try models("(\(name)::text IS NULL OR name = \(name)) AND (\(kind?.rawValue)::text IS NULL OR kind::text = \(kind?.rawValue)) AND (\(baseModelId)::bigint IS NULL OR base_model_id = \(baseModelId))", on: c)
        }
    }

    /// Registers a model as the next version of its name (under a transaction-scoped lock on the name).
    public func register(_ new: NewModel, on c: Connection) throws -> RegisteredModel {
        guard ModelReference.isName(new.name) else { throw RegistryError("\"\(new.name)\" is not a model name") }
        _ = try c.query("SELECT pg_advisory_xact_lock(hashtextextended('lop.models:' || \(new.name), 0))")
        let files = try JSONB(encoding: new.files)
        let size = new.files.values.reduce(Int64(0)) { $0 + $1.bytes }
        let sizes = new.sizes
        return try RegisteredModel(row: c.query("""
            INSERT INTO lop.models (name, version, kind, base_model_id, predictor_id, source_job_id, artifact_path, files, size_bytes, parameters,
                                    content_hash, eval_data, calibration, budget, budget_kind, budget_value, strategy, sizes, method, request_key,
                                    metrics, lineage)
            VALUES (\(new.name), (SELECT coalesce(max(version), 0) + 1 FROM lop.models WHERE name = \(new.name)), \(new.kind.rawValue)::lop.model_kind,
                    \(new.baseModelId), \(new.predictorId), \(new.sourceJobId), \(new.artifactPath), \(files), \(size), \(new.parameters),
                    \(new.contentHash), \(new.evalData), \(new.calibration), \(new.budget?.description), \(new.budget?.kind), \(new.budget?.value),
                    \(new.strategy), \(sizes)::integer[], \(new.method), \(new.requestKey), \(new.metrics), \(new.lineage))
            RETURNING \(fragment: SQL(unsafe: RegisteredModel.columns))
            """).single())
    }

    /// Points `name@alias` at a model of that name; the change is recorded with `actor` in the same transaction.
    public func setAlias(name: String, alias: String, to modelId: Int64, actor: AliasActor, on c: Connection) throws {
        guard ModelReference.isAlias(alias) else { throw RegistryError("\"\(alias)\" is not an alias (lower-case letters, digits, '-', '_'; at most 40)") }
        guard let model = try model(id: modelId, on: c) else { throw RegistryError("no model with id \(modelId)") }
        guard model.name == name else { throw RegistryError("\(name)@\(alias) cannot point at \(model.reference): aliases stay within one name") }
        try record(actor, on: c)
        try c.execute("""
            INSERT INTO lop.model_aliases (name, alias, model_id) VALUES (\(name), \(alias), \(modelId))
            ON CONFLICT (name, alias) DO UPDATE SET model_id = excluded.model_id
            """)
    }

    /// Removes an alias (recorded like a change); false if it did not exist.
    @discardableResult
    public func removeAlias(name: String, alias: String, actor: AliasActor, on c: Connection) throws -> Bool {
        try record(actor, on: c)
        return try c.execute("DELETE FROM lop.model_aliases WHERE name = \(name) AND alias = \(alias)") > 0
    }

    /// The transaction-local settings the alias trigger records.
    private func record(_ actor: AliasActor, on c: Connection) throws {
        _ = try c.query("""
            SELECT set_config('lop.actor', \(actor.by), true), set_config('lop.job_id', \(actor.jobId.map(String.init) ?? ""), true),
                   set_config('lop.reason', \(actor.reason ?? ""), true)
            """)
    }

    public func aliases(name: String? = nil, on connection: Connection? = nil) throws -> [ModelAlias] {
        try on(connection) { c in
            try c.query("""
                SELECT a.name, a.alias, a.model_id, m.version, a.updated_at FROM lop.model_aliases a JOIN lop.models m ON m.id = a.model_id
                WHERE \(name)::text IS NULL OR a.name = \(name) ORDER BY a.name, a.alias
                """).map {
                ModelAlias(name: try $0.decode("name"), alias: try $0.decode("alias"), modelId: try $0.decode("model_id"),
                           version: Int(try $0.decode("version", as: Int32.self)), updatedAt: try $0.decode("updated_at"))
            }
        }
    }

    /// Every recorded change of a name's aliases, oldest first.
    public func aliasHistory(name: String) throws -> [AliasChange] {
        try pool.withConnection { c in
            try c.query("""
                SELECT id, name, alias, model_id, previous_model_id, changed_by, job_id, reason, changed_at
                FROM lop.model_alias_history WHERE name = \(name) ORDER BY id
                """).map {
                AliasChange(id: try $0.decode("id"), name: try $0.decode("name"), alias: try $0.decode("alias"), modelId: try $0.decode("model_id"),
                            previousModelId: try $0.decode("previous_model_id"), changedBy: try $0.decode("changed_by"), jobId: try $0.decode("job_id"),
                            reason: try $0.decode("reason"), changedAt: try $0.decode("changed_at"))
            }
        }
    }

    /// Deletes a model's row, refusing while an alias points at it or another model was made from it (so lineage
    /// never dangles). The caller removes the files once this has committed.
    public func delete(_ model: RegisteredModel, actor: AliasActor) throws {
        try pool.withTransaction { c in
            let aliases = try self.aliases(name: model.name, on: c).filter { $0.modelId == model.id }.map(\.alias)
            guard aliases.isEmpty else {
                throw RegistryError("\(model.reference) is \(aliases.map { "@\($0)" }.joined(separator: ", ")); move or remove the alias first")
            }
            let dependents = try models("base_model_id = \(model.id) OR predictor_id = \(model.id)", on: c).map(\.reference)
            guard dependents.isEmpty else {
                throw RegistryError("\(model.reference) is the origin of \(dependents.prefix(5).joined(separator: ", "))\(dependents.count > 5 ? ", …" : ""); delete those first")
            }
            try record(actor, on: c)
            _ = try c.execute("DELETE FROM lop.models WHERE id = \(model.id)")
        }
    }

    /// Records an evaluation of a model: a history row, and the latest metrics per data under
    /// `metrics.evaluations` of its registry row. Runs in the caller's transaction (the job's completion).
    public func recordEvaluation(_ new: NewEvaluation, on c: Connection) throws -> ModelEvaluation {
        try ModelEvaluation(row: c.query("""
            WITH e AS (
                INSERT INTO lop.model_evaluations (model_id, data, data_hash, metrics, job_id, evaluated_by)
                VALUES (\(new.modelId), \(new.data), \(new.dataHash), \(new.metrics), \(new.jobId), \(new.evaluatedBy))
                RETURNING *
            ), latest AS (
                UPDATE lop.models m
                SET metrics = jsonb_set(m.metrics, '{evaluations}', coalesce(m.metrics -> 'evaluations', '{}') || jsonb_build_object(e.data,
                    jsonb_build_object('metrics', e.metrics, 'evaluation_id', e.id, 'job_id', e.job_id, 'evaluated_at', e.evaluated_at)))
                FROM e WHERE m.id = e.model_id
            )
            SELECT \(fragment: SQL(unsafe: ModelEvaluation.columns)) FROM e
            """).single())
    }

    /// A model's evaluations, newest first, optionally on one data name only.
    public func evaluations(modelId: Int64, data: String? = nil, on connection: Connection? = nil) throws -> [ModelEvaluation] {
        try on(connection) { c in
            try c.query("""
                SELECT \(fragment: SQL(unsafe: ModelEvaluation.columns)) FROM lop.model_evaluations
                WHERE model_id = \(modelId) AND (\(data)::text IS NULL OR data = \(data)) ORDER BY id DESC
                """).map(ModelEvaluation.init(row:))
        }
    }

    /// The samples behind a model (lineage): how many, and the range of their ids.
    public func lineageSamples(_ modelId: Int64) throws -> (count: Int, firstId: Int64?, lastId: Int64?) {
        try pool.withConnection { c in
            let row = try c.query("SELECT count(*) AS n, min(id) AS first, max(id) AS last FROM lop.model_samples(\(modelId))").single()
            return (Int(try row.decode("n", as: Int64.self)), try row.decode("first"), try row.decode("last"))
        }
    }

    /// The newest sample id of a model's content hash (what "new samples since" is measured against).
    public func latestSampleId(modelHash: String, on connection: Connection? = nil) throws -> Int64? {
        try on(connection) { try $0.query("SELECT max(id) AS last FROM lop.samples WHERE model_hash = \(modelHash)").single().decode("last") }
    }
}

/// An evaluation to record.
public struct NewEvaluation: Sendable {
    public var modelId: Int64
    public var data: String
    public var dataHash: String?
    public var metrics: JSONB
    public var jobId: Int64?
    public var evaluatedBy: String

    public init(modelId: Int64, data: String, dataHash: String?, metrics: JSONB, jobId: Int64?, evaluatedBy: String) {
        (self.modelId, self.data, self.dataHash, self.metrics, self.jobId, self.evaluatedBy) = (modelId, data, dataHash, metrics, jobId, evaluatedBy)
    }
}

/// A row of `lop.model_evaluations`.
public struct ModelEvaluation: Sendable, Equatable, Codable {
    public let id: Int64
    public let modelId: Int64
    public let data: String
    public let dataHash: String?
    public let metrics: JSONB
    public let jobId: Int64?
    public let evaluatedBy: String
    public let evaluatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, modelId = "model_id", data, dataHash = "data_hash", metrics, jobId = "job_id", evaluatedBy = "evaluated_by"
        case evaluatedAt = "evaluated_at"
    }

    static let columns = "id, model_id, data, data_hash, metrics, job_id, evaluated_by, evaluated_at"

    init(row: Row) throws {
        id = try row.decode("id")
        modelId = try row.decode("model_id")
        data = try row.decode("data")
        dataHash = try row.decode("data_hash")
        metrics = try row.decode("metrics")
        jobId = try row.decode("job_id")
        evaluatedBy = try row.decode("evaluated_by")
        evaluatedAt = try row.decode("evaluated_at")
    }
}

extension RegistryError: LopError {
    public var exitCode: Int32 { ExitStatus.failure }
}
