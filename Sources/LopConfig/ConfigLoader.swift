import Foundation
import Logging
import Yams

extension LopConfig {
    /// The file used when none is named: `Config/lop.yaml` under the current directory, if present.
    public static let defaultFileName = "Config/lop.yaml"

    /// Loads the configuration: defaults, then `file` (or `LOP_CONFIG`, or `Config/lop.yaml` if present), then
    /// `LOP_…` environment variables. Relative paths resolve against the file's directory (or the current one).
    public static func load(
        file explicitFile: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        currentDirectory: String = FileManager.default.currentDirectoryPath
    ) throws -> (config: LopConfig, file: String?) {
        var file = explicitFile ?? environment["LOP_CONFIG"]
        if file == nil {
            let candidate = (currentDirectory as NSString).appendingPathComponent(defaultFileName)
            if FileManager.default.fileExists(atPath: candidate) { file = candidate }
        }
        var root: Node.Mapping? = nil
        var baseDirectory = currentDirectory
        if let file {
            let path = (file as NSString).isAbsolutePath ? file : (currentDirectory as NSString).appendingPathComponent(file)
            root = try parse(path: path, displayName: file)
            baseDirectory = (path as NSString).deletingLastPathComponent
        }
        let source = file ?? "defaults"
        var reader = TableReader(path: "", mapping: root, source: source, environment: environment)
        var config = LopConfig()
        try config.read(&reader, baseDirectory: baseDirectory, currentDirectory: currentDirectory)
        try reader.finish()
        return (config, file)
    }

    /// Parses YAML text from a file into its top-level mapping (an empty file is an empty mapping).
    static func parse(path: String, displayName: String) throws -> Node.Mapping? {
        let text: String
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let decoded = String(data: data, encoding: .utf8) else {
                throw ConfigError.unreadable(file: displayName, reason: "not UTF-8 text")
            }
            text = decoded
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError.unreadable(file: displayName, reason: (error as NSError).localizedDescription)
        }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw ConfigError.syntax(file: displayName, reason: "\(error)")
        }
        guard let node else { return nil }
        guard case let .mapping(mapping) = node else {
            throw ConfigError.wrongType(key: "(top level)", expected: "a mapping of sections", found: TableReader.describe(node), source: displayName)
        }
        return mapping
    }

    private mutating func read(_ reader: inout TableReader, baseDirectory: String, currentDirectory: String) throws {
        // A path that comes from the file is relative to the file; from the environment or defaults, to the current directory.
        func resolve(_ value: (String, fromFile: Bool)?, default current: String) -> String {
            guard let (path, fromFile) = value else { return (currentDirectory as NSString).appendingPathComponent(current) }
            if (path as NSString).isAbsolutePath { return path }
            return ((fromFile ? baseDirectory : currentDirectory) as NSString).appendingPathComponent(path)
        }
        try reader.table("database") { t in
            if let v = try t.string("url") { database.url = v.0 }
            if let v = try t.int("pool_size", in: 1...1024) { database.poolSize = v }
            if let v = try t.int("connect_timeout_seconds", in: 1...3600) { database.connectTimeoutSeconds = v }
            if let v = try t.double("acquire_timeout_seconds", in: 0.001...86400) { database.acquireTimeoutSeconds = v }
            database.migrations = resolve(try t.string("migrations"), default: database.migrations)
            try t.table("reconnect") { r in
                if let v = try r.int("max_attempts", in: 0...1000) { database.reconnect.maxAttempts = v }
                if let v = try r.int("initial_delay_ms", in: 1...600_000) { database.reconnect.initialDelayMs = v }
                if let v = try r.int("max_delay_ms", in: 1...3_600_000) { database.reconnect.maxDelayMs = v }
            }
        }
        if database.reconnect.maxDelayMs < database.reconnect.initialDelayMs {
            throw ConfigError.invalidValue(key: "database.reconnect.max_delay_ms", reason: "must not be below initial_delay_ms", source: reader.source)
        }
        try reader.table("artifacts") { t in
            artifacts.root = resolve(try t.string("root"), default: artifacts.root)
        }
        try reader.table("log") { t in
            if let v = try t.string("level") {
                guard let level = Logger.Level(rawValue: v.0) else {
                    throw ConfigError.invalidValue(key: "log.level", reason: "'\(v.0)' is not one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))", source: t.source)
                }
                log.level = level
            }
        }
        try reader.table("blas") { t in
            if let v = try t.int("threads", in: 0...4096) { blas.threads = v }
        }
        try reader.table("queue") { try $0.readQueue(into: &queue) }
        try reader.table("pruning") { try $0.readPruning(into: &pruning) }
        try reader.table("search") { try $0.readSearch(into: &search) }
        try reader.table("webhooks") { try $0.readWebhooks(into: &webhooks) }
        try reader.table("compress") { try $0.readCompress(into: &compress) }
        try reader.table("training") { try $0.readTraining(into: &training) }
        try reader.table("data") { try $0.readData(into: &data) }
    }
}

/// Reads one mapping of the config file, tracking which keys were used so that unknown ones are errors,
/// and letting `LOP_<PATH>` environment variables override each key.
struct TableReader {
    let path: String
    let mapping: Node.Mapping?
    let source: String
    let environment: [String: String]
    private var used: Set<String> = []

    init(path: String, mapping: Node.Mapping?, source: String, environment: [String: String]) {
        self.path = path
        self.mapping = mapping
        self.source = source
        self.environment = environment
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private func environmentName(_ key: String) -> String {
        "LOP_" + keyPath(key).uppercased().replacingOccurrences(of: ".", with: "_")
    }

    private mutating func node(_ key: String) -> Node? {
        used.insert(key)
        return mapping?[key]
    }

    /// Reads a nested mapping; absent is fine (its keys may still come from the environment).
    mutating func table(_ key: String, _ body: (inout TableReader) throws -> Void) throws {
        var child: Node.Mapping? = nil
        if let node = node(key) {
            guard case let .mapping(m) = node else {
                throw ConfigError.wrongType(key: keyPath(key), expected: "a mapping", found: Self.describe(node), source: source)
            }
            child = m
        }
        var reader = TableReader(path: keyPath(key), mapping: child, source: source, environment: environment)
        try body(&reader)
        try reader.finish()
    }

    /// Reads every entry of a mapping whose keys are names (e.g. job kinds), each itself a mapping.
    mutating func tables(_ key: String, _ body: (String, inout TableReader) throws -> Void) throws {
        guard let node = node(key) else { return }
        guard case let .mapping(m) = node else {
            throw ConfigError.wrongType(key: keyPath(key), expected: "a mapping", found: Self.describe(node), source: source)
        }
        for (nameNode, value) in m {
            guard let name = nameNode.string else { continue }
            guard case let .mapping(child) = value else {
                throw ConfigError.wrongType(key: keyPath(key) + "." + name, expected: "a mapping", found: Self.describe(value), source: source)
            }
            var reader = TableReader(path: keyPath(key) + "." + name, mapping: child, source: source, environment: [:])
            try body(name, &reader)
            try reader.finish()
        }
    }

    /// Reads a list of mappings.
    mutating func list(_ key: String, _ body: (Int, inout TableReader) throws -> Void) throws {
        guard let node = node(key) else { return }
        guard case let .sequence(items) = node else {
            throw ConfigError.wrongType(key: keyPath(key), expected: "a list", found: Self.describe(node), source: source)
        }
        for (index, item) in items.enumerated() {
            guard case let .mapping(child) = item else {
                throw ConfigError.wrongType(key: "\(keyPath(key))[\(index)]", expected: "a mapping", found: Self.describe(item), source: source)
            }
            var reader = TableReader(path: "\(keyPath(key))[\(index)]", mapping: child, source: source, environment: [:])
            try body(index, &reader)
            try reader.finish()
        }
    }

    /// A list of strings from the file, or a comma-separated environment variable.
    mutating func stringList(_ key: String) throws -> [String]? {
        try scalarTexts(key, expected: "a list of strings", tags: [Tag.Name.str.rawValue])?.map(\.text)
    }

    /// The items of a list as text with where each came from: a file sequence of scalars (of the given tags,
    /// any scalar when nil), or a comma-separated environment variable.
    mutating func scalarTexts(_ key: String, expected: String, tags: Set<String>? = nil) throws -> [(text: String, origin: String)]? {
        let fileNode = node(key)
        let env = environmentName(key)
        if let raw = environment[env] {
            return raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { ($0, "environment variable \(env)") }
        }
        guard let node = fileNode else { return nil }
        guard case let .sequence(items) = node else {
            throw ConfigError.wrongType(key: keyPath(key), expected: expected, found: Self.describe(node), source: source)
        }
        return try items.map { item in
            guard case .scalar(let scalar) = item, tags.map({ $0.contains(item.tag.rawValue) }) ?? true else {
                throw ConfigError.wrongType(key: keyPath(key), expected: expected, found: Self.describe(item), source: source)
            }
            return (scalar.string, source)
        }
    }

    /// A mapping from the file as JSON object text (job arguments).
    mutating func json(_ key: String) throws -> String? {
        guard let node = node(key) else { return nil }
        guard case .mapping = node, let object = node.any as? [String: Any],
              JSONSerialization.isValidJSONObject(object),
              let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
            throw ConfigError.wrongType(key: keyPath(key), expected: "a mapping of JSON values", found: Self.describe(node), source: source)
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// A string value and whether it came from the file (for resolving relative paths).
    mutating func string(_ key: String) throws -> (String, fromFile: Bool)? {
        let fileNode = node(key)
        if let value = environment[environmentName(key)] { return (value, false) }
        guard let node = fileNode else { return nil }
        guard node.tag.rawValue == Tag.Name.str.rawValue, let s = node.string else {
            throw ConfigError.wrongType(key: keyPath(key), expected: "a string", found: Self.describe(node), source: source)
        }
        return (s, true)
    }

    /// A number, boolean or string from `LOP_<PATH>` (read as a boolean or number where it parses as one) or
    /// the file, with where it came from; the caller checks it.
    mutating func scalar(_ key: String) throws -> (LopConfig.SettingValue, origin: String)? {
        let env = environmentName(key)
        let fileNode = node(key)
        if let raw = environment[env]?.trimmingCharacters(in: .whitespaces) {
            let origin = "environment variable \(env)"
            if raw == "true" || raw == "false" { return (.bool(raw == "true"), origin) }
            if let x = Double(raw) { return (.number(x), origin) }
            return (.string(raw), origin)
        }
        guard let node = fileNode else { return nil }
        switch node.tag.rawValue {
        case Tag.Name.bool.rawValue: if let b = node.bool { return (.bool(b), source) }
        case Tag.Name.int.rawValue, Tag.Name.float.rawValue: if let x = node.float { return (.number(x), source) }
        case Tag.Name.str.rawValue: if let s = node.string { return (.string(s), source) }
        default: break
        }
        throw ConfigError.wrongType(key: keyPath(key), expected: "a number, boolean or string", found: Self.describe(node), source: source)
    }

    mutating func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        try number(key, in: range, expected: "an integer", fromText: { Int($0) },
                   fromNode: { $0.tag.rawValue == Tag.Name.int.rawValue ? $0.int : nil })
    }

    mutating func double(_ key: String, in range: ClosedRange<Double>) throws -> Double? {
        try number(key, in: range, expected: "a number", fromText: { Double($0).flatMap { $0.isFinite ? $0 : nil } }, fromNode: {
            [Tag.Name.int.rawValue, Tag.Name.float.rawValue].contains($0.tag.rawValue) ? $0.float.flatMap { $0.isFinite ? $0 : nil } : nil
        })
    }

    /// A number from `LOP_<PATH>` or the file, checked against its type and range.
    private mutating func number<T: Comparable>(
        _ key: String, in range: ClosedRange<T>, expected: String,
        fromText: (String) -> T?, fromNode: (Node) -> T?
    ) throws -> T? {
        let env = environmentName(key)
        let fileNode = node(key)
        let value: T
        let origin: String
        if let raw = environment[env] {
            guard let v = fromText(raw.trimmingCharacters(in: .whitespaces)) else {
                throw ConfigError.wrongType(key: keyPath(key), expected: expected, found: "'\(raw)'", source: "environment variable \(env)")
            }
            value = v; origin = "environment variable \(env)"
        } else {
            guard let node = fileNode else { return nil }
            guard let v = fromNode(node) else {
                throw ConfigError.wrongType(key: keyPath(key), expected: expected, found: Self.describe(node), source: source)
            }
            value = v; origin = source
        }
        guard range.contains(value) else {
            throw ConfigError.invalidValue(key: keyPath(key), reason: "\(value) is outside \(range.lowerBound)...\(range.upperBound)", source: origin)
        }
        return value
    }

    /// Fails on the first key of this mapping that nothing read.
    func finish() throws {
        guard let mapping else { return }
        for (keyNode, _) in mapping {
            guard let key = keyNode.string else {
                throw ConfigError.wrongType(key: keyPath("?"), expected: "a string key", found: Self.describe(keyNode), source: source)
            }
            if !used.contains(key) { throw ConfigError.unknownKey(key: keyPath(key), file: source) }
        }
    }

    /// A short, value-free description of a YAML node for error messages.
    static func describe(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case let .scalar(s):
            let kinds: [String: String] = [
                Tag.Name.str.rawValue: "a string", Tag.Name.int.rawValue: "an integer", Tag.Name.float.rawValue: "a number",
                Tag.Name.bool.rawValue: "a boolean", Tag.Name.null.rawValue: "null",
            ]
            let kind = kinds[node.tag.rawValue] ?? "a value"
            return "\(kind) '\(s.string)'"
        }
    }
}
