import Foundation
import Jobs
import LopConfig
import Search
import Store
import Testing
import TestSupport

/// A stop after `limit` evaluated samples, as a killed worker would stop.
struct Interrupted: Error {}

@Suite(.serialized) struct SampleStoreTests {
    @Test func everyEvaluationIsStoredOnceAndAResumedSearchEndsLikeAnUninterruptedOne() throws {
        let fixture = try TextFixture.shared.get()
        let pool = ConnectionPool(target: try TestDatabase.createMigrated(), size: 2)
        let store = SampleStore(pool: pool)
        var request = fixture.request
        request.settings.simulations = 30
        request.settings.sampleBatch = 4

        // Uninterrupted.
        var buffer: [Sample] = []
        let whole = try request.run(fixture.prepared, searchKey: "whole", jobId: nil, sample: { buffer.append($0) })
        #expect(try store.insert(buffer) == whole.counters.evaluations)
        #expect(try store.insert(buffer) == 0)  // stored once, however often written
        let stored = try store.samples(searchKey: "whole")
        #expect(stored.count == whole.counters.evaluations && Set(stored.map(\.sizes)).count == stored.count)
        #expect(stored.first?.depth == 0 && stored.first?.loss == whole.uniform.score.loss)
        #expect(stored.allSatisfy { $0.modelHash == fixture.prepared.pruner.modelHash && $0.units.count == 6 && $0.keptFraction <= 0.5 + 1e-12 })

        // Interrupted after 7 samples (written in batches of 4: the last 3 are lost, as with kill -9), then resumed.
        var written: [Sample] = []
        var pending: [Sample] = []
        #expect(throws: Interrupted.self) {
            _ = try request.run(fixture.prepared, searchKey: "resumed", jobId: nil, sample: { sample in
                if written.count + pending.count == 7 { throw Interrupted() }
                pending.append(sample)
                if pending.count == 4 { _ = try store.insert(pending); written += pending; pending = [] }
            })
        }
        let survived = try store.samples(searchKey: "resumed")
        #expect(survived.count == 4)
        var resumedBuffer: [Sample] = []
        let resumed = try request.run(fixture.prepared, searchKey: "resumed", jobId: nil, preload: survived, sample: { resumedBuffer.append($0) })
        #expect(resumed.counters.preloaded == 4 && resumed.counters.evaluations == whole.counters.evaluations - 4)
        #expect(try store.insert(resumedBuffer) == whole.counters.evaluations - 4)
        #expect(resumed.best.sizes == whole.best.sizes && resumed.best.score == whole.best.score)
        let all = try store.samples(searchKey: "resumed")
        #expect(all.count == whole.counters.evaluations && Set(all.map(\.sizes)) == Set(stored.map(\.sizes)))

        // Reads by model name and hash prefix; the best per budget.
        #expect(try store.samples(model: tinyLlamaFolder).count == 2 * whole.counters.evaluations)
        #expect(try store.samples(model: String(fixture.prepared.pruner.modelHash.prefix(10)), limit: 5).count == 5)
        #expect(try store.samples(model: "nobody").isEmpty)
        let best = try store.best(modelHash: fixture.prepared.pruner.modelHash, calibrationHash: fixture.prepared.calibration.hash)
        #expect(best.count == 1 && best[0].loss == whole.best.score.loss)
    }

    @Test func theSchemaRefusesSamplesThatCannotBeRight() throws {
        let connection = try Connection(try TestDatabase.createMigrated())
        let good = "'m', repeat('a', 64), repeat('b', 64), ARRAY['u1','u2'], 'lop', '0.5', 'fraction', 0.5, 0.5, ARRAY[0.5,0.5], ARRAY[1,1], -1, 1.0, 'k'"
        let columns = "model, model_hash, calibration_hash, units, importance, budget, budget_kind, budget_value, kept_fraction, strategy, sizes, reward, loss, search_key"
        _ = try connection.execute(SQL(unsafe: "INSERT INTO lop.samples (\(columns)) VALUES (\(good))"))
        for broken in [good.replacingOccurrences(of: "ARRAY[1,1]", with: "ARRAY[1]"), good.replacingOccurrences(of: "repeat('a', 64)", with: "'short'"),
                       good.replacingOccurrences(of: "'fraction'", with: "'vibes'"), good.replacingOccurrences(of: "1.0, 'k'", with: "-1.0, 'k'"),
                       good] {
            #expect(throws: StoreError.self) { _ = try connection.execute(SQL(unsafe: "INSERT INTO lop.samples (\(columns)) VALUES (\(broken))")) }
        }
    }
}
