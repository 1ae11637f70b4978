/// lop's version, as `lop --version` prints it, predictor cards record it and webhooks' User-Agent sends it.
public enum LopVersion {
    public static let current = "0.1.0"
}

/// An error lop reports to a person: a message saying what was wrong and where, and the exit status a command
/// that stops on it returns. Every module's error types conform, so the executables have one exit path.
public protocol LopError: Error, CustomStringConvertible {
    var exitCode: Int32 { get }
}

/// Exit statuses from sysexits(3), so that scripts can tell a bad setup from bad data or a database that is down.
public enum ExitStatus {
    public static let failure: Int32 = 1
    public static let usage: Int32 = 64
    public static let dataError: Int32 = 65
    public static let unavailable: Int32 = 69
    public static let configError: Int32 = 78
}
