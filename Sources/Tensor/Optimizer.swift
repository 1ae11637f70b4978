import Foundation

/// AdamW (Loshchilov & Hutter): Adam moments with weight decay applied to the weights directly.
public final class AdamW {
    public let parameters: [Parameter]
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    private var firstMoments: [[Float]]
    private var secondMoments: [[Float]]
    /// Updates taken so far.
    public private(set) var step = 0

    public init(parameters: [Parameter], beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0.01) {
        self.parameters = parameters
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        firstMoments = parameters.map { [Float](repeating: 0, count: $0.value.count) }
        secondMoments = firstMoments
    }

    /// One update at learning rate `rate` from the parameters' accumulated gradients (missing gradients count as zero).
    public func update(learningRate rate: Float) {
        step += 1
        let correction1 = 1 - pow(beta1, Float(step)), correction2 = 1 - pow(beta2, Float(step))
        for (index, parameter) in parameters.enumerated() {
            let decay = parameter.decays ? weightDecay : 0
            let gradient = parameter.gradient?.data
            parameter.value.data.withUnsafeMutableBufferPointer { w in
                firstMoments[index].withUnsafeMutableBufferPointer { m in
                    secondMoments[index].withUnsafeMutableBufferPointer { v in
                        for i in 0..<w.count {
                            let g = gradient?[i] ?? 0
                            m[i] = beta1 * m[i] + (1 - beta1) * g
                            v[i] = beta2 * v[i] + (1 - beta2) * g * g
                            let update = (m[i] / correction1) / ((v[i] / correction2).squareRoot() + epsilon)
                            w[i] -= rate * (update + decay * w[i])
                        }
                    }
                }
            }
        }
    }

    public func zeroGradients() {
        for parameter in parameters { parameter.zeroGradient() }
    }
}

/// Scales all gradients down so that their joint L2 norm is at most `maxNorm`; returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    var squares: Double = 0
    for parameter in parameters {
        for g in parameter.gradient?.data ?? [] { squares += Double(g) * Double(g) }
    }
    let norm = Float(squares.squareRoot())
    if norm > maxNorm && norm > 0 {
        let factor = maxNorm / norm
        for parameter in parameters where parameter.gradient != nil {
            parameter.gradient!.data.withUnsafeMutableBufferPointer { g in for i in 0..<g.count { g[i] *= factor } }
        }
    }
    return norm
}

/// Linear warm-up to `peak`, then cosine decay to `peak · finalRatio` at `totalSteps`.
public struct WarmupCosineSchedule: Sendable, Equatable {
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var finalRatio: Float

    public init(peak: Float, warmupSteps: Int, totalSteps: Int, finalRatio: Float = 0.1) {
        precondition(totalSteps > 0 && warmupSteps >= 0 && warmupSteps <= totalSteps, "schedule: bad step counts")
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.finalRatio = finalRatio
    }

    /// The learning rate for a 0-based step.
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step + 1) / Float(warmupSteps) }
        let span = max(totalSteps - warmupSteps, 1)
        let progress = min(Float(step - warmupSteps) / Float(span), 1)
        let cosine = 0.5 * (1 + cos(Float.pi * progress))
        return peak * (finalRatio + (1 - finalRatio) * cosine)
    }
}
