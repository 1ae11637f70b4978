import Foundation
import Testing
import Tensor
@testable import Models

/// config.json keys that change the computation are read in both of transformers' forms or refused by path.
@Suite struct ConfigTests {
    static func llama(_ extra: [String: JSON]) -> JSON {
        var members: [String: JSON] = ["model_type": .string("llama"), "vocab_size": .int(32), "hidden_size": .int(16), "intermediate_size": .int(24),
                                       "num_hidden_layers": .int(1), "num_attention_heads": .int(2), "max_position_embeddings": .int(64)]
        for (k, v) in extra { members[k] = v }
        return .object(members)
    }

    static func refusal(_ json: JSON) -> String {
        do { _ = try LlamaConfig(json: json); return "(accepted)" } catch { return error.description }
    }

    @Test func rotarySettingsAreReadFromRopeParametersAndTheOlderKeys() throws {
        // transformers 5 writes rope_parameters; before it, rope_theta and rope_scaling. Both give the same model.
        let v5 = try LlamaConfig(json: Self.llama(["rope_parameters": .object(["rope_theta": .double(100000), "rope_type": .string("default")])]))
        let v4 = try LlamaConfig(json: Self.llama(["rope_theta": .double(100000)]))
        #expect(v5.ropeTheta == 100000 && v5 == v4 && v5.ropeScaling == .none)
        let linear = try LlamaConfig(json: Self.llama(["rope_parameters": .object(["rope_theta": .double(500), "rope_type": .string("linear"), "factor": .double(2)])]))
        #expect(linear.ropeScaling == .linear(factor: 2) && linear.ropeTheta == 500)
        let old = try LlamaConfig(json: Self.llama(["rope_scaling": .object(["type": .string("linear"), "factor": .double(2)]), "rope_theta": .double(500)]))
        #expect(old == linear)
        let llama3: JSON = .object(["rope_type": .string("llama3"), "factor": .double(8), "low_freq_factor": .double(1), "high_freq_factor": .double(4),
                                    "original_max_position_embeddings": .int(16)])
        let c = try LlamaConfig(json: Self.llama(["rope_scaling": llama3]))
        #expect(c.ropeScaling == .llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalPositions: 16))
        // Written back in the older form, which both generations read, and read again to the same config.
        #expect(try LlamaConfig(json: c.json) == c)
    }

    @Test func rotaryFrequenciesFollowTransformersFormulas() {
        let base = Rotary(theta: 10000).frequencies(headDim: 8)
        #expect(base.enumerated().allSatisfy { abs($0.element - 1 / pow(10000, Double(2 * $0.offset) / 8)) < 1e-15 })
        #expect(zip(Rotary(theta: 10000, scaling: .linear(factor: 4)).frequencies(headDim: 8), base).allSatisfy { abs($0 * 4 - $1) < 1e-15 })
        // Llama 3: wavelengths 2π/f = 6.3, 62.8, 628, 6283 against original 16 / high 4 = 4 and 16 / low 1 = 16: the first
        // blends, the rest are divided by the factor.
        let scaled = Rotary(theta: 10000, scaling: .llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalPositions: 16)).frequencies(headDim: 8)
        let smooth = (16 / (2 * Double.pi / base[0]) - 1) / (4 - 1)
        #expect(abs(scaled[0] - ((1 - smooth) * base[0] / 8 + smooth * base[0])) < 1e-15)
        #expect(zip(scaled.dropFirst(), base.dropFirst()).allSatisfy { abs($0 * 8 - $1) < 1e-15 })
    }

    @Test func keysThatChangeTheComputationAreRefusedByPath() {
        #expect(Self.refusal(Self.llama(["rope_parameters": .object(["rope_type": .string("yarn")])])) == "config.json: rope_parameters.rope_type: \"yarn\" is not supported (lop implements default, linear, llama3)")
        #expect(Self.refusal(Self.llama(["rope_parameters": .object(["rope_type": .string("default"), "mrope_section": .array([.int(2)])])])).contains("rope_parameters.mrope_section"))
        #expect(Self.refusal(Self.llama(["rope_theta": .double(10000), "rope_parameters": .object(["rope_theta": .double(100000)])]))
                == "config.json: rope_parameters.rope_theta: 100000.0 disagrees with rope_theta 10000.0")
        #expect(Self.refusal(Self.llama(["rope_parameters": .object(["rope_type": .string("linear")])])) == "config.json: rope_parameters.factor: is missing")
        #expect(Self.refusal(Self.llama(["quantization_config": .object([:])])) == "config.json: quantization_config: is not understood by lop, and it may change what the model computes")
        #expect(Self.refusal(Self.llama(["use_sliding_window": .bool(true)])).contains("use_sliding_window: sliding-window attention is not supported"))
        #expect(Self.refusal(Self.llama(["sliding_window": .int(32)])).contains("sliding_window: 32 is shorter than max_position_embeddings 64"))
        #expect(Self.refusal(Self.llama(["layer_types": .array([.string("sliding_attention")])])).contains("layer_types"))
        #expect(Self.refusal(Self.llama(["torch_dtype": .string("bfloat16"), "bos_token_id": .int(1), "sliding_window": .int(4096), "layer_types": .array([.string("full_attention")])])) == "(accepted)")
    }
}
