import Synchronization

/// How a weight is held: as Float (trainable) or in its stored type (read-only; products widen panels of it).
public enum Weight: @unchecked Sendable {
    case float(Tensor)
    case stored(StoredMatrix)

    public var shape: [Int] {
        switch self {
        case .float(let t): return t.shape
        case .stored(let m): return m.shape
        }
    }

    public var count: Int { shape.reduce(1, *) }

    /// The elements as Float (a copy for stored weights).
    public var widened: Tensor {
        switch self {
        case .float(let t): return t
        case .stored(let m): return m.widened()
        }
    }

    /// The stored element type, for a stored weight.
    public var storedType: DType? {
        if case .stored(let m) = self { return m.dtype }
        return nil
    }

    /// Bytes the weight occupies in memory.
    public var bytes: Int {
        switch self {
        case .float(let t): return t.count * 4
        case .stored(let m): return m.count * m.dtype.byteSize
        }
    }
}

/// A model weight with its accumulated gradient.
public final class Parameter {
    public let name: String
    /// Float, or kept in the type its file stores; `value` widens a stored weight for good when written to.
    public var weight: Weight
    /// Sum of the gradients of every `backward` since the last `zeroGradient` (nil until one reaches it).
    public var gradient: Tensor?
    /// Whether AdamW's weight decay applies (matrices yes; norms' scales and biases usually not).
    public var decays: Bool
    /// The element type the weight's file stores it in (F32 for a weight made in memory), whether or not it is
    /// held in that type: what a pruned copy is written in by default.
    public let sourceType: DType

    public convenience init(_ name: String, _ value: Tensor, decays: Bool? = nil) {
        self.init(name, .float(value), decays: decays)
    }

    public init(_ name: String, _ weight: Weight, decays: Bool? = nil, sourceType: DType? = nil) {
        self.name = name
        self.weight = weight
        self.decays = decays ?? (weight.shape.count >= 2)
        self.sourceType = sourceType ?? (weight.storedType ?? .f32)
    }

    public var shape: [Int] { weight.shape }

    /// The Float elements. Reading a stored weight widens a copy; writing (training, perturbing) replaces the
    /// stored form by Float.
    public var value: Tensor {
        get { weight.widened }
        set { weight = .float(newValue) }
        _modify {
            var tensor = weight.widened
            weight = .float(Tensor(zeros: [0]))  // drops the old reference, so the yielded tensor is not copied on write
            defer { weight = .float(tensor) }
            yield &tensor
        }
    }

    /// The stored form, or nil for a Float weight.
    public var stored: StoredMatrix? {
        if case .stored(let m) = weight { return m }
        return nil
    }

    /// Makes the weight Float (once) so gradients and updates can reach it.
    public func makeTrainable() {
        if case .stored(let m) = weight { weight = .float(m.widened()) }
    }

    public func zeroGradient() { gradient = nil }
}

/// A tensor produced inside a `Graph`, remembering (when recording) which tape entry made it.
public struct Value {
    public let tensor: Tensor
    /// Index of the tape entry that computes the gradient, nil for constants and in no-grad mode.
    let node: Int?
    public var shape: [Int] { tensor.shape }
}

/// The tape of reverse-mode autodiff.
///
/// Ops are methods of a graph. A recording graph keeps, for each op whose inputs need gradients, a pullback
/// that maps the output's gradient to its inputs' gradients; `backward` replays them in reverse and adds the
/// results into the parameters' `gradient`. A graph made with `recording: false` (inference) records nothing
/// and allocates no gradient storage.
public final class Graph {
    public let isRecording: Bool
    private var nodes: [Node] = []

    struct Node {
        let inputs: [Int]
        let pullback: ((Tensor) -> [Tensor?])?
        let parameter: Parameter?
    }

    public init(recording: Bool = true) {
        isRecording = recording
    }

    /// Tape entries recorded so far (0 in no-grad mode).
    public var recordedCount: Int { nodes.count }

    /// A value that gradients do not flow into (data, targets, masks).
    public func constant(_ tensor: Tensor) -> Value {
        Value(tensor: tensor, node: nil)
    }

    /// A parameter's current value; when recording, gradients flow back into `parameter.gradient`.
    public func parameter(_ parameter: Parameter) -> Value {
        guard isRecording else { return Value(tensor: parameter.value, node: nil) }
        parameter.makeTrainable()
        nodes.append(Node(inputs: [], pullback: nil, parameter: parameter))
        return Value(tensor: parameter.value, node: nodes.count - 1)
    }

    /// Records an op's output. `pullback` receives the output's gradient and returns one gradient (or nil) per
    /// input, in order; it is only kept if some input needs a gradient.
    func record(_ output: Tensor, _ inputs: [Value], pullback: @escaping (Tensor) -> [Tensor?]) -> Value {
        guard isRecording, inputs.contains(where: { $0.node != nil }) else { return Value(tensor: output, node: nil) }
        nodes.append(Node(inputs: inputs.map { $0.node ?? -1 }, pullback: pullback, parameter: nil))
        return Value(tensor: output, node: nodes.count - 1)
    }

    /// Back-propagates from a scalar and adds gradients into every parameter it reached.
    public func backward(_ loss: Value) {
        precondition(isRecording, "backward needs a recording graph")
        precondition(loss.tensor.count == 1, "backward starts from a scalar, got shape \(loss.shape)")
        guard let root = loss.node else { return }
        var gradients = [Tensor?](repeating: nil, count: nodes.count)
        gradients[root] = Tensor(repeating: 1, shape: loss.shape)
        for index in stride(from: root, through: 0, by: -1) {
            guard let gradient = gradients[index] else { continue }
            gradients[index] = nil
            let node = nodes[index]
            if let parameter = node.parameter {
                if parameter.gradient == nil {
                    GradientStatistics.allocatedBytes.add(gradient.count * 4, ordering: .relaxed)
                    parameter.gradient = gradient
                } else {
                    parameter.gradient!.accumulate(gradient)
                }
                continue
            }
            guard let pullback = node.pullback else { continue }
            let inputGradients = pullback(gradient)
            for (input, inputGradient) in zip(node.inputs, inputGradients) where input >= 0 {
                guard let inputGradient else { continue }
                GradientStatistics.allocatedBytes.add(inputGradient.count * 4, ordering: .relaxed)
                if gradients[input] == nil { gradients[input] = inputGradient } else { gradients[input]!.accumulate(inputGradient) }
            }
        }
        nodes.removeAll(keepingCapacity: true)
    }
}

/// Bytes of gradient tensors created by `backward`, for the test that no-grad inference creates none.
public enum GradientStatistics {
    public static let allocatedBytes = Atomic<Int>(0)
}

extension Tensor {
    /// self += other (same shape).
    mutating func accumulate(_ other: Tensor) {
        precondition(shape == other.shape, "gradient shape \(other.shape) does not match \(shape)")
        data.withUnsafeMutableBufferPointer { d in
            other.data.withUnsafeBufferPointer { o in
                for i in 0..<d.count { d[i] += o[i] }
            }
        }
    }
}
