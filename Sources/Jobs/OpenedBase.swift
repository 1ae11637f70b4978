import Evaluation
import Fixtures
import Foundation
import LopConfig
import LopCore
import Models
import Predictor
import Pruning
import Queue
import Search
import Store

/// A registered base model opened for pruning: loaded from its artifact folder and checked against its content
/// hash, its neurons ranked on its registered calibration data, its held-out data ready, and the keep bounds of
/// the configuration. Compress and train jobs share it; no budget is needed to open one.
struct OpenedBase {
    let record: RegisteredModel
    let folder: String
    let prepared: PreparedModel
    let heldOut: EvaluationData
    let bounds: KeepBounds
    let config: LopConfig

    init(_ record: RegisteredModel, root: ArtifactRoot, config: LopConfig, importance: ImportanceMethod?) throws {
        guard record.kind == .base, let calibration = record.calibration, let evalData = record.evalData else {
            throw ArgumentError("model", "\(record.reference) is a \(record.kind.rawValue) model, not a base model")
        }
        let p = config.pruning
        self.record = record
        self.config = config
        folder = root.folder(record)
        bounds = KeepBounds(p)
        prepared = try PreparedModel(folder: folder, calibration: try root.data(calibration, of: record).description, samples: p.calibrationSamples,
                                     context: p.calibrationContext, scope: .language,
                                     importance: importance ?? ImportanceMethod(rawValue: p.importance) ?? .lop, cache: true,
                                     data: DataFile.Options(config.data), reconstructionMemory: p.reconstructionMemory)
        guard prepared.pruner.modelHash == record.contentHash else {
            throw RegistryError("\(record.reference): the files in \(folder) are not the registered model (content hash \(prepared.pruner.modelHash.prefix(16))…, registered \(record.contentHash.prefix(16))…)")
        }
        heldOut = try root.data(evalData, of: record).evaluationData(for: prepared.model, options: DataFile.Options(config.data))
    }

    var units: [PrunableUnit] { prepared.pruner.units }

    /// A budget this model cannot meet within the bounds can never work: an argument error, before any strategy.
    func check(_ budget: Budget) throws {
        do { _ = try Projection.project(ratios: units.map { _ in 1 }, units: units, budget: budget, bounds: bounds) } catch {
            throw ArgumentError("budget", error.description)
        }
    }

    /// Searches a strategy for `budget` on this model as a search job would (samples stored under the job's key).
    func search(_ budget: Budget, overrides: [String: AnyJSON]?, reconstruction: ReconstructionMethod, job: Job, context: JobContext,
                gramPasses: @escaping (Int, Int) -> Void, report: (Int, Int, Double) -> Void) throws -> (result: SearchResult, samplesWritten: Int) {
        var request = try SearchRequest(options: SearchOptions(model: folder, calibration: prepared.calibration.name,
                                                               importance: prepared.pruner.importance, search: overrides,
                                                               reconstruction: reconstruction),
                                        budget: budget, config: config)
        request.bounds = bounds
        return try request.runStored(prepared, job: job, context: context, gramPasses: gramPasses, report: report)
    }

    /// The least-squares reconstruction at the configured ridge, or nil for `none`.
    func reconstruction(_ method: ReconstructionMethod) throws -> Reconstruction? {
        try prepared.pruner.reconstruction(method, ridge: config.pruning.reconstructionRidge)
    }

    /// Held-out metrics of a strategy's sizes on the nested model (no copy), re-fitted as `method` says.
    func evaluate(sizes: [Int], reconstruction method: ReconstructionMethod) throws -> EvaluationData.Metrics {
        try heldOut.evaluate(prepared.pruner.nested.model, options: try prepared.pruner.options(sizes: sizes, reconstruction: try reconstruction(method)))
    }
}

/// A registered predictor, loaded and checked against the base model it is used with.
struct OpenedPredictor {
    static let fileName = "predictor.safetensors"

    let record: RegisteredModel
    let predictor: Predictor
    /// The importance method of the samples it learnt from (the base must rank neurons the same way).
    let importance: ImportanceMethod?
    /// How the samples it learnt from were scored (predictors trained before the setting existed: none).
    let reconstruction: ReconstructionMethod

    init(_ record: RegisteredModel, root: ArtifactRoot) throws {
        guard record.kind == .predictor else { throw ArgumentError("predictor", "\(record.reference) is a \(record.kind.rawValue) model, not a predictor") }
        self.record = record
        predictor = try Predictor.load(root.folder(record) + "/" + Self.fileName)
        let lineage = try? record.lineage.decode(PredictorLineage.self)
        importance = lineage?.importance
        reconstruction = lineage?.reconstruction ?? .none
    }

    /// Refuses a base model the predictor was not trained for: another registry entry, other weights, other units,
    /// or neurons ranked on other calibration data.
    func check(for base: OpenedBase, reconstruction wanted: ReconstructionMethod) throws {
        guard reconstruction == wanted else {
            throw ArgumentError("predictor", "\(record.reference) learnt from strategies scored with reconstruction \(reconstruction.rawValue), and this request uses \(wanted.rawValue) (train one on \(wanted.rawValue) samples, or use search or auto)")
        }
        guard record.baseModelId == base.record.id else {
            throw ArgumentError("predictor", "\(record.reference) was trained for model id \(record.baseModelId.map(String.init) ?? "?"), not for \(base.record.reference) (id \(base.record.id))")
        }
        do { try predictor.check(modelHash: base.prepared.pruner.modelHash, units: base.units) } catch {
            throw ArgumentError("predictor", "\(record.reference): \(error.description)")
        }
        guard predictor.card.calibrationHash == base.prepared.calibration.hash else {
            throw ArgumentError("predictor", "\(record.reference) learnt from samples ranked on calibration data \(predictor.card.calibrationHash.prefix(12))…, but \(base.record.reference) ranks on \(base.prepared.calibration.hash.prefix(12))…")
        }
    }
}
