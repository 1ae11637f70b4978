import Store

/// Every kind of job lop runs. `lop.jobs.kind`'s CHECK lists exactly these (a test compares them), so an
/// INSERT of any other kind fails in the database, not in a worker.
public enum JobKind: String, CaseIterable, Sendable, Codable, PostgresCodable, CustomStringConvertible {
    /// A budget → a pruned, evaluated, registered model.
    case compress
    /// One budget → the best strategy the tree search finds, every scored strategy stored as a sample.
    case search
    /// Many budgets → one search each.
    case sweep
    /// The nightly predictor re-training (challenger against champion).
    case train
    /// A registered model or a folder → metrics on named data, kept in its registry history.
    case evaluate
    /// For tests and the queue benchmark.
    case noop, sleep

    public var description: String { rawValue }

    public static var postgresType: Oid { PGType.text }
    public var postgresText: String? { rawValue }

    /// The kinds, comma-separated, for help texts and errors.
    public static var list: String { allCases.map(\.rawValue).joined(separator: ", ") }
}
