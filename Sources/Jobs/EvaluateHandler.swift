import Evaluation
import Fixtures
import Foundation
import LopConfig
import Models
import Queue
import Store
import Webhooks

/// What an evaluate job reports (and `model.evaluated` carries): the model, the data, its metrics, and beside
/// them what a release gate compares with: the model's previous evaluation on the same data and, for a pruned
/// model on its base's held-out data, the base's metrics.
public struct EvaluateSummary: Codable, Sendable {
    /// The registered model (nil for a folder).
    public let model: CompressSummary.ModelRef?
    public let kind: String?
    public let folder: String
    public let data: String
    /// SHA-256 of a data file (nil for a named set).
    public let dataHash: String?
    public let metrics: EvaluationData.Metrics
    public var previous: EvaluationData.Metrics?
    public let baseMetrics: EvaluationData.Metrics?
    /// The history row (nil until the completing transaction writes it, and for a folder).
    public var evaluationId: Int64?
    public let seconds: Double

    enum CodingKeys: String, CodingKey {
        case model, kind, folder, data, dataHash = "data_hash", metrics, previous, baseMetrics = "base_metrics"
        case evaluationId = "evaluation_id", seconds
    }
}

/// `evaluate`: a registered base or pruned model (or a model folder) on named data → its metrics. For a
/// registered model they are kept in its registry history (`lop.model_evaluations`, latest per data in
/// `metrics.evaluations`) and announced by `model.evaluated`, in the transaction that completes the job.
public struct EvaluateHandler: JobHandler {
    public static let kind = JobKind.evaluate
    let config: LopConfig

    public init(config: LopConfig = LopConfig()) {
        self.config = config
    }

    public struct Arguments: Decodable, Sendable {
        /// `name[@alias|:version]` of a registered model, or a model folder on the worker.
        public var model: String
        /// Data as `lop eval --data` takes it; nil: the base model's held-out data.
        public var data: String?
        /// Wraps a question data file's bare questions (nil: `data.prompt_template`).
        public var promptTemplate: String?

        enum CodingKeys: String, CodingKey, CaseIterable { case model, data, promptTemplate = "prompt_template" }

        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            guard let model = try c.string(.model) else { throw c.invalid(.model, "is required") }
            self.model = model
            if !namesAFolder(model) { _ = try c.parsed(.model, ModelReference.init(parsing:)) }
            data = try c.parsed(.data) { text in _ = try DataSpec(parsing: text); return text }
            promptTemplate = try SearchOptions.promptTemplate(c, .promptTemplate)
        }
    }

    /// The model to evaluate and the data to use, resolved on the worker.
    struct Target {
        let record: RegisteredModel?
        let folder: String
        let dataName: String
        let data: DataSpec
        let baseMetrics: EvaluationData.Metrics?
    }

    func target(_ arguments: Arguments, registry: Registry, root: ArtifactRoot) throws -> Target {
        if namesAFolder(arguments.model) {
            guard FileManager.default.fileExists(atPath: arguments.model + "/config.json") else {
                throw ArgumentError("model", "no model folder with a config.json at \(arguments.model)")
            }
            guard let data = arguments.data else { throw ArgumentError("data", "is required for a model folder (it has no registered held-out data)") }
            return Target(record: nil, folder: arguments.model, dataName: data, data: try DataSpec(parsing: data), baseMetrics: nil)
        }
        let record: RegisteredModel
        let base: RegisteredModel
        do {
            record = try registry.resolve(try ModelReference(parsing: arguments.model))
            guard record.kind != .predictor else { throw ArgumentError("model", "\(record.reference) is a predictor; evaluate takes a base or pruned model") }
            base = try record.baseModelId.map { id in
                guard let base = try registry.model(id: id) else { throw RegistryError("\(record.reference)'s base model (id \(id)) is gone") }
                return base
            } ?? record
        } catch let error as RegistryError {
            throw ArgumentError("model", error.description)
        }
        // The base's held-out data is stored by name, a token file relative to the base's folder.
        if let data = arguments.data, data != base.evalData {
            return Target(record: record, folder: root.folder(record), dataName: data, data: try DataSpec(parsing: data), baseMetrics: nil)
        }
        guard let stored = base.evalData else { throw ArgumentError("data", "\(base.reference) has no held-out data; name the data") }
        return Target(record: record, folder: root.folder(record), dataName: stored, data: try root.data(stored, of: base),
                      baseMetrics: record.id == base.id ? nil : base.heldOutMetrics)
    }

    public func run(_ arguments: Arguments, job: Job, context: JobContext) throws -> JobOutcome<EvaluateSummary> {
        let started = Date()
        let registry = Registry(pool: context.queue.pool)
        let root = try ArtifactRoot(config.artifacts.root)
        let target = try target(arguments, registry: registry, root: root)
        if let record = target.record {
            let damaged = root.verify(record)
            guard damaged.isEmpty else { throw RegistryError("\(record.reference): files \(damaged.joined(separator: ", ")) are missing or changed") }
        }
        context.progress(0.05, "loading \(target.record?.reference ?? target.folder)")
        let model = try Model.load(directory: target.folder)
        try context.checkCancelled()
        context.progress(0.2, "evaluating on \(target.dataName)")
        let data: EvaluationData
        do {
            data = try target.data.evaluationData(for: model, options: DataFile.Options(config.data).with(promptTemplate: arguments.promptTemplate))
        } catch let error as any DataInputError {
            throw ArgumentError("data", error.description)  // a bad file fails the same way on every attempt
        }
        let metrics = try data.evaluate(model)
        var dataHash: String?
        if case .file(let path) = target.data { dataHash = try ArtifactRoot.digest(file: path).sha256 }
        let summary = EvaluateSummary(
            model: target.record.map(CompressSummary.ModelRef.init), kind: target.record?.kind.rawValue, folder: target.folder,
            data: target.dataName, dataHash: dataHash, metrics: metrics, previous: nil, baseMetrics: target.baseMetrics,
            evaluationId: nil, seconds: Date().timeIntervalSince(started))
        guard let record = target.record else { return JobOutcome(summary) }
        let evaluation = NewEvaluation(modelId: record.id, data: target.dataName, dataHash: dataHash, metrics: try JSONB(encoding: metrics),
                                       jobId: job.id, evaluatedBy: "job:\(job.id)")
        return JobOutcome(summary) { c in
            var final = summary
            final.previous = try registry.evaluations(modelId: record.id, data: target.dataName, on: c).first.map { try $0.metrics.decode() }
            final.evaluationId = try registry.recordEvaluation(evaluation, on: c).id
            _ = try WebhookStore.emit("model.evaluated", data: EvaluatedEvent(summary: final, model: record, jobId: job.id), on: c)
            return final
        }
    }
}

/// The data of a `model.evaluated` event.
struct EvaluatedEvent: Encodable {
    let model: RegisteredEvent
    let data: String
    let dataHash: String?
    let metrics: EvaluationData.Metrics
    let previous: EvaluationData.Metrics?
    let baseMetrics: EvaluationData.Metrics?
    let evaluationId: Int64?
    let jobId: Int64

    init(summary: EvaluateSummary, model: RegisteredModel, jobId: Int64) {
        self.model = RegisteredEvent(model)
        (data, dataHash, metrics, previous, baseMetrics, evaluationId) = (summary.data, summary.dataHash, summary.metrics, summary.previous,
                                                                         summary.baseMetrics, summary.evaluationId)
        self.jobId = jobId
    }

    enum CodingKeys: String, CodingKey {
        case model, data, dataHash = "data_hash", metrics, previous, baseMetrics = "base_metrics", evaluationId = "evaluation_id", jobId = "job_id"
    }
}
