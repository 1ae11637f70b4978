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
