import Evaluation
import Fixtures
import Foundation
import LopConfig
import LopCore
import Models
import Predictor
import Pruning
import Queue
import Store

/// A registered base model opened for pruning: loaded from its artifact folder, its neurons ranked on its
/// calibration data, and its held-out data ready. Compress and train jobs share it.
struct OpenedBase {
    let record: RegisteredModel
    let folder: String
    /// A search request for this model (its calibration data, the importance used, any search overrides).
    let request: SearchRequest
    let prepared: SearchRequest.Prepared
    let heldOut: EvaluationData

    init(_ record: RegisteredModel, root: ArtifactRoot, config: LopConfig, budget: Budget, importance: ImportanceMethod?,
         search: [String: AnyJSON]? = nil) throws {
        guard record.kind == .base, let calibration = record.calibration, let evalData = record.evalData else {
            throw ArgumentError("model", "\(record.reference) is a \(record.kind.rawValue) model, not a base model")
        }
        self.record = record
        folder = root.folder(record)
        let options = SearchOptions(model: folder, calibration: try root.data(calibration, of: record).description,
                                    importance: importance, search: search)
        request = try SearchRequest(options: options, budget: budget, config: config)
        prepared = try request.prepare()
        guard prepared.pruner.modelHash == record.contentHash else {
            throw RegistryError("\(record.reference): the files in \(folder) are not the registered model (content hash \(prepared.pruner.modelHash.prefix(16))…, registered \(record.contentHash.prefix(16))…)")
        }
        heldOut = try root.data(evalData, of: record).evaluationData(for: prepared.model)
    }

    var units: [PrunableUnit] { prepared.pruner.units }

    /// Held-out metrics of a strategy's sizes on the nested model (no copy).
    func evaluate(sizes: [Int]) throws -> EvaluationData.Metrics {
        try heldOut.evaluate(prepared.pruner.nested.model, options: prepared.pruner.options(sizes: sizes))
    }
}

/// A registered predictor, loaded and checked against the base model it is used with.
struct OpenedPredictor {
    static let fileName = "predictor.safetensors"

    let record: RegisteredModel
    let predictor: Predictor
    /// The importance method of the samples it learnt from (the base must rank neurons the same way).
    let importance: ImportanceMethod?

    init(_ record: RegisteredModel, root: ArtifactRoot) throws {
        guard record.kind == .predictor else { throw ArgumentError("predictor", "\(record.reference) is a \(record.kind.rawValue) model, not a predictor") }
        self.record = record
        predictor = try Predictor.load(root.folder(record) + "/" + Self.fileName)
        importance = (try? record.lineage.decode(PredictorLineage.self))?.importance
    }

    /// Refuses a base model the predictor was not trained for: another registry entry, other weights, other units,
    /// or neurons ranked on other calibration data.
    func check(for base: OpenedBase) throws {
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
