import LopCore
/// A configuration that cannot be used, naming the file, key or variable at fault.
public enum ConfigError: Error, CustomStringConvertible, Equatable {
    case unreadable(file: String, reason: String)
    case syntax(file: String, reason: String)
    case unknownKey(key: String, file: String)
    case wrongType(key: String, expected: String, found: String, source: String)
    case invalidValue(key: String, reason: String, source: String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): "cannot read config file \(file): \(reason)"
        case let .syntax(file, reason): "config file \(file) is not valid YAML: \(reason)"
        case let .unknownKey(key, file): "unknown config key '\(key)' in \(file)"
        case let .wrongType(key, expected, found, source): "config key '\(key)' in \(source) must be \(expected), found \(found)"
        case let .invalidValue(key, reason, source): "config key '\(key)' in \(source): \(reason)"
        }
    }
}

extension ConfigError: LopError {
    public var exitCode: Int32 { ExitStatus.configError }
}
