import ArgumentParser
import Bootstrap
import Evaluation
import Foundation
import Predictor
import LopConfig
import Models
import Pruning
import Queue
import Store

/// Runs a command body through the executables' one exit path: a lop error becomes a one-line message on
/// standard error and its exit status.
func runReportingErrors(_ body: () throws -> Void) throws {
    try Executable.run("lop", body)
}

/// Writes a JSON document (sorted keys, ISO dates) and a newline to standard output.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    FileHandle.standardOutput.write(try encoder.encode(value) + Data("\n".utf8))
}
