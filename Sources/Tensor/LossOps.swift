import Foundation

extension Graph {
    /// Mean cross-entropy of `logits` (`[…, vocabulary]`) against one target id per row; rows whose target is
    /// `ignoreIndex` do not count. A batch with no counted row has loss 0.
    public func crossEntropy(_ logits: Value, targets: [Int], ignoreIndex: Int = -100) -> Value {
        let vocabulary = logits.tensor.lastDimension, rows = logits.tensor.leadingCount
        precondition(targets.count == rows, "crossEntropy: \(targets.count) targets for \(rows) rows")
        var probabilities = logits.tensor
        var total: Double = 0
        var counted = 0
        probabilities.data.withUnsafeMutableBufferPointer { p in
            for r in 0..<rows where targets[r] != ignoreIndex {
                precondition(targets[r] >= 0 && targets[r] < vocabulary, "crossEntropy: target \(targets[r]) outside vocabulary \(vocabulary)")
                let row = p.baseAddress! + r * vocabulary
                var maximum = -Float.infinity
                for j in 0..<vocabulary { maximum = max(maximum, row[j]) }
                var sum: Double = 0
                for j in 0..<vocabulary { sum += Double(exp(row[j] - maximum)) }
                total += log(sum) + Double(maximum) - Double(row[targets[r]])
                softmaxRow(row, count: vocabulary)
                counted += 1
            }
        }
        let loss = counted == 0 ? 0 : Float(total / Double(counted))
        let shape = logits.shape
        let softmaxed = probabilities
        return record(Tensor(scalar: loss), [logits]) { g in
            var d = Tensor(zeros: shape)
            guard counted > 0 else { return [d] }
            let factor = g.scalar / Float(counted)
            for r in 0..<rows where targets[r] != ignoreIndex {
                for j in 0..<vocabulary { d.data[r * vocabulary + j] = softmaxed.data[r * vocabulary + j] * factor }
                d.data[r * vocabulary + targets[r]] -= factor
            }
            return [d]
        }
    }

    /// Mean squared error against a constant target; with `rowWeights` (one per row of the last axis) each row's
    /// squared error counts in proportion to its weight.
    public func meanSquaredError(_ prediction: Value, target: Tensor, rowWeights: [Float]? = nil) -> Value {
        precondition(prediction.shape == target.shape, "meanSquaredError: \(prediction.shape) vs \(target.shape)")
        let width = target.lastDimension, rows = target.leadingCount
        let weights = rowWeights ?? [Float](repeating: 1, count: rows)
        precondition(weights.count == rows && weights.allSatisfy { $0 >= 0 }, "meanSquaredError: need \(rows) non-negative row weights")
        let denominator = max(weights.reduce(0, +), .leastNormalMagnitude) * Float(width)
        var total: Float = 0
        for r in 0..<rows {
            for j in 0..<width {
                let e = prediction.tensor.data[r * width + j] - target.data[r * width + j]
                total += weights[r] * e * e
            }
        }
        let p = prediction.tensor
        return record(Tensor(scalar: total / denominator), [prediction]) { g in
            var d = Tensor(zeros: p.shape)
            for r in 0..<rows {
                for j in 0..<width {
                    d.data[r * width + j] = g.scalar * 2 * weights[r] * (p.data[r * width + j] - target.data[r * width + j]) / denominator
                }
            }
            return [d]
        }
    }
}
