import Foundation
import Models
import Tensor

/// Hugging Face folders for runtimes without per-layer FFN widths: every FFN padded to the widest layer's width
/// with zero neurons (a zero gate and up row and a zero down column add SiLU(0)·0 = 0, so outputs are unchanged),
/// written with a plain `intermediate_size`.
public enum HFExport {
    public struct Padded {
        public let config: JSON
        public let weights: [String: Weight]
        /// Neurons added in all, and the parameters they cost.
        public let addedNeurons: Int
        public let addedParameters: Int
    }

    public static func padded(_ model: Model) -> Padded {
        var weights = model.weights
        var added = (neurons: 0, parameters: 0)
        func pad(_ decoder: LlamaModel) -> LlamaConfig {
            var c = decoder.config
            let widest = c.ffnSizes.max() ?? 0
            for (i, layer) in decoder.layers.enumerated() where c.ffnSizes[i] < widest {
                let (width, h) = (c.ffnSizes[i], c.hiddenSize)
                weights[layer.gate.name] = .float(padRows(layer.gate.value, to: widest))
                weights[layer.up.name] = .float(padRows(layer.up.value, to: widest))
                weights[layer.down.name] = .float(padColumns(layer.down.value, to: widest))
                added.neurons += widest - width
                added.parameters += (widest - width) * 3 * h
            }
            c.ffnSizes = Array(repeating: widest, count: c.layers)
            c.intermediateSize = widest
            return c
        }
        switch model {
        case .llama(let m):
            return Padded(config: pad(m).json, weights: weights, addedNeurons: added.neurons, addedParameters: added.parameters)
        case .llava(let m):
            var config = m.config
            config.text = pad(m.language)
            let widest = config.vision.ffnSizes.max() ?? 0
            for (i, layer) in m.vision.layers.enumerated() where config.vision.ffnSizes[i] < widest {
                let (width, h) = (config.vision.ffnSizes[i], config.vision.hiddenSize)
                weights[layer.fc1.name] = .float(padRows(layer.fc1.value, to: widest))
                weights[layer.fc1Bias.name] = .float(Tensor(shape: [widest], data: layer.fc1Bias.value.data + Array(repeating: 0, count: widest - width)))
                weights[layer.fc2.name] = .float(padColumns(layer.fc2.value, to: widest))
                added.neurons += widest - width
                added.parameters += (widest - width) * (2 * h + 1)
            }
            config.vision.ffnSizes = Array(repeating: widest, count: config.vision.layers)
            config.vision.intermediateSize = widest
            return Padded(config: config.json, weights: weights, addedNeurons: added.neurons, addedParameters: added.parameters)
        case .qwenVL(let m):
            // Only the language model's FFNs are pruned in Qwen2.5-VL, so only they need padding.
            var config = m.config
            config.text = pad(m.language)
            return Padded(config: config.json, weights: weights, addedNeurons: added.neurons, addedParameters: added.parameters)
        }
    }

    static func padRows(_ t: Tensor, to rows: Int) -> Tensor {
        Tensor(shape: [rows, t.shape[1]], data: t.data + Array(repeating: 0, count: (rows - t.shape[0]) * t.shape[1]))
    }

    static func padColumns(_ t: Tensor, to columns: Int) -> Tensor {
        let (r, c) = (t.shape[0], t.shape[1])
        var out = [Float](repeating: 0, count: r * columns)
        for i in 0..<r { for j in 0..<c { out[i * columns + j] = t.data[i * c + j] } }
        return Tensor(shape: [r, columns], data: out)
    }
}
