import Crypto
import Foundation
import Models
import LopCore
import Pruning
import Tensor

/// One searched strategy as the predictor learns from it (a row of `lop.samples`, reduced).
public struct PredictorSample: Sendable {
    public let modelHash: String
    public let calibrationHash: String
    public let units: [String]
    /// The budget as searched: samples of one budget identity compete for "best" ("0.5" and "50%" are one
    /// budget; byte budgets at different widths per weight are not).
    public let budget: Budget
    public let keptFraction: Double
    public let strategy: [Double]
    public let loss: Double

    public init(modelHash: String, calibrationHash: String, units: [String], budget: Budget, keptFraction: Double, strategy: [Double], loss: Double) {
        (self.modelHash, self.calibrationHash, self.units, self.budget) = (modelHash, calibrationHash, units, budget)
        (self.keptFraction, self.strategy, self.loss) = (keptFraction, strategy, loss)
    }
}

/// Training settings (seeded; every member of the ensemble gets its own seed).
public struct PredictorSettings: Codable, Sendable, Equatable {
    public var steps = 1500
    public var batch = 64
    public var learningRate: Float = 3e-3
    public var weightDecay: Float = 0.01
    /// Share of the examples held out for early stopping, checked every `validateEvery` steps.
    public var validationFraction = 0.15
    public var validateEvery = 25
    /// Per budget: the best strategy and those whose loss is within this relative margin of it.
    public var margin = 0.02
    public var ensemble = 3
    public var seed = 0
    public var width = 128
    public var heads = 4
    public var layers = 2

    public init() {}

    enum CodingKeys: String, CodingKey {
        case steps, batch, learningRate = "learning_rate", weightDecay = "weight_decay", validationFraction = "validation_fraction"
        case validateEvery = "validate_every", margin, ensemble, seed, width, heads, layers
    }
}

/// What a predictor file says about itself: what it was trained on and how well it fit.
public struct PredictorCard: Codable, Sendable, Equatable {
    public var modelHash: String
    public var calibrationHash: String
    public var units: [PrunableUnit]
    public var shape: NetworkShape
    public var settings: PredictorSettings
    public var seeds: [Int]
    /// Examples trained on (after the margin filter), the samples they came from, and the kept fractions seen.
    public var examples: Int
    public var samples: Int
    public var budgets: [Double]
    /// Per member: validation mean squared error of the ratios at its best step.
    public var validationError: [Double]
    public var lopVersion: String
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case modelHash = "model_hash", calibrationHash = "calibration_hash", units, shape, settings, seeds, examples, samples, budgets
        case validationError = "validation_error", lopVersion = "lop_version", createdAt = "created_at"
    }
}

/// A strategy predicted for a budget, with how much the ensemble agrees and whether the budget was seen.
public struct Prediction: Codable, Sendable {
    public let budget: Budget
    public let ratios: [Double]
    public let sizes: [Int]
    public let keptFraction: Double
    /// Across the ensemble's members: the mean and the largest per-unit standard deviation of the ratios.
    public let spread: Double
    public let maximumSpread: Double
    /// Whether the budget's kept fraction lies within the kept fractions trained on.
    public let inTrainedRange: Bool
    public let trainedRange: [Double]
    public let seconds: Double

    enum CodingKeys: String, CodingKey {
        case budget, ratios, sizes, keptFraction = "kept_fraction", spread, maximumSpread = "maximum_spread"
        case inTrainedRange = "in_trained_range", trainedRange = "trained_range", seconds
    }
}

public struct PredictorError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// LOP's predictor: an ensemble of strategy networks that maps a budget to layer-wise keep ratios in one
/// decoding pass, under the budget exactly.
public final class Predictor {
    public let card: PredictorCard
    public let networks: [StrategyNetwork]

    init(card: PredictorCard, networks: [StrategyNetwork]) {
        self.card = card
        self.networks = networks
    }

    /// One training example: a kept fraction, the strategy to predict for it, and its weight in the loss.
    public typealias Example = (budget: Double, ratios: [Double], weight: Double)

    /// The training examples of one model and calibration set: per budget, its best strategy and those within the
    /// margin, weighted from 1 (best) down to 0.1 (at the margin), keyed by the kept fraction actually reached.
    public static func examples(_ samples: [PredictorSample], margin: Double) -> [Example] {
        var out: [(Double, [Double], Double)] = []
        for (_, group) in Dictionary(grouping: samples, by: \.budget.identity).sorted(by: { $0.key < $1.key }) {
            let best = group.map(\.loss).min()!
            for s in group.sorted(by: { ($0.loss, $0.keptFraction) < ($1.loss, $1.keptFraction) }) where s.loss <= best * (1 + margin) {
                let weight = margin > 0 ? max(0.1, 1 - (s.loss - best) / (margin * best)) : 1
                out.append((s.keptFraction, s.strategy, weight))
            }
        }
        return out
    }

    /// Trains the ensemble on samples of one model (by hash), calibration set and unit list; any other sample is an error.
    public static func train(samples: [PredictorSample], units: [PrunableUnit], bounds: KeepBounds = KeepBounds(),
                             settings: PredictorSettings = PredictorSettings(), log: (String) -> Void = { _ in }) throws -> Predictor {
        guard let first = samples.first else { throw PredictorError("no samples to train on") }
        let names = units.map(\.name)
        if let other = samples.first(where: { $0.modelHash != first.modelHash || $0.calibrationHash != first.calibrationHash || $0.units != names }) {
            throw PredictorError("samples of another model, calibration set or unit list are mixed in (model \(other.modelHash.prefix(12)), calibration \(other.calibrationHash.prefix(12)))")
        }
        let data = examples(samples, margin: settings.margin)
        guard data.count >= 2 else { throw PredictorError("\(data.count) training example(s) after the margin filter; at least 2 are needed") }
        let shape = NetworkShape(units: units.count, settings: settings, bounds: bounds)
        var networks: [StrategyNetwork] = []
        var errors: [Double] = []
        let seeds = (0..<settings.ensemble).map { settings.seed + $0 }
        for seed in seeds {
            let (network, error) = trainMember(data, shape: shape, settings: settings, seed: seed, log: log)
            networks.append(network)
            errors.append(error)
        }
        let card = PredictorCard(modelHash: first.modelHash, calibrationHash: first.calibrationHash, units: units, shape: shape, settings: settings,
                                 seeds: seeds, examples: data.count, samples: samples.count, budgets: Array(Set(data.map(\.budget))).sorted(),
                                 validationError: errors, lopVersion: LopVersion.current, createdAt: ISO8601DateFormatter().string(from: Date()))
        return Predictor(card: card, networks: networks)
    }

    static func trainMember(_ data: [Example], shape: NetworkShape, settings: PredictorSettings,
                            seed: Int, log: (String) -> Void) -> (StrategyNetwork, Double) {
        let network = StrategyNetwork(shape: shape, seed: UInt64(seed) &* 7919 &+ 17)
        return (network, fit(network, data, settings: settings, seed: seed, log: log).validationError)
    }

    /// How one fit went: weighted MSE of the ratios on the training and validation examples, before training
    /// and at the step kept (the best validation error).
    public struct Fit: Sendable {
        public let initialTrainingError, trainingError, validationError: Double
    }

    /// Trains any ratio model on the examples with the predictor's recipe: a seeded validation split, AdamW with
    /// warm-up and cosine decay, gradient clipping, and the weights of the best validation step kept.
    static func fit(_ model: some RatioModel, _ data: [Example], settings: PredictorSettings, seed: Int, log: (String) -> Void) -> Fit {
        var generator = SeededGenerator(seed: UInt64(seed) &+ 4242)
        let order = Array(data.indices).shuffled(using: &generator)
        let held = min(max(1, Int((Double(data.count) * settings.validationFraction).rounded())), data.count - 1)
        let (validation, training) = (Array(order.prefix(held)), Array(order.dropFirst(held)))
        func loss(_ g: Graph, _ indices: [Int]) -> Value {
            let targets = Tensor(shape: [indices.count, data[0].ratios.count], data: indices.flatMap { data[$0].ratios.map(Float.init) })
            return g.meanSquaredError(model.predictions(g, budgets: indices.map { data[$0].budget }, ratios: indices.map { data[$0].ratios }),
                                      target: targets, rowWeights: indices.map { Float(data[$0].weight) })
        }
        func error(_ indices: [Int]) -> Double { Double(loss(Graph(recording: false), indices).tensor.scalar) }
        let initialTrainingError = error(training)
        let optimizer = AdamW(parameters: model.parameters, weightDecay: settings.weightDecay)
        let schedule = WarmupCosineSchedule(peak: settings.learningRate, warmupSteps: min(50, settings.steps / 10), totalSteps: settings.steps)
        var best = (error: error(validation), weights: model.parameters.map(\.value))
        for step in 0..<settings.steps {
            let picked = (0..<min(settings.batch, training.count)).map { _ in training[Int.random(in: 0..<training.count, using: &generator)] }
            let g = Graph(recording: true)
            g.backward(loss(g, picked))
            _ = clipGradientNorm(model.parameters, maxNorm: 1)
            optimizer.update(learningRate: schedule.rate(at: step))
            optimizer.zeroGradients()
            if (step + 1) % settings.validateEvery == 0 || step + 1 == settings.steps {
                let current = error(validation)
                if current < best.error { best = (current, model.parameters.map(\.value)) }
                if (step + 1) % (settings.validateEvery * 20) == 0 { log(String(format: "seed %d step %d validation MSE %.6f (best %.6f)", seed, step + 1, current, best.error)) }
            }
        }
        for (parameter, value) in zip(model.parameters, best.weights) { parameter.value = value }
        return Fit(initialTrainingError: initialTrainingError, trainingError: error(training), validationError: best.error)
    }

    /// Refuses a model whose content hash or unit list is not the one trained on.
    public func check(modelHash: String, units: [PrunableUnit]) throws(PredictorError) {
        guard modelHash == card.modelHash else {
            throw PredictorError("the predictor was trained for model \(card.modelHash.prefix(16))…, not \(modelHash.prefix(16))…")
        }
        guard units == card.units else {
            throw PredictorError("the predictor was trained on units \(card.units.map(\.name).joined(separator: ", ")); this model has \(units.map(\.name).joined(separator: ", "))")
        }
    }

    /// The strategy for a budget: each member decodes unit by unit, every prediction clamped so that the rest of the
    /// budget stays reachable within the bounds; the members' mean goes through the exact projection.
    public func predict(_ budget: Budget, bounds: KeepBounds? = nil) throws -> Prediction {
        let start = Date()
        let units = card.units
        let bounds = bounds ?? KeepBounds(minimumRatio: card.shape.minimumRatio, maximumRatio: card.shape.maximumRatio)
        let fraction = try budget.fraction(of: units)
        let weights = units.map { Double($0.width * $0.parametersPerNeuron) }
        let total = weights.reduce(0, +)
        let target = fraction * total
        let (low, high) = (bounds.minimumRatio, bounds.maximumRatio)
        guard target >= low * total - 1e-9 else { throw PredictorError("budget \(budget) keeps less than the bounds allow (\(low))") }
        let members = networks.map { network in
            network.decode(budget: fraction) { i, ratio, decoded in
                let used = zip(decoded, weights).reduce(0) { $0 + $1.0 * $1.1 }
                let rest = weights[(i + 1)...].reduce(0, +)
                let lower = max(low, (target - used - high * rest) / weights[i]), upper = min(high, (target - used - low * rest) / weights[i])
                return min(max(ratio, lower), max(lower, upper))
            }
        }
        let mean = units.indices.map { i in members.map { $0[i] }.reduce(0, +) / Double(members.count) }
        let deviations = units.indices.map { i in (members.map { ($0[i] - mean[i]) * ($0[i] - mean[i]) }.reduce(0, +) / Double(members.count)).squareRoot() }
        let sizes = try Projection.project(ratios: mean, units: units, budget: budget, bounds: bounds)
        let range = [card.budgets.first ?? 0, card.budgets.last ?? 0]
        return Prediction(budget: budget, ratios: zip(sizes, units).map { Double($0) / Double($1.width) }, sizes: sizes,
                          keptFraction: Projection.keptFraction(sizes, units: units),
                          spread: deviations.reduce(0, +) / Double(deviations.count), maximumSpread: deviations.max() ?? 0,
                          inTrainedRange: fraction >= range[0] - 1e-9 && fraction <= range[1] + 1e-9, trainedRange: range,
                          seconds: Date().timeIntervalSince(start))
    }

    // MARK: Files

    /// The card's path beside a predictor file: `p.safetensors` → `p.json`.
    public static func cardPath(_ path: String) -> String {
        (path.hasSuffix(".safetensors") ? String(path.dropLast(".safetensors".count)) : path) + ".json"
    }

    /// Writes the weights (one safetensors file, every member under `member.K.`) and the JSON card beside it;
    /// the weights record the card's SHA-256 so a mismatched pair is refused on load.
    public func save(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let cardData = try encoder.encode(card) + Data("\n".utf8)
        var tensors: [String: Tensor] = [:]
        for (k, network) in networks.enumerated() {
            for p in network.parameters { tensors["member.\(k).\(p.name)"] = p.value }
        }
        try SafeTensorsFile.write(tensors, metadata: ["format": "lop-predictor", "card_sha256": Self.digest(cardData)], to: path)
        try AtomicFile.write(cardData, to: Self.cardPath(path))
    }

    public static func load(_ path: String) throws -> Predictor {
        let cardPath = cardPath(path)
        guard let cardData = FileManager.default.contents(atPath: cardPath) else { throw PredictorError("\(cardPath): the predictor's card is missing") }
        let card: PredictorCard
        do { card = try JSONDecoder().decode(PredictorCard.self, from: cardData) } catch {
            throw PredictorError("\(cardPath): not a predictor card (\(error))")
        }
        let file = try SafeTensorsFile(path: path)
        guard file.metadata["format"] == "lop-predictor" else { throw PredictorError("\(path) is not a lop predictor") }
        guard file.metadata["card_sha256"] == digest(cardData) else { throw PredictorError("\(cardPath) does not belong to \(path) (its SHA-256 differs)") }
        guard card.shape.units == card.units.count, card.seeds.count >= 1 else { throw PredictorError("\(cardPath): inconsistent card") }
        let networks = try card.seeds.indices.map { k in
            let network = StrategyNetwork(shape: card.shape, seed: 0)
            for p in network.parameters {
                let t = try file.tensor("member.\(k).\(p.name)")
                guard t.shape == p.value.shape else { throw PredictorError("\(path): member.\(k).\(p.name) is \(t.shape), expected \(p.value.shape)") }
                p.value = t
            }
            return network
        }
        return Predictor(card: card, networks: networks)
    }

    static func digest(_ data: Data) -> String { sha256Hex(data) }
}

extension PredictorError: LopError {
    public var exitCode: Int32 { ExitStatus.dataError }
}
