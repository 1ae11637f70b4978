import Foundation
@testable import Jobs
import Store
import Testing
import TestSupport

let tinyLlamaFolder = TestDatabase.repositoryRoot + "/Fixtures/tiny-llama"

/// A fresh artifact root under /tmp.
func temporaryRoot() throws -> ArtifactRoot {
    try ArtifactRoot(NSTemporaryDirectory() + "lop-artifacts-\(UUID().uuidString.prefix(8))")
}

/// A base model row for registry tests that need no files (a placeholder digest).
func placeholderModel(_ name: String, kind: ModelKind = .base, base: Int64? = nil) -> NewModel {
    var model = NewModel(name: name, kind: kind, artifactPath: "\(kind.rawValue)/\(name)/\(UUID().uuidString.prefix(8))",
                         files: ["config.json": FileDigest(sha256: String(repeating: "0", count: 64), bytes: 1)], parameters: 10,
                         contentHash: String(repeating: "a", count: 64))
    if kind == .base { (model.evalData, model.calibration) = ("heldout.bin", "corpus") }
    model.baseModelId = base
    return model
}

@Suite struct ModelReferenceTests {
    @Test func referencesParseAndBadOnesSayWhy() throws {
        #expect(try ModelReference(parsing: "tiny-llama") == ModelReference(name: "tiny-llama"))
        #expect(try ModelReference(parsing: "tiny-llama@champion") == ModelReference(name: "tiny-llama", selector: .alias("champion")))
        #expect(try ModelReference(parsing: "tiny_llama.v2:12") == ModelReference(name: "tiny_llama.v2", selector: .version(12)))
        for (text, problem) in [("", "not a model name"), ("-x", "not a model name"), ("a b", "not a model name"), ("x:0", "positive integer"),
                                ("x:one", "positive integer"), ("x@Champion", "not an alias"), ("x@", "not an alias"),
                                (String(repeating: "n", count: 101), "not a model name")] {
            #expect { try ModelReference(parsing: text) } throws: { ($0 as? RegistryError)?.description.contains(problem) == true }
        }
    }
}

@Suite struct RegistryStoreTests {
    @Test func versionsCountUpPerNameAndReferencesResolve() throws {
        let pool = ConnectionPool(target: try TestDatabase.createMigrated(), size: 2)
        defer { pool.close() }
        let registry = Registry(pool: pool)
        let a1 = try pool.withTransaction { try registry.register(placeholderModel("a"), on: $0) }
        let a2 = try pool.withTransaction { try registry.register(placeholderModel("a"), on: $0) }
        let b1 = try pool.withTransaction { try registry.register(placeholderModel("b"), on: $0) }
        #expect(a1.version == 1 && a2.version == 2 && b1.version == 1)
        #expect(try registry.resolve(ModelReference(name: "a")).id == a2.id)
        #expect(try registry.resolve(ModelReference(name: "a", selector: .version(1))).id == a1.id)
        #expect { try registry.resolve(ModelReference(name: "c")) } throws: { "\($0)".contains("no model named \"c\"") }
        #expect { try registry.resolve(ModelReference(name: "a", selector: .version(3))) } throws: { "\($0)".contains("has no version 3") }
        #expect { try registry.resolve(ModelReference(name: "a", selector: .alias("champion"))) } throws: {
            "\($0)".contains("\"a\" has no alias \"champion\" (it has none)")
        }
        // The table refuses what the repository would never write.
        #expect(throws: StoreError.self) {
            try pool.withConnection { try $0.execute("UPDATE lop.models SET artifact_path = '../escape' WHERE id = \(a1.id)") }
        }
        #expect(throws: StoreError.self) {
            try pool.withConnection { try $0.execute("UPDATE lop.models SET base_model_id = \(b1.id) WHERE id = \(a1.id)") }
        }
    }

    @Test func everyAliasChangeIsRecordedWithItsActorAndAliasesStayWithinAName() throws {
        let pool = ConnectionPool(target: try TestDatabase.createMigrated(), size: 2)
        defer { pool.close() }
        let registry = Registry(pool: pool)
        let (p1, p2) = try pool.withTransaction { c in
            (try registry.register(placeholderModel("p"), on: c), try registry.register(placeholderModel("p"), on: c))
        }
        let other = try pool.withTransaction { try registry.register(placeholderModel("q"), on: $0) }
        try pool.withTransaction { try registry.setAlias(name: "p", alias: "champion", to: p1.id, actor: AliasActor(by: "tester", reason: "first"), on: $0) }
        try pool.withTransaction { try registry.setAlias(name: "p", alias: "champion", to: p2.id, actor: AliasActor(by: "tester", reason: "better"), on: $0) }
        // Setting the same target again is not a change.
        try pool.withTransaction { try registry.setAlias(name: "p", alias: "champion", to: p2.id, actor: AliasActor(by: "tester"), on: $0) }
        #expect(try pool.withTransaction { try registry.removeAlias(name: "p", alias: "champion", actor: AliasActor(by: "cleaner"), on: $0) })
        // Plain SQL is recorded too: the trigger writes the history, with the database user as the actor.
        try pool.withConnection { _ = try $0.execute("INSERT INTO lop.model_aliases (name, alias, model_id) VALUES ('p', 'candidate', \(p1.id))") }
        let history = try registry.aliasHistory(name: "p")
        #expect(history.map(\.alias) == ["champion", "champion", "champion", "candidate"])
        #expect(history.map(\.modelId) == [p1.id, p2.id, nil, p1.id])
        #expect(history.map(\.previousModelId) == [nil, p1.id, p2.id, nil])
        #expect(history.prefix(3).map(\.changedBy) == ["tester", "tester", "cleaner"] && history[3].changedBy == "postgres")
        #expect(history[1].reason == "better")
        // An alias of one name cannot point at another name's model, whichever way it is written.
        #expect { try pool.withTransaction { try registry.setAlias(name: "p", alias: "x", to: other.id, actor: AliasActor(by: "t"), on: $0) } } throws: {
            "\($0)".contains("aliases stay within one name")
        }
        #expect { try pool.withConnection { try $0.execute("INSERT INTO lop.model_aliases (name, alias, model_id) VALUES ('p', 'x', \(other.id))") } } throws: {
            "\($0)".contains("cannot point at model")
        }
    }

    @Test func deletionIsRefusedWhileAnAliasOrADerivedModelDependsOnIt() throws {
        let pool = ConnectionPool(target: try TestDatabase.createMigrated(), size: 2)
        defer { pool.close() }
        let registry = Registry(pool: pool)
        let base = try pool.withTransaction { try registry.register(placeholderModel("base"), on: $0) }
        var pruned = placeholderModel("base-pruned", kind: .pruned, base: base.id)
        (pruned.budget, pruned.strategy, pruned.sizes, pruned.method) = (("0.5", "fraction", 0.5), [0.5], [4], "search")
        let child = try pool.withTransaction { try registry.register(pruned, on: $0) }
        #expect { try registry.delete(base, actor: AliasActor(by: "t")) } throws: { "\($0)".contains("is the origin of base-pruned:1") }
        try pool.withTransaction { try registry.setAlias(name: "base-pruned", alias: "production", to: child.id, actor: AliasActor(by: "t"), on: $0) }
        #expect { try registry.delete(child, actor: AliasActor(by: "t")) } throws: { "\($0)".contains("is @production") }
        try pool.withTransaction { _ = try registry.removeAlias(name: "base-pruned", alias: "production", actor: AliasActor(by: "t"), on: $0) }
        try registry.delete(child, actor: AliasActor(by: "t"))
        try registry.delete(base, actor: AliasActor(by: "t"))
        #expect(try registry.list().isEmpty)
        // The alias history outlives the models it named.
        #expect(try registry.aliasHistory(name: "base-pruned").count == 2)
    }
}
