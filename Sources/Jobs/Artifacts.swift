import Crypto
import Evaluation
import Fixtures
import Foundation
import LopCore
import Store

/// The folder under which registered models live (`artifacts.root`). A folder is written under `.tmp/`, then
/// renamed into place, so a registered path never holds a half-written model; the leftovers of a killed attempt
/// are removed by the next attempt with the same key.
public struct ArtifactRoot: Sendable {
    /// Absolute.
    public let path: String
    static let temporaryFolder = ".tmp"

    public init(_ path: String) throws {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        self.path = URL(fileURLWithPath: absolute).standardizedFileURL.path
        do {
            try FileManager.default.createDirectory(atPath: self.path + "/" + Self.temporaryFolder, withIntermediateDirectories: true)
        } catch {
            throw RegistryError("artifact root \(self.path): cannot create it (\(error.localizedDescription))")
        }
    }

    /// A registered model's folder.
    public func folder(_ model: RegisteredModel) -> String { absolute(model.artifactPath) }

    public func absolute(_ relative: String) -> String { path + "/" + relative }

    /// A fresh, empty temporary folder for `key`, after removing what earlier attempts with that key left.
    public func temporary(for key: String) throws -> String {
        let parent = path + "/" + Self.temporaryFolder
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where entry.hasPrefix(key + ".") {
            try? FileManager.default.removeItem(atPath: parent + "/" + entry)
        }
        let folder = parent + "/\(key).\(getpid()).\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }

    /// Temporary folders still present (none once every attempt has finished or been retried).
    public func temporaryFolders() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path + "/" + Self.temporaryFolder)) ?? []).sorted()
    }

    /// Moves a finished temporary folder to `relative`; a folder already there (written by an attempt that died
    /// before registering it) is replaced.
    public func install(_ temporary: String, at relative: String) throws {
        let target = absolute(relative)
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: target) { try FileManager.default.removeItem(atPath: target) }
        guard rename(temporary, target) == 0 else {
            throw RegistryError("cannot move \(temporary) to \(target): \(String(cString: strerror(errno)))")
        }
    }

    /// Removes a registered model's folder (after its row is gone).
    public func remove(_ relative: String) throws {
        let target = absolute(relative)
        if FileManager.default.fileExists(atPath: target) { try FileManager.default.removeItem(atPath: target) }
    }

    /// SHA-256 and size of every visible regular file at the top of a folder (caches in hidden folders are not part
    /// of a model).
    public static func digest(folder: String) throws -> [String: FileDigest] {
        var files: [String: FileDigest] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: folder).sorted() where !name.hasPrefix(".") {
            let file = folder + "/" + name
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
            files[name] = try digest(file: file)
        }
        guard !files.isEmpty else { throw RegistryError("\(folder) holds no files") }
        return files
    }

    /// Streams a file through SHA-256 (a large checkpoint is never read whole).
    public static func digest(file: String) throws -> FileDigest {
        guard let handle = FileHandle(forReadingAtPath: file) else { throw RegistryError("cannot read \(file)") }
        defer { try? handle.close() }
        var hasher = SHA256()
        var bytes: Int64 = 0
        while let chunk = try handle.read(upToCount: 4 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
            bytes += Int64(chunk.count)
        }
        return FileDigest(sha256: hasher.finalize().hexadecimal, bytes: bytes)
    }

    /// Files of a registered model that are missing or whose SHA-256 differs from the registry's.
    public func verify(_ model: RegisteredModel) -> [String] {
        model.files.keys.sorted().filter { name in
            (try? Self.digest(file: folder(model) + "/" + name)) != model.files[name]
        }
    }

    /// A base model's data name with a token file path made absolute (stored relative to its folder).
    public func data(_ stored: String, of model: RegisteredModel) throws -> DataSpec {
        let spec = try DataSpec(parsing: stored)
        if case .file(let file) = spec, !file.hasPrefix("/") { return .file(path: folder(model) + "/" + file) }
        return spec
    }
}
