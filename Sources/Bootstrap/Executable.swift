import Dispatch
import Foundation
import LopConfig
import LopCore
import Logging

/// What lop's executables (lop, lop-worker, lop-notifier) do alike: read the configuration, start logging once,
/// stop on SIGTERM/SIGINT, and leave through one exit path that turns any `LopError` into its message and status.
public enum Executable {
    /// Loads the configuration (`file`, else LOP_CONFIG, else ./Config/lop.yaml) and starts logging at its level.
    public static func configuration(file: String?) throws -> LopConfig {
        let config = try LopConfig.load(file: file).config
        startLogging(level: config.log.level)
        return config
    }

    /// Loads the configuration for a long-running program; a bad one is reported and exits 78.
    public static func loadConfig(file: String?, program: String) -> LopConfig {
        do { return try configuration(file: file) } catch { fail(program, error) }
    }

    private static let loggingStarted = OnceFlag()

    /// Starts swift-log once per process: one line per event on standard error, with its metadata.
    public static func startLogging(level: Logger.Level) {
        guard loggingStarted.set() else { return }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// Runs a program's body; a `LopError` it throws ends the process with `program: error: message` on standard
    /// error and the error's exit status. Other errors are rethrown (ArgumentParser reports its own).
    public static func run(_ program: String, _ body: () throws -> Void) throws {
        do { try body() } catch let error as any LopError { fail(program, error) }
    }

    /// Reports an error and exits with its status (a `LopError`'s own, else `code`, else 1).
    public static func fail(_ program: String, _ error: any Error, code: Int32? = nil) -> Never {
        fail(program, "\(error)", code: code ?? (error as? any LopError)?.exitCode ?? ExitStatus.failure)
    }

    /// Prints `program: error: message` on standard error and exits with `code` (sysexits).
    public static func fail(_ program: String, _ message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data("\(program): error: \(message)\n".utf8))
        exit(code)
    }

    /// Calls `stop` on SIGTERM or SIGINT. Signals arrive on a dispatch queue, never in the middle of a libpq or
    /// libcurl call; keep the returned sources alive while running.
    public static func onShutdownSignals(logger: Logger, _ stop: @escaping @Sendable () -> Void) -> [any DispatchSourceSignal] {
        [SIGTERM, SIGINT].map { signalNumber in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler {
                logger.notice("shutting down", metadata: ["signal": "\(signalNumber)"])
                stop()
            }
            source.resume()
            return source
        }
    }
}

/// A flag that is set once, safely from any thread.
final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    /// Sets the flag; true if this call was the one that set it.
    func set() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if value { return false }
        value = true
        return true
    }
}
