import Foundation
import Logging

/// Every setting of lop, with its default. `Config/lop.yaml` lists the same defaults; a test keeps the two equal.
///
/// Values come from, in increasing precedence: these defaults, the config file, and environment
/// variables named after the key path (`database.pool_size` → `LOP_DATABASE_POOL_SIZE`).
public struct LopConfig: Sendable, Equatable {
    public var database = Database()
    public var artifacts = Artifacts()
    public var log = Log()
    public var blas = Blas()
    public var queue = Queue()
    public var pruning = Pruning()
    public var search = SearchSection()
    public var webhooks = Webhooks()
    public var compress = Compress()
    public var training = Training()
    public var data = DataFiles()

    public init() {}

    /// Connection settings for the one PostgreSQL that all workers share.
    public struct Database: Sendable, Equatable {
        /// libpq URL or keyword string. May hold a password: never log it (use `Store.ConnectionTarget`).
        public var url = "postgresql://localhost:5432/lop"
        /// Connections kept open by a process's pool.
        public var poolSize = 4
        /// Seconds to wait for a connection to open (libpq `connect_timeout`).
        public var connectTimeoutSeconds = 10
        /// Seconds a caller waits for a free pooled connection before an error.
        public var acquireTimeoutSeconds = 30.0
        /// Directory holding the numbered `NNNN_name.sql` migrations.
        public var migrations = "SQL"
        public var reconnect = Reconnect()
        public init() {}
    }

    /// How a connection that lost its server tries again: exponential backoff with a cap.
    public struct Reconnect: Sendable, Equatable {
        public var maxAttempts = 10
        public var initialDelayMs = 50
        public var maxDelayMs = 5000
        public init() {}
    }

    public struct Artifacts: Sendable, Equatable {
        /// Directory under which pruned models, predictors and reports are written.
        public var root = "var/artifacts"
        public init() {}
    }

    public struct Log: Sendable, Equatable {
        public var level: Logger.Level = .info
        public init() {}
    }

    public struct Blas: Sendable, Equatable {
        /// OpenBLAS threads; 0 means one per core.
        public var threads = 0
        public init() {}
    }
}

