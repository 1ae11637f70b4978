import Foundation
import TestSupport
import Testing

/// `lop prune`, `eval` and `compare` run as a user runs them, on the committed tiny-llama.
@Suite struct PruningCLITests {
    var lop: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lop").path
    }
    let root = TestDatabase.repositoryRoot
    let directory = NSTemporaryDirectory() + "lop-cli-pruning-\(UUID().uuidString)"
    var environment: [String: String] { ["LOP_CONFIG": root + "/Config/lop.yaml", "LOP_PRUNING_CALIBRATION_SAMPLES": "4"] }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test func pruneEvaluateCompare() throws {
        let model = root + "/Fixtures/tiny-llama", heldOut = model + "/heldout.bin", out = directory + "/half"
        let copy = directory + "/model"
        // Work on a copy, so the activation cache is not written into the repository.
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: model, toPath: copy)
        let pruned = try TestProcess.run([lop, "prune", copy, "--calibration", heldOut, "--budget", "50%", "--strategy", "owl", "--out", out, "--dtype", "f16", "--json"],
                                         environment: environment, separateStandardError: true)
        #expect(pruned.status == 0, "\(pruned.output)")
        let record = try json(pruned.output)
        #expect(record["allocation"] as? String == "owl" && record["importance"] as? String == "lop")
        let kept = try #require(record["kept_parameters"] as? Int), prunable = try #require(record["prunable_parameters"] as? Int)
        #expect(kept <= prunable / 2 && kept > prunable / 2 - 384)
        // pruning.json on disk says the same, and the checkpoint really is smaller.
        let stored = try json(String(contentsOfFile: out + "/pruning.json", encoding: .utf8))
        #expect(stored["sizes"] as? [Int] == record["sizes"] as? [Int])
        let size = { (path: String) in (try FileManager.default.attributesOfItem(atPath: path + "/model.safetensors")[.size] as? Int) ?? 0 }
        #expect(try size(out) < size(copy) - prunable / 2 * 2 + 4096)  // both F16: half the FFN weights' bytes are gone
        #expect(FileManager.default.fileExists(atPath: copy + "/.lop-cache"))

        let original = try TestProcess.run([lop, "eval", copy, "--data", heldOut, "--json"], environment: environment, separateStandardError: true)
        let half = try TestProcess.run([lop, "eval", out, "--data", heldOut, "--json"], environment: environment, separateStandardError: true)
        #expect(original.status == 0 && half.status == 0)
        let (lossBefore, lossAfter) = (try json(original.output)["loss"] as? Double ?? .nan, try json(half.output)["loss"] as? Double ?? .nan)
        #expect(lossAfter > lossBefore && lossAfter < lossBefore + 2, "\(lossBefore) → \(lossAfter)")

        let report = directory + "/report"
        let compared = try TestProcess.run([lop, "compare", copy, "--calibration", heldOut, "--data", heldOut, "--budgets", "0.4,0.8",
                                            "--strategies", "uniform,owl", "--report", report], environment: environment, separateStandardError: true)
        #expect(compared.status == 0, "\(compared.output)")
        #expect(compared.output.contains("| 0.4 |") && compared.output.contains("| 0.8 |"))
        let document = try json(String(contentsOfFile: report + "/report.json", encoding: .utf8))
        #expect((document["entries"] as? [Any])?.count == 4)
        let html = try String(contentsOfFile: report + "/report.html", encoding: .utf8)
        #expect(html.components(separatedBy: "<svg").count - 1 == 3)  // loss against budget, and ratios at each budget
        // Re-fitted by default: the columns are the strategies' +ls forms.
        #expect(html.contains("<polyline") && html.contains(">owl+ls</text>"))
    }

    /// Without --dtype a pruned copy is written in the type the base stores (F16 for tiny-llama), so it is smaller.
    @Test func prunedCopyKeepsTheBasesStoredType() throws {
        let model = root + "/Fixtures/tiny-llama", out = directory + "/default-type"
        // Without calibration data the default least-squares re-fit cannot run, and says how to do without it.
        let refused = try TestProcess.run([lop, "prune", model, "--budget", "0.5", "--importance", "magnitude", "--out", out], environment: environment)
        #expect(refused.status == 64 && refused.output.contains("needs --calibration data") && refused.output.contains("--reconstruction none"), "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: out))
        let run = try TestProcess.run([lop, "prune", model, "--budget", "0.5", "--importance", "magnitude", "--reconstruction", "none", "--out", out],
                                      environment: environment)
        #expect(run.status == 0, "\(run.output)")
        let header = try String(contentsOfFile: out + "/model.safetensors", encoding: .isoLatin1).prefix(4096)
        #expect(header.contains("\"F16\"") && !header.contains("\"F32\""))
        let size = { (path: String) in (try FileManager.default.attributesOfItem(atPath: path + "/model.safetensors")[.size] as? Int) ?? 0 }
        #expect(try size(out) < size(model))
    }

    @Test func badInputExitsWithDataError() throws {
        let model = root + "/Fixtures/tiny-llama"
        for (arguments, message) in [
            (["prune", model, "--budget", "1.5", "--importance", "magnitude", "--out", directory + "/x"], "budget fraction 1.5 is outside (0, 1]"),
            (["prune", model, "--budget", "0.5", "--importance", "magnitude", "--strategy", directory + "/missing.json", "--out", directory + "/x"], "cannot read the strategy file"),
            (["eval", model, "--data", "shapes"], "the model has no vision tower"),
            (["eval", directory + "/nothing", "--data", model + "/heldout.bin"], "nothing"),
        ] {
            let result = try TestProcess.run([lop] + arguments, environment: environment)
            #expect(result.status == 65, "\(arguments): \(result.status) \(result.output)")
            #expect(result.output.contains(message), "\(result.output)")
        }
        let usage = try TestProcess.run([lop, "prune", model, "--budget", "0.5", "--out", directory + "/x"], environment: environment)
        #expect(usage.status != 0 && usage.output.contains("--calibration is needed"))
    }
}
