import Evaluation
import Fixtures
import Foundation
import LopConfig
import Models
import Store
import Webhooks

/// Registers a checkpoint as a base model: validates it by loading it, evaluates it on its held-out data,
/// copies (or links) its files under the artifact root, hashes them, and records the row and a
/// `model.registered` event in one transaction.
public struct BaseRegistration {
    /// A Hugging Face model folder.
    public var source: String
    public var name: String
    /// Held-out data for its pruned variants: nil picks `heldout.bin` in the folder, or `shapes` for a LLaVA model.
    public var evalData: String?
    /// Calibration data: nil picks the fixture default (`corpus`, or `shapes-train` for a LLaVA model).
    public var calibration: String?
    /// Symbolic links to the source files instead of copies (for checkpoints too large to copy).
    public var link = false
    /// How question data files are read.
    public var data = DataFile.Options()

    /// Whether a data file can be copied beside the model: all but question files that name image files.
    static func selfContained(_ path: String, options: DataFile.Options) throws -> Bool {
        guard case .questions(let questions) = try DataFile.read(path, options: options) else { return true }
        return !questions.contains { if case .file = $0.image { return true } else { return false } }
    }

    public init(source: String, name: String, evalData: String? = nil, calibration: String? = nil, link: Bool = false) {
        (self.source, self.name, self.evalData, self.calibration, self.link) = (source, name, evalData, calibration, link)
    }

    public func run(registry: Registry, root: ArtifactRoot, actor: String, log: (String) -> Void = { _ in }) throws -> RegisteredModel {
        guard ModelReference.isName(name) else {
            throw RegistryError("\"\(name)\" is not a model name (letters, digits, '.', '-', '_'; at most 100; starting with a letter or digit)")
        }
        let folder = URL(fileURLWithPath: source).standardizedFileURL.path
        log("loading \(folder)")
        let model = try Model.load(directory: folder)
        let calibration = self.calibration ?? SearchRequest.defaultCalibration(for: model)
        _ = try DataSpec(parsing: calibration)
        // Held-out data: a token file travels with the model (copied beside it); a named set stays a name.
        var dataName: String
        var dataFile: String?
        if let evalData {
            dataName = evalData
        } else if FileManager.default.fileExists(atPath: folder + "/heldout.bin") {
            dataName = folder + "/heldout.bin"
        } else if case .llava = model {
            dataName = "shapes"
        } else {
            throw RegistryError("\(folder) has no heldout.bin; name the held-out data with --data")
        }
        if case .file(let path) = try DataSpec(parsing: dataName) {
            let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
            guard FileManager.default.fileExists(atPath: absolute) else { throw RegistryError("held-out data \(path) does not exist") }
            if try Self.selfContained(absolute, options: data) {
                let fileName = (absolute as NSString).lastPathComponent
                dataName = fileName.hasPrefix(".") ? "heldout.bin" : fileName
                dataFile = absolute
            } else {
                dataName = absolute  // questions about image files stay where their images are
            }
        }
        log("evaluating on \(dataName)")
        let data = try DataSpec(parsing: dataFile ?? dataName).evaluationData(for: model, options: self.data)
        let metrics = try data.evaluate(model)

        let temporary = try root.temporary(for: "base-\(name)")
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        var sources = try FileManager.default.contentsOfDirectory(atPath: folder).filter { !$0.hasPrefix(".") }.map { folder + "/" + $0 }
        if let dataFile, (dataFile as NSString).deletingLastPathComponent != folder || (dataFile as NSString).lastPathComponent != dataName {
            sources.append(dataFile)
        }
        for file in sources {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            let target = temporary + "/" + (file == dataFile ? dataName : (file as NSString).lastPathComponent)
            if link {
                try FileManager.default.createSymbolicLink(atPath: target, withDestinationPath: file)
            } else {
                try FileManager.default.copyItem(atPath: file, toPath: target)
            }
        }
        let files = try ArtifactRoot.digest(folder: temporary)
        let relative = "base/\(name)/\(model.contentHash.prefix(16))-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        try root.install(temporary, at: relative)
        var new = NewModel(name: name, kind: .base, artifactPath: relative, files: files, parameters: Int64(model.parameterCount),
                           contentHash: model.contentHash)
        new.evalData = dataName
        new.calibration = calibration
        new.metrics = try JSONB(encoding: HeldOutMetrics(heldOut: metrics))
        new.lineage = try JSONB(encoding: ["source": folder, "registered_by": actor])
        do {
            return try registry.pool.withTransaction { c in
                let registered = try registry.register(new, on: c)
                _ = try WebhookStore.emit("model.registered", data: RegisteredEvent(registered), on: c)
                return registered
            }
        } catch {
            try? root.remove(relative)
            throw error
        }
    }
}

/// A base or pruned model's registry metrics: its metrics on the base's held-out data.
struct HeldOutMetrics: Codable {
    let heldOut: EvaluationData.Metrics?

    enum CodingKeys: String, CodingKey { case heldOut = "held_out" }
}

extension RegisteredModel {
    /// A base or pruned model's metrics on its held-out data (nil for a predictor, or a model registered unevaluated).
    public var heldOutMetrics: EvaluationData.Metrics? { (try? metrics.decode(HeldOutMetrics.self))?.heldOut }
}

/// The data of a `model.registered` event.
struct RegisteredEvent: Encodable {
    let id: Int64
    let name: String
    let version: Int
    let kind: String
    let reference: String
    let baseModelId: Int64?
    let artifactPath: String
    let parameters: Int64
    let sizeBytes: Int64
    let jobId: Int64?
    let metrics: JSONB
    /// Every file of the model (checkpoint, exports, reports) with its SHA-256 and size.
    let files: [String: FileDigest]

    enum CodingKeys: String, CodingKey {
        case id, name, version, kind, reference, baseModelId = "base_model_id", artifactPath = "artifact_path", parameters
        case sizeBytes = "size_bytes", jobId = "job_id", metrics, files
    }

    init(_ model: RegisteredModel) {
        (id, name, version, kind, reference) = (model.id, model.name, model.version, model.kind.rawValue, model.reference)
        (baseModelId, artifactPath, parameters, sizeBytes, jobId, metrics) = (model.baseModelId, model.artifactPath, model.parameters,
                                                                              model.sizeBytes, model.sourceJobId, model.metrics)
        files = model.files
    }
}

extension WebhookStore {
    /// Writes an event whose data is any encodable value.
    static func emit(_ type: String, data: some Encodable, on connection: Connection) throws -> Int {
        try emit(type, data: try JSONB(encoding: data), on: connection)
    }
}
