import Evaluation
import Foundation
import LopCore
import Models
import Tensor

/// What `pruning.json` records next to a pruned checkpoint: enough to say exactly how it was made.
public struct PruningRecord: Codable, Equatable, Sendable {
    public var budget: String
    public var budgetKind: String
    public var budgetValue: Double
    /// uniform, owl, ecoflap, or the strategy file's path.
    public var allocation: String
    public var units: [String]
    /// Keep ratios as proposed (before projection) and as realised by the integer sizes.
    public var proposedRatios: [Double]
    public var ratios: [Double]
    public var sizes: [Int]
    public var importance: String
    public var calibrationHash: String?
    public var calibrationSamples: Int?
    public var sourceModelHash: String
    public var keptParameters: Int
    public var prunableParameters: Int
    public var parameterCount: Int
    public var sourceParameterCount: Int
    /// How the kept weights were set (absent in records written before reconstruction existed: none), and the ridge.
    public var reconstruction: ReconstructionMethod?
    public var ridge: Double?

    enum CodingKeys: String, CodingKey {
        case budget, budgetKind = "budget_kind", budgetValue = "budget_value", allocation, units, proposedRatios = "proposed_ratios", ratios, sizes
        case importance, calibrationHash = "calibration_hash", calibrationSamples = "calibration_samples", sourceModelHash = "source_model_hash"
        case keptParameters = "kept_parameters", prunableParameters = "prunable_parameters", parameterCount = "parameter_count"
        case sourceParameterCount = "source_parameter_count", reconstruction, ridge
    }

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self) + Data("\n".utf8)
    }

    public static let fileName = "pruning.json"
}

/// A model made ready for pruning: its units, their neurons ordered by an importance method on a calibration
/// set, and everything that turns a budget into sizes and sizes into a smaller model.
public final class Pruner {
    public let base: Model
    public let modelHash: String
    public let units: [PrunableUnit]
    public let importance: ImportanceMethod
    public let calibration: Calibration?
    public let statistics: ActivationStatistics?
    /// Whether the statistics came from the on-disk cache.
    public let statisticsFromCache: Bool
    public let nested: NestedModel
    /// Each unit's neuron scores by `importance` (what `nested` is ordered by).
    public let scores: [[Float]]
    /// ECoFLaP's unit scores by the settings they were estimated with (one estimate serves every budget).
    private var zerothOrder: (settings: AllocationSettings, scores: [Double])?

    /// Where activation statistics and Gram matrices are cached; nil keeps them in memory.
    public let cacheDirectory: String?
    /// The most memory reconstruction holds at once: Gram matrices being accumulated, and loaded ones, shared
    /// products and re-fits kept for reuse.
    public let reconstructionMemory: Int
    /// Hears the Gram matrices' accumulation: groups done, of all.
    public var reconstructionProgress: (_ done: Int, _ total: Int) -> Void = { _, _ in }

    /// `cacheDirectory` (usually `MODEL/.lop-cache`) keeps activation statistics and Gram matrices between runs;
    /// nil computes them in memory. Magnitude importance needs no calibration set; the others do.
    public init(model: Model, scope: UnitScope = .language, importance: ImportanceMethod = .lop, calibration: Calibration?,
                cacheDirectory: String? = nil, reconstructionMemory: Int = Reconstruction.defaultMemoryBytes) throws {
        base = model
        self.cacheDirectory = cacheDirectory
        self.reconstructionMemory = reconstructionMemory
        modelHash = model.contentHash
        units = try model.prunableUnits(scope)
        self.importance = importance
        self.calibration = calibration
        if let calibration {
            if let cacheDirectory {
                (statistics, statisticsFromCache) = try ActivationStatistics.cached(model, units: units, calibration: calibration,
                                                                                   modelHash: modelHash, directory: cacheDirectory)
            } else {
                (statistics, statisticsFromCache) = (try ActivationStatistics.collect(model, units: units, calibration: calibration, modelHash: modelHash), false)
            }
        } else {
            guard importance == .magnitude else { throw BudgetError("\(importance.rawValue) importance needs calibration data") }
            (statistics, statisticsFromCache) = (nil, false)
        }
        scores = statistics?.scores(importance, model: model) ?? units.map { ActivationStatistics.magnitude(UnitWeights(model, $0)) }
        nested = try NestedModel(model, units: units, scores: scores)
    }

    /// An allocation method's ratios for a budget, and the integer sizes that meet it.
    public func allocate(_ method: AllocationMethod, budget: Budget, bounds: KeepBounds = KeepBounds(),
                         settings: AllocationSettings = AllocationSettings()) throws -> (proposed: [Double], sizes: [Int]) {
        if method == .ecoflap, zerothOrder?.settings != settings, let calibration {
            zerothOrder = (settings, try Allocation.zerothOrderScores(nested, calibration: calibration, settings: settings))
        }
        let proposed = try Allocation.ratios(method, nested: nested, statistics: statistics, calibration: calibration, budget: budget,
                                             bounds: bounds, settings: settings, unitScores: zerothOrder?.settings == settings ? zerothOrder?.scores : nil)
        return (proposed, try Projection.project(ratios: proposed, units: units, budget: budget, bounds: bounds))
    }

    /// A given strategy's sizes under a budget (checked against the units first).
    public func sizes(for strategy: Strategy, budget: Budget, bounds: KeepBounds = KeepBounds()) throws(BudgetError) -> [Int] {
        try strategy.check(against: units)
        return try Projection.project(ratios: strategy.ratios, units: units, budget: budget, bounds: bounds)
    }

    /// Forward options that evaluate `sizes` on the nested model (no copy), with the re-fitted down-projections
    /// of `reconstruction` when given.
    public func options(sizes: [Int], reconstruction: Reconstruction? = nil) throws -> ForwardOptions {
        var options = nested.options(sizes: sizes)
        if let reconstruction {
            options.ffnDown = try reconstruction.downs(sizes: sizes)
            let vision = try reconstruction.refitted(sizes: sizes, tower: .vision).compactMapValues { r in r.bias.map { (r.weight, $0) } }
            if !vision.isEmpty { options.visionOutput = vision }
        }
        return options
    }

    private var reconstructions: [Double: Reconstruction] = [:]
    /// Units whose Gram matrices were accumulated (not read from the cache) for the reconstruction made.
    public private(set) var gramsComputed = 0
    private let reconstructionLock = NSLock()

    /// The reconstruction `method` asks for: nil for none, else the least-squares one at `ridge`.
    public func reconstruction(_ method: ReconstructionMethod, ridge: Double) throws -> Reconstruction? {
        method == .leastSquares ? try reconstruction(ridge: ridge) : nil
    }

    /// Whether the least-squares reconstruction at `ridge` is already made (its Gram matrices accumulated).
    public func hasReconstruction(ridge: Double) -> Bool {
        reconstructionLock.lock()
        defer { reconstructionLock.unlock() }
        return reconstructions[ridge] != nil
    }

    /// The least-squares reconstruction on this pruner's calibration set (its Gram matrices computed once per ridge).
    public func reconstruction(ridge: Double) throws -> Reconstruction {
        reconstructionLock.lock()
        defer { reconstructionLock.unlock() }
        if let made = reconstructions[ridge] { return made }
        guard let calibration else { throw BudgetError("least-squares reconstruction needs calibration data") }
        // One set of Gram matrices serves every ridge.
        let grams: GramMatrices
        if let shared = reconstructions.values.first?.grams {
            grams = shared
        } else if let cacheDirectory {
            (grams, gramsComputed) = try GramMatrices.cached(nested: nested, calibration: calibration, modelHash: modelHash, directory: cacheDirectory,
                                                             memoryBytes: reconstructionMemory, progress: reconstructionProgress)
        } else {
            grams = try GramMatrices.accumulate(nested: nested, calibration: calibration, memoryBytes: reconstructionMemory)
            gramsComputed = grams.units.indices.filter(grams.has).count
        }
        let made = try Reconstruction(nested: nested, grams: grams, ridge: ridge, memoryBytes: reconstructionMemory)
        reconstructions[ridge] = made
        return made
    }

    public func record(budget: Budget, allocation: String, proposed: [Double], sizes: [Int], pruned: Model,
                       reconstruction: Reconstruction? = nil) -> PruningRecord {
        var record = PruningRecord(budget: budget.description, budgetKind: budget.kind, budgetValue: budget.value, allocation: allocation,
                      units: units.map(\.name), proposedRatios: proposed,
                      ratios: zip(sizes, units).map { Double($0) / Double($1.width) }, sizes: sizes,
                      importance: importance.rawValue,
                      calibrationHash: calibration?.hash, calibrationSamples: calibration?.samples, sourceModelHash: modelHash,
                      keptParameters: Projection.keptParameters(sizes, units: units),
                      prunableParameters: Projection.prunableParameters(units),
                      parameterCount: pruned.parameterCount, sourceParameterCount: base.parameterCount)
        record.reconstruction = reconstruction == nil ? ReconstructionMethod.none : .leastSquares
        record.ridge = reconstruction?.ridge
        return record
    }

    /// The smaller model for `sizes`, with the re-fitted down-projections of `reconstruction` when given.
    public func pruned(sizes: [Int], reconstruction: Reconstruction? = nil) throws -> Model {
        var replacing: [String: Weight] = [:]
        if let reconstruction {
            for (u, unit) in units.enumerated() where reconstruction.refits(u) {
                let refitted = try reconstruction.refitted(unit: u, keep: sizes[u])
                replacing[UnitWeights(nested.model, unit).output.name] = .float(refitted.weight)
                if let bias = refitted.bias, let name = reconstruction.outputBiasName(u) { replacing[name] = .float(bias) }
            }
        }
        return try nested.pruned(sizes: sizes, replacing: replacing)
    }

    /// Slices the model to `sizes` and writes it with its `pruning.json` (temporary folder, then renamed).
    @discardableResult
    public func write(budget: Budget, allocation: String, proposed: [Double], sizes: [Int], to directory: String,
                      dtype: DType = .f32, reconstruction: Reconstruction? = nil) throws -> (model: Model, record: PruningRecord) {
        let pruned = try self.pruned(sizes: sizes, reconstruction: reconstruction)
        let record = record(budget: budget, allocation: allocation, proposed: proposed, sizes: sizes, pruned: pruned, reconstruction: reconstruction)
        // The base's tokenizer and preprocessing travel with it: the pruned model reads inputs as the base does.
        var files = base.folder.map { ModelInputs.sideFileData(in: $0.path) } ?? [:]
        files[PruningRecord.fileName] = try record.encoded()
        try pruned.write(to: directory, dtype: dtype, extraFiles: files)
        return (pruned, record)
    }
}
