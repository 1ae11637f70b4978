import Foundation
import Tensor

/// What a weight is for, so fresh models can be initialised the way each kind of weight needs.
public enum WeightRole: Sendable {
    case matrix, embedding, normScale, bias
}

/// Where a model's weights come from: a checkpoint (shapes checked against the config) or fresh initialisation.
public protocol WeightSource {
    /// The named weight. With `keepStored`, a source that holds the weight in a stored type (a checkpoint's
    /// F16/BF16/F32 matrix) returns it so; otherwise it is widened to Float.
    func weight(_ name: String, shape: [Int], role: WeightRole, keepStored: Bool) throws -> Weight
    /// Whether the source holds this tensor (optional weights such as biases or `lm_head` are looked up by it).
    func contains(_ name: String) -> Bool
    /// The element type the source stores the tensor in (nil: made in memory).
    func dtype(_ name: String) -> DType?
}

extension WeightSource {
    public func dtype(_ name: String) -> DType? { nil }
}

extension Checkpoint: WeightSource {
    public func weight(_ name: String, shape: [Int], role: WeightRole, keepStored: Bool) throws -> Weight {
        guard let stored = self.shape(name) else { throw CheckpointError(path: directory, problem: "tensor \"\(name)\" is missing") }
        guard stored == shape else {
            throw CheckpointError(path: directory, problem: "tensor \"\(name)\" has shape \(stored); config.json implies \(shape)")
        }
        let keep = keepStored && shape.count == 2 && shape.reduce(1, *) >= storedMinimumElements
        return keep ? .stored(try self.stored(name)) : .float(try tensor(name))
    }
}

/// Weights held in memory (a model being copied, permuted or sliced, or a test's hand-made weights).
public struct TensorSource: WeightSource {
    public let weights: [String: Weight]
    public init(_ tensors: [String: Tensor]) { weights = tensors.mapValues { Weight.float($0) } }
    public init(weights: [String: Weight]) { self.weights = weights }

    public func contains(_ name: String) -> Bool { weights[name] != nil }
    public func dtype(_ name: String) -> DType? { weights[name]?.storedType }

    public func weight(_ name: String, shape: [Int], role: WeightRole, keepStored: Bool) throws -> Weight {
        guard let w = weights[name] else { throw CheckpointError(path: "(memory)", problem: "tensor \"\(name)\" is missing") }
        guard w.shape == shape else { throw CheckpointError(path: "(memory)", problem: "tensor \"\(name)\" has shape \(w.shape), expected \(shape)") }
        if case .stored(let m) = w, !keepStored { return .float(m.widened()) }
        return w
    }
}

/// Fresh weights for training from scratch, seeded: matrices ~ N(0, 0.02) (GPT-2/Llama practice, with output
/// projections scaled by 1/√(2·layers)), norm scales 1, biases 0. Every optional weight exists.
public final class RandomInitialization: WeightSource {
    private var generator: SeededGenerator
    private let residualScale: Float

    public init(seed: UInt64, layers: Int) {
        generator = SeededGenerator(seed: seed)
        residualScale = 1 / Float(2 * max(layers, 1)).squareRoot()
    }

    public func contains(_ name: String) -> Bool { true }

    public func weight(_ name: String, shape: [Int], role: WeightRole, keepStored: Bool) throws -> Weight {
        switch role {
        case .normScale: return .float(Tensor(repeating: 1, shape: shape))
        case .bias: return .float(Tensor(zeros: shape))
        case .embedding: return .float(.normal(shape, std: 0.02, generator: &generator))
        case .matrix:
            let residual = name.hasSuffix("o_proj.weight") || name.hasSuffix("down_proj.weight") || name.hasSuffix("out_proj.weight") || name.hasSuffix("fc2.weight")
            return .float(.normal(shape, std: 0.02 * (residual ? residualScale : 1), generator: &generator))
        }
    }
}

/// Reads named weights into parameters and remembers them in order, for optimisers and for writing.
struct WeightReader {
    let source: any WeightSource
    let prefix: String
    private(set) var loaded: [Parameter] = []

    init(_ source: any WeightSource, prefix: String) {
        self.source = source
        self.prefix = prefix
    }

    /// `stored`: the model reads this weight only through products or row lookups, so it may stay in the type its
    /// file stores; every other weight is widened to Float.
    mutating func take(_ name: String, _ shape: [Int], _ role: WeightRole, stored: Bool = false) throws -> Parameter {
        let full = prefix + name
        let weight = try source.weight(full, shape: shape, role: role, keepStored: stored)
        let parameter = Parameter(full, weight, decays: role == .matrix || role == .embedding, sourceType: source.dtype(full))
        loaded.append(parameter)
        return parameter
    }

    mutating func optional(_ name: String, _ shape: [Int], _ role: WeightRole, when present: Bool) throws -> Parameter? {
        present ? try take(name, shape, role) : nil
    }
}
