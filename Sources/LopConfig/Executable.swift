import Dispatch
import Foundation
import Logging

/// What lop's long-running executables (lop-worker, lop-notifier) do alike at start and at shutdown.
public enum Executable {
    /// Loads the configuration and starts logging at its level; a bad configuration is reported and exits 78.
    public static func loadConfig(file: String?, program: String) -> LopConfig {
        let config: LopConfig
        do { config = try LopConfig.load(file: file).config } catch { fail(program, "\(error)", code: 78) }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = config.log.level
            return handler
        }
        return config
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
