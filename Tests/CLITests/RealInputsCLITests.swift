import Foundation
import TestSupport
import Testing

/// `lop tokenize`, `lop eval` and `lop search` on the files a user brings: the model's tokenizer.json, PNG images
/// with a question JSONL, an MMBench-format TSV.
@Suite struct RealInputsCLITests {
    var lop: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lop").path
    }
    let root = TestDatabase.repositoryRoot
    var environment: [String: String] { ["LOP_CONFIG": root + "/Config/lop.yaml"] }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    func folder(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "lop-cli-inputs-\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func tokenizePrintsTheTokenizersIDs() throws {
        let qwen = root + "/Tests/References/inputs/tokenizers/qwen2"
        let cases = try json(String(contentsOfFile: root + "/Tests/References/inputs/tokenizers/cases.json", encoding: .utf8))
        let texts = try #require(cases["texts"] as? [String])
        let expected = try #require(((cases["tokenizers"] as? [String: Any])?["qwen2"] as? [String: Any])?["with_special"] as? [[Int]])
        let index = try #require(texts.firstIndex { $0.contains("<|im_start|>system") })
        let run = try TestProcess.run([lop, "tokenize", qwen, "--text", texts[index], "--json"], environment: environment, separateStandardError: true)
        #expect(run.status == 0, "\(run.output)")
        #expect(try json(run.output)["ids"] as? [Int] == expected[index])
        let directory = try folder("tokenize")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try texts[index].write(toFile: directory + "/t.txt", atomically: true, encoding: .utf8)
        let fromFile = try TestProcess.run([lop, "tokenize", qwen, "--file", directory + "/t.txt"], environment: environment, separateStandardError: true)
        #expect(fromFile.output.trimmingCharacters(in: .whitespacesAndNewlines) == expected[index].map(String.init).joined(separator: " "))
        let bad = try TestProcess.run([lop, "tokenize", directory, "--text", "x"], environment: environment)
        #expect(bad.status == 65 && bad.output.contains("tokenizer.json: cannot be read"), "\(bad.output)")
    }

    /// The shapes held-out questions as PNG files and a JSONL score as `--data shapes:N` does.
    @Test func evalOnAQuestionFileMatchesTheBuiltInShapes() throws {
        let directory = try folder("eval")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let questions = try ShapesFiles.jsonl(ShapesFiles.examples(128), in: directory)
        let model = root + "/Fixtures/tiny-llava"
        let fromFiles = try TestProcess.run([lop, "eval", model, "--data", questions, "--json"], environment: environment, separateStandardError: true)
        let builtIn = try TestProcess.run([lop, "eval", model, "--data", "shapes:128", "--json"], environment: environment, separateStandardError: true)
        #expect(fromFiles.status == 0 && builtIn.status == 0, "\(fromFiles.output) \(builtIn.output)")
        let (a, b) = (try json(fromFiles.output), try json(builtIn.output))
        #expect(a["accuracy"] as? Double == b["accuracy"] as? Double && a["count"] as? Int == 128)
        #expect(a["exactMatch"] as? Double == a["accuracy"] as? Double)
        // A bad file in the data is a data error naming the file.
        try Data([0x89, 0x50, 0x4E, 0x47, 1, 2, 3]).write(to: URL(fileURLWithPath: directory + "/images/0.png"))
        let broken = try TestProcess.run([lop, "eval", model, "--data", questions], environment: environment)
        #expect(broken.status == 65 && broken.output.contains("images/0.png: is not a valid PNG file"), "\(broken.output)")
    }

    /// LOP's reward, accuracy, on an MMBench-format TSV: every scored strategy's accuracy is over the TSV's
    /// questions, by the likelihood of each option letter.
    @Test func searchWithTheAccuracyRewardRunsOnAnMMBenchTSV() throws {
        let directory = try folder("search")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tsv = try ShapesFiles.mmbench(ShapesFiles.examples(16), in: directory)
        try FileManager.default.copyItem(atPath: root + "/Fixtures/tiny-llava", toPath: directory + "/model")
        let run = try TestProcess.run([lop, "search", directory + "/model", "--budget", "0.6", "--calibration", tsv, "--samples", "16",
                                       "--prompt-template", "<image>Q: {question} A: ", "--reward", "accuracy", "--set", "simulations=6", "--json"],
                                      environment: environment, separateStandardError: true)
        #expect(run.status == 0, "\(run.output)")
        let summary = try json(run.output)
        let best = try #require(summary["best"] as? [String: Any]), uniform = try #require(summary["uniform"] as? [String: Any])
        let accuracy = try #require(best["accuracy"] as? Double), uniformAccuracy = try #require(uniform["accuracy"] as? Double)
        // The reward is the accuracy over the uniform strategy's, so the best is at least as accurate.
        #expect(accuracy >= uniformAccuracy && best["reward"] as? Double == (uniformAccuracy > 0 ? accuracy / uniformAccuracy : accuracy))
        #expect((0...1).contains(accuracy) && (accuracy * 16).rounded() == accuracy * 16, "accuracy \(accuracy) is not a count of 16 questions")
        let badReward = try TestProcess.run([lop, "search", directory + "/model", "--budget", "0.6", "--calibration", tsv, "--reward", "speed"],
                                            environment: environment)
        #expect(badReward.status != 0 && badReward.output.contains("reward"), "\(badReward.output)")
    }
}
