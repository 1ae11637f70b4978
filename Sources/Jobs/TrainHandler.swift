import Evaluation
import Foundation
import LopConfig
import Models
import Predictor
import Pruning
import Queue
import Store
import Webhooks

/// What a train job did for one base model.
public struct TrainOutcome: Codable, Sendable {
    public let base: CompressSummary.ModelRef
    /// trained, skipped or failed.
    public var status: String
    public var reason: String?
    /// The challenger registered (nil until the completing transaction assigns it) and the champion it was compared with.
    public var challenger: CompressSummary.ModelRef?
    public var champion: CompressSummary.ModelRef?
    public var promoted: Bool
    /// Held-out loss per evaluation budget, and their mean, of each.
    public var challengerLosses: [String: Double]?
    public var championLosses: [String: Double]?
    public var challengerMeanLoss: Double?
    public var championMeanLoss: Double?
    public var samples: Int?
    public var throughSampleId: Int64?
    public var validationError: [Double]?
    public var seconds: Double?

    enum CodingKeys: String, CodingKey {
        case base, status, reason, challenger, champion, promoted, challengerLosses = "challenger_losses", championLosses = "champion_losses"
        case challengerMeanLoss = "challenger_mean_loss", championMeanLoss = "champion_mean_loss", samples, throughSampleId = "through_sample_id"
        case validationError = "validation_error", seconds
    }
}

/// `train`: for each base model (one named, or every one) with samples newer than its champion predictor,
/// trains a challenger on all of its samples, evaluates challenger and champion on the same held-out budgets,
/// registers the challenger, and moves `champion` to it only when its mean held-out loss is lower by the
/// promotion margin (else it becomes `candidate`). Registration, aliases and events commit with the job.
public struct TrainHandler: JobHandler {
    public static let kind = JobKind.train
    let config: LopConfig

    public init(config: LopConfig = LopConfig()) {
        self.config = config
    }

    /// The registry name of a base model's predictors.
    public static func predictorName(of base: String) -> String { base + ".predictor" }

    /// A train job's args; nil fields take the config's `training` defaults.
    public struct Arguments: Decodable, Sendable {
        /// One base model; nil: every base model.
        public var model: ModelReference?
        public var force: Bool
        public var steps: Int?
        public var ensemble: Int?
        public var seed: Int
        /// Fractions the challenger and champion are compared at.
        public var budgets: [Double]?
        public var margin: Double?

        /// The reconstruction setting whose samples train the predictor (nil: `pruning.reconstruction`).
        public var reconstruction: ReconstructionMethod?

        enum CodingKeys: String, CodingKey, CaseIterable { case model, force, steps, ensemble, seed, budgets, margin, reconstruction }

        public init(from decoder: any Decoder) throws {
            try decoder.rejectUnknownKeys(CodingKeys.self)
            let c = try decoder.container(keyedBy: CodingKeys.self)
            model = try c.parsed(.model, ModelReference.init(parsing:))
            reconstruction = try SearchOptions.reconstruction(c, .reconstruction)
            force = try c.decodeIfPresent(Bool.self, forKey: .force) ?? false
            steps = try c.integer(.steps, in: 1...1_000_000)
            ensemble = try c.integer(.ensemble, in: 1...32)
            seed = try c.integer(.seed, in: 0...1_000_000) ?? 0
            if c.contains(.budgets), try !c.decodeNil(forKey: .budgets) {
                guard let items = try? c.decode([AnyJSON].self, forKey: .budgets), !items.isEmpty, items.count <= 50 else {
                    throw c.invalid(.budgets, "must be a list of 1 to 50 fractions")
                }
                budgets = try items.map {
                    guard case .number(let x) = $0, x > 0, x <= 1 else { throw c.invalid(.budgets, "must hold fractions in (0, 1]") }
                    return x
                }
            }
            if let x = try? c.decodeIfPresent(Double.self, forKey: .margin) {
                guard x >= 0, x < 1 else { throw c.invalid(.margin, "must be a fraction in [0, 1)") }
                margin = x
            } else if c.contains(.margin), try !c.decodeNil(forKey: .margin) {
                throw c.invalid(.margin, "must be a fraction in [0, 1)")
            }
        }
    }

    /// What a train run uses: the arguments over the config's defaults.
    struct Request {
        var model: ModelReference?
        var force = false
        var settings = PredictorSettings()
        var budgets: [Double]
        var margin: Double
        var reconstruction: ReconstructionMethod = .none
    }

    func request(_ arguments: Arguments) -> Request {
        var request = Request(model: arguments.model, force: arguments.force, budgets: arguments.budgets ?? config.training.evaluationBudgets,
                              margin: arguments.margin ?? config.training.promotionMargin)
        request.settings.steps = arguments.steps ?? config.training.steps
        request.settings.ensemble = arguments.ensemble ?? config.training.ensemble
        request.settings.seed = arguments.seed
        request.reconstruction = arguments.reconstruction ?? ReconstructionMethod(rawValue: config.pruning.reconstruction) ?? .none
        return request
    }

    /// What a train job reports: one outcome per base model.
    public struct Summary: Codable, Sendable {
        public var models: [TrainOutcome]
    }

    /// A challenger ready to register, with the decision about it.
    struct Pending {
        var outcome: TrainOutcome
        let model: NewModel
    }

    public func run(_ arguments: Arguments, job: Job, context: JobContext) throws -> JobOutcome<Summary> {
        let request = request(arguments)
        let registry = Registry(pool: context.queue.pool)
        let root = try ArtifactRoot(config.artifacts.root)
        let bases: [RegisteredModel]
        if let reference = request.model {
            let base: RegisteredModel
            do { base = try registry.resolve(reference) } catch let error as RegistryError { throw ArgumentError("model", error.description) }
            guard base.kind == .base else { throw ArgumentError("model", "\(base.reference) is a \(base.kind.rawValue) model; train takes a base model") }
            bases = [base]
        } else {
            // The latest version of each base model name.
            bases = Dictionary(grouping: try registry.list(kind: .base), by: \.name).values.compactMap { $0.max { $0.version < $1.version } }
                .sorted { $0.name < $1.name }
        }
        var outcomes: [TrainOutcome] = []
        var pending: [Pending] = []
        for (index, base) in bases.enumerated() {
            let share = 1 / Double(max(bases.count, 1))
            let report = { (fraction: Double, message: String) in
                context.progress((Double(index) + fraction) * share * 0.98, "\(base.reference): \(message)")
            }
            do {
                switch try train(base, request: request, job: job, registry: registry, root: root, report: report, checkStop: context.checkCancelled) {
                case .skipped(let outcome): outcomes.append(outcome)
                case .trained(let p): pending.append(p)
                }
            } catch let error as JobStopped {
                throw error
            } catch {
                // One model's failure does not hold back the others of a nightly run; a named model's does fail the job.
                if request.model != nil { throw error }
                var outcome = TrainOutcome(base: .init(base), status: "failed", promoted: false)
                outcome.reason = "\(error)"
                outcomes.append(outcome)
            }
        }
        let done = outcomes
        let trained = pending
        return JobOutcome(Summary(models: done + trained.map(\.outcome))) { c in
            var results = done
            for p in trained {
                var outcome = p.outcome
                let registered = try registry.register(p.model, on: c)
                _ = try WebhookStore.emit("model.registered", data: RegisteredEvent(registered), on: c)
                outcome.challenger = .init(registered)
                let name = registered.name
                if outcome.promoted {
                    try registry.setAlias(name: name, alias: "champion", to: registered.id,
                                          actor: AliasActor(by: "job:\(job.id)", jobId: job.id, reason: outcome.reason), on: c)
                    _ = try WebhookStore.emit("predictor.promoted", data: PromotedEvent(outcome: outcome, predictor: registered), on: c)
                } else {
                    try registry.setAlias(name: name, alias: "candidate", to: registered.id,
                                          actor: AliasActor(by: "job:\(job.id)", jobId: job.id, reason: outcome.reason), on: c)
                }
                results.append(outcome)
            }
            return Summary(models: results)
        }
    }

    enum Step {
        case skipped(TrainOutcome)
        case trained(Pending)
    }

    func train(_ base: RegisteredModel, request: Request, job: Job, registry: Registry, root: ArtifactRoot,
               report: (Double, String) -> Void, checkStop: () throws -> Void) throws -> Step {
        let started = Date()
        var outcome = TrainOutcome(base: .init(base), status: "skipped", promoted: false)
        let predictorName = Self.predictorName(of: base.name)
        guard ModelReference.isName(predictorName) else { throw RegistryError("\(predictorName) is too long for a model name") }
        guard let latest = try registry.latestSampleId(modelHash: base.contentHash) else {
            outcome.reason = "no samples of \(base.reference) yet (run a sweep)"
            return .skipped(outcome)
        }
        let championRecord = try? registry.resolve(ModelReference(name: predictorName, selector: .alias("champion")))
        outcome.champion = championRecord.map(CompressSummary.ModelRef.init)
        let championThrough = (try? championRecord?.lineage.decode(PredictorLineage.self))??.throughSampleId
        if !request.force, let championThrough, championThrough >= latest {
            outcome.reason = "no samples newer than \(championRecord!.reference)'s (through sample \(championThrough))"
            return .skipped(outcome)
        }

        report(0.02, "loading samples and ranking neurons")
        let all = try SampleStore(pool: registry.pool).samples(model: base.contentHash).filter { $0.modelHash == base.contentHash }
        // The base ranks neurons on its registered calibration data; samples ranked otherwise do not apply.
        let importance = Dictionary(grouping: all, by: \.importance).max { $0.value.count < $1.value.count }?.key
        let opening = try OpenedBase(base, root: root, config: config, importance: importance.flatMap(ImportanceMethod.init))
        let unitNames = opening.units.map(\.name)
        let chosen = all.filter { $0.calibrationHash == opening.prepared.calibration.hash && $0.units == unitNames && $0.importance == importance
            && ($0.reconstruction ?? "none") == request.reconstruction.rawValue }
        guard !chosen.isEmpty else {
            outcome.reason = "none of the \(all.count) samples of \(base.reference) were ranked on its calibration data \(opening.prepared.calibration.name) and scored with reconstruction \(request.reconstruction.rawValue)"
            return .skipped(outcome)
        }
        try checkStop()

        report(0.05, "training on \(chosen.count) samples")
        let challenger = try Predictor.train(samples: chosen.map(PredictorSample.init), units: opening.units, bounds: opening.bounds,
                                             settings: request.settings)
        try checkStop()

        func heldOutLosses(_ predictor: Predictor, from: Double, to: Double) throws -> [String: Double] {
            var losses: [String: Double] = [:]
            for (i, budget) in request.budgets.enumerated() {
                report(from + (to - from) * Double(i) / Double(request.budgets.count), String(format: "held-out loss at %g", budget))
                let prediction = try predictor.predict(.fraction(budget), bounds: opening.bounds)
                losses[String(format: "%g", budget)] = try opening.evaluate(sizes: prediction.sizes, reconstruction: request.reconstruction).loss
                try checkStop()
            }
            return losses
        }
        let challengerLosses = try heldOutLosses(challenger, from: 0.6, to: 0.8)
        outcome.challengerLosses = challengerLosses
        outcome.challengerMeanLoss = mean(challengerLosses)
        if let championRecord {
            do {
                let champion = try OpenedPredictor(championRecord, root: root)
                try champion.check(for: opening, reconstruction: request.reconstruction)
                let losses = try heldOutLosses(champion.predictor, from: 0.8, to: 0.95)
                (outcome.championLosses, outcome.championMeanLoss) = (losses, mean(losses))
            } catch let error as ArgumentError {
                outcome.reason = "the champion no longer applies (\(error.reason))"
            }
        }
        let challengerMean = outcome.challengerMeanLoss!
        if let championMean = outcome.championMeanLoss {
            outcome.promoted = challengerMean <= championMean * (1 - request.margin)
            outcome.reason = String(format: "mean held-out loss %.5f vs the champion's %.5f (%+.2f %%; promotion needs ≤ −%.2f %%)", challengerMean,
                                    championMean, 100 * (challengerMean / championMean - 1), 100 * request.margin)
        } else {
            outcome.promoted = true
            outcome.reason = outcome.reason ?? "no champion yet"
        }

        report(0.96, "writing the predictor")
        let temporary = try root.temporary(for: "train-\(job.id)-\(base.id)")
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        try challenger.save(to: temporary + "/" + OpenedPredictor.fileName)
        let files = try ArtifactRoot.digest(folder: temporary)
        let relative = "predictors/\(predictorName)/job-\(job.id)"
        try root.install(temporary, at: relative)
        let through = chosen.compactMap(\.id).max() ?? latest
        var model = NewModel(name: predictorName, kind: .predictor, artifactPath: relative, files: files,
                             parameters: Int64(challenger.networks.reduce(0) { $0 + $1.parameters.reduce(0) { $0 + $1.value.count } }),
                             contentHash: files[OpenedPredictor.fileName]!.sha256)
        model.baseModelId = base.id
        model.sourceJobId = job.id
        model.metrics = try JSONB(encoding: PredictorMetrics(heldOutLoss: challengerLosses, meanHeldOutLoss: challengerMean,
                                                             validationError: challenger.card.validationError))
        model.lineage = try JSONB(encoding: PredictorLineage(modelHash: base.contentHash, calibrationHash: opening.prepared.calibration.hash,
                                                             importance: importance.flatMap(ImportanceMethod.init) ?? .lop,
                                                             reconstruction: request.reconstruction, throughSampleId: through, samples: chosen.count,
                                                             examples: challenger.card.examples))
        outcome.status = "trained"
        outcome.samples = chosen.count
        outcome.throughSampleId = through
        outcome.validationError = challenger.card.validationError
        outcome.seconds = Date().timeIntervalSince(started)
        return .trained(Pending(outcome: outcome, model: model))
    }

    private func mean(_ losses: [String: Double]) -> Double { losses.values.reduce(0, +) / Double(max(losses.count, 1)) }
}

/// A predictor's lineage in the registry: exactly which samples it learnt from (`lop.model_samples` reads it).
struct PredictorLineage: Codable {
    let modelHash: String
    let calibrationHash: String
    let importance: ImportanceMethod
    /// The reconstruction its samples were scored with (nil in lineages written before it existed: none).
    var reconstruction: ReconstructionMethod?
    let throughSampleId: Int64
    let samples: Int
    let examples: Int

    enum CodingKeys: String, CodingKey {
        case modelHash = "model_hash", calibrationHash = "calibration_hash", importance, reconstruction, throughSampleId = "through_sample_id", samples, examples
    }
}

struct PredictorMetrics: Codable {
    let heldOutLoss: [String: Double]
    let meanHeldOutLoss: Double
    let validationError: [Double]

    enum CodingKeys: String, CodingKey { case heldOutLoss = "held_out_loss", meanHeldOutLoss = "mean_held_out_loss", validationError = "validation_error" }
}

/// The data of a `predictor.promoted` event.
struct PromotedEvent: Encodable {
    let predictor: CompressSummary.ModelRef
    let base: CompressSummary.ModelRef
    let previous: CompressSummary.ModelRef?
    let meanHeldOutLoss: Double?
    let previousMeanHeldOutLoss: Double?
    let reason: String?

    init(outcome: TrainOutcome, predictor: RegisteredModel) {
        self.predictor = .init(predictor)
        base = outcome.base
        previous = outcome.champion
        meanHeldOutLoss = outcome.challengerMeanLoss
        previousMeanHeldOutLoss = outcome.championMeanLoss
        reason = outcome.reason
    }

    enum CodingKeys: String, CodingKey {
        case predictor, base, previous, meanHeldOutLoss = "mean_held_out_loss", previousMeanHeldOutLoss = "previous_mean_held_out_loss", reason
    }
}
