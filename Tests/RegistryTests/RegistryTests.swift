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
        (pruned.budget, pruned.strategy, pruned.sizes, pruned.method) = (.fraction(0.5), [0.5], [4], "search")
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

/// `lop models …` and `lop submit` as a user runs them.
@Suite(.serialized) struct ModelsCLITests {
    var binaries: String { URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path }

    @Test func registerListShowAliasAndDeleteFromTheCommandLine() throws {
        let target = try TestDatabase.createMigrated()
        let root = try temporaryRoot()
        let env = ["LOP_CONFIG": TestDatabase.repositoryRoot + "/Config/lop.yaml", "LOP_ARTIFACTS_ROOT": root.path,
                   "LOP_DATABASE_URL": target.parameters.map { "\($0.0)=\($0.1)" }.joined(separator: " ")]
        func lop(_ arguments: String...) throws -> (status: Int32, output: String) {
            try TestProcess.run([binaries + "/lop"] + arguments, environment: env, separateStandardError: true)
        }
        let registered = try lop("models", "register", tinyLlamaFolder, "--name", "tiny-llama")
        #expect(registered.status == 0 && registered.output.contains("registered tiny-llama:1 (id 1)") && registered.output.contains("held-out loss"))
        let badName = try TestProcess.run([binaries + "/lop", "models", "register", tinyLlamaFolder, "--name", "no good"], environment: env)
        #expect(badName.status == 64 && badName.output.contains("is not a model name"))
        let notAModel = try TestProcess.run([binaries + "/lop", "models", "register", root.path, "--name", "x"], environment: env)
        #expect(notAModel.status != 0 && notAModel.output.contains("config.json"))
        #expect(try lop("models", "register", tinyLlamaFolder, "--name", "tiny-llama").output.contains("registered tiny-llama:2"))

        let listed = try lop("models", "list")
        #expect(listed.status == 0 && listed.output.contains("tiny-llama:1") && listed.output.contains("tiny-llama:2"))
        #expect(try lop("models", "alias", "tiny-llama:1", "production", "--reason", "first release").output.contains("tiny-llama@production → tiny-llama:1"))
        let shown = try lop("models", "show", "tiny-llama@production")
        #expect(shown.status == 0 && shown.output.contains("tiny-llama:1 (id 1): base") && shown.output.contains("all match their SHA-256"))
        #expect(shown.output.contains("@production → id 1  by cli:") && shown.output.contains(": first release"))

        // Deleting an aliased model is refused; once the alias is gone the row and its folder go.
        let refused = try TestProcess.run([binaries + "/lop", "models", "delete", "tiny-llama:1"], environment: env)
        #expect(refused.status == 1 && refused.output.contains("is @production; move or remove the alias first"))
        #expect(try lop("models", "alias", "tiny-llama", "production", "--remove").status == 0)
        let folder = root.path + "/" + (try Registry(pool: ConnectionPool(target: target, size: 1)).resolve(ModelReference(name: "tiny-llama", selector: .version(1))).artifactPath)
        #expect(FileManager.default.fileExists(atPath: folder + "/model.safetensors"))
        #expect(try lop("models", "delete", "tiny-llama:1").status == 0)
        #expect(!FileManager.default.fileExists(atPath: folder))
        #expect(try lop("models", "show", "tiny-llama:1").status == 1)

        // Shorthands of lop submit, checked before anything is written.
        let submitted = try lop("submit", "train", "--model", "tiny-llama")
        #expect(submitted.status == 0 && Int(submitted.output.trimmingCharacters(in: .whitespacesAndNewlines)) != nil)
        let bad = try TestProcess.run([binaries + "/lop", "submit", "compress", "--model", "tiny-llama", "--budget", "0.5", "--method", "bogus"], environment: env)
        #expect(bad.status == 64 && bad.output.contains("must be predict, search or auto"))
    }
}
