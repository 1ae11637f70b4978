import Foundation
import Models
import Tensor
import TestSupport
import Testing

/// The engine as a user meets it: the BLAS kernel lop runs, and the memory `lop eval` takes at a size where
/// widening the weights to Float would show.
@Suite struct EngineCLITests {
    var lop: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lop").path
    }
    let root = TestDatabase.repositoryRoot
    let directory = NSTemporaryDirectory() + "lop-cli-engine-\(UUID().uuidString)"

    /// `lop doctor --json`'s blas object, run without the caller's OPENBLAS_CORETYPE (env -u), with `extra` set.
    func kernel(_ extra: [String] = []) throws -> [String: Any] {
        let argv = ["/usr/bin/env", "-u", "OPENBLAS_CORETYPE", "-u", "LOP_BLAS_CHOICE", "-u", "LOP_BLAS_FAULT"] + extra + [lop, "doctor", "--json"]
        let run = try TestProcess.run(argv, environment: ["LOP_CONFIG": root + "/Config/lop.yaml", "LOP_DATABASE_URL": "host=/nonexistent dbname=none connect_timeout=1"],
                                      separateStandardError: true)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any], "\(run.output)")
        return try #require(object["blas"] as? [String: Any])
    }

    @Test(.enabled(if: BLASKernel.cpuLevel >= .avx2, "needs a CPU with AVX2"))
    func anAVX2CPURunsAnAVX2KernelEvenWhenTheLibraryFallsBack() throws {
        let plain = try kernel()
        #expect(BLASKernel.level(ofCore: plain["core"] as? String ?? "") >= .avx2, "\(plain)")
        // The library made to choose its SSE3 kernel: lop re-executes with the CPU's core and checks it.
        let fallback = try kernel(["LOP_BLAS_FAULT=fallback"])
        #expect(fallback["library_core"] as? String == "Prescott", "\(fallback)")
        #expect(fallback["chosen_by"] as? String == "lop" && fallback["check_passed"] as? Bool == true, "\(fallback)")
        #expect(BLASKernel.level(ofCore: fallback["core"] as? String ?? "") >= .avx2, "\(fallback)")
    }

    @Test func aFailedNumericCheckKeepsTheLibrarysChoiceAndTheUsersSettingIsKept() throws {
        let rejected = try kernel(["LOP_BLAS_FAULT=fallback,wrong-result"])
        #expect(rejected["core"] as? String == "Prescott" && rejected["check_passed"] as? Bool == false, "\(rejected)")
        #expect((rejected["note"] as? String ?? "").contains("failed its numeric check"), "\(rejected)")
        let user = try kernel(["OPENBLAS_CORETYPE=Prescott"])
        #expect(user["core"] as? String == "Prescott" && user["chosen_by"] as? String == "user", "\(user)")
    }

    /// A BF16 checkpoint of about 420 MB: `lop eval`'s peak RSS stays under the stored size plus one panel of
    /// Float scratch plus the batch's activations plus the runtime. Widening to Float (the old engine) needs
    /// twice the weights' bytes, more than the bound.
    @Test func evaluationPeakMemoryStaysNearTheStoredSize() throws {
        let config = LlamaConfig(vocabularySize: 16000, hiddenSize: 1024, intermediateSize: 2816, layers: 16, heads: 16, kvHeads: 4)
        let model = directory + "/model", tokens = directory + "/tokens.bin"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = try RandomCheckpoint.write(config, dtype: .bf16, seed: 5, to: model)
        let (windows, context) = (4, 128)
        try RandomCheckpoint.writeTokens(count: windows * context + 1, vocabulary: config.vocabularySize, seed: 6, to: tokens)
        let run = try TestProcess.run([lop, "eval", model, "--data", tokens, "--context", String(context), "--json"],
                                      environment: ["LOP_CONFIG": root + "/Config/lop.yaml"], separateStandardError: true)
        #expect(run.status == 0, "\(run.output)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
        let peak = try #require(result["peak_rss_bytes"] as? Int)
        // One panel: the model's largest matrix (lm_head, 65 MB) widened, or the panel limit if smaller.
        let scratch = min(StoredMatrix.panelBytes, config.vocabularySize * config.hiddenSize * 4)
        let tokensInBatch = windows * context
        // Logits and their softmax, and half a dozen FFN-width activations of the batch.
        let activations = 2 * tokensInBatch * config.vocabularySize * 4 + 6 * tokensInBatch * config.intermediateSize * 4
        let runtime = 100 << 20  // the Swift runtime, Foundation, OpenBLAS's thread buffers
        let bound = bytes + scratch + activations + runtime
        #expect(peak < bound, "peak RSS \(peak >> 20) MiB; bound \(bound >> 20) MiB (weights \(bytes >> 20) MiB)")
        // The bound (697 MB) is below twice the weights' bytes (861 MB): an engine that widens the weights to Float
        // peaks at 1,011 MB here and fails (checked by switching stored loading off).
        #expect(result["weight_bytes"] as? Int ?? 0 < bytes + bytes / 100)
    }
}
