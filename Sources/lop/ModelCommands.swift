import ArgumentParser
import Bootstrap
import Evaluation
import Foundation
import Jobs
import LopConfig
import Logging
import Store

struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "The model registry: base models, pruned variants and predictors, with aliases and lineage.",
        discussion: """
            Models are named name:version (versions count up per name); name@alias follows an alias (champion, \
            candidate, …); a bare name means its latest version. Files live under artifacts.root.
            """,
        subcommands: [ModelsRegister.self, ModelsList.self, ModelsShow.self, ModelsAlias.self, ModelsDelete.self])
}

/// The registry and artifact root of the configured database.
struct RegistryAccess {
    let config: LopConfig
    let registry: Registry
    let root: ArtifactRoot

    init(_ options: GlobalOptions) throws {
        config = try options.load()
        registry = Registry(pool: try config.makePool(logger: Logger(label: "lop.cli")))
        root = try ArtifactRoot(config.artifacts.root)
    }

    /// Who the CLI records as changing an alias.
    static var actor: String { "cli:" + (ProcessInfo.processInfo.environment["USER"] ?? NSUserName()) }

    func resolve(_ text: String) throws -> RegisteredModel {
        try registry.resolve(try ModelReference(parsing: text))
    }
}

struct ModelsRegister: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "register",
        abstract: "Register a Hugging Face model folder as a base model: validated, evaluated, copied under the artifact root, hashed.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "The model folder (config.json + *.safetensors).")
    var path: String

    @Option(help: "Registry name (letters, digits, '.', '-', '_').")
    var name: String

    @Option(help: "Held-out data for its pruned variants: a token file (copied with it) or 'shapes' (default: heldout.bin in the folder; 'shapes' for a LLaVA model).")
    var data: String?

    @Option(help: "Calibration data that ranks its neurons (default: 'corpus', or 'shapes-train' for a LLaVA model).")
    var calibration: String?

    @Flag(help: "Link the files instead of copying them.")
    var link = false

    func validate() throws {
        guard ModelReference.isName(name) else { throw ValidationError("--name \"\(name)\" is not a model name (letters, digits, '.', '-', '_'; at most 100)") }
    }

    func run() throws {
        try runReportingErrors {
            let access = try RegistryAccess(options)
            var registration = BaseRegistration(source: path, name: name, evalData: data, calibration: calibration, link: link)
            registration.data = DataFile.Options(access.config.data)
            let model = try registration.run(registry: access.registry, root: access.root, actor: RegistryAccess.actor, log: progress)
            if options.json { return try printJSON(model) }
            let metrics = model.heldOutMetrics
            print("registered \(model.reference) (id \(model.id)): \(model.parameters) parameters, \(model.files.count) files, \(model.sizeBytes) bytes"
                  + (metrics.map { String(format: ", held-out loss %.4f on %@", $0.loss, model.evalData ?? "") } ?? ""))
            print("  \(access.root.folder(model))")
        }
    }
}

struct ModelsList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List registered models by name and version, with their aliases.")

    @OptionGroup var options: GlobalOptions

    @Option(help: "Only this name.")
    var name: String?

    @Option(help: "Only this kind: base, pruned or predictor.")
    var kind: String?

    func validate() throws {
        if let kind, ModelKind(rawValue: kind) == nil { throw ValidationError("--kind must be base, pruned or predictor") }
    }

    func run() throws {
        try runReportingErrors {
            let access = try RegistryAccess(options)
            let models = try access.registry.list(name: name, kind: kind.flatMap(ModelKind.init))
            if options.json { return try printJSON(models) }
            let aliases = Dictionary(grouping: try access.registry.aliases(), by: \.modelId)
            let bases = Dictionary(uniqueKeysWithValues: models.map { ($0.id, $0) })
            print(pad(["ID", "MODEL", "KIND", "BASE", "PARAMETERS", "BYTES", "BUDGET", "METHOD", "HELD-OUT", "ALIASES", "CREATED"]))
            for m in models {
                let base = m.baseModelId.map { id in bases[id]?.reference ?? "id \(id)" } ?? "-"
                print(pad(["\(m.id)", m.reference, m.kind.rawValue, base, "\(m.parameters)", "\(m.sizeBytes)", m.budget?.description ?? "-", m.method ?? "-",
                           heldOut(m), (aliases[m.id] ?? []).map { "@\($0.alias)" }.joined(separator: ","),
                           ISO8601DateFormatter().string(from: m.createdAt)]))
            }
        }
    }

    func pad(_ columns: [String]) -> String {
        zip(columns, [5, 28, 9, 18, 11, 10, 8, 8, 10, 22, 20]).map { $0.padding(toLength: max($1, $0.count), withPad: " ", startingAt: 0) }
            .joined(separator: " ")
    }
}

/// The held-out figure of a model: its loss (and accuracy), or a predictor's mean loss over its evaluation budgets.
func heldOut(_ model: RegisteredModel) -> String {
    guard let object = try? model.metrics.decode([String: AnyJSON].self) else { return "-" }
    if case .number(let mean)? = object["mean_held_out_loss"] { return String(format: "%.4f", mean) }
    guard let metrics = model.heldOutMetrics else { return "-" }
    return String(format: "%.4f", metrics.loss) + (metrics.accuracy.map { String(format: " (%.3f)", $0) } ?? "")
}

struct ModelsShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show a model: files (checked against their SHA-256), metrics, aliases and lineage.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "name, name@alias or name:version.")
    var model: String

    struct Shown: Encodable {
        let model: RegisteredModel
        let folder: String
        let damagedFiles: [String]
        let aliases: [ModelAlias]
        let aliasHistory: [AliasChange]
        let base: RegisteredModel?
        let predictor: RegisteredModel?
        let samples: Int
        let firstSampleId: Int64?
        let lastSampleId: Int64?

        enum CodingKeys: String, CodingKey {
            case model, folder, damagedFiles = "damaged_files", aliases, aliasHistory = "alias_history", base, predictor, samples
            case firstSampleId = "first_sample_id", lastSampleId = "last_sample_id"
        }
    }

    func run() throws {
        try runReportingErrors {
            let access = try RegistryAccess(options)
            let m = try access.resolve(model)
            let registry = access.registry
            let lineage = try registry.lineageSamples(m.id)
            let shown = Shown(model: m, folder: access.root.folder(m), damagedFiles: access.root.verify(m),
                              aliases: try registry.aliases(name: m.name), aliasHistory: try registry.aliasHistory(name: m.name),
                              base: try m.baseModelId.flatMap { try registry.model(id: $0) }, predictor: try m.predictorId.flatMap { try registry.model(id: $0) },
                              samples: lineage.count, firstSampleId: lineage.firstId, lastSampleId: lineage.lastId)
            if options.json { return try printJSON(shown) }
            print("\(m.reference) (id \(m.id)): \(m.kind.rawValue), created \(ISO8601DateFormatter().string(from: m.createdAt))")
            print("folder:     \(shown.folder)")
            print("parameters: \(m.parameters), \(m.sizeBytes) bytes in \(m.files.count) files, " + (shown.damagedFiles.isEmpty ? "all match their SHA-256" : "DAMAGED: \(shown.damagedFiles.joined(separator: ", "))"))
            for (file, digest) in m.files.sorted(by: { $0.key < $1.key }) { print("  \(file)  \(digest.bytes) bytes  sha256 \(digest.sha256)") }
            if let budget = m.budget, let method = m.method { print("budget:     \(budget), strategy by \(method)") }
            if let sizes = m.sizes, let strategy = m.strategy {
                print("strategy:   " + zip(sizes, strategy).map { String(format: "%d (%.3f)", $0, $1) }.joined(separator: ", "))
            }
            if let evalData = m.evalData, let calibration = m.calibration { print("data:       held-out \(evalData), calibration \(calibration)") }
            print("held-out:   \(heldOut(m))   metrics \(m.metrics.text)")
            print("lineage:")
            if let base = shown.base { print("  made from  \(base.reference) (id \(base.id))") }
            if let predictor = shown.predictor { print("  strategy   predicted by \(predictor.reference) (id \(predictor.id))") }
            if let job = m.sourceJobId { print("  job        \(job)") }
            if lineage.count > 0 {
                print("  samples    \(lineage.count) (ids \(lineage.firstId ?? 0)…\(lineage.lastId ?? 0); SELECT * FROM lop.model_samples(\(m.id)))")
            }
            let aliases = shown.aliases.filter { $0.modelId == m.id }
            if !aliases.isEmpty { print("aliases:    " + aliases.map { "@\($0.alias)" }.joined(separator: ", ")) }
            if !shown.aliasHistory.isEmpty {
                print("alias history of \(m.name):")
                for change in shown.aliasHistory {
                    let what = change.modelId.map { id in "→ id \(id)" } ?? "removed"
                    print("  \(ISO8601DateFormatter().string(from: change.changedAt))  @\(change.alias) \(what)\(change.previousModelId.map { " (was id \($0))" } ?? "")  by \(change.changedBy)\(change.reason.map { ": \($0)" } ?? "")")
                }
            }
        }
    }
}

struct ModelsAlias: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alias", abstract: "Point name@ALIAS at a model of that name (or remove it); every change is recorded.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "The model: name:version (or name@alias, name).")
    var model: String

    @Argument(help: "The alias, e.g. champion, candidate, production.")
    var alias: String

    @Flag(help: "Remove the alias from the model's name instead.")
    var remove = false

    @Option(help: "Why (kept in the alias history).")
    var reason: String?

    func validate() throws {
        guard ModelReference.isAlias(alias) else { throw ValidationError("\"\(alias)\" is not an alias (lower-case letters, digits, '-', '_'; at most 40)") }
    }

    func run() throws {
        try runReportingErrors {
            let access = try RegistryAccess(options)
            let actor = AliasActor(by: RegistryAccess.actor, reason: reason)
            if remove {
                let name = try ModelReference(parsing: model).name
                let removed = try access.registry.pool.withTransaction { try access.registry.removeAlias(name: name, alias: alias, actor: actor, on: $0) }
                guard removed else { throw RegistryError("\(name) has no alias \"\(alias)\"") }
                print("removed \(name)@\(alias)")
                return
            }
            let m = try access.resolve(model)
            try access.registry.pool.withTransaction { try access.registry.setAlias(name: m.name, alias: alias, to: m.id, actor: actor, on: $0) }
            print("\(m.name)@\(alias) → \(m.reference)")
        }
    }
}

struct ModelsDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete a model's row and its files; refused while an alias points at it or other models were made from it.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "name:version (or name@alias, name).")
    var model: String

    func run() throws {
        try runReportingErrors {
            let access = try RegistryAccess(options)
            let m = try access.resolve(model)
            try access.registry.delete(m, actor: AliasActor(by: RegistryAccess.actor))
            try access.root.remove(m.artifactPath)
            print("deleted \(m.reference) and \(access.root.folder(m))")
        }
    }
}
