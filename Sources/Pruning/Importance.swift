import Crypto
import Evaluation
import Foundation
import Models
import LopCore
import Tensor

/// How neurons are ranked within a unit (higher = more important, kept first).
public enum ImportanceMethod: String, Codable, Sendable, CaseIterable {
    /// LOP's criterion: each token's hidden activation divided by its L2 norm over neurons; per neuron, the L2
    /// norm over the sample's tokens; averaged over samples.
    case lop
    /// `‖W_up[j]‖ · ‖W_down[:, j]‖` (`fc1`/`fc2` in a vision MLP); needs no data.
    case magnitude
    /// Wanda-sp: `‖W_down[:, j]‖ · ‖h_j‖`, the output weights scaled by the neuron's activation norm.
    case wanda
}

/// The weights of one unit: `input` has a row per neuron (up_proj / fc1), `output` a column per neuron
/// (down_proj / fc2); `all` lists every tensor with its neuron axis (what permuting and slicing touch).
struct UnitWeights {
    let input: Parameter
    let output: Parameter
    let all: [(parameter: Parameter, axis: Int)]

    init(_ model: Model, _ unit: PrunableUnit) {
        guard let (tower, layer) = unit.location else { preconditionFailure("unit \(unit.name) is not lop's") }
        switch (tower, model) {
        case (.language, _):
            let l = model.language.layers[layer]
            (input, output, all) = (l.up, l.down, [(l.gate, 0), (l.up, 0), (l.down, 1)])
        case (.vision, .llava(let m)):
            let l = m.vision.layers[layer]
            (input, output, all) = (l.fc1, l.fc2, [(l.fc1, 0), (l.fc1Bias, 0), (l.fc2, 1)])
        case (.vision, .qwenVL(let m)):
            let b = m.vision.blocks[layer]
            (input, output, all) = (b.up, b.down, [(b.gate, 0), (b.gateBias, 0), (b.up, 0), (b.upBias, 0), (b.down, 1)])
        case (.vision, .llama):
            preconditionFailure("a decoder has no vision unit \(unit.name)")
        }
    }

    static func rowNorms(_ t: Tensor) -> [Float] {
        let columns = t.shape[1]
        return (0..<t.shape[0]).map { r in (0..<columns).reduce(Float(0)) { $0 + t.data[r * columns + $1] * t.data[r * columns + $1] }.squareRoot() }
    }

    static func columnNorms(_ t: Tensor) -> [Float] {
        let (rows, columns) = (t.shape[0], t.shape[1])
        var sums = [Float](repeating: 0, count: columns)
        for r in 0..<rows { for c in 0..<columns { sums[c] += t.data[r * columns + c] * t.data[r * columns + c] } }
        return sums.map { $0.squareRoot() }
    }
}

/// What the FFNs saw on a calibration set, from which every data-driven score is computed: LOP's criterion,
/// each neuron's activation norm, and each input channel's norm (OWL's per-weight outlier scores).
public struct ActivationStatistics: Equatable {
    public let units: [PrunableUnit]
    public let modelHash: String
    public let calibrationHash: String
    /// LOP's criterion per unit and neuron, averaged over samples.
    public let lop: [[Float]]
    /// `‖h_j‖` over every counted token.
    public let hiddenNorms: [[Float]]
    /// `‖x_c‖` over every counted token, per input channel of the unit.
    public let inputNorms: [[Float]]
    public let samples: Int
    public let tokens: Int

    /// One pass over the calibration set with every unit whole, accumulating in Double.
    public static func collect(_ model: Model, units: [PrunableUnit], calibration: Calibration, modelHash: String) throws -> ActivationStatistics {
        let accumulator = Accumulator(units: units, model: model)
        try calibration.observeFFNs(model, units: units) { unit, seen, lengths in accumulator.add(unit: unit, seen: seen, lengths: lengths) }
        return accumulator.statistics(modelHash: modelHash, calibrationHash: calibration.hash)
    }

    final class Accumulator {
        let units: [PrunableUnit]
        var lop: [[Double]], hidden: [[Double]], input: [[Double]], samples: [Int], tokens: [Int]

        init(units: [PrunableUnit], model: Model) {
            self.units = units
            lop = units.map { [Double](repeating: 0, count: $0.width) }
            hidden = lop
            input = units.map { [Double](repeating: 0, count: UnitWeights(model, $0).input.shape[1]) }
            samples = Array(repeating: 0, count: units.count)
            tokens = samples
        }

        /// `seen.hidden` is `[samples, length, width]`; language samples count up to their row's length, vision
        /// samples (images) count every position.
        func add(unit u: Int, seen: FFNObservation, lengths: [Int]?) {
            let width = seen.hidden.lastDimension, channels = seen.input.lastDimension
            let rows = seen.hidden.shape[0], length = seen.hidden.count / (rows * width)
            var sample = [Double](repeating: 0, count: width)
            for r in 0..<rows {
                for j in 0..<width { sample[j] = 0 }
                for t in 0..<(lengths?[r] ?? length) {
                    let base = (r * length + t) * width
                    var norm = 0.0
                    for j in 0..<width {
                        let h = Double(seen.hidden.data[base + j])
                        norm += h * h
                        hidden[u][j] += h * h
                    }
                    if norm > 0 { for j in 0..<width { let h = Double(seen.hidden.data[base + j]); sample[j] += h * h / norm } }
                    let inputBase = (r * length + t) * channels
                    for c in 0..<channels { let x = Double(seen.input.data[inputBase + c]); input[u][c] += x * x }
                    tokens[u] += 1
                }
                for j in 0..<width { lop[u][j] += sample[j].squareRoot() }
                samples[u] += 1
            }
        }

        func statistics(modelHash: String, calibrationHash: String) -> ActivationStatistics {
            ActivationStatistics(units: units, modelHash: modelHash, calibrationHash: calibrationHash,
                                 lop: lop.indices.map { u in lop[u].map { Float($0 / Double(max(samples[u], 1))) } },
                                 hiddenNorms: hidden.map { $0.map { Float($0.squareRoot()) } },
                                 inputNorms: input.map { $0.map { Float($0.squareRoot()) } },
                                 samples: samples.first ?? 0, tokens: tokens.first ?? 0)
        }
    }

    /// Neuron scores of one method (per unit).
    public func scores(_ method: ImportanceMethod, model: Model) -> [[Float]] {
        units.indices.map { u in
            let weights = UnitWeights(model, units[u])
            switch method {
            case .lop: return lop[u]
            case .magnitude:
                return Self.magnitude(weights)
            case .wanda:
                return zip(UnitWeights.columnNorms(weights.output.value), hiddenNorms[u]).map { $0 * $1 }
            }
        }
    }

    /// `‖W_up[j]‖ · ‖W_down[:, j]‖` (or fc1/fc2): the data-free score.
    static func magnitude(_ weights: UnitWeights) -> [Float] {
        zip(UnitWeights.rowNorms(weights.input.value), UnitWeights.columnNorms(weights.output.value)).map { $0 * $1 }
    }

    // MARK: Cache

    /// Statistics for (model, calibration), read from `directory` when a file there matches both hashes and the
    /// units, otherwise computed and written there (temporary name, then renamed).
    public static func cached(_ model: Model, units: [PrunableUnit], calibration: Calibration, modelHash: String,
                              directory: String) throws -> (statistics: ActivationStatistics, fromCache: Bool) {
        let key = sha256Hex("\(modelHash)|\(calibration.hash)|\(units.map(\.name))").prefix(24)
        let path = directory + "/activations-\(key).safetensors"
        if FileManager.default.fileExists(atPath: path), let stored = try? read(path), stored.modelHash == modelHash,
           stored.calibrationHash == calibration.hash, stored.units == units {
            return (stored, true)
        }
        let statistics = try collect(model, units: units, calibration: calibration, modelHash: modelHash)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try statistics.write(to: path)
        return (statistics, false)
    }

    public func write(to path: String) throws {
        var tensors: [String: Tensor] = [:]
        for (u, unit) in units.enumerated() {
            tensors["lop." + unit.name] = Tensor(shape: [unit.width], data: lop[u])
            tensors["hidden." + unit.name] = Tensor(shape: [unit.width], data: hiddenNorms[u])
            tensors["input." + unit.name] = Tensor(shape: [inputNorms[u].count], data: inputNorms[u])
        }
        let unitList = JSON.array(units.map { .object(["name": .string($0.name), "width": .int($0.width), "parameters_per_neuron": .int($0.parametersPerNeuron)]) })
        try SafeTensorsFile.write(tensors, metadata: ["model_hash": modelHash, "calibration_hash": calibrationHash, "units": unitList.serialized(),
                                                      "samples": String(samples), "tokens": String(tokens)], to: path)
    }

    public static func read(_ path: String) throws -> ActivationStatistics {
        let file = try SafeTensorsFile(path: path)
        func fail(_ problem: String) -> BudgetError { BudgetError("\(path): \(problem)") }
        guard let modelHash = file.metadata["model_hash"], let calibrationHash = file.metadata["calibration_hash"],
              let samples = file.metadata["samples"].flatMap({ Int($0) }), let tokens = file.metadata["tokens"].flatMap({ Int($0) }),
              let list = file.metadata["units"], let entries = (try? JSON.parse(list))?.arrayValue else { throw fail("not an activation statistics file") }
        let units = try entries.map { e throws(BudgetError) -> PrunableUnit in
            guard let name = e["name"]?.stringValue, let width = e["width"]?.intValue, let per = e["parameters_per_neuron"]?.intValue, width > 0, per > 0 else {
                throw fail("a unit entry is malformed")
            }
            return PrunableUnit(name: name, width: width, parametersPerNeuron: per)
        }
        func vector(_ name: String, _ count: Int?) throws -> [Float] {
            let t = try file.tensor(name)
            guard t.rank == 1, count.map({ $0 == t.count }) ?? true else { throw fail("tensor \(name) has shape \(t.shape)") }
            return t.data
        }
        return ActivationStatistics(units: units, modelHash: modelHash, calibrationHash: calibrationHash,
                                    lop: try units.map { try vector("lop." + $0.name, $0.width) },
                                    hiddenNorms: try units.map { try vector("hidden." + $0.name, $0.width) },
                                    inputNorms: try units.map { try vector("input." + $0.name, nil) }, samples: samples, tokens: tokens)
    }
}
