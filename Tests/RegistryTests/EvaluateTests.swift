import Evaluation
import Fixtures
import Foundation
@testable import Jobs
import Models
import Queue
import Store
import Testing
import TestSupport
import Webhooks

@Suite(.serialized) struct EvaluateTests {
    /// An evaluate job inserted by SQL measures the registered model on its held-out data, keeps each run in the
    /// model's history and announces it; bad requests are discarded with the field named.
    @Test func anEvaluateJobRecordsItsMetricsInTheHistoryAndEmitsModelEvaluated() throws {
        let world = try RegistryWorld()
        defer { world.close() }
        let base = try world.register("tiny-llama")
        let registered = try #require(base.heldOutMetrics)

        let first = try world.runUntilFinal([try world.insert("evaluate", #"{"model": "tiny-llama"}"#)])[0]
        #expect(first.state == .completed, "\(first.errors)")
        let summary = try #require(try first.result?.decode(EvaluateSummary.self))
        // The same model on the same data as at registration: the same metrics, computed again.
        #expect(summary.data == "heldout.bin" && summary.metrics == registered && summary.previous == nil)
        #expect(summary.model?.id == base.id && summary.dataHash == base.files["heldout.bin"]?.sha256)
        let evaluationId = try #require(summary.evaluationId)

        // A second run on named data, then on the held-out data again: the history keeps all three, newest first,
        // and the second held-out run reports the first as its previous.
        let corpus = try world.runUntilFinal([try world.insert("evaluate", #"{"model": "tiny-llama:1", "data": "corpus"}"#)])[0]
        #expect(corpus.state == .completed, "\(corpus.errors)")
        let corpusLoss = try #require(try corpus.result?.decode(EvaluateSummary.self)).metrics.loss
        #expect(corpusLoss < registered.loss)  // the text it was trained on
        let again = try #require(try world.runUntilFinal([try world.insert("evaluate", #"{"model": "tiny-llama"}"#)])[0].result?.decode(EvaluateSummary.self))
        #expect(again.previous == registered && again.evaluationId! > evaluationId)
        let history = try world.registry.evaluations(modelId: base.id)
        #expect(history.map(\.data) == ["heldout.bin", "corpus", "heldout.bin"] && history.last?.id == evaluationId)
        #expect(history.allSatisfy { $0.evaluatedBy.hasPrefix("job:") && $0.jobId != nil })

        // The registry row holds the latest per data; every run emitted model.evaluated.
        let row = try #require(try world.registry.model(id: base.id))
        let latest = try #require(try row.metrics.object() as? [String: Any])["evaluations"] as? [String: Any]
        #expect(Set(latest?.keys.map { $0 } ?? []) == ["heldout.bin", "corpus"])
        #expect(row.heldOutMetrics == registered)
        let events = try world.events("model.evaluated")
        #expect(events.count == 3 && events[1].contains(#""data": "corpus""#) && events[2].contains(#""previous": {"#))

        // Bad requests can never work: discarded at once, the field named.
        let bad: [(String, String)] = [
            (#"{"model": "nothing-here"}"#, "'model' no model named \"nothing-here\" is registered"),
            (#"{"model": "/no/such/folder"}"#, "'model' no model folder with a config.json"),
            (#"{"model": "\#(tinyLlamaFolder)"}"#, "'data' is required for a model folder"),
            (#"{"model": "tiny-llama", "data": "shapes"}"#, "'data'"),
        ]
        let jobs = try world.runUntilFinal(try bad.map { try world.insert("evaluate", $0.0) })
        for (job, expected) in zip(jobs, bad) {
            #expect(job.state == .discarded && job.attempt == 1 && job.errors.last?.error.contains(expected.1) == true, "\(job.errors)")
        }
        #expect(try world.registry.evaluations(modelId: base.id).count == 3)

        // A folder is evaluated without any registry row.
        let folder = try world.runUntilFinal([try world.insert("evaluate", #"{"model": "\#(tinyLlamaFolder)", "data": "\#(tinyLlamaFolder)/heldout.bin"}"#)])[0]
        let folderSummary = try #require(try folder.result?.decode(EvaluateSummary.self))
        #expect(folderSummary.model == nil && folderSummary.metrics == registered && folderSummary.evaluationId == nil)
        #expect(try world.events("model.evaluated").count == 3)
    }

    /// Bad files users bring (a truncated PNG, a TSV without a column, a line that is not an object, a model whose
    /// tokenizer.json uses an unknown model) fail their jobs at once with the file named; the worker goes on and
    /// evaluates the good file after them as `shapes` scores.
    @Test func badDataFilesFailTheirJobsAndTheWorkerGoesOn() throws {
        let world = try RegistryWorld()
        defer { world.close() }
        let folder = NSTemporaryDirectory() + "lop-evaluate-inputs-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let examples = ShapesFiles.examples(32)
        let good = try ShapesFiles.jsonl(examples, in: folder)
        let png = try Data(contentsOf: URL(fileURLWithPath: folder + "/images/0.png"))
        try png.prefix(40).write(to: URL(fileURLWithPath: folder + "/images/cut.png"))
        try #"{"image": "images/cut.png", "prompt": "<image>Q: how many shapes? A: ", "answer": "1"}"#.write(toFile: folder + "/cut.jsonl", atomically: true, encoding: .utf8)
        try "index\tquestion\tA\tanswer\timage\n1\tq\ta\tA\tAAAA\n".write(toFile: folder + "/short.tsv", atomically: true, encoding: .utf8)
        try (try String(contentsOfFile: good, encoding: .utf8) + "[1, 2]\n").write(toFile: folder + "/mixed.jsonl", atomically: true, encoding: .utf8)
        let llava = TestDatabase.repositoryRoot + "/Fixtures/tiny-llava"
        let broken = folder + "/model"
        try FileManager.default.copyItem(atPath: llava, toPath: broken)
        let tokenizer = try String(contentsOfFile: broken + "/tokenizer.json", encoding: .utf8).replacingOccurrences(of: #""type": "BPE""#, with: #""type": "WordPiece""#)
        try tokenizer.write(toFile: broken + "/tokenizer.json", atomically: true, encoding: .utf8)
        let bad: [(String, String)] = [
            (#"{"model": "\#(llava)", "data": "\#(folder)/cut.jsonl"}"#, "images/cut.png: is not a valid PNG file"),
            (#"{"model": "\#(llava)", "data": "\#(folder)/short.tsv"}"#, "short.tsv row 1: the header has no \"B\" column"),
            (#"{"model": "\#(llava)", "data": "\#(folder)/mixed.jsonl"}"#, "mixed.jsonl line 33: is not a JSON object"),
            (#"{"model": "\#(broken)", "data": "\#(good)"}"#, "tokenizer.json: model.type: model \"WordPiece\" is not supported"),
            (#"{"model": "\#(llava)", "data": "\#(good)", "prompt_template": "no placeholder"}"#, "'prompt_template' must hold {question} exactly once"),
        ]
        var ids = try bad.map { try world.insert("evaluate", $0.0) }
        ids.append(try world.insert("evaluate", #"{"model": "\#(llava)", "data": "\#(good)"}"#))
        let jobs = try world.runUntilFinal(ids)
        for (job, expected) in zip(jobs, bad) {
            #expect(job.state == .discarded && job.attempt == 1 && job.errors.last?.error.contains(expected.1) == true, "\(job.errors)")
        }
        let last = try #require(jobs.last)
        #expect(last.state == .completed, "\(last.errors)")
        let summary = try #require(try last.result?.decode(EvaluateSummary.self))
        let model = try Model.load(directory: llava)
        let builtIn = try DataSpec.shapes(count: examples.count, heldOut: true).evaluationData(for: model).evaluate(model)
        let digest = try sha256sum(good)
        #expect(summary.metrics.accuracy == builtIn.accuracy && summary.dataHash == digest)
    }

    /// Every alias change emits model.alias_changed with both versions and the actor, whether lop or plain SQL
    /// makes it, in the same transaction.
    @Test func everyAliasMoveEmitsModelAliasChanged() throws {
        let world = try RegistryWorld()
        defer { world.close() }
        let (v1, v2) = try world.pool.withTransaction { c in
            (try world.registry.register(placeholderModel("p"), on: c), try world.registry.register(placeholderModel("p"), on: c))
        }
        try world.pool.withTransaction {
            try world.registry.setAlias(name: "p", alias: "production", to: v1.id, actor: AliasActor(by: "cli:ana", reason: "first"), on: $0)
        }
        try world.pool.withConnection { _ = try $0.execute("UPDATE lop.model_aliases SET model_id = \(v2.id) WHERE name = 'p' AND alias = 'production'") }
        // Not a change: no event.
        try world.pool.withTransaction { try world.registry.setAlias(name: "p", alias: "production", to: v2.id, actor: AliasActor(by: "cli:ana"), on: $0) }
        // A rolled-back move leaves no event either.
        _ = try? world.pool.withTransaction { c -> Void in
            try world.registry.setAlias(name: "p", alias: "production", to: v1.id, actor: AliasActor(by: "cli:bo"), on: c)
            throw RegistryError("changed my mind")
        }
        #expect(try world.pool.withTransaction { try world.registry.removeAlias(name: "p", alias: "production", actor: AliasActor(by: "cli:ana"), on: $0) })

        let events = try world.events("model.alias_changed").map { try #require(try JSONB(text: $0).object() as? [String: Any])["data"] as? [String: Any] }
        #expect(events.count == 3)
        #expect(events.map { $0?["change"] as? String } == ["set", "moved", "removed"])
        #expect(events.map { $0?["version"] as? Int } == [1, 2, nil])
        #expect(events.map { $0?["previous_version"] as? Int } == [nil, 1, 2])
        #expect(events.map { $0?["actor"] as? String } == ["cli:ana", "postgres", "cli:ana"])
        #expect(events[0]?["reason"] as? String == "first" && events.allSatisfy { $0?["name"] as? String == "p" && $0?["alias"] as? String == "production" })
    }
}
