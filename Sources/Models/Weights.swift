import Foundation
import Tensor

/// What a weight is for, so fresh models can be initialised the way each kind of weight needs.
public enum WeightRole: Sendable {
    case matrix, embedding, normScale, bias
}

/// Where a model's weights come from: a checkpoint (shapes checked against the config) or fresh initialisation.
public protocol WeightSource {
    func tensor(_ name: String, shape: [Int], role: WeightRole) throws -> Tensor
    /// Whether the source holds this tensor (optional weights such as biases or `lm_head` are looked up by it).
    func contains(_ name: String) -> Bool
}

extension Checkpoint: WeightSource {
    public func tensor(_ name: String, shape: [Int], role: WeightRole) throws -> Tensor {
        guard contains(name) else { throw CheckpointError(path: directory, problem: "tensor \"\(name)\" is missing") }
        let t = try tensor(name)
        guard t.shape == shape else {
            throw CheckpointError(path: directory, problem: "tensor \"\(name)\" has shape \(t.shape); config.json implies \(shape)")
        }
        return t
    }
}

/// Tensors held in memory (a model being copied, or a test's hand-made weights).
public struct TensorSource: WeightSource {
    public let tensors: [String: Tensor]
    public init(_ tensors: [String: Tensor]) { self.tensors = tensors }

    public func contains(_ name: String) -> Bool { tensors[name] != nil }

    public func tensor(_ name: String, shape: [Int], role: WeightRole) throws -> Tensor {
        guard let t = tensors[name] else { throw CheckpointError(path: "(memory)", problem: "tensor \"\(name)\" is missing") }
        guard t.shape == shape else { throw CheckpointError(path: "(memory)", problem: "tensor \"\(name)\" has shape \(t.shape), expected \(shape)") }
        return t
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

    public func tensor(_ name: String, shape: [Int], role: WeightRole) throws -> Tensor {
        switch role {
        case .normScale: return Tensor(repeating: 1, shape: shape)
        case .bias: return Tensor(zeros: shape)
        case .embedding: return .normal(shape, std: 0.02, generator: &generator)
        case .matrix:
            let residual = name.hasSuffix("o_proj.weight") || name.hasSuffix("down_proj.weight") || name.hasSuffix("out_proj.weight") || name.hasSuffix("fc2.weight")
            return .normal(shape, std: 0.02 * (residual ? residualScale : 1), generator: &generator)
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

    mutating func take(_ name: String, _ shape: [Int], _ role: WeightRole) throws -> Parameter {
        let full = prefix + name
        let parameter = Parameter(full, try source.tensor(full, shape: shape, role: role), decays: role == .matrix || role == .embedding)
        loaded.append(parameter)
        return parameter
    }

    mutating func optional(_ name: String, _ shape: [Int], _ role: WeightRole, when present: Bool) throws -> Parameter? {
        present ? try take(name, shape, role) : nil
    }
}
