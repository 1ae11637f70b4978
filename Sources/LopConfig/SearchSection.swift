import Foundation

extension LopConfig {
    /// The `search` section as written: each key with its value and where it came from. The search owns its
    /// settings, their defaults and their checks (`SearchSettings` in Search); the executables apply these
    /// entries to them at start, so a bad key still stops a program before it runs anything.
    public struct SearchSection: Sendable, Equatable {
        public var entries: [Entry] = []
        public init() {}

        public struct Entry: Sendable, Equatable {
            public let key: String
            public let value: SettingValue
            /// The file, or `environment variable LOP_SEARCH_…`.
            public let source: String

            public init(key: String, value: SettingValue, source: String) {
                (self.key, self.value, self.source) = (key, value, source)
            }
        }
    }

    /// A scalar setting as a file or environment variable gives it.
    public enum SettingValue: Sendable, Equatable {
        case number(Double), bool(Bool), string(String)
    }
}

extension TableReader {
    /// Every key of the section, from the file and from `LOP_SEARCH_<KEY>` variables (which win).
    mutating func readSearch(into section: inout LopConfig.SearchSection) throws {
        var keys = (mapping?.keys.compactMap(\.string) ?? [])
        let prefix = "LOP_" + path.uppercased() + "_"
        for name in environment.keys.sorted() where name.hasPrefix(prefix) {
            let key = String(name.dropFirst(prefix.count)).lowercased()
            if !keys.contains(key) { keys.append(key) }
        }
        for key in keys {
            guard let (value, origin) = try scalar(key) else { continue }
            section.entries.append(.init(key: key, value: value, source: origin))
        }
    }
}
